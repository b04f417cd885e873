// An RPM database as `apply --package` and `diff --by-package` read it: the input is the
// rpmdb.sqlite of a merged-/usr tree (in usr/lib/sysimage/rpm), opened through
// open_package_db (copied out and read with librpm). It must open or fail with an error,
// never crash; what opens must answer consistently. librpm and sqlite are not instrumented:
// libFuzzer's coverage is livefs's side (and what ASan sees of the memory librpm hands over).
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "packages/package_db.h"
#include "packages/rpm.h"
#include "store/tree.h"

using livefs::Result;
using livefs::packages::PackageDb;
using livefs::packages::TreeReader;

namespace {

// A tree holding the database file and the merged-/usr symlinks, in memory.
class RpmTree final : public TreeReader {
 public:
  explicit RpmTree(std::string db) : db_(std::move(db)) {}

  Result<std::optional<std::string>> read_file(std::string_view path) const override {
    std::string p = normal(path);
    if (p == kDb) return db_;
    if (is_dir(p)) return livefs::fail(EISDIR, p);
    return std::optional<std::string>();
  }
  Result<std::optional<std::string>> read_link(std::string_view path) const override {
    std::string p = normal(path);
    for (const char* dir : {"bin", "lib64"}) {
      if (p == dir) return std::optional<std::string>(std::string("usr/") + dir);
    }
    return std::optional<std::string>();
  }
  Result<std::vector<std::string>> list(std::string_view dir) const override {
    static const std::map<std::string, std::vector<std::string>> kDirs = {
        {"", {"bin", "lib64", "usr"}},
        {"usr", {"bin", "lib", "lib64"}},
        {"usr/bin", {}},
        {"usr/lib64", {}},
        {"usr/lib", {"sysimage"}},
        {"usr/lib/sysimage", {"rpm"}},
        {"usr/lib/sysimage/rpm", {"rpmdb.sqlite"}},
    };
    std::string d = normal(dir);
    if (d == "bin" || d == "lib64") d = "usr/" + d;
    auto it = kDirs.find(d);
    if (it == kDirs.end()) return livefs::fail(ENOENT, d);
    return it->second;
  }

 private:
  static constexpr std::string_view kDb = "usr/lib/sysimage/rpm/rpmdb.sqlite";
  static bool is_dir(const std::string& p) {
    return p.empty() || p == "usr" || p == "usr/bin" || p == "usr/lib" || p == "usr/lib64" ||
           p == "usr/lib/sysimage" || p == "usr/lib/sysimage/rpm";
  }
  static std::string normal(std::string_view path) {
    std::string out;
    for (std::string_view part : livefs::packages::path_components(path)) {
      if (!out.empty()) out += '/';
      out += part;
    }
    return out;
  }
  std::string db_;
};

}  // namespace

// librpm 4.18's sqlite backend leaves the sqlite handle of a database it failed to open
// unclosed (about 100 KB per corrupt database; not livefs's to free): LeakSanitizer is told
// to ignore what sqlite allocated, and reports every other leak.
extern "C" const char* __lsan_default_suppressions() { return "leak:libsqlite3.so\n"; }

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // rpm's version order on pieces of the input: antisymmetric, reflexive.
  std::string_view head = input.substr(0, 64);
  size_t cut = head.find('\n');
  if (cut != std::string_view::npos) {
    std::string a(head.substr(0, cut)), b(head.substr(cut + 1));
    if (a.find('\0') == std::string::npos && b.find('\0') == std::string::npos) {
      int ab = livefs::packages::rpm::compare_versions(a, b);
      int ba = livefs::packages::rpm::compare_versions(b, a);
      FUZZ_CHECK(ab == -ba);
      FUZZ_CHECK(livefs::packages::rpm::compare_versions(a, a) == 0);
    }
  }

  RpmTree tree{std::string(input)};
  for (const char* served : {"usr", ""}) {
    auto opened = livefs::packages::open_package_db(tree, served);
    if (!opened) {
      FUZZ_CHECK(opened.error().message().find("usr/lib/sysimage/rpm") != std::string::npos);
      return 0;
    }
    FUZZ_CHECK(*opened != nullptr);  // the database file exists
    const PackageDb& db = **opened;
    FUZZ_CHECK(db.kind() == "rpm");
    for (const auto& info : db.packages()) {
      auto found = db.find(info.name);
      FUZZ_CHECK(found && *found == info);
      auto deps = db.dependencies(info.name);
      FUZZ_CHECK(deps.has_value());
      for (const auto& requirement : deps->requirements) FUZZ_CHECK(!requirement.empty());
      auto paths = db.files(info.name);
      FUZZ_CHECK(paths.has_value());
      FUZZ_CHECK(std::is_sorted(paths->begin(), paths->end(), livefs::store::path_less));
      for (const std::string& p : *paths) {
        auto owners = db.owners(p);
        FUZZ_CHECK(std::find(owners.begin(), owners.end(), info.name) != owners.end());
      }
    }
    (void)db.owners("");
    (void)db.file_owners("/bin/sh");
    (void)db.files("no-such-package");
  }
  return 0;
}
