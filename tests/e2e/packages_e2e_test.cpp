// Package selection end to end in directory mode (the trees' /usr served, the package
// database beside it): dependency checks of `apply --package` on dpkg trees.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "live_support.h"
#include "support/temp_dir.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::write_file;
using json = nlohmann::json;

std::string stanza(const std::string& name, const std::string& version,
                   const std::string& fields = "") {
  return "Package: " + name + "\nStatus: install ok installed\nVersion: " + version +
         "\nArchitecture: amd64\n" + fields + "\n";
}

// booted: libdemo 1.0 and demo 1.0; staged: both 2.0, and demo 2.0 needs libdemo >= 2.0.
void write_dpkg_roots(const fs::path& booted, const fs::path& staged,
                      const std::string& staged_demo_fields) {
  for (const auto& [root, version] : {std::pair{booted, "1.0"}, std::pair{staged, "2.0"}}) {
    write_file(root / "usr/bin/demo", std::string("demo ") + version + "\n", 0755);
    write_file(root / "usr/lib/libdemo.so.1", std::string("libdemo ") + version + "\n");
    write_file(root / "var/lib/dpkg/info/demo.list", "/usr\n/usr/bin\n/usr/bin/demo\n");
    write_file(root / "var/lib/dpkg/info/libdemo.list", "/usr\n/usr/lib\n/usr/lib/libdemo.so.1\n");
  }
  write_file(booted / "var/lib/dpkg/status",
             stanza("demo", "1.0", "Depends: libdemo (>= 1.0)\n") + stanza("libdemo", "1.0"));
  write_file(staged / "var/lib/dpkg/status",
             stanza("demo", "2.0", staged_demo_fields) + stanza("libdemo", "2.0"));
}

struct DpkgWorld : LiveWorld {
  explicit DpkgWorld(const std::string& staged_demo_fields) {
    write_dpkg_roots(booted, staged, staged_demo_fields);
    settle();
  }
  Ran mount_usr() {
    mounted_at = mnt;
    return livefs("mount --booted " + quote((booted / "usr").string()) + " --staged " +
                  quote((staged / "usr").string()) + " " + state_arg() + " " +
                  quote(mnt.string()));
  }
};

TEST(PackagesE2e, DpkgRefusesAProgramWithoutTheLibraryItNeeds) {
  DpkgWorld w("Depends: libdemo (>= 2.0)\n");
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran refused = w.cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("demo 2.0 needs libdemo (>= 2.0); live has 1.0"), std::string::npos)
      << refused.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 1.0\n");
  Ran with = w.cmd("apply", "--package demo --with-deps --allow-replace");
  ASSERT_EQ(with.status, 0) << with.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 2.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/libdemo.so.1"), "libdemo 2.0\n");
}

TEST(PackagesE2e, AnUnreadableDependencyFieldRefusesUnlessIgnored) {
  DpkgWorld w("Depends: libdemo (>= \n");
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran refused = w.cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("demo Depends"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("--ignore-deps"), std::string::npos) << refused.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 1.0\n");
  // diff --by-package still groups (without what goes together).
  Ran diff = w.cmd("diff", "--by-package --json");
  ASSERT_EQ(diff.status, 0) << diff.out;
  Ran forced = w.cmd("apply", "--package demo --allow-replace --ignore-deps");
  ASSERT_EQ(forced.status, 0) << forced.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 2.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/libdemo.so.1"), "libdemo 1.0\n");
}

}  // namespace
}  // namespace livefs::e2e
