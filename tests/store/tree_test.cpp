// Tree manifests: building, the binary round trip, lookups, path order, corrupt input.
#include "store/tree.h"

#include <gtest/gtest.h>

#include <malloc.h>
#include <cstring>

#include <fstream>

#include "store/object_store.h"
#include "support/entries.h"
#include "support/temp_dir.h"

namespace livefs::store {
namespace {

using livefs::testing::dir;
using livefs::testing::file;
using livefs::testing::TempDir;

TEST(PathOrder, DirectoryIsFollowedByItsSubtree) {
  EXPECT_TRUE(path_less("", "a"));
  EXPECT_TRUE(path_less("a", "a/b"));
  EXPECT_TRUE(path_less("a/b", "a.b"));
  EXPECT_TRUE(path_less("a/z", "a-b/c"));
  EXPECT_TRUE(path_less("a-b", "a.b"));
  EXPECT_FALSE(path_less("a", "a"));
  EXPECT_EQ(path_compare("x/y", "x/y"), 0);
}

TEST(Tree, EveryFieldSurvivesTheRoundTrip) {
  Entry f = file("usr/bin/tool", "binary", 04755);
  f.content_booted = true;
  f.uid = 12;
  f.gid = 34;
  f.mtime_sec = 1700000000;
  f.mtime_nsec = 123;
  f.xattrs = {{"user.b", "2"}, {"security.capability", std::string("\0\1\2", 3)}};
  Entry link;
  link.path = "usr/bin/alias";
  link.type = EntryType::symlink;
  link.mode = 0777;
  link.target = "tool";
  Entry dev;
  dev.path = "dev/null";
  dev.type = EntryType::chardev;
  dev.mode = 0666;
  dev.rdev = 0x103;
  Entry wo;
  wo.path = "usr/gone";
  wo.type = EntryType::whiteout;
  Entry odir = dir("usr/opaque");
  odir.opaque = true;
  auto tree = Tree::build({f, link, dev, wo, odir, file("usr/lib/a\nb", "x")});
  ASSERT_TRUE(tree) << tree.error().message();
  auto reparsed = Tree::parse(std::make_shared<const std::string>(tree->bytes()));
  ASSERT_TRUE(reparsed) << reparsed.error().message();
  EXPECT_EQ(reparsed->id(), tree->id());

  auto t = reparsed->find("usr/bin/tool");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->type(), EntryType::file);
  EXPECT_EQ(t->mode(), 04755u);
  EXPECT_EQ(t->uid(), 12u);
  EXPECT_EQ(t->gid(), 34u);
  EXPECT_EQ(t->size(), 6u);
  EXPECT_EQ(t->mtime_sec(), 1700000000);
  EXPECT_EQ(t->mtime_nsec(), 123u);
  EXPECT_EQ(t->object(), ObjectId::of(std::string_view("binary")));
  EXPECT_EQ(t->name(), "tool");
  ASSERT_EQ(t->xattrs().size(), 2u);
  EXPECT_EQ(t->xattrs()[0].name, "security.capability");  // sorted by name
  EXPECT_EQ(*t->xattr("security.capability"), std::string("\0\1\2", 3));
  EXPECT_FALSE(t->xattr("user.none"));
  EXPECT_EQ(reparsed->find("usr/bin/alias")->target(), "tool");
  EXPECT_EQ(reparsed->find("usr/bin/alias")->size(), 4u);
  EXPECT_EQ(reparsed->find("dev/null")->rdev(), 0x103u);
  EXPECT_EQ(reparsed->find("usr/gone")->type(), EntryType::whiteout);
  EXPECT_TRUE(reparsed->find("usr/opaque")->opaque());
  EXPECT_FALSE(reparsed->find("usr/opaque")->structural());
  EXPECT_TRUE(t->content_booted());
  EXPECT_FALSE(reparsed->find("usr/lib/a\nb")->content_booted());
  EXPECT_TRUE(reparsed->find("usr/lib/a\nb"));
  EXPECT_EQ(reparsed->version(), 2u);
  // Parents were added, as structure only (in a layer, what is below shows through).
  auto usr = reparsed->find("usr");
  ASSERT_TRUE(usr);
  EXPECT_EQ(usr->type(), EntryType::dir);
  EXPECT_TRUE(usr->structural());
  EXPECT_TRUE(usr->to_entry().structural);
  EXPECT_EQ(reparsed->entry(*t->parent()).path(), "usr/bin");
  EXPECT_FALSE(reparsed->find("usr/bin/nope"));
}

// A manifest written by the previous format still loads (a journal's layers outlive an
// upgrade), and its layer directories keep the meaning they had: structure only.
TEST(Tree, Version1ManifestsLoadWithTheirDirectoriesStructural) {
  Entry odir = dir("o");
  odir.opaque = true;
  auto tree = Tree::build({dir("d"), odir, file("d/f", "x")});
  ASSERT_TRUE(tree);
  std::string bytes(tree->bytes());
  uint32_t one = 1;
  std::memcpy(bytes.data() + 8, &one, sizeof one);  // the header's version (not checksummed)
  auto old = Tree::parse(std::make_shared<const std::string>(bytes));
  ASSERT_TRUE(old) << old.error().message();
  EXPECT_EQ(old->version(), 1u);
  EXPECT_TRUE(old->find("d")->structural());
  EXPECT_FALSE(old->find("o")->structural());
  EXPECT_FALSE(old->find("d/f")->structural());
  EXPECT_FALSE(tree->find("d")->structural());
  std::memcpy(bytes.data() + 8, "\3\0\0\0", 4);
  EXPECT_FALSE(Tree::parse(std::make_shared<const std::string>(bytes)));
}

// The root digest as livefs 1 computed it: what its journals name a directory tree by, so
// that an upgraded daemon keeps a journal of the same tree. The expected value was printed by
// livefs before the change of format (commit e0c3dee) for the same entries.
TEST(Tree, RootDigestOfVersion1IsStable) {
  std::vector<Entry> es;
  Entry root = dir("");
  root.mtime_sec = 5;
  es.push_back(root);
  Entry d = dir("d", 0750);
  d.uid = 7;
  d.mtime_sec = 99;
  d.xattrs = {{"user.a", "1"}};
  es.push_back(d);
  Entry f = file("d/f", "x");
  f.mtime_sec = 1700000000;
  f.mtime_nsec = 3;
  es.push_back(f);
  Entry l;
  l.path = "d/l";
  l.type = EntryType::symlink;
  l.mode = 0777;
  l.target = "f";
  l.mtime_sec = 4;
  es.push_back(l);
  Entry h = file("h", "y", 0600);
  h.link_group = 1;
  es.push_back(h);
  h.path = "h2";
  es.push_back(h);
  auto tree = Tree::build(es);
  ASSERT_TRUE(tree);
  EXPECT_EQ(tree->root_digest_v1().hex(), "184e5c554deb89515864be544ebf34c5");
  EXPECT_NE(tree->root().digest().hex(), "184e5c554deb89515864be544ebf34c5");
}

TEST(Tree, ChildrenAndSubtrees) {
  auto tree = Tree::build({file("a/x", "1"), file("a/y/z", "2"), file("a.b", "3"), dir("c")});
  ASSERT_TRUE(tree);
  auto a = tree->find("a");
  ASSERT_TRUE(a);
  auto kids = tree->children(a->index());
  ASSERT_EQ(kids.size(), 2u);
  EXPECT_EQ(kids[0].name(), "x");
  EXPECT_EQ(kids[1].name(), "y");
  EXPECT_EQ(a->subtree_end() - a->index(), 4u);  // a, a/x, a/y, a/y/z
  auto root_kids = tree->children(0);
  ASSERT_EQ(root_kids.size(), 3u);
  EXPECT_EQ(root_kids[1].name(), "a.b");
  EXPECT_TRUE(tree->child(a->index(), "y"));
  EXPECT_FALSE(tree->child(a->index(), "z"));
  EXPECT_EQ(a->nlink(), 3u);  // 2 + one subdirectory
}

TEST(Tree, HardLinkGroupsCountLinks) {
  Entry a = file("a", "same"), b = file("b", "same"), c = file("c", "other");
  a.link_group = b.link_group = 7;
  auto tree = Tree::build({a, b, c});
  ASSERT_TRUE(tree);
  EXPECT_EQ(tree->find("a")->nlink(), 2u);
  EXPECT_EQ(tree->find("c")->nlink(), 1u);
}

TEST(Tree, RejectsMalformedAndDuplicatePaths) {
  for (const char* bad : {"/abs", "trailing/", "a//b", "a/./b", "a/../b"}) {
    auto tree = Tree::build({file(bad, "x")});
    ASSERT_FALSE(tree) << bad;
    EXPECT_EQ(tree.error().code, EINVAL);
  }
  auto dup = Tree::build({file("a", "x"), file("a", "y")});
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().message().find("duplicate path 'a'"), std::string::npos);
  auto below = Tree::build({file("a", "x"), file("a/b", "y")});
  ASSERT_FALSE(below);
}

TEST(Tree, DigestsCoverSubtrees) {
  auto one = Tree::build({file("a/b/c", "1"), file("d", "2")});
  auto two = Tree::build({file("a/b/c", "changed"), file("d", "2")});
  ASSERT_TRUE(one && two);
  EXPECT_NE(one->find("a")->digest(), two->find("a")->digest());
  EXPECT_EQ(one->find("d")->digest(), two->find("d")->digest());
  // A directory's own mtime is one of its attributes: a change of it alone is a change of
  // its subtree's digest and its parents'.
  Entry d1 = dir("x"), d2 = dir("x");
  d2.mtime_sec = 99;
  EXPECT_NE(Tree::build({d1})->find("x")->digest(), Tree::build({d2})->find("x")->digest());
  EXPECT_NE(Tree::build({d1})->root().digest(), Tree::build({d2})->root().digest());
}

std::string corrupted(std::string bytes, size_t at) {
  bytes[at] = static_cast<char>(bytes[at] ^ 0x40);
  return bytes;
}

TEST(Tree, CorruptManifestsAreClearErrors) {
  auto tree = Tree::build({file("a", "1"), file("b/c", "2")});
  ASSERT_TRUE(tree);
  std::string good(tree->bytes());
  struct Case {
    std::string bytes;
    std::string expect;
  } cases[] = {
      {corrupted(good, good.size() - 1), "checksum mismatch"},
      {corrupted(good, 100), "checksum mismatch"},
      {good.substr(0, good.size() - 10), "truncated"},
      {good.substr(0, 20), "truncated"},
      {corrupted(good, 0), "bad magic"},
      {corrupted(good, 8), "unsupported version"},
      {good + "x", "trailing bytes"},
  };
  for (const Case& c : cases) {
    auto parsed = Tree::parse(std::make_shared<const std::string>(c.bytes));
    ASSERT_FALSE(parsed) << c.expect;
    EXPECT_EQ(parsed.error().code, EBADMSG);
    EXPECT_NE(parsed.error().message().find(c.expect), std::string::npos)
        << parsed.error().message();
  }
}

TEST(Tree, SavedInTheStoreAndInAFile) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto tree = Tree::build({file("a", "1")});
  ASSERT_TRUE(tree);
  auto id = tree->save(*store);
  ASSERT_TRUE(id);
  EXPECT_EQ(*id, tree->id());
  auto loaded = Tree::load(*store, *id);
  ASSERT_TRUE(loaded) << loaded.error().message();
  EXPECT_TRUE(loaded->find("a"));
  ASSERT_TRUE(tree->write_file(tmp / "manifest"));
  auto from_file = Tree::load(tmp / "manifest");
  ASSERT_TRUE(from_file);
  EXPECT_EQ(from_file->id(), tree->id());
  auto missing = Tree::load(tmp / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
}

// The daemon keeps the booted manifest loaded for its whole life (157k entries: 31 MB on
// /usr). Loaded from a file it is a checked mapping whose pages the page cache keeps, not a
// heap copy; queries map again what they read. An empty or truncated file is a clear error.
TEST(Tree, LoadedFromAFileItIsNotCopiedToTheHeap) {
  TempDir tmp;
  std::vector<Entry> entries;
  for (int i = 0; i < 20000; ++i)
    entries.push_back(
        file("usr/share/doc/package-" + std::to_string(i) + "/changelog.Debian.gz", "x"));
  auto tree = Tree::build(std::move(entries));
  ASSERT_TRUE(tree);
  ASSERT_TRUE(tree->write_file(tmp / "manifest"));
  size_t file_size = tree->bytes().size();
  ASSERT_GT(file_size, 2u << 20);
  ObjectId id = tree->id();
  tree = Tree::build({});  // the built one's memory goes

  struct mallinfo2 before = mallinfo2();
  auto loaded = Tree::load(tmp / "manifest");
  ASSERT_TRUE(loaded) << loaded.error().message();
  struct mallinfo2 after = mallinfo2();
  if (before.uordblks == 0) GTEST_SKIP() << "mallinfo2 reports nothing (a sanitizer's allocator)";
  size_t heap = (after.uordblks + after.hblkhd) - (before.uordblks + before.hblkhd);
  EXPECT_LT(heap, file_size / 100) << "heap bytes for a " << file_size << "-byte manifest";
  EXPECT_EQ(loaded->id(), id);
  EXPECT_EQ(loaded->size(), 2 * 20000u + 4u);  // files, their directories, usr/share/doc, root
  auto found = loaded->find("usr/share/doc/package-19999/changelog.Debian.gz");
  ASSERT_TRUE(found);
  EXPECT_EQ(found->size(), 1u);

  // Empty and truncated files.
  { std::ofstream(tmp / "empty"); }
  auto empty = Tree::load(tmp / "empty");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, EBADMSG);
  std::string bytes(loaded->bytes());
  loaded = Tree::build({});
  { std::ofstream(tmp / "short", std::ios::binary) << bytes.substr(0, bytes.size() / 2); }
  auto cut = Tree::load(tmp / "short");
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code, EBADMSG);
  EXPECT_NE(cut.error().message().find("short"), std::string::npos) << cut.error().message();
}

}  // namespace
}  // namespace livefs::store
