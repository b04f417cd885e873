// The dpkg PackageDb read from real trees on disk: installed packages, file lists mapped to
// the served subdirectory (merged-/usr, multi-arch), owners, errors, and grouping changes.
#include <gtest/gtest.h>

#include <chrono>

#include "dpkg_fixture.h"
#include "packages/dpkg.h"
#include "packages/package_db.h"
#include "packages/tree_reader.h"
#include "support/temp_dir.h"

namespace livefs::packages {
namespace {

using fixture::FixtureOptions;
using fixture::write_os_tree;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using Paths = std::vector<std::string>;

std::unique_ptr<PackageDb> open_db(const TreeReader& reader, const std::string& served) {
  auto db = open_package_db(reader, served);
  EXPECT_TRUE(db) << db.error().message();
  EXPECT_TRUE(db && *db);
  return db ? std::move(*db) : nullptr;
}

TEST(DpkgDb, ListsInstalledPackagesOnly) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->kind(), "dpkg");
  EXPECT_EQ(db->location(), "var/lib/dpkg");
  std::vector<PackageInfo> expected = {
      {"coreutils", "9.1-1", "amd64"},
      {"dpkg", "1.21.22", "amd64"},
      {"libc6:amd64", "2.36-9+deb12u4", "amd64"},
      {"libc6:i386", "2.36-9+deb12u4", "i386"},
      {"oldpkg", "1.0", "all"},
  };
  EXPECT_EQ(db->packages(), expected);  // no half-configured, config-files, not-installed
}

TEST(DpkgDb, FindByNameAndArch) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->find("coreutils"));
  EXPECT_EQ(db->find("coreutils")->version, "9.1-1");
  EXPECT_EQ(db->find("coreutils:amd64")->name, "coreutils");
  EXPECT_FALSE(db->find("coreutils:i386"));
  // A bare multi-arch name finds the native (dpkg's) architecture.
  ASSERT_TRUE(db->find("libc6"));
  EXPECT_EQ(db->find("libc6")->name, "libc6:amd64");
  EXPECT_EQ(db->find("libc6:i386")->arch, "i386");
  EXPECT_FALSE(db->find("halfpkg"));
  EXPECT_FALSE(db->find("gonepkg"));
  EXPECT_FALSE(db->find("nosuch"));
}

TEST(DpkgDb, FilesMappedToServedUsr) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  auto files = db->files("coreutils");
  ASSERT_TRUE(files) << files.error().message();
  // "/bin/ls" is usr/bin/ls (bin -> usr/bin); "/usr" itself and "/etc/..." are outside.
  EXPECT_EQ(*files, (Paths{"bin", "bin/cat", "bin/ls", "share", "share/doc", "share/doc/coreutils",
                           "share/doc/coreutils/copyright"}));
  auto i386 = db->files("libc6:i386");
  ASSERT_TRUE(i386);
  EXPECT_EQ(*i386, (Paths{"lib", "lib/i386-linux-gnu", "lib/i386-linux-gnu/libc.so.6", "share",
                          "share/doc", "share/doc/libc6", "share/doc/libc6/copyright"}));
  auto native = db->files("libc6");
  ASSERT_TRUE(native);
  EXPECT_NE(std::find(native->begin(), native->end(), "lib/x86_64-linux-gnu/libc.so.6"),
            native->end());
}

TEST(DpkgDb, FilesMappedToWholeRoot) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "");
  ASSERT_TRUE(db);
  auto files = db->files("coreutils");
  ASSERT_TRUE(files);
  EXPECT_EQ(*files, (Paths{"etc", "etc/coreutils.conf", "usr", "usr/bin", "usr/bin/cat",
                           "usr/bin/ls", "usr/share", "usr/share/doc", "usr/share/doc/coreutils",
                           "usr/share/doc/coreutils/copyright"}));
  EXPECT_EQ(db->owners("usr/bin/ls"), Paths{"coreutils"});
  EXPECT_EQ(db->owners("etc/coreutils.conf"), Paths{"coreutils"});
}

TEST(DpkgDb, WithoutMergedUsrTopLevelBinIsOutsideUsr) {
  TempDir tmp;
  FixtureOptions options;
  options.merged_usr = false;
  write_os_tree(tmp.path(), options);
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  auto files = db->files("coreutils");
  ASSERT_TRUE(files);
  EXPECT_EQ(*files,
            (Paths{"share", "share/doc", "share/doc/coreutils", "share/doc/coreutils/copyright"}));
  EXPECT_TRUE(db->owners("bin/ls").empty());
}

TEST(DpkgDb, Owners) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->owners("bin/ls"), Paths{"coreutils"});
  EXPECT_EQ(db->owners("/bin/ls"), Paths{"coreutils"});
  EXPECT_EQ(db->owners("bin"), (Paths{"coreutils", "dpkg", "oldpkg"}));
  EXPECT_EQ(db->owners("lib/x86_64-linux-gnu/libc.so.6"), Paths{"libc6:amd64"});
  EXPECT_EQ(db->owners("share/doc/libc6/copyright"), (Paths{"libc6:amd64", "libc6:i386"}));
  EXPECT_EQ(db->owners("var/lib/dpkg"), Paths{});   // /var/lib/dpkg is outside usr
  EXPECT_TRUE(db->owners("bin/halftool").empty());  // half-configured: not installed
  EXPECT_TRUE(db->owners("bin/nothing").empty());
  EXPECT_TRUE(db->owners("").empty());
}

TEST(DpkgDb, UnknownPackageErrorNamesCloseOnes) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  auto typo = db->files("coreutil");
  ASSERT_FALSE(typo);
  EXPECT_EQ(typo.error().code, ENOENT);
  EXPECT_EQ(typo.error().context, "unknown package coreutil (close: coreutils)");
  auto other = db->files("zzzzzzzz");
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().context, "unknown package zzzzzzzz");
  auto half = db->files("halfpkg");
  ASSERT_FALSE(half);
  EXPECT_EQ(half.error().code, ENOENT);
  auto arch = db->files("libc6:arm64");
  ASSERT_FALSE(arch);
  EXPECT_EQ(arch.error().context, "unknown package libc6:arm64 (close: libc6)");
}

TEST(DpkgDb, DivertedFilesAreWhereTheDiversionPutsThem) {
  TempDir tmp;
  write_os_tree(tmp.path());
  // cat of coreutils diverted by dpkg; dpkg's own file "diverted" by itself stays put; a
  // local diversion (":") applies to every package.
  write_file(tmp / "var/lib/dpkg/diversions",
             "/bin/cat\n/usr/bin/cat.coreutils\ndpkg\n"
             "/usr/bin/dpkg\n/usr/bin/dpkg.orig\ndpkg\n"
             "/usr/bin/oldtool\n/usr/local/bin/oldtool\n:\n");
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->owners("bin/cat.coreutils"), Paths{"coreutils"});
  EXPECT_TRUE(db->owners("bin/cat").empty());
  EXPECT_EQ(db->owners("bin/dpkg"), Paths{"dpkg"});
  EXPECT_EQ(db->owners("local/bin/oldtool"), Paths{"oldpkg"});
  auto files = db->files("coreutils");
  ASSERT_TRUE(files);
  EXPECT_EQ(std::count(files->begin(), files->end(), "bin/cat.coreutils"), 1);
  EXPECT_EQ(std::count(files->begin(), files->end(), "bin/cat"), 0);

  write_file(tmp / "var/lib/dpkg/diversions", "/bin/cat\n/usr/bin/cat.coreutils\n");
  auto broken = open_package_db(*reader, "usr");
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code, EBADMSG);
  EXPECT_EQ(broken.error().context,
            "var/lib/dpkg/diversions: 2 lines, not a whole number of (from, to, package) triples");
}

TEST(DpkgDb, DatabaseUnderUsr) {
  TempDir tmp;
  FixtureOptions options;
  options.db_dir = "usr/var/lib/dpkg";
  write_os_tree(tmp.path(), options);
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->location(), "usr/var/lib/dpkg");
  auto files = db->files("dpkg");
  ASSERT_TRUE(files);
  EXPECT_EQ(*files, (Paths{"bin", "bin/dpkg"}));
  EXPECT_EQ(db->owners("bin/cat"), Paths{"coreutils"});
}

TEST(DpkgDb, CorruptStatusIsAClearError) {
  TempDir tmp;
  write_os_tree(tmp.path());
  write_file(tmp / "var/lib/dpkg/status",
             "Package: coreutils\nStatus: install ok installed\nVersion: 9.1-1\n\n"
             "Package: dpkg\nthis line is not a field\n");
  auto reader = directory_reader(tmp.path());
  auto db = open_package_db(*reader, "usr");
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, EBADMSG);
  EXPECT_EQ(db.error().context,
            "var/lib/dpkg/status line 6: expected 'Field: value', got 'this line is not a field'");
}

TEST(DpkgDb, NoDatabaseIsNull) {
  TempDir tmp;
  write_file(tmp / "usr/bin/ls", "ls");
  auto reader = directory_reader(tmp.path());
  auto db = open_package_db(*reader, "usr");
  ASSERT_TRUE(db) << db.error().message();
  EXPECT_EQ(*db, nullptr);
}

TEST(DpkgDb, UnreadableRootIsAnError) {
  TempDir tmp;
  auto reader = directory_reader(tmp / "missing");
  auto db = open_package_db(*reader, "usr");
  ASSERT_FALSE(db);
  EXPECT_EQ(db.error().code, ENOENT);
}

TEST(DpkgDb, SharedReaderKeepsTheTreeAlive) {
  TempDir tmp;
  write_os_tree(tmp.path());
  auto db = open_package_db(std::shared_ptr<const TreeReader>(directory_reader(tmp.path())), "usr");
  ASSERT_TRUE(db && *db);
  EXPECT_EQ((*db)->owners("bin/ls"), Paths{"coreutils"});
}

TEST(DpkgStatus, ParseErrors) {
  auto starts_with_continuation = dpkg::parse_status(" foo\nPackage: a\n", "status");
  ASSERT_FALSE(starts_with_continuation);
  EXPECT_EQ(starts_with_continuation.error().context,
            "status line 1: continuation line outside a field");
  auto no_package = dpkg::parse_status(
      "Package: a\nStatus: install ok installed\n\n\n"
      "Version: 1\nStatus: install ok installed\n",
      "status");
  ASSERT_FALSE(no_package);
  EXPECT_EQ(no_package.error().context, "status line 5: stanza without a Package field");
  auto no_status = dpkg::parse_status("Package: a\nVersion: 1\n", "status");
  ASSERT_FALSE(no_status);
  EXPECT_EQ(no_status.error().context, "status line 1: stanza of a without a Status field");
  auto binary = dpkg::parse_status(std::string_view("Package: a\n\0\0\0", 14), "status");
  ASSERT_FALSE(binary);
  EXPECT_EQ(binary.error().context, "status line 2: binary data (NUL byte)");
}

TEST(DpkgStatus, ParsesStanzas) {
  auto entries = dpkg::parse_status(
      "package: a\nstatus: install ok installed\nVersion:  1.0 \n"
      "Description: x\n y\n .\n\n  \n"
      "Package: b\nStatus: hold ok triggers-pending\nArchitecture: amd64\nMulti-Arch: same",
      "status");
  ASSERT_TRUE(entries) << entries.error().message();
  ASSERT_EQ(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].package, "a");
  EXPECT_EQ((*entries)[0].version, "1.0");
  EXPECT_EQ((*entries)[1].architecture, "amd64");
  EXPECT_EQ((*entries)[1].multi_arch, "same");
  EXPECT_TRUE(dpkg::is_installed((*entries)[1].status));
  EXPECT_TRUE(dpkg::is_installed("install ok installed"));
  EXPECT_FALSE(dpkg::is_installed("install ok unpacked"));
  EXPECT_FALSE(dpkg::is_installed("install reinstreq half-installed"));
  EXPECT_FALSE(dpkg::is_installed("deinstall ok config-files"));
}

TEST(DpkgStatus, ServedPath) {
  std::vector<std::string> merged = {"bin", "lib"};
  EXPECT_EQ(dpkg::served_path("/.", merged, "usr"), std::nullopt);
  EXPECT_EQ(dpkg::served_path("/usr", merged, "usr"), std::nullopt);
  EXPECT_EQ(dpkg::served_path("/usr/bin/ls", merged, "usr"), "bin/ls");
  EXPECT_EQ(dpkg::served_path("/bin/ls", merged, "usr"), "bin/ls");
  EXPECT_EQ(dpkg::served_path("/bin/ls", {}, "usr"), std::nullopt);
  EXPECT_EQ(dpkg::served_path("/usrlocal/x", merged, "usr"), std::nullopt);
  EXPECT_EQ(dpkg::served_path("/etc/foo", merged, "usr"), std::nullopt);
  EXPECT_EQ(dpkg::served_path("/etc/foo", merged, ""), "etc/foo");
  EXPECT_EQ(dpkg::served_path("/lib/x.so", merged, ""), "usr/lib/x.so");
  EXPECT_EQ(dpkg::served_path("/usr/lib/a b.so", merged, "usr"), "lib/a b.so");
}

TEST(GroupByPackage, UpgradedNewAndRemovedPackages) {
  TempDir tmp;
  write_os_tree(tmp / "booted");
  FixtureOptions staged;
  staged.coreutils_version = "9.1-2";
  staged.with_oldpkg = false;
  staged.with_newpkg = true;
  write_os_tree(tmp / "staged", staged);
  auto booted_reader = directory_reader(tmp / "booted");
  auto staged_reader = directory_reader(tmp / "staged");
  auto before = open_db(*booted_reader, "usr");
  auto after = open_db(*staged_reader, "usr");
  ASSERT_TRUE(before && after);

  Paths changed = {"bin", "bin/ls", "bin/newtool", "bin/oldtool", "local/bin/stray"};
  auto groups = group_by_package(changed, before.get(), after.get());
  std::vector<PackageChanges> expected = {
      // "bin" is shared by coreutils, dpkg and oldpkg/newpkg; coreutils changed version.
      {"coreutils", "9.1-1", "9.1-2", {"bin", "bin/ls"}},
      {"newpkg", "", "2.0", {"bin/newtool"}},
      {"oldpkg", "1.0", "", {"bin/oldtool"}},
      {"", "", "", {"local/bin/stray"}},
  };
  EXPECT_EQ(groups, expected);

  auto without_dbs = group_by_package(changed, nullptr, nullptr);
  ASSERT_EQ(without_dbs.size(), 1u);
  EXPECT_EQ(without_dbs[0].package, "");
  EXPECT_EQ(without_dbs[0].paths, changed);

  // Only a staged database: old versions are unknown.
  auto only_after = group_by_package({"bin/ls"}, nullptr, after.get());
  ASSERT_EQ(only_after.size(), 1u);
  EXPECT_EQ(only_after[0], (PackageChanges{"coreutils", "", "9.1-2", {"bin/ls"}}));
  EXPECT_TRUE(group_by_package({}, before.get(), after.get()).empty());
}

// A database the size of a full desktop install: every list is read once for the owner
// index, and every file resolves to its package.
TEST(DpkgDb, ThousandsOfPackages) {
  TempDir tmp;
  constexpr int kPackages = 3000;
  constexpr int kFilesEach = 60;
  std::string status;
  for (int p = 0; p < kPackages; ++p) {
    std::string name = "pkg" + std::to_string(p);
    status += "Package: " + name + "\nStatus: install ok installed\nArchitecture: amd64\n" +
              "Version: 1." + std::to_string(p) + "\nDescription: package " + name +
              "\n more text\n\n";
    std::string list = "/.\n/usr\n/usr/lib\n/usr/lib/" + name + "\n";
    for (int f = 0; f < kFilesEach; ++f) {
      list += "/usr/lib/" + name + "/file" + std::to_string(f) + ".so\n";
    }
    write_file(tmp / ("var/lib/dpkg/info/" + name + ".list"), list);
  }
  write_file(tmp / "var/lib/dpkg/status", status);
  std::filesystem::create_directories(tmp / "usr/lib");
  auto reader = directory_reader(tmp.path());
  auto db = open_db(*reader, "usr");
  ASSERT_TRUE(db);
  EXPECT_EQ(db->packages().size(), static_cast<size_t>(kPackages));
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(db->owners("lib/pkg2999/file59.so"), Paths{"pkg2999"});
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("owner index of %d files: %.3f s\n", kPackages * (kFilesEach + 2), seconds);
  EXPECT_EQ(db->owners("lib").size(), static_cast<size_t>(kPackages));
  for (int p = 0; p < kPackages; p += 97) {
    std::string name = "pkg" + std::to_string(p);
    EXPECT_EQ(db->owners("lib/" + name + "/file7.so"), Paths{name});
  }
}

}  // namespace
}  // namespace livefs::packages
