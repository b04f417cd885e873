// dpkg's version order and relation fields, checked against what dpkg itself answers.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "dpkg_fixture.h"
#include "packages/dpkg.h"
#include "packages/package_db.h"
#include "packages/tree_reader.h"
#include "support/temp_dir.h"

namespace livefs::packages::dpkg {
namespace {

TEST(DpkgVersion, OrdersAsDebianPolicySays) {
  struct Case {
    const char* a;
    const char* b;
    int expected;
  };
  const Case cases[] = {
      {"2.6.1", "2.6.2", -1},
      {"2.6.2", "2.6.2", 0},
      {"1.0", "1.0-0", 0},      // no revision is revision "0"
      {"1.0~rc1", "1.0", -1},   // "~" sorts before the end
      {"1.0~rc1", "1.0~~", 1},  // and before anything, itself included
      {"1.0a", "1.0+", -1},     // letters before other characters
      {"1.0", "1.0a", -1},      // the end before a letter
      {"1:1.0", "2.0", 1},      // the epoch first
      {"0:2.0", "2.0", 0},      // epoch 0 is no epoch
      {"1.010", "1.9", 1},      // digit runs numerically
      {"1.0001", "1.1", 0},     // leading zeros ignored
      {"2.36-9+deb12u4", "2.36-9+deb12u14", -1},
      {"1:1.2.2.3", "1:1.2.13.dfsg-1", -1},
      {"0.0~r127", "1.9.4-1", -1},
      {"1.2-3-4", "1.2-3-5", -1},        // the revision is after the last '-'
      {"99999999999999999999", "1", 1},  // digit runs longer than any integer
  };
  for (const Case& c : cases) {
    EXPECT_EQ(compare_versions(c.a, c.b), c.expected) << c.a << " vs " << c.b;
    EXPECT_EQ(compare_versions(c.b, c.a), -c.expected) << c.b << " vs " << c.a;
  }
}

// The same order as `dpkg --compare-versions`, over pairs that exercise every rule.
TEST(DpkgVersion, AgreesWithDpkg) {
  if (std::system("command -v dpkg >/dev/null 2>&1") != 0) GTEST_SKIP() << "no dpkg here";
  const char* versions[] = {"1.0",  "1.0-1",  "1.0~b1", "1:0.9",      "1.0+dfsg", "1.0a",
                            "1.00", "1.0.1",  "2",      "1.0-1~bpo1", "1.0-1+b1", "0:1.0",
                            "1.0~", "1.0~~a", "10.0",   "9.9z"};
  for (const char* a : versions) {
    for (const char* b : versions) {
      std::string command = std::string("dpkg --compare-versions '") + a + "' lt '" + b + "'";
      bool dpkg_less = std::system(command.c_str()) == 0;
      EXPECT_EQ(compare_versions(a, b) < 0, dpkg_less) << a << " vs " << b;
    }
  }
}

TEST(DpkgRelations, ParsesAlternativesArchitecturesAndConstraints) {
  auto parsed = parse_relations(
      "adduser, gpgv | gpgv2 | gpgv1, libapt-pkg6.0 (>= 2.6.2), python3:any (>> 3.9~),"
      " libc6 (<< 2.37), foo (= 1:1.0-1), bar(<=2), baz (< 3), qux (>4),",
      "apt Depends");
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_EQ(parsed->size(), 9u);
  EXPECT_EQ(requirement_text((*parsed)[1]), "gpgv | gpgv2 | gpgv1");
  EXPECT_EQ((*parsed)[2][0], (Relation{"libapt-pkg6.0", "", VersionOp::ge, "2.6.2"}));
  EXPECT_EQ((*parsed)[3][0], (Relation{"python3", "any", VersionOp::gt, "3.9~"}));
  EXPECT_EQ((*parsed)[4][0].op, VersionOp::lt);
  EXPECT_EQ((*parsed)[5][0], (Relation{"foo", "", VersionOp::eq, "1:1.0-1"}));
  EXPECT_EQ((*parsed)[6][0], (Relation{"bar", "", VersionOp::le, "2"}));
  EXPECT_EQ((*parsed)[7][0].op, VersionOp::le);  // dpkg's obsolete "<"
  EXPECT_EQ((*parsed)[8][0].op, VersionOp::ge);  // and ">"
  EXPECT_EQ(requirement_text((*parsed)[2]), "libapt-pkg6.0 (>= 2.6.2)");
  auto empty = parse_relations("", "x Depends");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->empty());
}

TEST(DpkgRelations, RejectsWhatIsNotARelation) {
  for (const char* bad : {"foo (>= )", "foo (~ 1)", "foo (>= 1", "| bar", "foo bar",
                          "foo:", "foo (>= 1) x", "f\xff"}) {
    auto parsed = parse_relations(bad, "p Depends");
    ASSERT_FALSE(parsed) << bad;
    EXPECT_EQ(parsed.error().code, EBADMSG);
    EXPECT_NE(parsed.error().message().find("p Depends"), std::string::npos);
  }
}

TEST(DpkgRelations, TheDatabaseGivesEachPackagesDependencies) {
  livefs::testing::TempDir tmp;
  fixture::write_os_tree(tmp.path());
  auto reader = directory_reader(tmp.path());
  auto db = open_package_db(*reader, "usr");
  ASSERT_TRUE(db && *db);
  auto deps = (*db)->dependencies("coreutils");
  ASSERT_TRUE(deps) << deps.error().message();
  // Pre-Depends, continued over two lines in the status file.
  ASSERT_EQ(deps->requirements.size(), 4u);
  EXPECT_EQ(requirement_text(deps->requirements[3]), "libgmp10 (>= 2:6.2.1+dfsg1)");
  EXPECT_EQ(deps->multi_arch, "foreign");
  EXPECT_EQ((*db)->native_arch(), "amd64");
  EXPECT_FALSE((*db)->dependencies("nosuchpackage"));
  EXPECT_GT((*db)->compare_versions("2.6.2", "2.6.1"), 0);
  EXPECT_TRUE(version_satisfies(**db, "2.6.2", VersionOp::ge, "2.6.2"));
  EXPECT_FALSE(version_satisfies(**db, "2.6.1", VersionOp::ge, "2.6.2"));
}

}  // namespace
}  // namespace livefs::packages::dpkg
