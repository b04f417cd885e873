// The dependency resolver over two real dpkg databases (a booted and a staged status file):
// requirements of the selected packages, of the live packages they change, virtual and
// versioned provides, multi-arch, and the closure --with-deps adds.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "packages/deps.h"
#include "packages/package_db.h"
#include "packages/rpm_fixture.h"
#include "packages/tree_reader.h"
#include "support/temp_dir.h"

namespace livefs::packages {
namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
using Names = std::vector<std::string>;

std::string stanza(const std::string& name, const std::string& version,
                   const std::string& extra = "", const std::string& arch = "amd64") {
  return "Package: " + name + "\nStatus: install ok installed\nArchitecture: " + arch +
         "\nVersion: " + version + "\n" + extra + "\n";
}

// The apt update of Debian 12 (2.6.1 -> 2.6.2, which needs its own libapt-pkg), a program
// whose old version cannot run with the new library, a virtual package and multi-arch.
struct Trees {
  TempDir tmp;
  std::unique_ptr<TreeReader> booted_reader, staged_reader;
  std::unique_ptr<PackageDb> booted, staged;

  explicit Trees(const std::string& extra_booted = "", const std::string& extra_staged = "") {
    std::string common = stanza("dpkg", "1.21.22") +
                         stanza("libc6", "2.36-9", "Multi-Arch: same\n") +
                         stanza("libc6", "2.36-9", "Multi-Arch: same\n", "i386") +
                         stanza("exim4", "4.96", "Provides: mail-transport-agent\n");
    write_file(tmp.path() / "booted/var/lib/dpkg/status",
               common +
                   stanza("apt", "2.6.1", "Depends: libapt-pkg6.0 (>= 2.6.1), libc6 (>= 2.34)\n") +
                   stanza("libapt-pkg6.0", "2.6.1", "Depends: libc6 (>= 2.34)\n") +
                   stanza("prog", "1.0", "Depends: libfoo (<< 2)\n") + stanza("libfoo", "1.0") +
                   extra_booted);
    write_file(tmp.path() / "staged/var/lib/dpkg/status",
               common +
                   stanza("apt", "2.6.2", "Depends: libapt-pkg6.0 (>= 2.6.2), libc6 (>= 2.34)\n") +
                   stanza("libapt-pkg6.0", "2.6.2", "Depends: libc6 (>= 2.34)\n") +
                   stanza("prog", "2.0", "Depends: libfoo (>= 2)\n") + stanza("libfoo", "2.0") +
                   extra_staged);
    booted_reader = directory_reader(tmp.path() / "booted");
    staged_reader = directory_reader(tmp.path() / "staged");
    auto b = open_package_db(*booted_reader, "usr");
    auto s = open_package_db(*staged_reader, "usr");
    EXPECT_TRUE(b && *b && s && *s);
    booted = std::move(*b);
    staged = std::move(*s);
  }

  std::unique_ptr<DependencyResolver> resolver(const std::set<std::string>& pending) const {
    auto r = DependencyResolver::create(booted.get(), staged.get(), pending);
    EXPECT_TRUE(r) << r.error().message();
    return r ? std::move(*r) : nullptr;
  }
};

const std::set<std::string> kAllPending = {"apt", "libapt-pkg6.0", "prog", "libfoo"};

TEST(DependencyResolver, RefusesAPackageWithoutTheNewerLibraryItNeeds) {
  Trees t;
  auto r = t.resolver(kAllPending);
  auto plan = r->plan({"apt"}, false);
  ASSERT_TRUE(plan) << plan.error().message();
  ASSERT_EQ(plan->problems.size(), 1u);
  EXPECT_EQ(plan->problems[0].text(), "apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2); live has 2.6.1");
  EXPECT_EQ(plan->problems[0].fixes, Names{"libapt-pkg6.0"});
  EXPECT_TRUE(plan->added.empty());
}

TEST(DependencyResolver, WithDepsAddsWhatIsNeeded) {
  Trees t;
  auto plan = t.resolver(kAllPending)->plan({"apt"}, true);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->problems.empty()) << plan->problems[0].text();
  ASSERT_EQ(plan->added.size(), 1u);
  EXPECT_EQ(plan->added[0].package, "libapt-pkg6.0");
  EXPECT_EQ(plan->added[0].because, "apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2)");
  EXPECT_EQ(plan->packages(), (Names{"apt", "libapt-pkg6.0"}));
}

TEST(DependencyResolver, ALibraryAloneIsFineWhenItsUsersAcceptIt) {
  Trees t;
  auto plan = t.resolver(kAllPending)->plan({"libapt-pkg6.0"}, false);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->problems.empty()) << plan->problems[0].text();
}

TEST(DependencyResolver, AnAlreadyLivePackageMeetsTheRequirement) {
  Trees t;
  // libapt-pkg6.0 has nothing pending: its staged version is live already.
  auto plan = t.resolver({"apt", "prog", "libfoo"})->plan({"apt"}, false);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->problems.empty()) << plan->problems[0].text();
}

TEST(DependencyResolver, AChangeThatBreaksALivePackageIsRefusedAndFixedWithItsNewVersion) {
  Trees t;
  auto r = t.resolver(kAllPending);
  auto plan = r->plan({"libfoo"}, false);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->problems.size(), 1u);
  EXPECT_FALSE(plan->problems[0].selected);
  EXPECT_EQ(plan->problems[0].text(),
            "live prog 1.0 needs libfoo (<< 2), which the apply would change (to 2.0)");
  auto with = r->plan({"libfoo"}, true);
  ASSERT_TRUE(with);
  EXPECT_TRUE(with->problems.empty());
  EXPECT_EQ(with->packages(), (Names{"libfoo", "prog"}));
  // And the other way round: prog 2.0 needs the new libfoo.
  auto prog = r->plan({"prog"}, true);
  ASSERT_TRUE(prog);
  EXPECT_EQ(prog->packages(), (Names{"prog", "libfoo"}));
}

TEST(DependencyResolver, VirtualPackagesAndVersionedProvides) {
  Trees t("", stanza("mailer", "1.0", "Depends: mail-transport-agent\n") +
                  stanza("needs-versioned", "1.0", "Depends: mail-transport-agent (>= 1)\n") +
                  stanza("gpgv-user", "1.0", "Depends: gpgv | gpgv2 | gpgv-new (>= 3)\n") +
                  stanza("gpgv-new", "3.0", "Provides: gpgv2 (= 3.0)\n"));
  auto r = t.resolver({"mailer", "needs-versioned", "gpgv-user", "gpgv-new"});
  auto mailer = r->plan({"mailer"}, false);
  ASSERT_TRUE(mailer);
  EXPECT_TRUE(mailer->problems.empty());
  // An unversioned provide never meets a versioned relation (dpkg).
  auto versioned = r->plan({"needs-versioned"}, false);
  ASSERT_TRUE(versioned);
  ASSERT_EQ(versioned->problems.size(), 1u);
  EXPECT_TRUE(versioned->problems[0].fixes.empty());
  EXPECT_EQ(versioned->problems[0].live, "none");
  // Any alternative; a versioned provide is a candidate.
  auto gpgv = r->plan({"gpgv-user"}, true);
  ASSERT_TRUE(gpgv);
  EXPECT_TRUE(gpgv->problems.empty());
  EXPECT_EQ(gpgv->packages(), (Names{"gpgv-user", "gpgv-new"}));
}

TEST(DependencyResolver, MultiArch) {
  Trees t("", stanza("amd64-only-dep", "1.0", "Depends: libbar\n") +
                  stanza("libbar", "1.0", "Multi-Arch: same\n", "i386") +
                  stanza("tool-user", "1.0", "Depends: tool:any, python3:native\n", "i386") +
                  stanza("tool", "1.0", "Multi-Arch: allowed\n") + stanza("python3", "3.11") +
                  stanza("foreign-user", "1.0", "Depends: dpkg\n", "i386"));
  auto r = t.resolver({"amd64-only-dep", "libbar", "tool-user", "tool", "python3", "foreign-user"});
  // An i386 library does not serve an amd64 package.
  auto plan = r->plan({"amd64-only-dep"}, true);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->problems.size(), 1u);
  EXPECT_TRUE(plan->problems[0].fixes.empty());
  // :any takes a Multi-Arch: allowed package of another architecture; :native the native one.
  auto tools = r->plan({"tool-user"}, true);
  ASSERT_TRUE(tools);
  EXPECT_TRUE(tools->problems.empty()) << tools->problems[0].text();
  EXPECT_EQ(tools->packages(), (Names{"tool-user", "tool", "python3"}));
  // Without Multi-Arch: foreign, dpkg (amd64) does not serve an i386 package.
  auto foreign = r->plan({"foreign-user"}, false);
  ASSERT_TRUE(foreign);
  EXPECT_EQ(foreign->problems.size(), 1u);
}

// dpkg: a package that became Architecture: all is still the package the others need.
TEST(DependencyResolver, APackageWhoseArchitectureChangedIsOnePackage) {
  Trees t(stanza("data", "1.0") + stanza("user", "1.0", "Depends: data (>= 1.0)\n"),
          stanza("data", "1.1", "", "all") + stanza("user", "1.1", "Depends: data (>= 1.0)\n"));
  auto r = t.resolver({"user", "data"});
  auto plan = r->plan({"user"}, false);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->problems.empty()) << plan->problems[0].text();
  auto data = r->plan({"data"}, false);
  ASSERT_TRUE(data);
  EXPECT_TRUE(data->problems.empty()) << data->problems[0].text();
}

// --with-deps adds what the requirements need and no more: a package that meets two of
// them is added once, and nothing else for the second.
TEST(DependencyResolver, WithDepsAddsNoMoreThanNeeded) {
  Trees t("", stanza("p", "1.0", "Depends: zlib (>= 2), virt\n") +
                  stanza("zlib", "2.0", "Provides: virt\n") +
                  stanza("alib", "1.0", "Provides: virt\n"));
  auto plan = t.resolver({"p", "zlib", "alib"})->plan({"p"}, true);
  ASSERT_TRUE(plan);
  EXPECT_TRUE(plan->problems.empty());
  EXPECT_EQ(plan->packages(), (Names{"p", "zlib"}));
}

// RPM with multilib: libdemo is installed for x86_64 and i686 (named libdemo.x86_64 and
// libdemo.i686); demo 2.0's "Requires: libdemo >= 2.0" still names the package.
TEST(DependencyResolver, RpmMultilibPackagesAreFoundByTheirName) {
  namespace rf = rpm_fixture;
  if (!rf::have_rpm_tools()) GTEST_SKIP() << "rpm/rpmbuild not installed";
  const rf::BuiltRpms& rpms = rf::built_rpms();
  ASSERT_EQ(rpms.error, "");
  TempDir tmp;
  rf::write_merged_usr_root(tmp.path() / "booted");
  rf::write_merged_usr_root(tmp.path() / "staged");
  ASSERT_EQ(rf::install_rpms(tmp.path() / "booted", rf::DbLayout::sysimage,
                             {rpms.libdemo1, rpms.libdemo1_i686, rpms.demo1}),
            "");
  ASSERT_EQ(rf::install_rpms(tmp.path() / "staged", rf::DbLayout::sysimage,
                             {rpms.libdemo2, rpms.libdemo1_i686, rpms.demo2}, "--replacefiles"),
            "");
  auto booted_reader = directory_reader(tmp.path() / "booted");
  auto staged_reader = directory_reader(tmp.path() / "staged");
  auto booted = open_package_db(*booted_reader, "usr");
  auto staged = open_package_db(*staged_reader, "usr");
  ASSERT_TRUE(booted && *booted && staged && *staged);
  ASSERT_EQ((*staged)->kind(), "rpm");
  auto r = DependencyResolver::create(booted->get(), staged->get(), {"demo", "libdemo.x86_64"});
  ASSERT_TRUE(r) << r.error().message();
  auto plan = (*r)->plan({"demo"}, false);
  ASSERT_TRUE(plan);
  ASSERT_EQ(plan->problems.size(), 1u);
  EXPECT_EQ(plan->problems[0].text(), "demo 2.0-1 needs libdemo (>= 2.0); live has 1.0-1");
  EXPECT_EQ(plan->problems[0].fixes, Names{"libdemo-2.0-1.x86_64"});
  auto with = (*r)->plan({"demo"}, true);
  ASSERT_TRUE(with);
  EXPECT_TRUE(with->problems.empty()) << with->problems[0].text();
  EXPECT_EQ(with->packages(), (Names{"demo", "libdemo-2.0-1.x86_64"}));
}

TEST(DependencyResolver, UnknownPackagesAndMustGoTogether) {
  Trees t;
  auto r = t.resolver(kAllPending);
  auto unknown = r->plan({"nosuch"}, false);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, ENOENT);
  auto together = r->must_go_together();
  std::map<std::string, Names> by_package(together.begin(), together.end());
  EXPECT_EQ(by_package["apt"], Names{"libapt-pkg6.0"});
  EXPECT_EQ(by_package["prog"], Names{"libfoo"});
  EXPECT_EQ(by_package["libfoo"], Names{"prog"});
  EXPECT_FALSE(by_package.contains("libapt-pkg6.0"));
}

}  // namespace
}  // namespace livefs::packages
