// The RPM PackageDb on trees built with rpmbuild and installed with `rpm --root`: packages,
// names of packages installed more than once, file lists mapped to the served directory,
// owners, Requires/Provides, rpm's version order, the database locations, corrupt databases,
// and the same answers through a manifest in the store.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "packages/package_db.h"
#include "packages/rpm.h"
#include "packages/tree_reader.h"
#include "rpm_fixture.h"
#include "store/import.h"
#include "store/object_store.h"
#include "store_import.h"
#include "support/temp_dir.h"

namespace livefs::packages {

// Readable failures: "libdemo (>= 2.0)" rather than bytes.
void PrintTo(const Relation& r, std::ostream* out) { *out << relation_text(r); }

namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
using rpm_fixture::DbLayout;
using rpm_fixture::Version;
using Names = std::vector<std::string>;
namespace fs = std::filesystem;

#define SKIP_WITHOUT_RPM()                                                            \
  do {                                                                                \
    if (!rpm_fixture::have_rpm_tools()) GTEST_SKIP() << "rpmbuild/rpm not installed"; \
  } while (0)

std::unique_ptr<PackageDb> open_dir(const fs::path& root, const std::string& served = "usr") {
  auto reader = directory_reader(root);
  std::shared_ptr<const TreeReader> shared = std::move(reader);
  auto db = open_package_db(shared, served);
  EXPECT_TRUE(db) << db.error().message();
  if (!db) return nullptr;
  EXPECT_TRUE(*db) << "no database found in " << root;
  return std::move(*db);
}

Relation rel(std::string name, VersionOp op = VersionOp::any, std::string version = "") {
  return Relation{std::move(name), "", op, std::move(version)};
}

template <typename T>
std::vector<T> sorted(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v;
}

template <typename T>
bool contains(const std::vector<T>& v, const T& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

TEST(RpmDb, ReadsABootedRoot) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->kind(), "rpm");
  EXPECT_EQ(db->location(), "usr/lib/sysimage/rpm");
  EXPECT_EQ(db->packages(), (std::vector<PackageInfo>{{"demo", "1.0-1", "x86_64"},
                                                      {"libdemo", "1.0-1", "x86_64"}}));
  EXPECT_EQ(db->native_arch(), "x86_64");
  for (const char* name : {"demo", "demo.x86_64", "demo-1.0-1", "demo-1.0-1.x86_64"}) {
    auto found = db->find(name);
    ASSERT_TRUE(found) << name;
    EXPECT_EQ(found->name, "demo") << name;
  }
  EXPECT_FALSE(db->find("demo.i686"));
  EXPECT_FALSE(db->find("dem"));

  // Paths in the served usr/: the %config file, the %ghost (owned, though not on disk) and
  // the %dir directory included.
  EXPECT_EQ(db->files("libdemo").value(),
            (Names{"bin/libdemo-config", "etc/libdemo.conf", "lib64/libdemo.cache",
                   "lib64/libdemo.so.1", "share/libdemo"}));
  EXPECT_EQ(db->files("demo").value(), Names{"bin/demo"});
  auto unknown = db->files("libdem");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ENOENT);
  EXPECT_NE(unknown.error().context.find("close: libdemo"), std::string::npos)
      << unknown.error().context;

  EXPECT_EQ(db->owners("lib64/libdemo.so.1"), Names{"libdemo"});
  EXPECT_EQ(db->owners("/bin/demo"), Names{"demo"});
  EXPECT_EQ(db->owners("lib64/libdemo.cache"), Names{"libdemo"});
  EXPECT_EQ(db->owners("lib/os-release"), Names{});
  EXPECT_EQ(db->owners(""), Names{});
}

TEST(RpmDb, WholeRootServed) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  auto db = open_dir(tmp / "root", "");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->files("demo").value(), Names{"usr/bin/demo"});
  EXPECT_EQ(db->owners("usr/lib64/libdemo.so.1"), Names{"libdemo"});
  EXPECT_EQ(db->owners("lib64/libdemo.so.1"), Names{});
}

TEST(RpmDb, FileOwnersByOsPathThroughMergedUsr) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  // What demo's "Requires: /bin/libdemo-config" asks for: /bin is /usr/bin.
  EXPECT_EQ(db->file_owners("/bin/libdemo-config"), Names{"libdemo"});
  EXPECT_EQ(db->file_owners("/usr/bin/libdemo-config"), Names{"libdemo"});
  EXPECT_EQ(db->file_owners("/lib64/libdemo.so.1"), Names{"libdemo"});
  EXPECT_EQ(db->file_owners("/usr/bin/nothing"), Names{});
  EXPECT_EQ(db->file_owners("/"), Names{});
}

TEST(RpmDb, RequiresAndProvides) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "booted", Version::v1), "");
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "staged", Version::v2), "");
  auto booted = open_dir(tmp / "booted");
  auto staged = open_dir(tmp / "staged");
  ASSERT_TRUE(booted && staged);

  // rpmlib() features and the scriptlet's /bin/sh are not requirements.
  auto demo = staged->dependencies("demo");
  ASSERT_TRUE(demo) << demo.error().message();
  EXPECT_EQ(sorted(demo->requirements), sorted<Requirement>({{rel("libdemo", VersionOp::ge, "2.0")},
                                                             {rel("libdemo.so.1()(64bit)")},
                                                             {rel("/bin/libdemo-config")}}));
  EXPECT_EQ(demo->provides, (std::vector<Relation>{rel("demo(x86-64)", VersionOp::eq, "2.0-1")}));
  EXPECT_EQ(demo->multi_arch, "");
  EXPECT_EQ(booted->dependencies("demo")->requirements.size(), 3u);
  EXPECT_TRUE(contains(booted->dependencies("demo")->requirements,
                       Requirement{rel("libdemo", VersionOp::ge, "1.0")}));

  // libdemo's own config(libdemo) requirement is met by itself.
  auto libdemo = staged->dependencies("libdemo");
  ASSERT_TRUE(libdemo);
  EXPECT_EQ(libdemo->requirements, std::vector<Requirement>{});
  EXPECT_EQ(sorted(libdemo->provides),
            sorted<Relation>({rel("config(libdemo)", VersionOp::eq, "2.0-1"),
                              rel("libdemo(x86-64)", VersionOp::eq, "2.0-1"),
                              rel("libdemo.so.1()(64bit)")}));
  EXPECT_EQ(staged->dependencies("nothing").error().code, ENOENT);

  // What the booted libdemo offers does not meet the staged demo's requirement.
  auto live = booted->find("libdemo");
  ASSERT_TRUE(live);
  EXPECT_FALSE(version_satisfies(*staged, live->version, VersionOp::ge, "2.0"));
  EXPECT_TRUE(version_satisfies(*staged, staged->find("libdemo")->version, VersionOp::ge, "2.0"));
}

TEST(RpmDb, RichScriptletAndWeakRequirements) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  const char* spec = R"(Name: oddities
Version: 3
Release: 2
Epoch: 1
Summary: every kind of requirement
License: MIT
BuildArch: noarch
AutoReqProv: no
Requires: (libdemo or libother >= 2)
Requires: (alpha and (beta or gamma))
Requires: (glibc if kernel)
Requires: plain >= 1:2-3
Requires: oddities-self
Provides: oddities-self
Requires(post): bar
Requires(pre,postun): baz
Requires(interp): /bin/zsh
PreReq: old
Recommends: weak
Requires: /usr/share/oddities/data
%description
x
%install
mkdir -p %{buildroot}/usr/share/oddities
echo data > %{buildroot}/usr/share/oddities/data
%files
/usr/share/oddities/data
)";
  ASSERT_EQ(rpm_fixture::build_spec(tmp / "build", "oddities", spec), "");
  rpm_fixture::write_merged_usr_root(tmp / "root");
  ASSERT_EQ(rpm_fixture::install_rpms(tmp / "root", DbLayout::sysimage,
                                      {tmp / "build/RPMS/noarch/oddities-3-2.noarch.rpm"}),
            "");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->find("oddities")->version, "1:3-2");
  auto deps = db->dependencies("oddities");
  ASSERT_TRUE(deps);
  // "or" is alternatives, "and" separate requirements; "if" depends on what else is
  // installed and is left out, as are scriptlets' requirements, rpmlib() and what the
  // package provides itself (a name, its own file).
  EXPECT_EQ(sorted(deps->requirements),
            sorted<Requirement>({{rel("libdemo"), rel("libother", VersionOp::ge, "2")},
                                 {rel("alpha")},
                                 {rel("beta"), rel("gamma")},
                                 {rel("plain", VersionOp::ge, "1:2-3")}}));
  EXPECT_TRUE(contains(deps->provides, rel("oddities-self")));
}

TEST(RpmDb, CompareVersionsAsRpm) {
  EXPECT_GT(rpm::compare_versions("1:1.0-1", "2.0-1"), 0);
  EXPECT_LT(rpm::compare_versions("1.0~rc1-1", "1.0-1"), 0);
  EXPECT_LT(rpm::compare_versions("1.0~rc1", "1.0"), 0);
  EXPECT_GT(rpm::compare_versions("1.0^git1", "1.0"), 0);
  EXPECT_GT(rpm::compare_versions("1.10-1", "1.9-1"), 0);
  EXPECT_EQ(rpm::compare_versions("0:1.0-1", "1.0-1"), 0);
  EXPECT_GT(rpm::compare_versions("1.0-2", "1.0-1"), 0);
  // A requirement without a release matches any release.
  EXPECT_EQ(rpm::compare_versions("2.0-1", "2.0"), 0);
  EXPECT_LT(rpm::compare_versions("1.0-1", "2.0"), 0);
}

TEST(RpmDb, DatabaseLocations) {
  SKIP_WITHOUT_RPM();
  for (DbLayout layout : {DbLayout::sysimage, DbLayout::usr_share, DbLayout::var_lib}) {
    TempDir tmp;
    ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v2, layout), "");
    auto db = open_dir(tmp / "root");
    ASSERT_TRUE(db);
    EXPECT_EQ(db->location(), rpm_fixture::db_dir(layout));
    EXPECT_EQ(db->find("demo")->version, "2.0-1");
    EXPECT_EQ(db->owners("bin/demo"), Names{"demo"});
  }
}

// rpm-ostree keeps the database in usr/share/rpm and points the others at it.
TEST(RpmDb, SymlinkedLocation) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1, DbLayout::usr_share), "");
  fs::create_directories(tmp / "root/usr/lib/sysimage");
  fs::create_directory_symlink("../../share/rpm", tmp / "root/usr/lib/sysimage/rpm");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->location(), "usr/lib/sysimage/rpm");
  EXPECT_EQ(db->packages().size(), 2u);
}

TEST(RpmDb, MultilibNamesCarryTheArch) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  const auto& rpms = rpm_fixture::built_rpms();
  ASSERT_EQ(rpms.error, "");
  rpm_fixture::write_merged_usr_root(tmp / "root");
  ASSERT_EQ(
      rpm_fixture::install_rpms(tmp / "root", DbLayout::sysimage,
                                {rpms.libdemo1, rpms.libdemo1_i686, rpms.demo1}, "--replacefiles"),
      "");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->packages(), (std::vector<PackageInfo>{{"demo", "1.0-1", "x86_64"},
                                                      {"libdemo.i686", "1.0-1", "i686"},
                                                      {"libdemo.x86_64", "1.0-1", "x86_64"}}));
  EXPECT_EQ(db->find("libdemo")->name, "libdemo.x86_64");
  EXPECT_EQ(db->find("libdemo-1.0-1.i686")->name, "libdemo.i686");
  EXPECT_EQ(db->owners("lib64/libdemo.so.1"), (Names{"libdemo.i686", "libdemo.x86_64"}));
  EXPECT_EQ(db->files("libdemo.i686").value(), db->files("libdemo.x86_64").value());
}

TEST(RpmDb, SeveralVersionsNamedByVersion) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  const auto& rpms = rpm_fixture::built_rpms();
  ASSERT_EQ(rpm_fixture::install_rpms(tmp / "root", DbLayout::sysimage, {rpms.libdemo2},
                                      "--replacefiles"),
            "");
  auto db = open_dir(tmp / "root");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->packages(), (std::vector<PackageInfo>{{"demo", "1.0-1", "x86_64"},
                                                      {"libdemo-1.0-1", "1.0-1", "x86_64"},
                                                      {"libdemo-2.0-1", "2.0-1", "x86_64"}}));
  // A bare name is the newest.
  EXPECT_EQ(db->find("libdemo")->name, "libdemo-2.0-1");
  EXPECT_EQ(db->find("libdemo.x86_64")->name, "libdemo-2.0-1");
  EXPECT_EQ(db->find("libdemo-1.0-1.x86_64")->name, "libdemo-1.0-1");
  EXPECT_EQ(db->dependencies("libdemo-1.0-1")->provides.front().version, "1.0-1");
}

TEST(RpmDb, CorruptDatabaseIsAnErrorNamingIt) {
  for (const char* file : {"rpmdb.sqlite", "Packages", "Packages.db"}) {
    TempDir tmp;
    rpm_fixture::write_merged_usr_root(tmp / "root");
    std::string garbage(8192, '\0');
    for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>(i * 7919 % 251);
    write_file(tmp / "root/usr/lib/sysimage/rpm" / file, garbage);
    auto reader = directory_reader(tmp / "root");
    auto db = open_package_db(*reader, "usr");
    ASSERT_FALSE(db) << file << ": opened with " << (*db ? (*db)->packages().size() : 0)
                     << " packages";
    EXPECT_NE(db.error().message().find("usr/lib/sysimage/rpm"), std::string::npos)
        << db.error().message();
  }
}

TEST(RpmDb, TruncatedDatabaseIsAnError) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  // Everything in the main file (no WAL), then half of it.
  fs::path dir = tmp / "root/usr/lib/sysimage/rpm";
  if (livefs::testing::run("command -v sqlite3 >/dev/null") != 0) {
    GTEST_SKIP() << "sqlite3 not installed";
  }
  ASSERT_EQ(livefs::testing::run("sqlite3 " + (dir / "rpmdb.sqlite").string() +
                                 " 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null"),
            0);
  fs::resize_file(dir / "rpmdb.sqlite", fs::file_size(dir / "rpmdb.sqlite") / 2);
  fs::remove(dir / "rpmdb.sqlite-wal");
  auto reader = directory_reader(tmp / "root");
  auto db = open_package_db(*reader, "usr");
  ASSERT_FALSE(db);
  EXPECT_NE(db.error().message().find("usr/lib/sysimage/rpm"), std::string::npos)
      << db.error().message();
}

TEST(RpmDb, NoDatabaseIsNull) {
  TempDir tmp;
  rpm_fixture::write_merged_usr_root(tmp / "root");
  auto reader = directory_reader(tmp / "root");
  auto none = open_package_db(*reader, "usr");
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(*none);
  // A Debian host with the rpm tool has an empty /var/lib/rpm.
  fs::create_directories(tmp / "root/var/lib/rpm");
  fs::create_directories(tmp / "root/usr/lib/sysimage/rpm");
  write_file(tmp / "root/usr/lib/sysimage/rpm/.rpm.lock", "");
  auto empty = open_package_db(*reader, "usr");
  ASSERT_TRUE(empty) << empty.error().message();
  EXPECT_FALSE(*empty);
}

// The private copy of the database is gone once open returns.
TEST(RpmDb, LeavesNoCopyBehind) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v1), "");
  fs::create_directories(tmp / "tmpdir");
  const char* saved = std::getenv("TMPDIR");
  std::string saved_value = saved ? saved : "";
  ::setenv("TMPDIR", (tmp / "tmpdir").c_str(), 1);
  auto db = open_dir(tmp / "root");
  if (saved) {
    ::setenv("TMPDIR", saved_value.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  ASSERT_TRUE(db);
  EXPECT_TRUE(fs::is_empty(tmp / "tmpdir"));
}

using testing::import;
using testing::Imported;

// A staged deployment is a manifest of usr/ in the store: the database is read from there
// (copied out, as librpm needs files), with the same answers as from the directory.
TEST(RpmDb, ThroughAManifestOfUsr) {
  SKIP_WITHOUT_RPM();
  for (DbLayout layout : {DbLayout::sysimage, DbLayout::usr_share}) {
    TempDir tmp;
    ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "root", Version::v2, layout), "");
    Imported usr = import(tmp / "root/usr", tmp / "store");
    ASSERT_TRUE(usr.tree);
    std::shared_ptr<const TreeReader> reader = manifest_reader(*usr.tree, usr.store, "usr");
    auto from_manifest = open_package_db(reader, "usr");
    ASSERT_TRUE(from_manifest) << from_manifest.error().message();
    ASSERT_TRUE(*from_manifest);
    auto from_disk = open_dir(tmp / "root");
    ASSERT_TRUE(from_disk);
    const PackageDb& m = **from_manifest;
    EXPECT_EQ(m.location(), rpm_fixture::db_dir(layout));
    EXPECT_EQ(m.packages(), from_disk->packages());
    for (const PackageInfo& p : m.packages()) {
      EXPECT_EQ(m.files(p.name).value(), from_disk->files(p.name).value()) << p.name;
      EXPECT_EQ(m.dependencies(p.name)->requirements,
                from_disk->dependencies(p.name)->requirements);
    }
    // No /bin in sight: /bin/libdemo-config can only be /usr/bin/libdemo-config.
    EXPECT_EQ(m.file_owners("/bin/libdemo-config"), Names{"libdemo"});
    EXPECT_EQ(m.owners("bin/demo"), Names{"demo"});
  }
}

// librpm's state is process-wide: databases opened from several threads at once.
TEST(RpmDb, OpensFromSeveralThreads) {
  SKIP_WITHOUT_RPM();
  TempDir tmp;
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "a", Version::v1), "");
  ASSERT_EQ(rpm_fixture::write_rpm_root(tmp / "b", Version::v2, DbLayout::usr_share), "");
  std::vector<std::string> versions(8);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < versions.size(); ++i) {
    threads.emplace_back([&, i] {
      for (int round = 0; round < 5; ++round) {
        auto reader = directory_reader(tmp / (i % 2 ? "b" : "a"));
        auto db = open_package_db(*reader, "usr");
        if (!db || !*db) {
          versions[i] = "failed";
          return;
        }
        versions[i] = (*db)->find("libdemo")->version;
        (void)(*db)->compare_versions("1.0", "2.0");
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < versions.size(); ++i) {
    EXPECT_EQ(versions[i], i % 2 ? "2.0-1" : "1.0-1");
  }
}

}  // namespace
}  // namespace livefs::packages
