// Where the two sides of the view come from: plain directories (`--booted DIR --staged DIR`)
// or an OSTree sysroot's deployments and repository (`--sysroot`), and how each side's
// manifest and package database are read.
#pragma once

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/error.h"
#include "ostree/repo.h"
#include "ostree/sysroot.h"
#include "packages/package_db.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::cli {

// One side of the view.
struct Origin {
  std::string kind;  // "directory", "deployment", "commit" or "none" (nothing staged)
  // The served directory (booted: always; staged: the checkout, empty for a commit that has
  // none).
  std::filesystem::path dir;
  // The OS root that `dir` is `subdir` of: where the package database is looked for.
  std::filesystem::path system_root;
  std::string subdir;  // "" or "usr"
  // OSTree
  std::string osname;
  std::string checksum;
  std::string version;
  int deployserial = -1;

  nlohmann::json to_json() const;
  std::string describe() const;
};

// OK when `path` is a directory; else ENOENT/ENOTDIR/... naming `what` and the path.
Status require_dir(const std::filesystem::path& path, const char* what);

// A directory side: when `dir` is a `usr` directory whose parent holds a package database
// (a Debian root's /usr), the parent is its system root.
Origin directory_origin(const std::filesystem::path& dir);

// A deployment side.
Origin deployment_origin(const ostree::Deployment& d, const std::string& subdir);

// The package database of a side: on disk when the side has a directory, else read from
// its manifest (`tree`, whose root is the OS tree's `subdir`). nullptr when it has none.
Result<std::unique_ptr<packages::PackageDb>> open_packages(
    const Origin& origin, const store::Tree& tree, std::shared_ptr<const store::ObjectStore> store);

}  // namespace livefs::cli
