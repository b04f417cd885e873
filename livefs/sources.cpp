// Origins of the view's sides: directories and OSTree deployments.
#include "livefs/sources.h"

#include <sys/stat.h>

#include "packages/tree_reader.h"

namespace livefs::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_dir(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A dpkg or RPM database's directory (whether it holds a database is for
// packages::open_package_db to find out).
bool has_package_db(const fs::path& root) {
  for (const char* location : packages::kDpkgLocations) {
    if (is_dir(root / location)) return true;
  }
  for (const char* location : packages::kRpmLocations) {
    if (is_dir(root / location)) return true;
  }
  return false;
}

}  // namespace

Status require_dir(const fs::path& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return fail_errno(std::string(what) + " " + path.string() + ": stat");
  }
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, std::string(what) + " " + path.string());
  return {};
}

json Origin::to_json() const {
  json j = {{"kind", kind},
            {"dir", dir.string()},
            {"system_root", system_root.string()},
            {"subdir", subdir}};
  if (!checksum.empty()) {
    j["checksum"] = checksum;
    j["version"] = version;
    j["osname"] = osname;
    if (deployserial >= 0) j["deployserial"] = deployserial;
  }
  return j;
}

std::string Origin::describe() const {
  if (kind == "none") return "nothing staged";
  if (kind == "directory") return dir.string();
  std::string s = kind + " " + checksum.substr(0, 12);
  if (deployserial >= 0) s += "." + std::to_string(deployserial);
  if (!version.empty()) s += " (version " + version + ")";
  if (!osname.empty()) s += " of " + osname;
  return s;
}

Origin directory_origin(const fs::path& dir) {
  Origin o;
  o.kind = "directory";
  o.dir = dir;
  o.system_root = dir;
  if (dir.filename() == "usr" && !has_package_db(dir) && has_package_db(dir.parent_path())) {
    o.system_root = dir.parent_path();
    o.subdir = "usr";
  }
  return o;
}

Origin deployment_origin(const ostree::Deployment& d, const std::string& subdir) {
  Origin o;
  o.kind = "deployment";
  o.dir = subdir.empty() ? d.path : d.path / subdir;
  o.system_root = d.path;
  o.subdir = subdir;
  o.osname = d.osname;
  o.checksum = d.checksum;
  o.version = d.version;
  o.deployserial = d.deployserial;
  return o;
}

Result<std::unique_ptr<packages::PackageDb>> open_packages(
    const Origin& origin, const store::Tree& tree,
    std::shared_ptr<const store::ObjectStore> store) {
  if (origin.kind == "none") return std::unique_ptr<packages::PackageDb>();
  std::shared_ptr<const packages::TreeReader> reader;
  if (!origin.system_root.empty() && is_dir(origin.system_root)) {
    reader = packages::directory_reader(origin.system_root);
  } else {
    reader = packages::manifest_reader(tree, std::move(store), origin.subdir);
  }
  return packages::open_package_db(reader, origin.subdir);
}

}  // namespace livefs::cli
