// The package database of an OS tree, behind one interface so `apply --package` and
// `diff --by-package` do not care which package manager wrote it (dpkg today, RPM later),
// and the grouping of changed paths by owning package.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "packages/tree_reader.h"

namespace livefs::packages {

struct PackageInfo {
  // The name other calls accept: the package name, or "name:arch" when several
  // architectures of it are installed (multi-arch).
  std::string name;
  std::string version;
  std::string arch;
  auto operator<=>(const PackageInfo&) const = default;
};

// Paths are relative to the SERVED subdirectory ("usr": "bin/ls" is the OS tree's
// usr/bin/ls). The lists name every directory a package ships, so directories such as "bin"
// have many owners; match them exactly, never as prefixes of what they contain.
class PackageDb {
 public:
  virtual ~PackageDb();
  virtual std::string kind() const = 0;      // "dpkg"
  virtual std::string location() const = 0;  // the database's OS path, e.g. "usr/var/lib/dpkg"
  // Installed packages, sorted by name.
  virtual std::vector<PackageInfo> packages() const = 0;
  // By "name" or "name:arch"; a plain name of a multi-arch package finds the instance of the
  // native architecture (dpkg's own).
  virtual std::optional<PackageInfo> find(std::string_view name) const = 0;
  // The paths the package owns inside the served subdirectory, sorted (path_less order).
  // ENOENT "unknown package NAME" (with close names, when there are some).
  virtual Result<std::vector<std::string>> files(std::string_view name) const = 0;
  // The packages owning a path (sorted names as in PackageInfo::name; empty: none). The
  // first call reads every file list; later calls are hash lookups.
  virtual std::vector<std::string> owners(std::string_view served_path) const = 0;
};

// Finds the tree's package database: dpkg's `status` under var/lib/dpkg, then under
// usr/var/lib/dpkg (OSTree-based Debian keeps it in /usr). nullptr (not an error) when the
// tree has none; an error when one exists but cannot be read or parsed. `served_subdir` is
// the OS path the view serves ("usr", or "" for the whole root).
// The database reads file lists on demand through `tree`, which must outlive it.
Result<std::unique_ptr<PackageDb>> open_package_db(const TreeReader& tree,
                                                   std::string served_subdir);
// The same, keeping the reader alive for as long as the database is.
Result<std::unique_ptr<PackageDb>> open_package_db(std::shared_ptr<const TreeReader> tree,
                                                   std::string served_subdir);

struct PackageChanges {
  std::string package;                   // "" for the paths no package owns
  std::string old_version, new_version;  // "" when absent on that side (new / removed package)
  std::vector<std::string> paths;        // in the order given
  auto operator<=>(const PackageChanges&) const = default;
};

// Groups changed served-relative paths by the package owning them in `after` (else in
// `before`, for removed files), with each package's version in `before` and `after` (either
// db may be null). A path with several owners (a shared directory) goes to the first owner
// whose version changed, else to the first owner. Sorted by package name, unowned last.
std::vector<PackageChanges> group_by_package(const std::vector<std::string>& changed_paths,
                                             const PackageDb* before, const PackageDb* after);

}  // namespace livefs::packages
