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
  auto report = store->gc(IdSet{*keep});
  ASSERT_TRUE(report);
  EXPECT_EQ(report->kept, 1u);
  EXPECT_EQ(report->removed, 1u);
  EXPECT_EQ(report->bytes_freed, 7u);
  EXPECT_TRUE(store->has(*keep));
  EXPECT_FALSE(store->has(*drop));
  auto stats = store->stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->objects, 1u);
  EXPECT_EQ(stats->bytes, 4u);
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
