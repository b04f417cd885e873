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
#include "packages/package_db.h"
#include "store/object_store.h"
#include "store/ostree_source.h"
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

// A directory side: when `dir` is a `usr` directory whose parent holds a package database
// (a Debian root's /usr), the parent is its system root.
Origin directory_origin(const std::filesystem::path& dir);

// A deployment side.
Origin deployment_origin(const store::Deployment& d, const std::string& subdir);

// The deployments of a sysroot: the booted one (the running one, else `booted_spec`) and the
// one the next boot would use when it is another commit (nullopt: nothing staged).
struct SysrootDeployments {
  store::Deployment booted;
  std::optional<store::Deployment> pending;
};
Result<SysrootDeployments> find_deployments(const std::filesystem::path& sysroot,
                                            const std::string& os,
                                            const std::optional<std::string>& booted_spec);

// The manifest of a booted commit without reading file contents (see store::booted_content_id).
Result<store::Tree> booted_commit_manifest(const std::filesystem::path& repo,
                                           const std::string& checksum, const std::string& subdir,
                                           store::ObjectStore& store);

// Stages `rev` of `repo`: its manifest, with the content of every file that differs from the
// booted tree (at the same path) stored, through the OSTree-checksum index.
Result<store::OstreeImportResult> stage_commit(const std::filesystem::path& repo,
                                               const std::string& rev, const std::string& subdir,
                                               const store::Tree& booted, store::ObjectStore& store,
                                               bool progress);

// The package database of a side: on disk when the side has a directory, else read from
// its manifest (`tree`, whose root is the OS tree's `subdir`). nullptr when it has none.
Result<std::unique_ptr<packages::PackageDb>> open_packages(
    const Origin& origin, const store::Tree& tree, std::shared_ptr<const store::ObjectStore> store);

}  // namespace livefs::cli
