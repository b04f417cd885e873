// A corrupt object through a real FUSE mount: reading the file it backs is EIO, never the
// wrong bytes (the design's invariant 4), and a put of the right content repairs it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "overlay/filesystem.h"
#include "overlay/view.h"
#include "store/object_store.h"
#include "store/tree.h"
#include "support/served_view.h"
#include "support/temp_dir.h"

namespace livefs::store {
namespace {

using livefs::testing::ServedView;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

// Reads `path` whole with read(2); the errno of the first failure, or 0.
int read_all(const fs::path& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return err;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return 0;
}

TEST(CorruptObjectMount, IsEioNotTheWrongBytesAndAPutRepairsIt) {
  TempDir tmp;
  fs::path booted = tmp / "booted";
  write_file(booted / "bin/keep", "booted\n");
  const std::string content = "the staged tool, as it was stored\n";
  ObjectId id;
  {
    auto store = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(store);
    id = *store->put_bytes(std::string_view(content));
    auto other = store->put_bytes(std::string_view("an intact file\n"));
    ASSERT_TRUE(other);
  }
  // Flip a byte on disk, after the store wrote it.
  fs::path obj = tmp / "store" / ObjectStore::relative_path(id);
  ASSERT_EQ(chmod(obj.c_str(), 0644), 0);
  {
    int fd = ::open(obj.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(pwrite(fd, "T", 1, 4), 1);
    ::close(fd);
  }
  ASSERT_EQ(chmod(obj.c_str(), 0444), 0);

  auto opened = ObjectStore::open(tmp / "store");  // the daemon's handle, fresh
  ASSERT_TRUE(opened);
  auto store = std::make_shared<ObjectStore>(std::move(*opened));
  auto entry = [](const std::string& path, const ObjectId& object, uint64_t size) {
    Entry e;
    e.path = path;
    e.type = EntryType::file;
    e.mode = 0755;
    e.size = size;
    e.object = object;
    return e;
  };
  ObjectId intact = ObjectId::of(std::string_view("an intact file\n"));
  auto layer = Tree::build({entry("bin/tool", id, content.size()), entry("bin/other", intact, 15)});
  ASSERT_TRUE(layer);
  fs::path mnt = tmp / "mnt";
  fs::create_directories(mnt);
  {
    ServedView m(booted, store, *layer, mnt);
    ASSERT_TRUE(m.ok()) << m.error();
    std::string got;
    EXPECT_EQ(read_all(mnt / "bin/tool", got), EIO) << "served as: " << got;
    EXPECT_TRUE(got.empty()) << "wrong bytes reached the reader: " << got;
    got.clear();
    EXPECT_EQ(read_all(mnt / "bin/tool", got), EIO) << "still EIO the second time";
    got.clear();
    EXPECT_EQ(read_all(mnt / "bin/other", got), 0);
    EXPECT_EQ(got, "an intact file\n");
  }
  // An import of the same content meets the corrupt copy and replaces it.
  {
    auto writer = ObjectStore::open(tmp / "store");
    ASSERT_TRUE(writer);
    ASSERT_TRUE(writer->put_bytes(std::string_view(content)));
  }
  auto repaired = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(repaired);
  {
    ServedView m(booted, std::make_shared<ObjectStore>(std::move(*repaired)), *layer, mnt);
    ASSERT_TRUE(m.ok()) << m.error();
    std::string got;
    EXPECT_EQ(read_all(mnt / "bin/tool", got), 0);
    EXPECT_EQ(got, content);
  }
}

}  // namespace
}  // namespace livefs::store
