// A whole dpkg database as `apply --package` and `diff --by-package` read it: `status`,
// `diversions` and the info/*.list file lists, through open_package_db, files(), owners()
// and group_by_package.
//
// The input holds the tree's files in fuzz_support.h's split_files format, e.g.
//   ==> var/lib/dpkg/status <==      (or usr/var/lib/dpkg/status)
//   ==> var/lib/dpkg/diversions <==
//   ==> var/lib/dpkg/info/bash.list <==
//   ==> bin -> usr/bin <==           (a symlink: the usr-merge aliases)
// Input without headers is taken as the status file.
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "packages/dpkg.h"
#include "packages/package_db.h"
#include "store/tree.h"

using livefs::Result;
using livefs::packages::PackageDb;
using livefs::packages::TreeReader;

namespace {

// The tree's files and symlinks in memory; directories are implied by the paths below them.
class MemoryTree final : public TreeReader {
 public:
  explicit MemoryTree(std::map<std::string, std::string> files) {
    constexpr std::string_view kArrow = " -> ";
    for (auto& [name, content] : files) {
      size_t arrow = name.find(kArrow);
      if (arrow == std::string::npos) {
        files_.emplace(normal(name), std::move(content));
      } else {
        links_.emplace(normal(name.substr(0, arrow)), name.substr(arrow + kArrow.size()));
      }
    }
    for (const auto* map : {&files_, &links_}) {
      for (const auto& [path, unused] : *map) {
        for (size_t slash = path.find('/'); slash != std::string::npos;
             slash = path.find('/', slash + 1))
          dirs_.insert(path.substr(0, slash));
      }
    }
  }

  Result<std::optional<std::string>> read_file(std::string_view path) const override {
    std::string p = normal(path);
    if (dirs_.contains(p)) return livefs::fail(EISDIR, p);
    auto it = files_.find(p);
    if (it == files_.end()) return std::optional<std::string>();
    return it->second;
  }
  Result<std::optional<std::string>> read_link(std::string_view path) const override {
    auto it = links_.find(normal(path));
    if (it == links_.end()) return std::optional<std::string>();
    return it->second;
  }
  Result<std::vector<std::string>> list(std::string_view dir) const override {
    std::string d = normal(dir);
    if (!d.empty() && !dirs_.contains(d)) return livefs::fail(ENOENT, d);
    std::set<std::string> names;
    std::string prefix = d.empty() ? "" : d + "/";
    for (const auto* set : {&files_, &links_}) {
      for (const auto& [path, unused] : *set) {
        if (path.starts_with(prefix) && path.size() > prefix.size())
          names.insert(path.substr(prefix.size(), path.find('/', prefix.size()) - prefix.size()));
      }
    }
    return std::vector<std::string>(names.begin(), names.end());
  }

 private:
  static std::string normal(std::string_view path) {
    std::string out;
    for (std::string_view part : livefs::packages::path_components(path)) {
      if (!out.empty()) out += '/';
      out += part;
    }
    return out;
  }

  std::map<std::string, std::string> files_;
  std::map<std::string, std::string> links_;
  std::set<std::string> dirs_;
};

// dpkg's own rules for package and architecture names; the "name:arch" lookups rely on them
// (a ':' in either is ambiguous).
bool valid_name(std::string_view name, std::string_view extra) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [&](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || extra.find(c) != extra.npos;
  });
}

// Whether every stanza of the status file that the database reads names its package and
// architecture as dpkg allows.
bool valid_names(const MemoryTree& tree) {
  for (const char* location : {"var/lib/dpkg/status", "usr/var/lib/dpkg/status"}) {
    auto text = tree.read_file(location);
    if (!text || !*text) continue;
    auto entries = livefs::packages::dpkg::parse_status(**text, location);
    if (!entries) return false;
    for (const auto& e : *entries) {
      if (!valid_name(e.package, "+-.") || !valid_name(e.architecture, "-")) return false;
    }
    return true;
  }
  return true;
}

// Relative, without empty, "." or ".." components: a path the view can serve. served_path
// keeps whatever a list has between its slashes ("/usr//x" gives "/x", which owners() then
// cannot find), so the ownership invariant holds for lists as dpkg writes them.
bool normal_path(std::string_view p) {
  for (std::string_view part : livefs::packages::path_components(p)) {
    if (part == "..") return false;
  }
  return !p.empty() && p.front() != '/' && p.back() != '/' && p.find("//") == p.npos &&
         !p.starts_with("./") && !p.ends_with("/.") && p.find("/./") == p.npos && p != ".";
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto files =
      livefs::fuzz::split_files(std::string_view(reinterpret_cast<const char*>(data), size));
  if (auto bare = files.extract(""); !bare.empty() && !files.contains("var/lib/dpkg/status"))
    files.emplace("var/lib/dpkg/status", std::move(bare.mapped()));
  MemoryTree tree(std::move(files));
  const bool plain = valid_names(tree);

  // Both ways the daemon serves a tree: /usr of an OS (dpkg's paths mapped into usr/) and a
  // whole root.
  for (const char* served : {"usr", ""}) {
    auto opened = livefs::packages::open_package_db(tree, served);
    if (!opened || !*opened) continue;
    const PackageDb& db = **opened;

    std::vector<std::string> all_paths;
    for (const auto& info : db.packages()) {
      auto found = db.find(info.name);
      if (plain) FUZZ_CHECK(found && *found == info);
      auto paths = db.files(info.name);
      if (!paths) {
        // Only a list that is not a file fails in memory; a malformed name is not found.
        FUZZ_CHECK(paths.error().code == EISDIR || (!plain && paths.error().code == ENOENT));
        continue;
      }
      FUZZ_CHECK(std::is_sorted(paths->begin(), paths->end(), livefs::store::path_less));
      FUZZ_CHECK(std::adjacent_find(paths->begin(), paths->end()) == paths->end());
      for (const std::string& p : *paths) {
        FUZZ_CHECK(!p.empty());
        all_paths.push_back(p);
        if (!normal_path(p)) continue;
        // Whoever lists a path owns it.
        auto owners = db.owners(p);
        if (plain) FUZZ_CHECK(std::find(owners.begin(), owners.end(), info.name) != owners.end());
      }
    }
    (void)db.owners("");
    (void)db.owners("/");
    (void)db.files("no-such-package");

    // Every changed path lands in exactly one group.
    auto groups = livefs::packages::group_by_package(all_paths, &db, &db);
    size_t grouped = 0;
    for (const auto& g : groups) grouped += g.paths.size();
    FUZZ_CHECK(grouped == all_paths.size());
  }
  return 0;
}
