// The node table without a mount: exact lookup counts, one node per (path, identity), packed
// snapshots that unpack to what they were made from, references that outlive a forget; and
// its pointer index (insert, find, erase by backward shift, growth and shrinking) checked
// against a std::map over random operations with many colliding hashes.
#include <gtest/gtest.h>
#include <malloc.h>

#include <map>
#include <random>
#include <set>

#include "overlay/node_index.h"
#include "overlay/node_table.h"

namespace livefs::overlay {
namespace {

struct Item {
  uint64_t key;
  size_t hash;
};
struct ItemHash {
  size_t operator()(const Item* i) const { return i->hash; }
};

TEST(PtrIndexTest, MatchesAMapOverRandomOperations) {
  // Few distinct hashes: long clusters, where deletion by backward shift must keep every
  // remaining item reachable from its home slot.
  std::mt19937_64 rng(11);
  std::map<uint64_t, std::unique_ptr<Item>> ref;
  PtrIndex<Item, ItemHash> index;
  auto find = [&](uint64_t key, size_t hash) {
    return index.find(hash, [&](const Item* i) { return i->key == key; });
  };
  size_t max_capacity = 0;
  for (int step = 0; step < 200000; ++step) {
    uint64_t key = rng() % 4000;
    size_t hash = (key % 97) * 0x9E3779B97F4A7C15ull;
    // Mostly inserts in the first half, mostly erases in the second: the table grows, then
    // shrinks again.
    bool insert = (rng() % 100) < (step < 100000 ? 70u : 20u);
    auto it = ref.find(key);
    if (insert && it == ref.end()) {
      auto item = std::make_unique<Item>(Item{key, hash});
      index.insert(item.get());
      ref.emplace(key, std::move(item));
    } else if (!insert && it != ref.end()) {
      ASSERT_TRUE(index.erase(it->second.get()));
      ref.erase(it);
    }
    Item* found = find(key, hash);
    ASSERT_EQ(found != nullptr, ref.count(key) == 1) << "step " << step;
    ASSERT_EQ(index.size(), ref.size());
    max_capacity = std::max(max_capacity, index.capacity());
    if (step % 10000 == 0) {
      for (auto& [k, item] : ref) ASSERT_EQ(find(k, item->hash), item.get()) << "step " << step;
      size_t seen = 0;
      index.for_each([&](Item*) { ++seen; });
      ASSERT_EQ(seen, ref.size());
    }
  }
  // Load stays under 3/4, and memory follows the entries back down.
  EXPECT_GE(max_capacity * 3, ref.size() * 4);
  for (auto& [k, item] : ref) ASSERT_TRUE(index.erase(item.get()));
  EXPECT_EQ(index.size(), 0u);
  EXPECT_LE(index.capacity(), 16u);
  Item absent{1, 1};
  EXPECT_FALSE(index.erase(&absent));
}

Resolved booted_file(std::string path, ino_t ino, off_t size = 5) {
  Resolved r;
  r.source = Source::booted;
  r.path = std::move(path);
  r.st.st_mode = S_IFREG | 0644;
  r.st.st_ino = ino;
  r.st.st_size = size;
  r.st.st_nlink = 2;
  r.st.st_uid = 7;
  r.st.st_gid = 8;
  r.st.st_blocks = 16;
  r.st.st_blksize = 4096;
  r.st.st_rdev = 0x1234;
  r.st.st_mtim = {1700000000, 123456789};
  r.st.st_atim = {1700000001, 5};
  r.st.st_ctim = {1700000002, 999999999};
  r.identity.kind = Identity::Kind::booted;
  r.identity.bytes[8] = static_cast<uint8_t>(ino);
  r.identity.bytes[9] = static_cast<uint8_t>(ino >> 8);
  return r;
}

Resolved dir(std::string path) {
  Resolved r;
  r.path = std::move(path);
  r.st.st_mode = S_IFDIR | 0755;
  r.identity = Identity::dir();
  return r;
}

TEST(NodeTableTest, OneNodePerPathAndIdentityWithExactCounts) {
  NodeTable table(dir(""));
  EXPECT_EQ(table.size(), 1u);
  fuse_ino_t a = table.acquire(booted_file("usr/bin/a", 10));
  EXPECT_NE(a, FUSE_ROOT_ID);
  EXPECT_EQ(table.acquire(booted_file("usr/bin/a", 10)), a);
  // Same path, other content: another node (the old one keeps serving its content).
  fuse_ino_t a2 = table.acquire(booted_file("usr/bin/a", 11));
  EXPECT_NE(a2, a);
  // Same identity (a hard link), other path: another node.
  fuse_ino_t b = table.acquire(booted_file("usr/bin/b", 10));
  EXPECT_NE(b, a);
  fuse_ino_t d = table.acquire(dir("usr/bin"));
  EXPECT_EQ(table.dir_at("usr/bin"), d);
  EXPECT_EQ(table.dir_at("usr/bin/a"), 0u);
  EXPECT_EQ(table.dir_at(""), FUSE_ROOT_ID);
  EXPECT_EQ(table.size(), 5u);

  (void)table.forget(a, 1);
  EXPECT_TRUE(table.get(a)) << "two lookups, one forgotten";
  (void)table.forget(a, 1);
  EXPECT_FALSE(table.get(a));
  EXPECT_EQ(table.size(), 4u);
  // Acquired again after being freed: a new id.
  fuse_ino_t again = table.acquire(booted_file("usr/bin/a", 10));
  EXPECT_NE(again, a);
  // More than counted drops to zero; unknown ids are ignored; the root stays.
  (void)table.forget(b, 100);
  EXPECT_FALSE(table.get(b));
  (void)table.forget(987654, 1);
  (void)table.forget(FUSE_ROOT_ID, 1000);
  EXPECT_TRUE(table.get(FUSE_ROOT_ID));
  (void)table.forget(d, 1);
  EXPECT_EQ(table.dir_at("usr/bin"), 0u);
  EXPECT_EQ(table.size(), 3u);
}

TEST(NodeTableTest, SnapshotUnpacksToWhatTheNodeWasMadeFrom) {
  NodeTable table(dir(""));
  Resolved r = booted_file(std::string(300, 'p') + "/\xff\x01name", 77, 1 << 20);
  fuse_ino_t id = table.acquire(r);
  NodeRef node = table.get(id);
  ASSERT_TRUE(node);
  EXPECT_EQ(node->id(), id);
  EXPECT_EQ(node->path(), r.path);
  EXPECT_FALSE(node->is_dir());
  Resolved s = node->snapshot();
  EXPECT_EQ(s.path, r.path);
  EXPECT_EQ(s.source, Source::booted);
  EXPECT_EQ(s.identity, r.identity);
  EXPECT_EQ(s.entry, nullptr);
  for (const struct stat& st : {s.st, node->stat()}) {
    EXPECT_EQ(st.st_ino, r.st.st_ino);
    EXPECT_EQ(st.st_mode, r.st.st_mode);
    EXPECT_EQ(st.st_size, r.st.st_size);
    EXPECT_EQ(st.st_nlink, r.st.st_nlink);
    EXPECT_EQ(st.st_uid, r.st.st_uid);
    EXPECT_EQ(st.st_gid, r.st.st_gid);
    EXPECT_EQ(st.st_blocks, r.st.st_blocks);
    EXPECT_EQ(st.st_blksize, r.st.st_blksize);
    EXPECT_EQ(st.st_rdev, r.st.st_rdev);
    EXPECT_EQ(st.st_mtim.tv_sec, r.st.st_mtim.tv_sec);
    EXPECT_EQ(st.st_mtim.tv_nsec, r.st.st_mtim.tv_nsec);
    EXPECT_EQ(st.st_atim.tv_nsec, r.st.st_atim.tv_nsec);
    EXPECT_EQ(st.st_ctim.tv_sec, r.st.st_ctim.tv_sec);
    EXPECT_EQ(st.st_ctim.tv_nsec, r.st.st_ctim.tv_nsec);
  }

  // A layer node keeps its entry (the content it was made from).
  Resolved layer;
  layer.source = Source::layer;
  layer.path = "etc/x";
  layer.st.st_mode = S_IFLNK | 0777;
  auto entry = std::make_shared<store::Entry>();
  entry->type = store::EntryType::symlink;
  entry->target = "/somewhere";
  layer.entry = entry;
  layer.identity.kind = Identity::Kind::layer;
  layer.identity.bytes[0] = 1;
  NodeRef l = table.get(table.acquire(layer));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->source(), Source::layer);
  ASSERT_NE(l->snapshot().entry, nullptr);
  EXPECT_EQ(l->snapshot().entry->target, "/somewhere");
}

TEST(NodeTableTest, AReferenceOutlivesTheForget) {
  NodeTable table(dir(""));
  fuse_ino_t id = table.acquire(booted_file("f", 3));
  NodeRef held = table.get(id);
  NodeRef copy = held;
  (void)table.forget(id, 1);
  EXPECT_FALSE(table.get(id));
  EXPECT_EQ(held->path(), "f");
  held = NodeRef();
  EXPECT_EQ(copy->path(), "f");
  EXPECT_EQ(copy->stat().st_ino, 3u);
}

// A passthrough backing id lives as long as the kernel holds the node: one per node, handed
// back by the forget that frees it, and never adopted after that.
TEST(NodeTableTest, ABackingIdIsKeptUntilTheNodeIsForgotten) {
  NodeTable table(dir(""));
  fuse_ino_t id = table.acquire(booted_file("usr/lib/libc.so.6", 5));
  NodeRef node = table.get(id);
  ASSERT_TRUE(node);
  EXPECT_EQ(node->backing_id(), 0);
  EXPECT_TRUE(node->adopt_backing_id(7));
  EXPECT_FALSE(node->adopt_backing_id(8)) << "a second id for one inode";
  EXPECT_EQ(node->backing_id(), 7);
  (void)table.acquire(booted_file("usr/lib/libc.so.6", 5));
  EXPECT_EQ(table.forget(id, 1), 0) << "still held: the id stays";
  EXPECT_EQ(table.forget(id, 1), 7);
  EXPECT_FALSE(node->adopt_backing_id(9)) << "forgotten: nobody would release it";
  EXPECT_LT(node->backing_id(), 0);
}

TEST(NodeTableTest, ManyNodesComeAndGo) {
  NodeTable table(dir(""));
  std::vector<fuse_ino_t> ids;
  for (int i = 0; i < 20000; ++i)
    ids.push_back(table.acquire(booted_file("d/" + std::to_string(i), static_cast<ino_t>(i))));
  EXPECT_EQ(table.size(), 20001u);
  for (int i = 0; i < 20000; i += 2) (void)table.forget(ids[static_cast<size_t>(i)], 1);
  for (int i = 0; i < 20000; ++i) {
    NodeRef n = table.get(ids[static_cast<size_t>(i)]);
    ASSERT_EQ(static_cast<bool>(n), i % 2 == 1) << i;
    if (n) {
      EXPECT_EQ(n->path(), "d/" + std::to_string(i));
      EXPECT_EQ(table.acquire(booted_file("d/" + std::to_string(i), static_cast<ino_t>(i))),
                ids[static_cast<size_t>(i)]);
    }
  }
  EXPECT_EQ(table.size(), 10001u);
}

// The kernel may hold a node for every entry of the tree (a `find` over a 157k-entry /usr):
// a node with a typical 60-byte path costs its packed snapshot, its path and two index
// slots. (The table as it was took about 720 bytes: a shared Node with a full Resolved, its
// path twice more in a key string, and two node-based hash maps.)
TEST(NodeTableTest, MemoryPerNodeIsBounded) {
  constexpr size_t kNodes = 20000;
  std::vector<Resolved> entries;
  for (size_t i = 0; i < kNodes; ++i)
    entries.push_back(booted_file(
        "lib/x86_64-linux-gnu/perl/5.36.0/auto/POSIX/file-" + std::to_string(100000 + i) + ".so",
        static_cast<ino_t>(i)));
  NodeTable table(dir(""));
  size_t before = mallinfo2().uordblks;
  if (before == 0) GTEST_SKIP() << "mallinfo2 reports nothing (a sanitizer's allocator)";
  for (const Resolved& r : entries) table.acquire(r);
  size_t per_node = (mallinfo2().uordblks - before) / kNodes;
  EXPECT_EQ(table.size(), kNodes + 1);
  EXPECT_LE(per_node, 320u) << "sizeof(Node) " << sizeof(Node);
  RecordProperty("bytes_per_node", static_cast<int>(per_node));
}

}  // namespace
}  // namespace livefs::overlay
