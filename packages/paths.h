// What the dpkg and RPM databases share: OS paths as they list them ("/usr/bin/ls",
// "/bin/sh") against the paths a view serves (both run on merged-/usr trees), and the
// error for a package name neither knows.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "packages/tree_reader.h"

namespace livefs::packages {

// Which top-level directories (bin, sbin, lib, lib32, lib64, libx32) the tree merges into
// usr: X is a symlink to usr/X, or X is absent altogether while usr/X exists (a reader that
// sees only usr/, such as a manifest of the served tree: in a tree where /bin/ls is listed
// and no /bin exists, it can only be /usr/bin/ls).
Result<std::vector<std::string>> find_usr_aliases(const TreeReader& tree);

// Maps a listed path ("/usr/bin/ls", "/bin/ls") to the served subdirectory ("bin/ls" when
// serving "usr"); nullopt for the root and paths outside it. `usr_aliases` are the
// top-level directories merged into usr (find_usr_aliases). With `served_subdir` "" the
// result is the OS path without its leading '/', aliases resolved ("bin/ls" ->
// "usr/bin/ls").
std::optional<std::string> served_path(std::string_view listed,
                                       const std::vector<std::string>& usr_aliases,
                                       std::string_view served_subdir);

// "unknown package NAME (close: a, b)": up to 5 of `candidates` (name compared, name shown)
// within a quarter of `compared`'s length in edits, or one a prefix of the other; closest
// first.
std::string unknown_package_message(
    std::string_view name, std::string_view compared,
    const std::vector<std::pair<std::string_view, std::string_view>>& candidates);

}  // namespace livefs::packages
