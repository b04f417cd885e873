// The merged view through a real FUSE mount: the booted tree served as it is, layers
// adding, replacing and removing entries, switches, open files across switches, EROFS,
// over-mounting the booted directory, and node accounting.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <set>
#include <thread>

#include "overlay/filesystem.h"
#include "store/import.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

class MountTest : public ::testing::Test {
 protected:
  void SetUp() override {
    booted_ = tmp_ / "booted";
    write_file(booted_ / "bin/tool", "old tool\n", 0755);
    write_file(booted_ / "bin/keep", "keep\n", 0755);
    write_file(booted_ / "lib/gone/x", "x\n");
    write_file(booted_ / "lib/file-to-dir", "f\n");
    write_file(booted_ / "lib/dir-to-file/y", "y\n");
    write_file(booted_ / "etc/conf", "conf\n", 0600);
    ASSERT_EQ(chown((booted_ / "etc/conf").c_str(), 7, 8), 0);
    ASSERT_EQ(setxattr((booted_ / "etc/conf").c_str(), "user.k", "v", 1, 0), 0);
    ASSERT_EQ(symlink("tool", (booted_ / "bin/alias").c_str()), 0);
    ASSERT_EQ(link((booted_ / "bin/tool").c_str(), (booted_ / "bin/tool-link").c_str()), 0);
    ASSERT_EQ(mkfifo((booted_ / "fifo").c_str(), 0640), 0);
    ASSERT_EQ(mknod((booted_ / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    auto s = store::ObjectStore::open(tmp_ / "store");
    ASSERT_TRUE(s);
    store_ = std::make_shared<store::ObjectStore>(std::move(*s));
    mnt_ = tmp_ / "mnt";
    fs::create_directories(mnt_);
  }

  void TearDown() override {
    if (fs_) {
      fs_->stop();
      if (server_.joinable()) server_.join();
      fs_.reset();
    }
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }

  store::Tree empty_layer() { return *store::Tree::build({}); }

  store::Entry layer_file(const std::string& path, const std::string& content,
                          uint32_t mode = 0644) {
    auto id = store_->put_bytes(std::string_view(content));
    EXPECT_TRUE(id);
    store::Entry e;
    e.path = path;
    e.type = store::EntryType::file;
    e.mode = mode;
    e.size = content.size();
    e.object = *id;
    return e;
  }

  static store::Entry whiteout(const std::string& path) {
    store::Entry e;
    e.path = path;
    e.type = store::EntryType::whiteout;
    return e;
  }

  // Mounts `booted_` (or `booted_` over itself) with `layer` at generation 0.
  void start(store::Tree layer, const fs::path& mountpoint) {
    UniqueFd fd(::open(booted_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    auto view = View::create(std::move(fd), store_, std::move(layer), 0);
    mnt_ = mountpoint;
    auto mounted = Filesystem::mount({.mountpoint = mountpoint}, view);
    ASSERT_TRUE(mounted) << mounted.error().message();
    fs_ = std::move(*mounted);
    server_ = std::thread([this] { (void)fs_->serve(); });
  }

  void switch_to(std::vector<store::Entry> entries, uint64_t generation) {
    auto layer = store::Tree::build(std::move(entries));
    ASSERT_TRUE(layer) << layer.error().message();
    auto stats = fs_->switch_to(fs_->current()->with_layer(std::move(*layer), generation));
    ASSERT_TRUE(stats);
  }

  TempDir tmp_;
  fs::path booted_, mnt_;
  std::shared_ptr<store::ObjectStore> store_;
  std::unique_ptr<Filesystem> fs_;
  std::thread server_;
};

TEST_F(MountTest, ServesTheBootedTreeAsItIs) {
  start(empty_layer(), mnt_);
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "old tool\n");
  struct stat a, b;
  ASSERT_EQ(lstat((mnt_ / "etc/conf").c_str(), &a), 0);
  EXPECT_EQ(a.st_mode & 07777, 0600u);
  EXPECT_EQ(a.st_uid, 7u);
  EXPECT_EQ(a.st_gid, 8u);
  char value[16];
  ASSERT_EQ(lgetxattr((mnt_ / "etc/conf").c_str(), "user.k", value, sizeof value), 1);
  EXPECT_EQ(value[0], 'v');
  EXPECT_EQ(fs::read_symlink(mnt_ / "bin/alias"), "tool");
  ASSERT_EQ(lstat((mnt_ / "bin/tool").c_str(), &a), 0);
  ASSERT_EQ(lstat((mnt_ / "bin/tool-link").c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "hard links keep one inode number";
  EXPECT_EQ(a.st_nlink, 2u);
  ASSERT_EQ(lstat((mnt_ / "fifo").c_str(), &a), 0);
  EXPECT_TRUE(S_ISFIFO(a.st_mode));
  ASSERT_EQ(lstat((mnt_ / "null").c_str(), &a), 0);
  EXPECT_TRUE(S_ISCHR(a.st_mode));
  EXPECT_EQ(a.st_rdev, makedev(1, 3));
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_ / "bin")) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"tool", "keep", "alias", "tool-link"}));
  // Read-only.
  EXPECT_EQ(open((mnt_ / "bin/new").c_str(), O_CREAT | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EROFS);
  EXPECT_EQ(unlink((mnt_ / "bin/tool").c_str()), -1);
  EXPECT_EQ(errno, EROFS);
}

TEST_F(MountTest, LayersAddReplaceRemoveAndSwitchBack) {
  start(empty_layer(), mnt_);
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "old tool\n");
  struct stat before;
  ASSERT_EQ(stat((mnt_ / "bin/tool").c_str(), &before), 0);
  int old_fd = open((mnt_ / "bin/tool").c_str(), O_RDONLY);
  ASSERT_GE(old_fd, 0);
  EXPECT_TRUE(fs::exists(mnt_ / "lib/gone/x"));  // present, and now cached as such
  ASSERT_TRUE(fs::exists(mnt_ / "lib/dir-to-file/y"));
  ASSERT_FALSE(fs::exists(mnt_ / "new/deep/file"));  // a cached negative entry

  store::Entry file_to_dir;
  file_to_dir.path = "lib/file-to-dir";
  file_to_dir.type = store::EntryType::dir;
  file_to_dir.mode = 0755;
  file_to_dir.opaque = true;
  switch_to({layer_file("bin/tool", "new tool\n", 0755), layer_file("bin/added", "added\n"),
             whiteout("lib/gone"), file_to_dir, layer_file("lib/file-to-dir/inner", "in\n"),
             layer_file("lib/dir-to-file", "now a file\n"), layer_file("new/deep/file", "deep\n")},
            1);
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "new tool\n");
  EXPECT_EQ(read_file(mnt_ / "bin/added"), "added\n");
  EXPECT_EQ(read_file(mnt_ / "bin/keep"), "keep\n");
  EXPECT_FALSE(fs::exists(mnt_ / "lib/gone"));
  EXPECT_TRUE(fs::is_directory(mnt_ / "lib/file-to-dir"));
  EXPECT_EQ(read_file(mnt_ / "lib/file-to-dir/inner"), "in\n");
  EXPECT_TRUE(fs::is_regular_file(mnt_ / "lib/dir-to-file"));
  EXPECT_EQ(read_file(mnt_ / "lib/dir-to-file"), "now a file\n");
  EXPECT_EQ(read_file(mnt_ / "new/deep/file"), "deep\n");
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_ / "lib")) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"file-to-dir", "dir-to-file"}));
  struct stat after;
  ASSERT_EQ(stat((mnt_ / "bin/tool").c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino) << "changed content gets a new inode";
  // A file opened before the switch keeps its content.
  char buf[64] = {};
  ASSERT_EQ(pread(old_fd, buf, sizeof buf, 0), 9);
  EXPECT_STREQ(buf, "old tool\n");
  close(old_fd);

  // And back to the booted tree.
  switch_to({}, 2);
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "old tool\n");
  EXPECT_FALSE(fs::exists(mnt_ / "bin/added"));
  EXPECT_TRUE(fs::exists(mnt_ / "lib/gone/x"));
  EXPECT_TRUE(fs::is_regular_file(mnt_ / "lib/file-to-dir"));
  EXPECT_TRUE(fs::exists(mnt_ / "lib/dir-to-file/y"));
  EXPECT_FALSE(fs::exists(mnt_ / "new"));
}

TEST_F(MountTest, OverMountsTheBootedDirectory) {
  start(empty_layer(), booted_);
  switch_to({layer_file("bin/tool", "new tool\n", 0755)}, 1);
  EXPECT_EQ(read_file(booted_ / "bin/tool"), "new tool\n");
  EXPECT_EQ(read_file(booted_ / "bin/keep"), "keep\n");
}

TEST_F(MountTest, NodesAreForgottenAgain) {
  start(empty_layer(), mnt_);
  for (int round = 0; round < 20; ++round) {
    switch_to({layer_file("bin/tool", "v" + std::to_string(round))}, round + 1);
    size_t files = 0;
    for (auto& e : fs::recursive_directory_iterator(mnt_)) {
      (void)e;
      ++files;
    }
    EXPECT_GT(files, 10u);
    EXPECT_EQ(read_file(mnt_ / "bin/tool"), "v" + std::to_string(round));
  }
  // Dropping the kernel's dentries sends forgets: the table shrinks back to (nearly) the
  // root, whatever the number of switches before.
  sync();
  ASSERT_TRUE(livefs::testing::run("echo 2 > /proc/sys/vm/drop_caches") == 0);
  for (int i = 0; i < 50 && fs_->node_count() > 1; ++i) usleep(20000);
  EXPECT_LE(fs_->node_count(), 3u);
}

TEST_F(MountTest, ReadersSeeWholeVersionsDuringSwitches) {
  start(empty_layer(), mnt_);
  std::string a(64 * 1024, 'a'), b(64 * 1024, 'b');
  auto layer_a = *store::Tree::build({layer_file("bin/tool", a)});
  auto layer_b = *store::Tree::build({layer_file("bin/tool", b), layer_file("bin/extra", "e")});
  std::atomic<bool> done{false};
  std::atomic<int> bad{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!done) {
        std::string content;
        try {
          content = read_file(mnt_ / "bin/tool");
        } catch (...) {
          ++bad;
          continue;
        }
        bool whole = content == a || content == b || content == "old tool\n";
        if (!whole) ++bad;
        ++reads;
        std::error_code ec;
        for (auto& e : fs::directory_iterator(mnt_ / "bin", ec)) (void)e;
        if (ec) ++bad;
      }
    });
  }
  // At least 300 switches, and on until the readers have read 200 times (a loaded machine
  // may start them late); bounded.
  for (int i = 0; (i < 300 || reads < 200) && i < 200000; ++i) {
    auto stats = fs_->switch_to(fs_->current()->with_layer(i % 2 ? layer_a : layer_b, i + 1));
    ASSERT_TRUE(stats);
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
}

}  // namespace
}  // namespace livefs::overlay
