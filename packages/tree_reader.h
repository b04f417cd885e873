// Read access to an OS tree, whether it is a directory on disk or a manifest in the store,
// so the package databases can be read from the booted tree and from a staged deployment
// alike. Paths are relative to the OS root ("var/lib/dpkg/status", no leading '/').
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::packages {

// Symlinks met on the way are resolved inside the tree (an absolute target starts at the
// tree's root, never at the host's), as they would be once the tree is booted.
class TreeReader {
 public:
  virtual ~TreeReader();
  // The content of a regular file; nullopt when the path does not exist. EISDIR for a
  // directory, another error when the file cannot be read.
  virtual Result<std::optional<std::string>> read_file(std::string_view path) const = 0;
  // A symlink's target (the last component is not followed); nullopt when the path does not
  // exist or is not a symlink.
  virtual Result<std::optional<std::string>> read_link(std::string_view path) const = 0;
  // The names in a directory, sorted; ENOENT when it does not exist.
  virtual Result<std::vector<std::string>> list(std::string_view dir) const = 0;
};

// Reads the tree under `root` on disk (opened once; a root that cannot be opened makes every
// call fail with that error).
std::unique_ptr<TreeReader> directory_reader(std::filesystem::path root);

// Reads a manifest whose root is the OS tree's `tree_prefix` ("usr": the manifest holds what
// is under usr/, so OS path "usr/var/lib/dpkg/status" is manifest path "var/lib/dpkg/status";
// OS paths outside the prefix are absent, the prefix's ancestors are directories holding only
// the next component). "" means the manifest is the whole tree. File contents are read from
// `store`, checked against their ids.
std::unique_ptr<TreeReader> manifest_reader(const store::Tree& tree,
                                            std::shared_ptr<const store::ObjectStore> store,
                                            std::string tree_prefix);

// Splits a relative path on '/', dropping empty and "." components.
std::vector<std::string_view> path_components(std::string_view path);

}  // namespace livefs::packages
