// dpkg's database: the `status` file (RFC 822-like stanzas), the per-package file lists
// (info/NAME.list, info/NAME:ARCH.list for Multi-Arch: same packages) and `diversions`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "packages/package_db.h"
#include "packages/tree_reader.h"

namespace livefs::packages::dpkg {

// One stanza of the status file, the fields livefs uses.
struct StatusEntry {
  std::string package;
  std::string version;
  std::string architecture;
  std::string multi_arch;  // "same", "foreign", "allowed" or ""
  std::string status;      // "install ok installed"
  // Relation fields as written (continuation lines joined): parse_relations reads them.
  std::string depends;
  std::string pre_depends;
  std::string provides;
};

// Parses a status file. EBADMSG naming `what` and the line for anything that is not
// "Field: value" lines, continuation lines and blank separators, or a stanza without
// Package or Status.
Result<std::vector<StatusEntry>> parse_status(std::string_view text, std::string_view what);

// One line triple of dpkg's `diversions` file: `from` of any package but `by` is unpacked
// to `to`. `by` is ":" for a local (administrator's) diversion.
struct Diversion {
  std::string from;
  std::string to;
  std::string by;
};

// Parses a diversions file; EBADMSG naming `what` when it is not whole triples of two
// absolute paths and a package.
Result<std::vector<Diversion>> parse_diversions(std::string_view text, std::string_view what);

// Parses a relation field (Depends, Pre-Depends, Provides): comma-separated requirements of
// "|"-separated alternatives, each "name[:arch] [(op version)]". dpkg's obsolete "<" and ">"
// mean "<=" and ">=". EBADMSG naming `what` and the bad element; "" parses to none.
Result<std::vector<Requirement>> parse_relations(std::string_view field, std::string_view what);

// Orders two Debian versions ("[epoch:]upstream[-revision]") as dpkg does: epochs
// numerically, then upstream and revision by alternating non-digit runs (letters before
// other characters, "~" before everything, even the end) and digit runs (numerically).
int compare_versions(std::string_view a, std::string_view b);

// Whether a Status value means the package's files are on disk and configured: the state
// "installed", or one of the "triggers-*" states (configured, only waiting for a trigger to
// run). Unpacked, half-configured, config-files, not-installed... are not.
bool is_installed(std::string_view status);

// Maps a path from a .list ("/usr/bin/ls") to the served subdirectory ("bin/ls" when
// serving "usr"); nullopt for the root and paths outside it. `usr_aliases` are the top-level
// directories that are merged into usr (bin -> usr/bin).
std::optional<std::string> served_path(std::string_view listed,
                                       const std::vector<std::string>& usr_aliases,
                                       std::string_view served_subdir);

// Opens the database whose status file (already read: `status_text`) is in `location`
// ("var/lib/dpkg"). `keep_alive` may hold `tree` (or be null when the caller keeps it).
Result<std::unique_ptr<PackageDb>> open(const TreeReader& tree,
                                        std::shared_ptr<const TreeReader> keep_alive,
                                        std::string location, std::string_view status_text,
                                        std::string served_subdir);

}  // namespace livefs::packages::dpkg
