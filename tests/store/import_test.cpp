// import_directory on real trees: every entry type, xattrs, hard links, odd names, symlink
// loops, big trees, and clear errors for bad paths.
#include "store/import.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <atomic>
#include <cstring>
#include <thread>

#include "common/unique_fd.h"

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

// A staged import against the booted manifest stores only what the booted tree does not
// serve at the same path, but every file it records at another path has its content stored:
// a new hard link to a file the booted tree has unchanged (whichever link the walk meets
// first) is served from the store.
TEST(Import, ANewLinkToAnUnchangedFileIsStored) {
  TempDir tmp;
  fs::path booted = tmp / "booted", staged = tmp / "staged";
  for (int i = 0; i < 20; ++i) {
    std::string name = "f" + std::to_string(i);
    write_file(booted / name, "content " + name);
    write_file(staged / name, "content " + name);
    ASSERT_EQ(::link((staged / name).c_str(), (staged / ("new-" + name)).c_str()), 0);
  }
  auto scanned = import_directory(booted, nullptr, {.store_objects = false});
  ASSERT_TRUE(scanned) << scanned.error().message();
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ImportOptions options;
  options.unchanged_from = &scanned->tree;
  auto result = import_directory(staged, &*store, options);
  ASSERT_TRUE(result) << result.error().message();
  for (int i = 0; i < 20; ++i) {
    std::string name = "new-f" + std::to_string(i);
    auto e = result->tree.find(name);
    ASSERT_TRUE(e) << name;
    EXPECT_TRUE(store->has(e->object())) << name;
  }
}

// ---- item 8: nothing outside the source is read, through a symlink or a hard link ----------

constexpr const char* kSecret = "TOPSECRET: root's eyes only\n";

// A source directory `src` (with d/secret, a harmless file) and, outside it, a directory
// holding a 0600 secret under the same name.
struct Sources {
  TempDir tmp;
  fs::path src = tmp / "src";
  fs::path outside = tmp / "outside";
  Sources() {
    write_file(src / "d/secret", "public\n");
    write_file(outside / "secret", kSecret, 0600);
  }
  UniqueFd open_src() const {
    return UniqueFd(::open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  }
};

size_t count_objects(const fs::path& store) {
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(store / "objects"))
    if (e.is_regular_file()) ++n;
  return n;
}

TEST(ImportBeneath, ASymlinkOnTheWayIsNotFollowed) {
  Sources s;
  // The owner of the source swaps the directory for a symlink to where the secret is.
  fs::rename(s.src / "d", s.src / "d.real");
  ASSERT_EQ(symlink(s.outside.c_str(), (s.src / "d").c_str()), 0);
  auto store = ObjectStore::open(s.tmp / "store");
  ASSERT_TRUE(store);
  UniqueFd root = s.open_src();
  ObjectStore::Batch batch(*store);
  auto e =
      import_entry_at(root.get(), "d/secret", "d/secret", &batch, (s.src / "d/secret").string());
  ASSERT_FALSE(e) << "imported " << e->object.hex();
  EXPECT_EQ(e.error().code, ELOOP);
  EXPECT_NE(e.error().message().find((s.src / "d/secret").string()), std::string::npos)
      << e.error().message();
  EXPECT_EQ(batch.pending(), 0u);
  ASSERT_TRUE(batch.commit());
  EXPECT_FALSE(store->has(ObjectId::of(std::string_view(kSecret))));
  EXPECT_EQ(count_objects(s.tmp / "store"), 0u);
  // The symlink itself is an entry like any other.
  auto link = import_entry_at(root.get(), "d", "d", &batch, (s.src / "d").string());
  ASSERT_TRUE(link) << link.error().message();
  EXPECT_EQ(link->type, EntryType::symlink);
  EXPECT_EQ(link->target, s.outside.string());
  // And the real directory is read where it is.
  auto real = import_entry_at(root.get(), "d.real/secret", "x", &batch, "d.real/secret");
  ASSERT_TRUE(real) << real.error().message();
  EXPECT_EQ(real->object, ObjectId::of(std::string_view("public\n")));
}

TEST(ImportBeneath, AHardLinkToAFileTheOwnerCannotReadIsRefused) {
  Sources s;
  // The source belongs to a user; the secret is root's. A hard link is all it takes (where
  // protected_hardlinks is off, or made by anyone who can).
  constexpr uid_t kUser = 4242;
  ASSERT_EQ(chown(s.src.c_str(), kUser, kUser), 0);
  ASSERT_EQ(link((s.outside / "secret").c_str(), (s.src / "innocent").c_str()), 0);
  // A hard link among the user's own files is fine.
  write_file(s.src / "mine", "mine\n", 0600);
  ASSERT_EQ(chown((s.src / "mine").c_str(), kUser, kUser), 0);
  ASSERT_EQ(link((s.src / "mine").c_str(), (s.src / "mine2").c_str()), 0);
  // So is one to a file the user could read anyway.
  write_file(s.outside / "readable", "world-readable\n", 0644);
  ASSERT_EQ(link((s.outside / "readable").c_str(), (s.src / "readable").c_str()), 0);

  auto store = ObjectStore::open(s.tmp / "store");
  ASSERT_TRUE(store);
  UniqueFd root = s.open_src();
  {
    ObjectStore::Batch batch(*store);
    auto e =
        import_entry_at(root.get(), "innocent", "innocent", &batch, (s.src / "innocent").string());
    ASSERT_FALSE(e);
    EXPECT_EQ(e.error().code, EACCES);
    EXPECT_NE(e.error().message().find((s.src / "innocent").string()), std::string::npos)
        << e.error().message();
    EXPECT_NE(e.error().message().find("uid 4242"), std::string::npos) << e.error().message();
    EXPECT_TRUE(import_entry_at(root.get(), "mine2", "mine2", &batch, "mine2"));
    EXPECT_TRUE(import_entry_at(root.get(), "readable", "readable", &batch, "readable"));
    ASSERT_TRUE(batch.commit());
  }
  // The whole-tree import refuses it too, naming it.
  auto tree = import_directory(s.src, &*store, {});
  ASSERT_FALSE(tree);
  EXPECT_EQ(tree.error().code, EACCES);
  EXPECT_NE(tree.error().message().find("innocent"), std::string::npos) << tree.error().message();
  // As does a single file named by its path (hotfix add).
  ObjectStore::Batch batch(*store);
  auto single = import_entry(s.src / "innocent", "usr/bin/x", &batch);
  ASSERT_FALSE(single);
  EXPECT_EQ(single.error().code, EACCES);
  ASSERT_TRUE(batch.commit());
  EXPECT_FALSE(store->has(ObjectId::of(std::string_view(kSecret))));
}

TEST(ImportBeneath, ADirectorySwappedForASymlinkMeanwhileNeverYieldsTheSecret) {
  Sources s;
  // d and dlink trade places, atomically and over and over, while entries below d are
  // imported (one at a time, as the hotfix loop does, and as whole trees).
  ASSERT_EQ(symlink(s.outside.c_str(), (s.src / "dlink").c_str()), 0);
  auto store = ObjectStore::open(s.tmp / "store");
  ASSERT_TRUE(store);
  UniqueFd root = s.open_src();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> swaps{0};
  std::thread swapper([&] {
    while (!stop) {
      if (renameat2(AT_FDCWD, (s.src / "d").c_str(), AT_FDCWD, (s.src / "dlink").c_str(),
                    RENAME_EXCHANGE) == 0)
        ++swaps;
    }
  });
  struct Join {  // also when an assertion below ends the test early
    std::atomic<bool>& stop;
    std::thread& t;
    ~Join() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join{stop, swapper};
  int through_symlink = 0, read_real = 0;
  const ObjectId secret = ObjectId::of(std::string_view(kSecret));
  const ObjectId harmless = ObjectId::of(std::string_view("public\n"));
  for (int i = 0; i < 400; ++i) {
    ObjectStore::Batch batch(*store);
    auto e = import_entry_at(root.get(), "d/secret", "d/secret", &batch, "d/secret");
    if (e) {
      EXPECT_EQ(e->object, harmless);
      ++read_real;
    } else {
      EXPECT_EQ(e.error().code, ELOOP) << e.error().message();
      ++through_symlink;
    }
    if (i % 20 == 0) {
      auto tree = import_directory(s.src, nullptr, {.batch = &batch});
      if (tree) {
        for (size_t k = 0; k < tree->tree.size(); ++k)
          EXPECT_NE(tree->tree.entry(k).object(), secret) << tree->tree.entry(k).path();
      }
    }
    ASSERT_TRUE(batch.commit());
    ASSERT_FALSE(store->has(secret)) << "iteration " << i;
  }
  stop = true;
  swapper.join();
  EXPECT_GT(swaps.load(), 0u);
  std::printf("%d imports met the symlink, %d the directory, over %llu swaps\n", through_symlink,
              read_real, static_cast<unsigned long long>(swaps.load()));
  // Both sides of the race happened (else the test proved nothing); neither leaked.
  EXPECT_GT(through_symlink + read_real, 0);
  EXPECT_FALSE(store->has(secret));
}

}  // namespace
}  // namespace livefs::store
