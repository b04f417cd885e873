// The package database of an OS tree, behind one interface so `apply --package` and
// `diff --by-package` do not care which package manager wrote it (dpkg or RPM),
// and the grouping of changed paths by owning package. dpkg and RPM (librpm) implement it.
#pragma once

#include <cstdint>
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
  // architectures of it are installed (dpkg's multi-arch; RPM: packages/rpm.h).
  std::string name;
  std::string version;
  std::string arch;
  auto operator<=>(const PackageInfo&) const = default;
};

// A version constraint of a dependency or a versioned provide.
enum class VersionOp : uint8_t { any, lt, le, eq, ge, gt };

// One name a requirement can be met by, or one thing a package provides.
struct Relation {
  // A package name or a virtual/capability name: "libapt-pkg6.0", "mail-transport-agent",
  // RPM's "libfoo.so.1()(64bit)" or a file ("/bin/sh", RPM only).
  std::string name;
  // dpkg's architecture qualifier: "any", "native", an architecture, or "" (none).
  std::string arch;
  VersionOp op = VersionOp::any;
  std::string version;  // "" with VersionOp::any
  auto operator<=>(const Relation&) const = default;
};

// Met when any one alternative is (dpkg's "a | b"; an RPM requirement has one).
using Requirement = std::vector<Relation>;

struct Dependencies {
  // What must be installed for the package to work: dpkg's Pre-Depends and Depends; RPM's
  // Requires without rpmlib() features and without what the package provides itself.
  std::vector<Requirement> requirements;
  // What the package provides besides its own name (dpkg's Provides; RPM's Provides, which
  // include sonames and config() entries). A Relation here has op eq or any.
  std::vector<Relation> provides;
  // dpkg's Multi-Arch ("same", "foreign", "allowed" or ""); "" for RPM.
  std::string multi_arch;
  // The name requirements call the package by: the bare package name, without what
  // PackageInfo::name adds to tell installed instances apart (":arch", ".arch", "-V-R").
  std::string package;
};

// "(>= 2.6.2)" as written by dpkg; "" for VersionOp::any.
std::string constraint_text(VersionOp op, std::string_view version);
// "libapt-pkg6.0 (>= 2.6.2)", "a | b (<< 2)".
std::string relation_text(const Relation& r);
std::string requirement_text(const Requirement& r);

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

  // The package's dependencies; ENOENT for an unknown package, EBADMSG naming the package
  // and the field for a dependency field that does not parse.
  virtual Result<Dependencies> dependencies(std::string_view name) const = 0;
  // Orders two versions by this package manager's rules (<0, 0, >0).
  virtual int compare_versions(std::string_view a, std::string_view b) const = 0;
  // The packages owning a file by its absolute OS path ("/bin/sh"), for RPM's file
  // requirements; {} where requirements never name files (dpkg).
  virtual std::vector<std::string> file_owners(std::string_view absolute_path) const;
  // The native architecture (dpkg's own; RPM: the rpm package's), "" when unknown.
  virtual std::string native_arch() const = 0;
};

// Whether `version` meets `op required` by `db`'s ordering (always for VersionOp::any).
bool version_satisfies(const PackageDb& db, std::string_view version, VersionOp op,
                       std::string_view required);

// Where package databases are looked for, relative to the OS root, in order.
inline constexpr const char* kDpkgLocations[] = {"var/lib/dpkg", "usr/var/lib/dpkg"};
inline constexpr const char* kRpmLocations[] = {"usr/lib/sysimage/rpm", "usr/share/rpm",
                                                "var/lib/rpm"};

// Finds the tree's package database: dpkg's `status` under var/lib/dpkg, then under
// usr/var/lib/dpkg (OSTree-based Debian keeps it in /usr); else RPM's (packages/rpm.h) in
// usr/lib/sysimage/rpm, usr/share/rpm (rpm-ostree) or var/lib/rpm. nullptr (not an error)
// when the tree has none; an error when one exists but cannot be read or parsed. `served_subdir` is
// the OS path the view serves ("usr", or "" for the whole root).
// dpkg's database reads file lists on demand through `tree`, which must outlive it (RPM's
// reads everything at open).
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
