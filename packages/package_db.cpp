// Finding a tree's package database (probing each known location), and grouping changed
// paths by the package that owns them.
#include "packages/package_db.h"

#include <algorithm>
#include <cerrno>
#include <map>
#include <unordered_map>

#include "packages/dpkg.h"
#include "packages/rpm.h"

namespace livefs::packages {

PackageDb::~PackageDb() = default;

namespace {

std::string normalize_subdir(std::string_view subdir) {
  std::string out;
  for (std::string_view part : path_components(subdir)) {
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

Result<std::unique_ptr<PackageDb>> open_with(const TreeReader& tree,
                                             std::shared_ptr<const TreeReader> keep_alive,
                                             std::string served_subdir) {
  served_subdir = normalize_subdir(served_subdir);
  // dpkg: /var/lib/dpkg on a classic system; OSTree-based Debian moves it under /usr, since
  // /var is not part of a deployment.
  for (std::string location : {kDpkgLocations[0], kDpkgLocations[1]}) {
    auto status = tree.read_file(location + "/status");
    if (!status) {
      return std::unexpected(with_context(status.error(), "dpkg database in " + location));
    }
    if (!*status) continue;
    return dpkg::open(tree, std::move(keep_alive), std::move(location), **status,
                      std::move(served_subdir));
  }
  // RPM: /usr/lib/sysimage/rpm (rpm >= 4.16's default: Fedora, CentOS Stream, bootc),
  // /usr/share/rpm (rpm-ostree moves it into the deployment), /var/lib/rpm (older systems;
  // often a symlink to the first). A directory without a database file is not one (a Debian
  // host with the rpm tool installed has an empty /var/lib/rpm).
  for (std::string location : {kRpmLocations[0], kRpmLocations[1], kRpmLocations[2]}) {
    auto names = tree.list(location);
    if (!names) {
      if (names.error().code == ENOENT || names.error().code == ENOTDIR) continue;
      return std::unexpected(with_context(names.error(), "rpm database in " + location));
    }
    if (rpm::backend_of(*names).empty()) continue;
    return rpm::open(tree, std::move(location), *names, std::move(served_subdir));
  }
  return std::unique_ptr<PackageDb>();
}

}  // namespace

Result<std::unique_ptr<PackageDb>> open_package_db(const TreeReader& tree,
                                                   std::string served_subdir) {
  return open_with(tree, nullptr, std::move(served_subdir));
}

Result<std::unique_ptr<PackageDb>> open_package_db(std::shared_ptr<const TreeReader> tree,
                                                   std::string served_subdir) {
  const TreeReader& reader = *tree;
  return open_with(reader, std::move(tree), std::move(served_subdir));
}

std::vector<PackageChanges> group_by_package(const std::vector<std::string>& changed_paths,
                                             const PackageDb* before, const PackageDb* after) {
  struct Versions {
    std::string old_version, new_version;
  };
  std::unordered_map<std::string, Versions> versions;  // per package, looked up once
  auto versions_of = [&](const std::string& package) -> const Versions& {
    auto it = versions.find(package);
    if (it != versions.end()) return it->second;
    Versions v;
    if (before) {
      if (auto info = before->find(package)) v.old_version = info->version;
    }
    if (after) {
      if (auto info = after->find(package)) v.new_version = info->version;
    }
    return versions.emplace(package, std::move(v)).first->second;
  };

  std::map<std::string, std::vector<std::string>> by_package;
  std::vector<std::string> unowned;
  for (const std::string& path : changed_paths) {
    std::vector<std::string> owners;
    if (after) owners = after->owners(path);
    if (owners.empty() && before) owners = before->owners(path);
    if (owners.empty()) {
      unowned.push_back(path);
      continue;
    }
    // A shared directory changes because one of its owners changed: prefer that one.
    const std::string* chosen = &owners.front();
    for (const std::string& owner : owners) {
      const Versions& v = versions_of(owner);
      if (v.old_version != v.new_version) {
        chosen = &owner;
        break;
      }
    }
    by_package[*chosen].push_back(path);
  }

  std::vector<PackageChanges> groups;
  groups.reserve(by_package.size() + 1);
  for (auto& [package, paths] : by_package) {
    const Versions& v = versions_of(package);
    groups.push_back(PackageChanges{package, v.old_version, v.new_version, std::move(paths)});
  }
  if (!unowned.empty()) groups.push_back(PackageChanges{"", "", "", std::move(unowned)});
  return groups;
}

}  // namespace livefs::packages

namespace livefs::packages {

std::vector<std::string> PackageDb::file_owners(std::string_view) const { return {}; }

std::string constraint_text(VersionOp op, std::string_view version) {
  const char* symbol = "";
  switch (op) {
    case VersionOp::any:
      return "";
    case VersionOp::lt:
      symbol = "<<";
      break;
    case VersionOp::le:
      symbol = "<=";
      break;
    case VersionOp::eq:
      symbol = "=";
      break;
    case VersionOp::ge:
      symbol = ">=";
      break;
    case VersionOp::gt:
      symbol = ">>";
      break;
  }
  return "(" + std::string(symbol) + " " + std::string(version) + ")";
}

std::string relation_text(const Relation& r) {
  std::string text = r.name;
  if (!r.arch.empty()) text += ":" + r.arch;
  if (r.op != VersionOp::any) text += " " + constraint_text(r.op, r.version);
  return text;
}

std::string requirement_text(const Requirement& r) {
  std::string text;
  for (const Relation& alternative : r) {
    if (!text.empty()) text += " | ";
    text += relation_text(alternative);
  }
  return text;
}

bool version_satisfies(const PackageDb& db, std::string_view version, VersionOp op,
                       std::string_view required) {
  if (op == VersionOp::any) return true;
  int order = db.compare_versions(version, required);
  switch (op) {
    case VersionOp::lt:
      return order < 0;
    case VersionOp::le:
      return order <= 0;
    case VersionOp::eq:
      return order == 0;
    case VersionOp::ge:
      return order >= 0;
    case VersionOp::gt:
      return order > 0;
    case VersionOp::any:
      break;
  }
  return true;
}

}  // namespace livefs::packages
