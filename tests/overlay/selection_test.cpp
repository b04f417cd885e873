// Selection: pending changes against the live layer, and the next layer a selection builds.
#include "overlay/selection.h"

#include <gtest/gtest.h>

#include "support/entries.h"

#include <algorithm>

namespace livefs::overlay {
namespace {

using livefs::testing::build_tree;
using livefs::testing::dir;
using livefs::testing::file;
using store::ChangeKind;
using store::Entry;
using store::EntryType;
using store::Tree;

// booted: bin/ls, bin/cat, etc/conf, lib/modules/6.1/vmlinuz, share/doc (dir with a file),
//         opt (a file)
// staged: bin/ls changed, bin/cat removed, bin/new added, new/dir/x added (new dirs),
//         lib/modules/6.1/vmlinuz changed, share/doc removed (whole dir), opt is now a dir.
struct Fixture {
  Tree booted =
      build_tree({dir(""), dir("bin"), file("bin/ls", "ls1"), file("bin/cat", "cat"), dir("etc"),
                  file("etc/conf", "c"), dir("lib"), dir("lib/modules"), dir("lib/modules/6.1"),
                  file("lib/modules/6.1/vmlinuz", "k1"), dir("share"), dir("share/doc"),
                  file("share/doc/readme", "r"), file("opt", "o")});
  Tree staged = build_tree({dir(""), dir("bin"), file("bin/ls", "ls2"), file("bin/new", "n"),
                            dir("etc"), file("etc/conf", "c"), dir("new"), dir("new/dir"),
                            file("new/dir/x", "x"), dir("lib"), dir("lib/modules"),
                            dir("lib/modules/6.1"), file("lib/modules/6.1/vmlinuz", "k2"),
                            dir("share"), dir("opt"), file("opt/y", "y")});
  Tree empty = build_tree({dir("")});
};

std::vector<std::string> paths_of(const std::vector<store::Change>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) out.push_back(c.path);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(Selection, AddingANewFileTakesOnlyItAndItsAncestors) {
  Fixture f;
  auto sel = select_changes({f.booted, f.staged, f.empty}, {"/bin/new"}, {});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_EQ(paths_of(sel->applied), std::vector<std::string>{"bin/new"});
  auto n = sel->layer.find("bin/new");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->object(), store::ObjectId::of("n"));
  auto b = sel->layer.find("bin");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->type(), EntryType::dir);
  EXPECT_FALSE(b->opaque());
  EXPECT_FALSE(sel->layer.find("bin/ls"));
  // Through the merged view: bin/new now shows, bin/ls is still booted.
  EXPECT_TRUE(resolve_merged(f.booted, sel->layer, "bin/new"));
  EXPECT_EQ(resolve_merged(f.booted, sel->layer, "bin/ls")->object, store::ObjectId::of("ls1"));
  // And it is no longer pending.
  auto pending = paths_of(pending_changes({f.booted, f.staged, sel->layer}));
  EXPECT_FALSE(contains(pending, "bin/new"));
  EXPECT_TRUE(contains(pending, "bin/ls"));
}

TEST(Selection, NewDirectoriesComeWithTheirContent) {
  Fixture f;
  auto sel = select_changes({f.booted, f.staged, f.empty}, {"new/dir/x"}, {});
  ASSERT_TRUE(sel) << sel.error().message();
  auto applied = paths_of(sel->applied);
  EXPECT_TRUE(contains(applied, "new"));
  EXPECT_TRUE(contains(applied, "new/dir"));
  EXPECT_TRUE(contains(applied, "new/dir/x"));
}

TEST(Selection, ReplacingNeedsAllowReplaceAndListsThePaths) {
  Fixture f;
  auto refused = select_changes({f.booted, f.staged, f.empty}, {"bin/ls", "bin/cat"}, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().context.find("--allow-replace"), std::string::npos);
  EXPECT_NE(refused.error().context.find("bin/ls"), std::string::npos);
  EXPECT_NE(refused.error().context.find("bin/cat"), std::string::npos);
  auto sel = select_changes({f.booted, f.staged, f.empty}, {"bin/ls", "bin/cat"},
                            {.all = false, .allow_replace = true});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_EQ(sel->layer.find("bin/cat")->type(), EntryType::whiteout);
  EXPECT_FALSE(resolve_merged(f.booted, sel->layer, "bin/cat"));
  EXPECT_EQ(resolve_merged(f.booted, sel->layer, "bin/ls")->object, store::ObjectId::of("ls2"));
}

TEST(Selection, RemovedDirectoryIsOneWhiteout) {
  Fixture f;
  auto sel = select_changes({f.booted, f.staged, f.empty}, {"share/doc"},
                            {.all = false, .allow_replace = true});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_EQ(sel->layer.find("share/doc")->type(), EntryType::whiteout);
  EXPECT_FALSE(sel->layer.find("share/doc/readme"));
  EXPECT_FALSE(resolve_merged(f.booted, sel->layer, "share/doc/readme"));
}

TEST(Selection, DirectoryReplacingAFileIsOpaque) {
  Fixture f;
  auto sel =
      select_changes({f.booted, f.staged, f.empty}, {"opt"}, {.all = false, .allow_replace = true});
  ASSERT_TRUE(sel) << sel.error().message();
  auto opt = sel->layer.find("opt");
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->type(), EntryType::dir);
  EXPECT_TRUE(opt->opaque());
  EXPECT_TRUE(resolve_merged(f.booted, sel->layer, "opt/y"));
}

TEST(Selection, KernelAndEmptySelectionsAreRefused) {
  Fixture f;
  auto kernel = select_changes({f.booted, f.staged, f.empty}, {"lib/modules"},
                               {.all = false, .allow_replace = true});
  ASSERT_FALSE(kernel);
  EXPECT_NE(kernel.error().context.find("kernel update: needs a reboot"), std::string::npos);
  auto none = select_changes({f.booted, f.staged, f.empty}, {"etc/conf"}, {});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().context, "selection matches no pending change: etc/conf");
  auto unknown = select_changes({f.booted, f.staged, f.empty}, {"/no/such/*"}, {});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().context.find("/no/such/*"), std::string::npos);
  EXPECT_TRUE(is_kernel_path("usr/lib/modules/6.1.0/vmlinuz"));
  EXPECT_TRUE(is_kernel_path("boot/initramfs-6.1.img"));
  EXPECT_FALSE(is_kernel_path("lib/modules/6.1/kernel/foo.ko"));
}

TEST(Selection, GlobsAndAllThenNothingIsPending) {
  Fixture f;
  auto glob = select_changes({f.booted, f.staged, f.empty}, {"bin/n*"}, {});
  ASSERT_TRUE(glob) << glob.error().message();
  EXPECT_EQ(paths_of(glob->applied), std::vector<std::string>{"bin/new"});
  auto all =
      select_changes({f.booted, f.staged, glob->layer}, {}, {.all = true, .allow_replace = true});
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_EQ(all->skipped_kernel, std::vector<std::string>{"lib/modules/6.1/vmlinuz"});
  EXPECT_FALSE(contains(paths_of(all->applied), "bin/new"));  // already live
  // Everything but the kernel is live: the merged view equals the staged tree there.
  auto pending = paths_of(pending_changes({f.booted, f.staged, all->layer}));
  EXPECT_EQ(pending, std::vector<std::string>{"lib/modules/6.1/vmlinuz"});
  for (size_t i = 0; i < f.staged.size(); ++i) {
    auto e = f.staged.entry(i);
    if (e.path() == "lib/modules/6.1/vmlinuz") continue;
    auto m = resolve_merged(f.booted, all->layer, e.path());
    ASSERT_TRUE(m) << e.path();
    EXPECT_TRUE(same_content(*m, e.to_entry())) << e.path();
  }
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "bin/cat"));
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "share/doc"));
}

}  // namespace
}  // namespace livefs::overlay
