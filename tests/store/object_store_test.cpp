// ObjectStore: content-addressed puts, dedupe, read-only objects, verify, gc, batches, and
// faults on the write path (injected through the Sys seam, and a real full tmpfs).
#include "store/object_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "store/tree.h"
#include "support/temp_dir.h"

namespace livefs::store {
namespace {

using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

size_t count_files(const fs::path& dir) {
  size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) ++n;
  return n;
}

TEST(ObjectStore, PutBytesIsContentAddressedAndReadOnly) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store) << store.error().message();
  auto id = store->put_bytes(std::string_view("hello world"));
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, ObjectId::of(std::string_view("hello world")));
  EXPECT_TRUE(store->has(*id));
  fs::path obj = tmp / "store" / ObjectStore::relative_path(*id);
  EXPECT_EQ(read_file(obj), "hello world");
  struct stat st;
  ASSERT_EQ(stat(obj.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  // Dedupe: the same content again is the same object, no second file.
  auto again = store->put_bytes(std::string_view("hello world"));
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *id);
  EXPECT_EQ(count_files(tmp / "store" / "objects"), 1u);
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);
  auto text = store->read_verified(*id);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "hello world");
}

TEST(ObjectStore, PutPathCopiesAndLinkSharesTheInode) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  write_file(tmp / "src" / "big", big);
  write_file(tmp / "src" / "small", "small");
  auto id = store->put_path(tmp / "src" / "big");
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, ObjectId::of(big));
  fs::path obj = tmp / "store" / ObjectStore::relative_path(*id);
  EXPECT_EQ(read_file(obj), big);
  struct stat a, b;
  ASSERT_EQ(stat(obj.c_str(), &a), 0);
  ASSERT_EQ(stat((tmp / "src" / "big").c_str(), &b), 0);
  EXPECT_NE(a.st_ino, b.st_ino) << "a copy must not share the source inode";

  auto linked = store->put_path(tmp / "src" / "small", PutOptions{.link = true});
  ASSERT_TRUE(linked) << linked.error().message();
  ASSERT_EQ(stat((tmp / "store" / ObjectStore::relative_path(*linked)).c_str(), &a), 0);
  ASSERT_EQ(stat((tmp / "src" / "small").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "--link imports by hard link on one file system";
  auto report = store->verify();
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->ok()) << report->problems.front().path << " "
                            << report->problems.front().reason;
}

TEST(ObjectStore, MissingSourceIsAClearError) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto id = store->put_path(tmp / "does-not-exist");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, ENOENT);
  EXPECT_NE(id.error().message().find("does-not-exist"), std::string::npos);
  auto obj = store->open_object(ObjectId::of(std::string_view("absent")));
  ASSERT_FALSE(obj);
  EXPECT_EQ(obj.error().code, ENOENT);
}

TEST(ObjectStore, VerifyReportsAFlippedByteAndReadVerifiedRefusesIt) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto good = store->put_bytes(std::string_view("good content"));
  auto bad = store->put_bytes(std::string_view("content to corrupt"));
  ASSERT_TRUE(good && bad);
  fs::path obj = tmp / "store" / ObjectStore::relative_path(*bad);
  chmod(obj.c_str(), 0644);
  {
    int fd = open(obj.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "C", 1, 0), 1);
    close(fd);
  }
  chmod(obj.c_str(), 0444);
  auto report = store->verify();
  ASSERT_TRUE(report);
  EXPECT_EQ(report->checked, 2u);
  ASSERT_EQ(report->problems.size(), 1u);
  EXPECT_EQ(report->problems[0].path, ObjectStore::relative_path(*bad));
  EXPECT_NE(report->problems[0].reason.find("hashes to"), std::string::npos);
  auto text = store->read_verified(*bad);
  ASSERT_FALSE(text);
  EXPECT_EQ(text.error().code, EIO);
  EXPECT_TRUE(store->read_verified(*good));
}

TEST(ObjectStore, GcRemovesWhatIsNotLive) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto keep = store->put_bytes(std::string_view("keep"));
  auto drop = store->put_bytes(std::string_view("drop me"));
  ASSERT_TRUE(keep && drop);
  Entry file;
  file.path = "keep";
  file.type = EntryType::file;
  file.size = 4;
  file.object = *keep;
  auto tree = Tree::build({file});
  ASSERT_TRUE(tree);
  auto tree_id = tree->save_rooted(*store);
  ASSERT_TRUE(tree_id) << tree_id.error().message();
  auto report = store->gc();
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_EQ(report->kept, 2u);  // the content and the manifest
  EXPECT_EQ(report->removed, 1u);
  EXPECT_EQ(report->bytes_freed, 7u);
  EXPECT_EQ(report->roots, 1u);
  EXPECT_TRUE(report->dangling.empty());
  EXPECT_TRUE(store->has(*keep));
  EXPECT_TRUE(store->has(*tree_id));
  EXPECT_FALSE(store->has(*drop));
  auto stats = store->stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->objects, 2u);
}

TEST(ObjectStore, TreeRootsAreListed) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId a = ObjectId::of(std::string_view("a"));
  ASSERT_TRUE(store->add_tree_root(a));
  auto roots = store->tree_roots();
  ASSERT_TRUE(roots);
  ASSERT_EQ(roots->size(), 1u);
  EXPECT_EQ((*roots)[0], a);
  ASSERT_TRUE(store->remove_tree_root(a));
  EXPECT_TRUE(store->tree_roots()->empty());
}

TEST(ObjectStore, BatchPublishesOnlyOnCommit) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId first;
  {
    ObjectStore::Batch batch(*store);
    auto a = batch.put_bytes("one");
    auto b = batch.put_bytes("two");
    auto dup = batch.put_bytes("one");
    ASSERT_TRUE(a && b && dup);
    EXPECT_EQ(*a, *dup);
    EXPECT_EQ(batch.pending(), 2u);
    EXPECT_FALSE(store->has(*a)) << "nothing is published before commit";
    ASSERT_TRUE(batch.commit());
    EXPECT_TRUE(store->has(*a));
    EXPECT_TRUE(store->has(*b));
    first = *a;
  }
  {
    ObjectStore::Batch batch(*store);
    ASSERT_TRUE(batch.put_bytes("three"));
    // Destroyed without commit: abandoned.
  }
  EXPECT_FALSE(store->has(ObjectId::of(std::string_view("three"))));
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);
  EXPECT_TRUE(store->has(first));
}

TEST(ObjectStore, ConcurrentPutsOfTheSameContent) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        std::string content = "shared " + std::to_string(i);
        if (!store->put_bytes(std::string_view(content))) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(count_files(tmp / "store" / "objects"), 50u);
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);
  EXPECT_TRUE(store->verify()->ok());
}

mode_t mode_of(const fs::path& p) {
  struct stat st;
  if (lstat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Overwrites the first byte of a stored object as a disk or a stray write would.
void corrupt(const fs::path& store_dir, const ObjectId& id, char byte = 'X') {
  fs::path obj = store_dir / ObjectStore::relative_path(id);
  ASSERT_EQ(chmod(obj.c_str(), 0644), 0);
  int fd = open(obj.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, &byte, 1, 0), 1);
  close(fd);
  ASSERT_EQ(chmod(obj.c_str(), 0444), 0);
}

// ---- item 10: a store only its owner can read or change ----------------------------------

TEST(StorePermissions, EveryDirectoryIsPrivate) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "var/lib/store");
  ASSERT_TRUE(store) << store.error().message();
  auto id = store->put_bytes(std::string_view("private content"));
  ASSERT_TRUE(id);
  ASSERT_TRUE(store->add_tree_root(*id));
  fs::path root = tmp / "var/lib/store";
  EXPECT_EQ(mode_of(root), 0700u);
  for (const char* sub : {"objects", "tmp", "trees", "pins"})
    EXPECT_EQ(mode_of(root / sub), 0700u) << sub;
  fs::path obj = root / ObjectStore::relative_path(*id);
  EXPECT_EQ(mode_of(obj.parent_path()), 0700u) << "the fan-out directory";
  EXPECT_EQ(mode_of(obj), 0444u) << "objects stay read-only, inside private directories";
  EXPECT_EQ(mode_of(root / "trees" / id->hex()), 0600u);
  EXPECT_EQ(mode_of(root / "lock"), 0600u);
}

TEST(StorePermissions, RefusesAStoreOwnedBySomeoneElse) {
  TempDir tmp;
  ASSERT_TRUE(ObjectStore::open(tmp / "store"));
  ASSERT_EQ(chown((tmp / "store").c_str(), 12345, 12345), 0);
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, EPERM);
  EXPECT_NE(
      store.error().message().find("store " + (tmp / "store").string() + ": owned by uid 12345"),
      std::string::npos)
      << store.error().message();
  // A subdirectory someone else owns is as bad.
  ASSERT_EQ(chown((tmp / "store").c_str(), 0, 0), 0);
  ASSERT_EQ(chown((tmp / "store/trees").c_str(), 12345, 0), 0);
  store = ObjectStore::open(tmp / "store");
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message().find("/trees: owned by uid 12345"), std::string::npos)
      << store.error().message();
}

TEST(StorePermissions, RefusesAStoreWritableByGroupOrOthers) {
  TempDir tmp;
  ASSERT_TRUE(ObjectStore::open(tmp / "store"));
  ASSERT_EQ(chmod((tmp / "store").c_str(), 0775), 0);
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code, EPERM);
  EXPECT_NE(store.error().message().find(": mode 0775 is writable by group or others"),
            std::string::npos)
      << store.error().message();
  ASSERT_EQ(chmod((tmp / "store").c_str(), 0700), 0);
  ASSERT_EQ(chmod((tmp / "store/objects").c_str(), 0777), 0);
  store = ObjectStore::open(tmp / "store");
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message().find("objects: mode 0777 is writable"), std::string::npos)
      << store.error().message();
}

TEST(StorePermissions, AnOlderWorldReadableStoreIsTightened) {
  TempDir tmp;
  fs::path root = tmp / "store";
  ObjectId id;
  {
    auto store = ObjectStore::open(root);
    ASSERT_TRUE(store);
    auto put = store->put_bytes(std::string_view("made by an older livefs"));
    ASSERT_TRUE(put);
    id = *put;
  }
  // As an older livefs left it: every directory 0755.
  fs::path fan = (root / ObjectStore::relative_path(id)).parent_path();
  for (const fs::path& dir :
       {root, root / "objects", root / "tmp", root / "trees", root / "pins", fan})
    ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  ::testing::internal::CaptureStderr();
  auto store = ObjectStore::open(root);
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(store) << store.error().message();
  for (const fs::path& dir :
       {root, root / "objects", root / "tmp", root / "trees", root / "pins", fan})
    EXPECT_EQ(mode_of(dir), 0700u) << dir;
  EXPECT_NE(log.find("tightened to 0700"), std::string::npos) << log;
  EXPECT_EQ(*store->read_verified(id), "made by an older livefs");
  // Once is enough: a private store is opened without a word.
  ::testing::internal::CaptureStderr();
  ASSERT_TRUE(ObjectStore::open(root));
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find("tightened"), std::string::npos);
}

TEST(StorePermissions, NoFileIsCreatedThroughASymlink) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId id = ObjectId::of(std::string_view("a tree"));
  fs::path planted = tmp / "store/trees" / id.hex();
  ASSERT_EQ(symlink((tmp / "elsewhere").c_str(), planted.c_str()), 0);
  auto st = store->add_tree_root(id);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ELOOP);
  EXPECT_FALSE(fs::exists(tmp / "elsewhere"));
}

// ---- item 11: a corrupt object is EIO, and a put of its content repairs it -----------------

TEST(VerifiedOpen, ACorruptObjectIsEioNamingIt) {
  TempDir tmp;
  ObjectId good, bad;
  {
    auto store = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(store);
    good = *store->put_bytes(std::string_view("good content"));
    bad = *store->put_bytes(std::string_view("content to corrupt"));
  }
  corrupt(tmp / "store", bad);
  auto store = ObjectStore::open(tmp / "store");  // a process that has verified nothing yet
  ASSERT_TRUE(store);
  ::testing::internal::CaptureStderr();
  auto fd = store->open_verified(bad, "usr/bin/tool");
  auto again = store->open_verified(bad, "usr/bin/tool");
  std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().code, EIO);
  std::string actual = ObjectId::of(std::string_view("Xontent to corrupt")).hex();
  EXPECT_EQ(fd.error().context, ObjectStore::relative_path(bad) +
                                    ": corrupt object (content hashes to " + actual + ")");
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EIO);
  // Logged once, with the object and the path it is served at.
  size_t first = log.find("corrupt object");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("corrupt object", first + 1), std::string::npos) << log;
  EXPECT_NE(log.find(ObjectStore::relative_path(bad)), std::string::npos) << log;
  EXPECT_NE(log.find("usr/bin/tool"), std::string::npos) << log;

  auto ok = store->open_verified(good);
  ASSERT_TRUE(ok) << ok.error().message();
  char buf[32] = {};
  EXPECT_EQ(pread(ok->get(), buf, sizeof buf, 0), 12);
  EXPECT_STREQ(buf, "good content");
}

// Counts the reads of the store's hashing.
class CountingSys : public Sys {
 public:
  std::atomic<int> preads{0};
  ssize_t pread(int fd, void* buf, size_t count, off_t offset) override {
    ++preads;
    return Sys::pread(fd, buf, count, offset);
  }
};

TEST(VerifiedOpen, EachObjectIsHashedOncePerProcess) {
  TempDir tmp;
  ObjectId id;
  {
    auto store = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(store);
    id = *store->put_bytes(std::string_view("hashed once"));
  }
  CountingSys sys;
  auto store = ObjectStore::open(tmp / "store", sys);
  ASSERT_TRUE(store);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i)
        if (!store->open_verified(id)) ++failures;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(sys.preads.load(), 2) << "one pass: a read with the content, one at the end";
}

TEST(VerifiedOpen, APutOfTheSameContentRepairsACorruptObject) {
  TempDir tmp;
  ObjectId id;
  const std::string content = "the content as it should be";
  {
    auto store = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(store);
    id = *store->put_bytes(std::string_view(content));
  }
  corrupt(tmp / "store", id);
  {
    auto store = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(store);
    EXPECT_FALSE(store->open_verified(id));
    auto again = store->put_bytes(std::string_view(content));
    ASSERT_TRUE(again) << again.error().message();
    EXPECT_EQ(*again, id);
    EXPECT_TRUE(store->open_verified(id)) << "the repair is served by this handle too";
  }
  auto fresh = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(fresh);
  auto fd = fresh->open_verified(id);
  ASSERT_TRUE(fd) << fd.error().message();
  EXPECT_EQ(read_file(tmp / "store" / ObjectStore::relative_path(id)), content);
  EXPECT_EQ(mode_of(tmp / "store" / ObjectStore::relative_path(id)), 0444u);
  EXPECT_TRUE(fresh->verify()->ok());

  // A truncated copy is caught by its size alone; a put from a file repairs as well.
  ASSERT_EQ(chmod((tmp / "store" / ObjectStore::relative_path(id)).c_str(), 0644), 0);
  ASSERT_EQ(truncate((tmp / "store" / ObjectStore::relative_path(id)).c_str(), 5), 0);
  write_file(tmp / "src", content);
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto from_file = store->put_path(tmp / "src");
  ASSERT_TRUE(from_file) << from_file.error().message();
  EXPECT_EQ(read_file(tmp / "store" / ObjectStore::relative_path(id)), content);
}

// Records the order of the write path's calls.
class RecordingSys : public Sys {
 public:
  std::vector<std::string> calls;
  int linkat(int a, const char* b, int c, const char* d, int e) override {
    calls.push_back(std::string("link ") + d);
    return Sys::linkat(a, b, c, d, e);
  }
  int fsync(int fd) override {
    calls.push_back("fsync");
    return Sys::fsync(fd);
  }
  int syncfs(int fd) override {
    calls.push_back("syncfs");
    return Sys::syncfs(fd);
  }
  int renameat(int a, const char* b, int c, const char* d) override {
    calls.push_back(std::string("rename ") + d);
    return Sys::renameat(a, b, c, d);
  }
};

TEST(VerifiedOpen, LinkedImportsAreDurableBeforeTheirNameIsPublished) {
  TempDir tmp;
  RecordingSys sys;
  auto store = ObjectStore::open(tmp / "store", sys);
  ASSERT_TRUE(store);
  write_file(tmp / "src/a", "linked a");
  write_file(tmp / "src/b", "linked b");
  for (const char* name : {"a", "b"}) {  // a batch of one (fsync), then of two (syncfs)
    sys.calls.clear();
    ObjectStore::Batch batch(*store);
    ASSERT_TRUE(batch.put_at(AT_FDCWD, (tmp / "src" / name).c_str(), PutOptions{.link = true}));
    if (std::string(name) == "b") {
      ASSERT_TRUE(batch.put_bytes("and a copy"));
    }
    ASSERT_TRUE(batch.commit());
    size_t link = 0, sync = 0, publish = 0;
    for (size_t i = 0; i < sys.calls.size(); ++i) {
      const std::string& c = sys.calls[i];
      if (c.starts_with("link ")) {
        EXPECT_TRUE(c.starts_with("link tmp/")) << c << ": linked straight under objects/";
        link = i + 1;
      }
      if ((c == "fsync" || c == "syncfs") && sync == 0 && link != 0) sync = i + 1;
      if (c.starts_with("rename objects/") && publish == 0) publish = i + 1;
    }
    ASSERT_NE(link, 0u);
    ASSERT_NE(publish, 0u);
    EXPECT_LT(link, sync);
    EXPECT_LT(sync, publish) << "published before it was durable";
  }
  struct stat a, b;
  ASSERT_EQ(stat((tmp / "src/a").c_str(), &a), 0);
  ASSERT_EQ(
      stat((tmp / "store" / ObjectStore::relative_path(ObjectId::of(std::string_view("linked a"))))
               .c_str(),
           &b),
      0);
  EXPECT_EQ(a.st_ino, b.st_ino);
}

// Fails chosen calls of the write path, as a full or failing disk would.
class FaultySys : public Sys {
 public:
  int fail_write_after = -1;  // the Nth write fails with ENOSPC
  bool short_writes = false;  // every write writes at most 3 bytes
  bool fail_fsync = false;
  bool fail_copy = false;  // copy_file_range fails with ENOSPC
  int writes = 0;

  ssize_t write(int fd, const void* buf, size_t count) override {
    if (fail_write_after >= 0 && writes++ >= fail_write_after) {
      errno = ENOSPC;
      return -1;
    }
    return Sys::write(fd, buf, short_writes ? std::min<size_t>(count, 3) : count);
  }
  ssize_t copy_file_range(int a, off_t* b, int c, off_t* d, size_t e) override {
    if (fail_copy) {
      errno = ENOSPC;
      return -1;
    }
    return Sys::copy_file_range(a, b, c, d, e);
  }
  int fsync(int fd) override {
    if (fail_fsync) {
      errno = EIO;
      return -1;
    }
    return Sys::fsync(fd);
  }
};

TEST(ObjectStoreFaults, DiskFullLeavesNoPartialObject) {
  TempDir tmp;
  FaultySys sys;
  auto store = ObjectStore::open(tmp / "store", sys);
  ASSERT_TRUE(store);
  sys.fail_write_after = 0;
  auto id = store->put_bytes(std::string_view("will not fit"));
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, ENOSPC);
  EXPECT_NE(id.error().message().find("write(tmp/"), std::string::npos) << id.error().message();
  EXPECT_EQ(count_files(tmp / "store" / "objects"), 0u);
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);

  write_file(tmp / "src", std::string(100000, 'y'));
  sys.fail_write_after = -1;
  sys.fail_copy = true;
  auto copied = store->put_path(tmp / "src");
  ASSERT_FALSE(copied);
  EXPECT_EQ(copied.error().code, ENOSPC);
  EXPECT_EQ(count_files(tmp / "store" / "objects"), 0u);
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);
}

TEST(ObjectStoreFaults, FailedFsyncPublishesNothing) {
  TempDir tmp;
  FaultySys sys;
  auto store = ObjectStore::open(tmp / "store", sys);
  ASSERT_TRUE(store);
  sys.fail_fsync = true;
  auto id = store->put_bytes(std::string_view("not durable"));
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, EIO);
  EXPECT_FALSE(store->has(ObjectId::of(std::string_view("not durable"))));
  EXPECT_EQ(count_files(tmp / "store" / "tmp"), 0u);
}

TEST(ObjectStoreFaults, ShortWritesAreCompleted) {
  TempDir tmp;
  FaultySys sys;
  sys.short_writes = true;
  auto store = ObjectStore::open(tmp / "store", sys);
  ASSERT_TRUE(store);
  std::string content = "a longer content written three bytes at a time";
  auto id = store->put_bytes(std::string_view(content));
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*store->read_verified(*id), content);
}

TEST(ObjectStoreFaults, RealFullFileSystem) {
  TempDir tmp;
  fs::path mnt = tmp / "small";
  fs::create_directories(mnt);
  ASSERT_EQ(mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=1m"), 0) << strerror(errno);
  struct Unmount {
    fs::path p;
    ~Unmount() { umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  auto store = ObjectStore::open(mnt / "store");
  ASSERT_TRUE(store);
  write_file(tmp / "big", std::string(2 << 20, 'z'));
  auto id = store->put_path(tmp / "big");
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, ENOSPC) << id.error().message();
  EXPECT_EQ(count_files(mnt / "store" / "objects"), 0u);
  EXPECT_EQ(count_files(mnt / "store" / "tmp"), 0u);
  // The store is still usable once there is room.
  auto small = store->put_bytes(std::string_view("small enough"));
  ASSERT_TRUE(small) << small.error().message();
  EXPECT_TRUE(store->verify()->ok());
}

}  // namespace
}  // namespace livefs::store
