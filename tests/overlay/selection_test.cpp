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

// booted and staged differ in metadata only: a directory's mtime and mode, a file's mtime
// and xattrs, a symlink's mtime. Each is a pending change; going live, the directory keeps
// merging with the booted one, and the file's content is read from the booted file.
TEST(Selection, MetadataOnlyChangesArePendingAndGoLive) {
  auto at = [](Entry e, int64_t sec, uint32_t nsec) {
    e.mtime_sec = sec;
    e.mtime_nsec = nsec;
    return e;
  };
  Entry link;
  link.path = "d/l";
  link.type = EntryType::symlink;
  link.mode = 0777;
  link.target = "f";
  Tree booted = build_tree({dir(""), at(dir("d"), 10, 0), at(file("d/f", "x"), 10, 0),
                            at(link, 10, 0), file("d/same", "s"), at(dir("e"), 10, 0)});
  Entry f2 = at(file("d/f", "x"), 10, 1);
  f2.xattrs = {{"user.k", "v"}};
  Tree staged = build_tree({dir(""), at(dir("d", 0750), 20, 5), f2, at(link, 11, 0),
                            file("d/same", "s"), at(dir("e"), 30, 0)});
  Tree empty = build_tree({dir("")});

  auto pending = pending_changes({booted, staged, empty});
  EXPECT_EQ(paths_of(pending), (std::vector<std::string>{"d", "d/f", "d/l", "e"}));
  for (const auto& c : pending) EXPECT_EQ(c.kind, ChangeKind::metadata) << c.path;

  // A directory's new mtime needs no consent (it moves with every name added); its mode,
  // owner or xattrs do, as a file's metadata does, as its content does.
  auto e_only = select_changes({booted, staged, empty}, {"e"}, {.literal = true});
  ASSERT_TRUE(e_only) << e_only.error().message();
  for (const char* path : {"d", "d/f"}) {
    auto refused = select_changes({booted, staged, empty}, {path}, {.literal = true});
    ASSERT_FALSE(refused) << path;
    EXPECT_NE(refused.error().message().find("--allow-replace: " + std::string(path)),
              std::string::npos)
        << refused.error().message();
  }

  auto all = select_changes({booted, staged, empty}, {}, {.all = true, .allow_replace = true});
  ASSERT_TRUE(all) << all.error().message();
  auto d = all->layer.find("d");
  ASSERT_TRUE(d);
  EXPECT_FALSE(d->opaque());
  EXPECT_FALSE(d->structural());
  auto f = all->layer.find("d/f");
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->content_booted());
  EXPECT_FALSE(all->layer.find("d/l")->content_booted());
  for (size_t i = 0; i < staged.size(); ++i) {
    auto m = resolve_merged(booted, all->layer, staged.entry(i).path());
    ASSERT_TRUE(m) << staged.entry(i).path();
    EXPECT_TRUE(same_entry(*m, staged.entry(i).to_entry())) << staged.entry(i).path();
  }
  EXPECT_TRUE(pending_changes({booted, staged, all->layer}).empty());
  EXPECT_EQ(resolve_merged(booted, all->layer, "d")->mtime_nsec, 5u);
}

// Hard links are one file: selecting one link takes the group's other pending links, and
// groups of two staged trees applied one after the other keep their own link counts.
TEST(Selection, HardLinkGroupsGoLiveWholeAndKeepTheirCounts) {
  auto linked = [](Entry e, uint32_t group) {
    e.link_group = group;
    return e;
  };
  Tree booted = build_tree({dir(""), file("a", "1"), file("b", "1"), file("p", "p")});
  Tree staged1 =
      build_tree({dir(""), linked(file("a", "2"), 1), linked(file("b", "2"), 1), file("p", "p")});
  Tree empty = build_tree({dir("")});
  auto first = select_changes({booted, staged1, empty}, {"a"}, {.allow_replace = true});
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(paths_of(first->applied), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(first->layer.find("a")->nlink(), 2u);
  EXPECT_EQ(first->layer.find("a")->link_group(), first->layer.find("b")->link_group());

  // A new staged tree numbers its groups from 1 again: p and q are a group of their own.
  Tree staged2 = build_tree({dir(""), linked(file("a", "2"), 3), linked(file("b", "2"), 3),
                             linked(file("p", "p2"), 1), linked(file("q", "p2"), 1)});
  auto second = select_changes({booted, staged2, first->layer}, {"q"}, {.allow_replace = true});
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(paths_of(second->applied), (std::vector<std::string>{"p", "q"}));
  for (const char* path : {"a", "b", "p", "q"}) {
    EXPECT_EQ(second->layer.find(path)->nlink(), 2u) << path;
  }
  EXPECT_NE(second->layer.find("a")->link_group(), second->layer.find("p")->link_group());
  EXPECT_TRUE(pending_changes({booted, staged2, second->layer}).empty());
}

// A new link to a file that is live as it is (its link count did not change: another link
// of it was broken): the file joins the layer unchanged, so that the two are one inode.
TEST(Selection, ANewLinkTakesItsUnchangedGroupAlong) {
  auto linked = [](Entry e, uint32_t group) {
    e.link_group = group;
    return e;
  };
  Tree booted = build_tree({dir(""), linked(file("f", "x"), 1), linked(file("h", "x"), 1)});
  Tree staged =
      build_tree({dir(""), linked(file("f", "x"), 4), file("h", "x"), linked(file("n", "x"), 4)});
  Tree empty = build_tree({dir("")});
  EXPECT_EQ(paths_of(pending_changes({booted, staged, empty})),
            (std::vector<std::string>{"h", "n"}));
  auto sel = select_changes({booted, staged, empty}, {"n"}, {});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_EQ(paths_of(sel->applied), std::vector<std::string>{"n"});
  auto f = sel->layer.find("f");
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->content_booted());
  EXPECT_EQ(f->link_group(), sel->layer.find("n")->link_group());
  EXPECT_EQ(sel->layer.find("n")->nlink(), 2u);
}

// OSTree manifests group files by checksum, not by hard link: without link counts, a file
// whose group grew or shrank is not a change, and selecting one takes no others.
TEST(Selection, WithoutLinkCountsAGroupThatGrewIsNoChange) {
  auto linked = [](Entry e, uint32_t group) {
    e.link_group = group;
    return e;
  };
  Tree booted = build_tree(
      {dir(""), linked(file("a/__init__.py", ""), 1), linked(file("b/__init__.py", ""), 1)});
  Tree staged =
      build_tree({dir(""), linked(file("a/__init__.py", ""), 1),
                  linked(file("b/__init__.py", ""), 1), linked(file("c/__init__.py", ""), 1)});
  Tree empty = build_tree({dir("")});
  SelectionInput ostree{booted, staged, empty, nullptr, /*link_counts=*/false};
  EXPECT_EQ(paths_of(pending_changes(ostree)), (std::vector<std::string>{"c", "c/__init__.py"}));
  auto sel = select_changes(ostree, {"c"}, {});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_EQ(paths_of(sel->applied), (std::vector<std::string>{"c", "c/__init__.py"}));
  // With link counts (a directory import), a and b changed too: each has a third link.
  EXPECT_EQ(pending_changes({booted, staged, empty}).size(), 4u);
}

// A structural layer directory (a hotfix's, a parent Tree::build added) shows the booted
// directory's attributes.
TEST(Selection, AStructuralDirectoryShowsTheBootedOne) {
  Entry booted_d = dir("d", 0700);
  booted_d.mtime_sec = 7;
  Tree booted = build_tree({dir(""), booted_d});
  Entry layer_d = dir("d", 0755);
  layer_d.structural = true;
  Tree layer = build_tree({dir(""), layer_d, file("d/new", "n")});
  auto m = resolve_merged(booted, layer, "d");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->mode, 0700u);
  EXPECT_EQ(m->mtime_sec, 7);
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
    EXPECT_TRUE(same_entry(*m, e.to_entry())) << e.path();
  }
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "bin/cat"));
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "share/doc"));
}

}  // namespace
}  // namespace livefs::overlay
