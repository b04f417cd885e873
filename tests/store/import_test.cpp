// import_directory on real trees: every entry type, xattrs, hard links, odd names, symlink
// loops, big trees, and clear errors for bad paths.
#include "store/import.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <cstring>

#include "store/diff.h"
#include "support/temp_dir.h"

namespace livefs::store {
namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

TEST(Import, EveryEntryType) {
  TempDir tmp;
  fs::path src = tmp / "src";
  write_file(src / "bin/tool", "#!/bin/sh\necho hi\n", 0755);
  write_file(src / "etc/conf", "x=1\n", 0600);
  ASSERT_EQ(chown((src / "etc/conf").c_str(), 123, 456), 0);
  ASSERT_EQ(setxattr((src / "etc/conf").c_str(), "user.tag", "v", 1, 0), 0);
  ASSERT_EQ(symlink("tool", (src / "bin/alias").c_str()), 0);
  ASSERT_EQ(symlink("loop", (src / "loop").c_str()), 0);  // a symlink to itself
  ASSERT_EQ(link((src / "bin/tool").c_str(), (src / "bin/hardlink").c_str()), 0);
  ASSERT_EQ(mknod((src / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  ASSERT_EQ(mkfifo((src / "fifo").c_str(), 0644), 0);
  int sock = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string sock_path = (src / "sock").string();
  ASSERT_LT(sock_path.size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, sock_path.c_str());
  ASSERT_EQ(bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(sock);
  write_file(src / "odd/new\nline", "n");
  write_file(src / std::string("odd/bad\xff\xfeutf8"), "b");
  fs::create_directories(src / "empty");

  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto result = import_directory(src, &*store, {});
  ASSERT_TRUE(result) << result.error().message();
  const Tree& t = result->tree;
  auto tool = t.find("bin/tool");
  ASSERT_TRUE(tool);
  EXPECT_EQ(tool->type(), EntryType::file);
  EXPECT_EQ(tool->mode(), 0755u);
  EXPECT_EQ(tool->object(), ObjectId::of(std::string_view("#!/bin/sh\necho hi\n")));
  EXPECT_TRUE(store->has(tool->object()));
  auto conf = t.find("etc/conf");
  EXPECT_EQ(conf->uid(), 123u);
  EXPECT_EQ(conf->gid(), 456u);
  EXPECT_EQ(conf->mode(), 0600u);
  EXPECT_EQ(*conf->xattr("user.tag"), "v");
  EXPECT_EQ(t.find("bin/alias")->type(), EntryType::symlink);
  EXPECT_EQ(t.find("bin/alias")->target(), "tool");
  EXPECT_EQ(t.find("loop")->target(), "loop");
  auto hl = t.find("bin/hardlink");
  EXPECT_EQ(hl->link_group(), tool->link_group());
  EXPECT_NE(hl->link_group(), 0u);
  EXPECT_EQ(hl->nlink(), 2u);
  EXPECT_EQ(t.find("null")->type(), EntryType::chardev);
  EXPECT_EQ(t.find("null")->rdev(), makedev(1, 3));
  EXPECT_EQ(t.find("fifo")->type(), EntryType::fifo);
  EXPECT_EQ(t.find("sock")->type(), EntryType::socket);
  EXPECT_TRUE(t.find("odd/new\nline"));
  EXPECT_TRUE(t.find(std::string("odd/bad\xff\xfeutf8")));
  EXPECT_EQ(t.find("empty")->type(), EntryType::dir);
  EXPECT_EQ(result->stats.files, 5u);
  EXPECT_TRUE(store->verify()->ok());

  // Importing again gives the same tree; a scan without a store gives the same ids.
  auto again = import_directory(src, nullptr, {.store_objects = false});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(diff(t, again->tree).empty());
}

TEST(Import, BadPathsAreClearErrors) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto missing = import_directory(tmp / "nope", &*store, {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
  write_file(tmp / "plain", "x");
  auto notdir = import_directory(tmp / "plain", &*store, {});
  ASSERT_FALSE(notdir);
  EXPECT_EQ(notdir.error().code, ENOTDIR);
}

TEST(Import, ManyFiles) {
  TempDir tmp;
  fs::path src = tmp / "src";
  // 200,000 entries: 400 directories of 500 small files.
  for (int d = 0; d < 400; ++d) {
    fs::path dir = src / ("d" + std::to_string(d));
    fs::create_directories(dir);
    for (int f = 0; f < 500; ++f) {
      std::string name = (dir / ("f" + std::to_string(f))).string();
      int fd = open(name.c_str(), O_WRONLY | O_CREAT, 0644);
      ASSERT_GE(fd, 0);
      if (f % 50 == 0) {
        ASSERT_EQ(write(fd, name.data(), name.size()), (ssize_t)name.size());
      }
      close(fd);
    }
  }
  auto result = import_directory(src, nullptr, {.store_objects = false});
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ(result->stats.files, 200000u);
  EXPECT_EQ(result->tree.size(), 200401u);
  EXPECT_TRUE(result->tree.find("d399/f499"));
}

}  // namespace
}  // namespace livefs::store
