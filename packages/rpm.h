// RPM's database (Fedora, CentOS Stream, RHEL, rpm-ostree and bootc trees), read with librpm.
//
// The tree may be a manifest in the object store rather than a directory, so librpm cannot
// open the database in place: open() copies the database directory's files into a private
// temporary directory (0700), opens that read-only and reads everything livefs uses (names,
// versions, file lists, Requires and Provides) into plain structures; the copy is removed
// before open() returns, and no later call touches librpm except compare_versions.
//
// Package names: PackageInfo::name is the package name, unless several packages of one name
// are installed (RPM allows that):
//   - of several architectures, one version (multilib: glibc.x86_64 and glibc.i686):
//     "name.arch";
//   - of several versions, one architecture (installonly packages: kernel-core twice):
//     "name-version-release";
//   - both: "name-version-release.arch".
// find(), files(), dependencies() accept those names and also "name" (the instance of the
// native architecture, else noarch, else any; of those the highest version), "name.arch",
// "name-version-release" and "name-version-release.arch" for any package, as `rpm -q` does.
//
// Versions are RPM's EVR: "[epoch:]version-release" (the epoch only when the package has
// one), ordered as rpm matches dependencies: rpmvercmp on each part, a missing epoch is 0,
// and a release is compared only when both sides have one ("2.0-1" equals "2.0", so a
// requirement "libdemo = 2.0" is met by every 2.0 release).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "packages/package_db.h"
#include "packages/tree_reader.h"

namespace livefs::packages::rpm {

// The backend that wrote a database directory holding these file names: "sqlite"
// (rpmdb.sqlite: Fedora >= 33, CentOS Stream 9), "ndb" (Packages.db: openSUSE), "bdb_ro"
// (Packages: Berkeley DB, older RHEL/CentOS), or "" when none of them is there. Which ones
// open depends on how librpm was built (Debian 12's: sqlite and bdb_ro; an ndb database is
// then an error saying so).
std::string backend_of(const std::vector<std::string>& names);

// Opens the database in `location` ("usr/lib/sysimage/rpm", an OS path of `tree`) whose
// directory holds `names` (its listing; backend_of(names) is not ""). The error names
// `location` when the database cannot be copied, opened or read (librpm's messages
// included). `served_subdir` is the OS path the view serves ("usr", or "").
Result<std::unique_ptr<PackageDb>> open(const TreeReader& tree, std::string location,
                                        const std::vector<std::string>& names,
                                        std::string served_subdir);

// Orders two EVRs as rpm does when it matches a dependency (<0, 0, >0; see above).
int compare_versions(std::string_view a, std::string_view b);

}  // namespace livefs::packages::rpm
