// diff(): change kinds, type changes both ways, and that equal subtrees are skipped.
#include "store/diff.h"

#include <gtest/gtest.h>

#include <map>

#include "support/entries.h"

namespace livefs::store {
namespace {

using livefs::testing::file;

std::map<std::string, ChangeKind> changes(const Tree& a, const Tree& b) {
  std::map<std::string, ChangeKind> out;
  for (const Change& c : diff(a, b)) out[c.path] = c.kind;
  return out;
}

TEST(Diff, KindsOfChange) {
  Entry meta_old = file("etc/conf", "c"), meta_new = file("etc/conf", "c", 0600);
  Entry sym;
  sym.path = "bin/sh";
  sym.type = EntryType::symlink;
  sym.target = "bash";
  Entry sym2 = sym;
  sym2.target = "dash";
  auto a =
      Tree::build({file("bin/ls", "v1"), file("bin/rm", "rm"), meta_old, sym, file("same/x", "x")});
  auto b = Tree::build(
      {file("bin/ls", "v2"), file("bin/new", "n"), meta_new, sym2, file("same/x", "x")});
  ASSERT_TRUE(a && b);
  auto c = changes(*a, *b);
  EXPECT_EQ(c.size(), 5u);
  EXPECT_EQ(c["bin/ls"], ChangeKind::modified);
  EXPECT_EQ(c["bin/rm"], ChangeKind::removed);
  EXPECT_EQ(c["bin/new"], ChangeKind::added);
  EXPECT_EQ(c["etc/conf"], ChangeKind::metadata);
  EXPECT_EQ(c["bin/sh"], ChangeKind::modified);
  EXPECT_TRUE(diff(*a, *a).empty());
}

TEST(Diff, DirectoriesAddedRemovedAndTypeChanged) {
  auto a = Tree::build({file("d/x", "1"), file("d/y/z", "2"), file("f", "3"), file("gone/g", "4")});
  auto b = Tree::build({file("d", "now a file"), file("f/inner", "5"), file("new/n/m", "6")});
  ASSERT_TRUE(a && b);
  auto c = changes(*a, *b);
  EXPECT_EQ(c["d"], ChangeKind::type_changed);
  EXPECT_EQ(c["d/x"], ChangeKind::removed);
  EXPECT_EQ(c["d/y"], ChangeKind::removed);
  EXPECT_EQ(c["d/y/z"], ChangeKind::removed);
  EXPECT_EQ(c["f"], ChangeKind::type_changed);
  EXPECT_EQ(c["f/inner"], ChangeKind::added);
  EXPECT_EQ(c["gone"], ChangeKind::removed);
  EXPECT_EQ(c["gone/g"], ChangeKind::removed);
  EXPECT_EQ(c["new"], ChangeKind::added);
  EXPECT_EQ(c["new/n"], ChangeKind::added);
  EXPECT_EQ(c["new/n/m"], ChangeKind::added);
  EXPECT_EQ(c.size(), 11u);
  // In path order.
  auto list = diff(*a, *b);
  for (size_t i = 1; i < list.size(); ++i) EXPECT_TRUE(path_less(list[i - 1].path, list[i].path));
}

TEST(Diff, CostGrowsWithTheChangeNotTheTree) {
  // 200 directories of 1,000 files each; one file changes.
  std::vector<Entry> a_entries, b_entries;
  for (int d = 0; d < 200; ++d) {
    for (int f = 0; f < 1000; ++f) {
      std::string path = "usr/d" + std::to_string(d) + "/f" + std::to_string(f);
      a_entries.push_back(file(path, path));
      b_entries.push_back(file(path, d == 77 && f == 5 ? "changed" : path));
    }
  }
  auto a = Tree::build(std::move(a_entries));
  auto b = Tree::build(std::move(b_entries));
  ASSERT_TRUE(a && b);
  ASSERT_GT(a->size(), 200000u);
  size_t visited = 0;
  auto list = diff(*a, *b, &visited);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].path, "usr/d77/f5");
  EXPECT_EQ(list[0].kind, ChangeKind::modified);
  // The root, usr, its 200 directories, and the 1,000 files of d77 — not the 200,000.
  EXPECT_LE(visited, 1300u);
}

}  // namespace
}  // namespace livefs::store
