// The merged view through a real FUSE mount: the booted tree served as it is, layers
// adding, replacing and removing entries, switches, open files across switches, EROFS,
// over-mounting the booted directory, node accounting, setuid programs and file
// capabilities, detaching while files are mapped, listings across switches, names of any
// bytes, and paths below booted symlinks.
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "host/mount_users.h"
#include "overlay/filesystem.h"
#include "store/import.h"
#include "support/served_view.h"
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
      fs_->abort();  // a failed test may have left something open in the view
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
    auto mounted = Filesystem::mount({.mountpoint = mountpoint, .passthrough = passthrough_}, view);
    ASSERT_TRUE(mounted) << mounted.error().message();
    fs_ = std::move(*mounted);
    server_ = std::thread([this] {
      (void)fs_->serve();
      std::lock_guard lock(served_mutex_);
      served_ = true;
      served_cv_.notify_all();
    });
  }

  // Whether serve() returned within `limit` (a bound for a failing test, not a pace).
  bool wait_served(std::chrono::seconds limit) {
    std::unique_lock lock(served_mutex_);
    return served_cv_.wait_for(lock, limit, [this] { return served_; });
  }
  bool served() {
    std::lock_guard lock(served_mutex_);
    return served_;
  }

  // Waits for `child` to exit, at most `limit` (a bound for a failing test), and returns its
  // wait status. A child still waiting on the view then is released by aborting the view
  // (its request fails), reaped, and nullopt returned.
  std::optional<int> wait_child(pid_t child, std::chrono::seconds limit) {
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, child, 0));
    EXPECT_GE(pidfd, 0) << strerror(errno);
    pollfd p{pidfd, POLLIN, 0};
    int ready = poll(&p, 1, static_cast<int>(limit.count() * 1000));
    close(pidfd);
    int status = 0;
    if (ready == 1) {
      EXPECT_EQ(waitpid(child, &status, 0), child);
      return status;
    }
    kill(child, SIGKILL);
    fs_->abort();
    if (server_.joinable()) server_.join();
    fs_.reset();
    waitpid(child, &status, 0);
    return std::nullopt;
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
  bool passthrough_ = true;  // MountOptions::passthrough of start()
  std::thread server_;
  std::mutex served_mutex_;
  std::condition_variable served_cv_;
  bool served_ = false;  // guarded by served_mutex_
};

// The same, serving every read through the daemon (--no-passthrough, or a kernel or libfuse
// without passthrough).
class MountTestNoPassthrough : public MountTest {
 protected:
  void SetUp() override {
    passthrough_ = false;
    MountTest::SetUp();
  }
};

// Built against a libfuse with passthrough (3.16 or later, as scripts/lib.sh builds it); with
// an older one the passthrough tests have nothing to test.
#ifdef FUSE_CAP_PASSTHROUGH
constexpr bool kLibfuseHasPassthrough = true;
#else
constexpr bool kLibfuseHasPassthrough = false;
#endif

// Drops the page cache of `path` (written back first: dirty pages stay).
void evict_pages(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  ASSERT_EQ(fsync(fd.get()), 0);
  ASSERT_EQ(posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED), 0);
}

// How many pages of `path` are in the page cache behind a mapping of it (mincore: nothing
// is read in).
size_t resident_pages(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd);
  struct stat st {};
  EXPECT_EQ(fstat(fd.get(), &st), 0);
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size_t len = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
  EXPECT_NE(map, MAP_FAILED) << strerror(errno);
  if (map == MAP_FAILED) return SIZE_MAX;
  std::vector<unsigned char> vec((len + page - 1) / page);
  EXPECT_EQ(mincore(map, len, vec.data()), 0) << strerror(errno);
  munmap(map, len);
  return static_cast<size_t>(std::ranges::count_if(vec, [](unsigned char v) { return v & 1; }));
}

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

TEST_F(MountTest, OpaqueDirectoryHidesCachedBootedChildren) {
  start(empty_layer(), mnt_);
  ASSERT_EQ(read_file(mnt_ / "lib/gone/x"), "x\n");  // cached by the kernel now
  store::Entry opaque;
  opaque.path = "lib/gone";
  opaque.type = store::EntryType::dir;
  opaque.mode = 0755;
  opaque.opaque = true;
  switch_to({opaque, layer_file("lib/gone/z", "z\n")}, 1);
  EXPECT_FALSE(fs::exists(mnt_ / "lib/gone/x"));
  EXPECT_EQ(read_file(mnt_ / "lib/gone/z"), "z\n");
  // A file added under a merged directory leaves its cached siblings alone and visible.
  ASSERT_EQ(read_file(mnt_ / "bin/keep"), "keep\n");
  switch_to({opaque, layer_file("lib/gone/z", "z\n"), layer_file("bin/added", "a\n")}, 2);
  EXPECT_EQ(read_file(mnt_ / "bin/added"), "a\n");
  EXPECT_EQ(read_file(mnt_ / "bin/keep"), "keep\n");
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_ / "bin")) names.insert(e.path().filename());
  EXPECT_TRUE(names.contains("added"));
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

// ---- running programs as an unprivileged user ------------------------------------------------

constexpr uid_t kNobody = 65534;

// Runs `argv` as uid/gid 65534 (no supplementary groups); its stdout, or "exit N" / "signal N"
// appended when it did not exit 0.
std::string run_as_nobody(const std::vector<std::string>& argv) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return "pipe failed";
  pid_t child = fork();
  if (child == 0) {
    dup2(out[1], 1);
    if (setgroups(0, nullptr) != 0 || setgid(kNobody) != 0 || setuid(kNobody) != 0) _exit(126);
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status)) return text + "signal " + std::to_string(WTERMSIG(status));
  if (WEXITSTATUS(status) != 0) return text + "exit " + std::to_string(WEXITSTATUS(status));
  return text;
}

// A VFS_CAP_REVISION_2 security.capability value: cap_net_raw (13) permitted and effective.
std::string net_raw_capability() {
  uint32_t words[5] = {0x02000000u | 0x1u, 1u << 13, 0, 0, 0};
  return std::string(reinterpret_cast<const char*>(words), sizeof words);
}

// Makes the test's directory traversable by uid 65534 (mkdtemp makes it 0700).
void open_to_others(const fs::path& dir) { ASSERT_EQ(chmod(dir.c_str(), 0755), 0); }

TEST_F(MountTest, SetuidProgramsRunAsTheirOwnerThroughTheView) {
  open_to_others(tmp_.path());
  fs::copy_file("/usr/bin/id", booted_ / "bin/id-suid");
  ASSERT_EQ(chown((booted_ / "bin/id-suid").c_str(), 0, 0), 0);
  ASSERT_EQ(chmod((booted_ / "bin/id-suid").c_str(), 04755), 0);
  std::string id = read_file("/usr/bin/id");
  start(*store::Tree::build({layer_file("bin/id-layer", id, 04755)}), mnt_);

  for (std::string name : {"id-suid", "id-layer"}) {
    std::string out = run_as_nobody({(mnt_ / "bin" / name).string()});
    EXPECT_TRUE(out.starts_with("uid=65534(")) << name << ": " << out;
    EXPECT_NE(out.find(" euid=0("), std::string::npos) << name << ": " << out;
  }
  auto mount = host::find_mount(fs_->mountpoint());
  ASSERT_TRUE(mount) << mount.error().message();
  EXPECT_EQ(mount->fstype, "fuse.livefs");
  for (std::string flag : {"nosuid", "nodev"})
    EXPECT_EQ(("," + mount->options + ",").find("," + flag + ","), std::string::npos)
        << mount->options;
  EXPECT_NE(mount->super_options.find("allow_other"), std::string::npos) << mount->super_options;
  EXPECT_NE(mount->super_options.find("default_permissions"), std::string::npos);
}

TEST_F(MountTest, FileCapabilitiesAreServedAndHonoured) {
  open_to_others(tmp_.path());
  std::string cap = net_raw_capability();
  fs::copy_file("/usr/bin/cat", booted_ / "bin/cat-raw");
  ASSERT_EQ(
      setxattr((booted_ / "bin/cat-raw").c_str(), "security.capability", cap.data(), cap.size(), 0),
      0);
  store::Entry layer_cat = layer_file("bin/cat-raw-layer", read_file("/usr/bin/cat"), 0755);
  layer_cat.xattrs = {{"security.capability", cap}};
  start(*store::Tree::build({layer_cat}), mnt_);

  for (std::string name : {"cat-raw", "cat-raw-layer"}) {
    fs::path p = mnt_ / "bin" / name;
    char value[64];
    ssize_t n = lgetxattr(p.c_str(), "security.capability", value, sizeof value);
    ASSERT_EQ(n, static_cast<ssize_t>(cap.size())) << name;
    EXPECT_EQ(std::string(value, static_cast<size_t>(n)), cap) << name;
    char names[256];
    n = llistxattr(p.c_str(), names, sizeof names);
    ASSERT_GT(n, 0) << name;
    EXPECT_NE(std::string(names, static_cast<size_t>(n)).find("security.capability"),
              std::string::npos);
    // The kernel reads the capability through the view at exec: cat runs with cap_net_raw
    // effective, as uid 65534.
    std::string status = run_as_nobody({p.string(), "/proc/self/status"});
    EXPECT_NE(status.find("CapEff:\t0000000000002000"), std::string::npos)
        << name << ": " << status;
    EXPECT_NE(status.find("Uid:\t65534"), std::string::npos) << name;
  }
}

// ---- detaching --------------------------------------------------------------------------------

// The content of the large file: a fixed pseudo-random sequence of 64-bit words.
uint64_t word_at(uint64_t i) {
  uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

TEST_F(MountTest, DetachKeepsServingWhatIsMappedUntilTheLastUserLetsGo) {
  constexpr size_t kSize = 64u << 20;
  {
    std::string content(kSize, '\0');
    for (size_t i = 0; i < kSize / 8; ++i) {
      uint64_t w = word_at(i);
      std::memcpy(content.data() + i * 8, &w, 8);
    }
    write_file(booted_ / "big", content);
  }
  start(empty_layer(), mnt_);

  int ready[2], go[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Maps the file and closes it; touches no page before the mount is detached.
    int fd = open((mnt_ / "big").c_str(), O_RDONLY);
    if (fd < 0) _exit(2);
    void* map = mmap(nullptr, kSize, PROT_READ, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) _exit(3);
    close(fd);
    char c = 'm';
    if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(4);
    const auto* words = static_cast<const uint64_t*>(map);
    for (size_t i = 0; i < kSize / 8; ++i)
      if (words[i] != word_at(i)) _exit(5);
    munmap(map, kSize);
    _exit(0);
  }
  close(ready[1]);
  close(go[0]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);

  // Counted before detaching: the child maps a file of the mount.
  auto mount = host::find_mount(fs_->mountpoint());
  ASSERT_TRUE(mount) << mount.error().message();
  auto users = host::processes_using_mount(mount->id, mount->dev);
  ASSERT_TRUE(users) << users.error().message();
  EXPECT_TRUE(std::ranges::binary_search(*users, child));
  EXPECT_FALSE(std::ranges::binary_search(*users, getpid()));

  fs_->stop();
  auto gone = host::find_mount(fs_->mountpoint());
  EXPECT_FALSE(gone) << "still mounted after stop()";
  EXPECT_FALSE(served()) << "serve() returned while the child still maps a file";

  // Every page is read after the detach, through the daemon.
  ASSERT_EQ(write(go[1], "g", 1), 1);
  close(go[1]);
  auto status = wait_child(child, std::chrono::seconds(120));
  ASSERT_TRUE(status) << "the child's reads were not answered";
  ASSERT_TRUE(WIFEXITED(*status)) << "child killed by signal " << WTERMSIG(*status);
  EXPECT_EQ(WEXITSTATUS(*status), 0);
  // The child was the last user: the kernel releases the connection and serve() returns.
  EXPECT_TRUE(wait_served(std::chrono::seconds(60)));
}

TEST_F(MountTest, StopWithoutUsersEndsServe) {
  start(empty_layer(), mnt_);
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "old tool\n");
  fs_->stop();
  EXPECT_TRUE(wait_served(std::chrono::seconds(60)));
}

TEST_F(MountTest, AbortEndsServeWhileAFileIsOpen) {
  start(empty_layer(), mnt_);
  int fd = open((mnt_ / "bin/tool").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  fs_->abort();  // returns once serve() has returned
  server_.join();
  EXPECT_TRUE(served());
  bool passthrough = fs_->file_io().passthrough;
  fs_.reset();  // the device is closed: the connection ends
  char buf[16];
  if (passthrough) {
    // The kernel reads an open passthrough file from its backing file itself: it outlives
    // the daemon.
    EXPECT_EQ(pread(fd, buf, sizeof buf, 0), 9);
    EXPECT_EQ(std::string(buf, 9), "old tool\n");
  } else {
    EXPECT_EQ(pread(fd, buf, sizeof buf, 0), -1);
    EXPECT_EQ(errno, ENOTCONN);
  }
  close(fd);
}

// ---- passthrough: one page cache ---------------------------------------------------------

// A file read through the view is cached once: in its backing file's pages (booted file or
// store object), which the kernel reads and maps itself.
TEST_F(MountTest, PassthroughReadsLeaveNoPagesOfTheirOwn) {
  const std::string content(1 << 20, 'b');
  write_file(booted_ / "lib/booted-big", content);
  start(*store::Tree::build({layer_file("lib/layer-big", std::string(1 << 20, 'l'))}), mnt_);
  EXPECT_EQ(read_file(mnt_ / "lib/booted-big"), content);  // after INIT: negotiated
  if (!kLibfuseHasPassthrough) GTEST_SKIP() << fs_->file_io().why_not;
  ASSERT_TRUE(fs_->file_io().passthrough) << fs_->file_io().why_not;
  EXPECT_EQ(read_file(mnt_ / "lib/layer-big"), std::string(1 << 20, 'l'));
  EXPECT_EQ(fs_->file_io().backing_files, 2u);
  EXPECT_EQ(fs_->file_io().fallbacks, 0u);
  // Without its backing file's pages, the view's file has none: no second copy.
  evict_pages(booted_ / "lib/booted-big");
  EXPECT_EQ(resident_pages(mnt_ / "lib/booted-big"), 0u);
  // A second open of the node uses the backing file registered by the first.
  EXPECT_EQ(read_file(mnt_ / "lib/booted-big"), content);
  EXPECT_EQ(fs_->file_io().backing_files, 2u);
}

TEST_F(MountTestNoPassthrough, ReadsThroughTheDaemonCacheASecondCopy) {
  const std::string content(1 << 20, 'b');
  write_file(booted_ / "lib/booted-big", content);
  start(empty_layer(), mnt_);
  EXPECT_EQ(read_file(mnt_ / "lib/booted-big"), content);
  EXPECT_FALSE(fs_->file_io().passthrough);
  if (kLibfuseHasPassthrough) {
    EXPECT_EQ(fs_->file_io().why_not, "turned off (--no-passthrough)");
  }
  evict_pages(booted_ / "lib/booted-big");
  // The FUSE inode keeps its own copy (what passthrough avoids).
  EXPECT_EQ(resident_pages(mnt_ / "lib/booted-big"), content.size() / 4096);
  EXPECT_EQ(fs_->file_io().backing_files, 0u);
}

// A file opened before a switch keeps its content, read and mapped by the kernel from its
// own backing file; the new content is another node with another backing file.
TEST_F(MountTest, PassthroughOpenFilesKeepTheirContentAcrossASwitch) {
  start(empty_layer(), mnt_);
  UniqueFd old(::open((mnt_ / "bin/tool").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(old);
  if (!kLibfuseHasPassthrough) GTEST_SKIP() << fs_->file_io().why_not;
  ASSERT_TRUE(fs_->file_io().passthrough);
  void* map = mmap(nullptr, 9, PROT_READ, MAP_SHARED, old.get(), 0);
  ASSERT_NE(map, MAP_FAILED);
  ASSERT_TRUE(fs_->switch_to(fs_->current()->with_layer(
      *store::Tree::build({layer_file("bin/tool", "new tool, longer\n", 0755)}), 1)));
  EXPECT_EQ(read_file(mnt_ / "bin/tool"), "new tool, longer\n");
  char buf[32] = {};
  EXPECT_EQ(pread(old.get(), buf, sizeof buf, 0), 9);
  EXPECT_EQ(std::string(buf, 9), "old tool\n");
  EXPECT_EQ(std::string(static_cast<const char*>(map), 9), "old tool\n");
  munmap(map, 9);
  EXPECT_EQ(fs_->file_io().backing_files, 2u);
}

// The kernel stacks two file systems at most. A view of a booted tree on overlayfs takes
// the second level for its backing files (and gets passthrough); a view of that view finds
// its backing files at the limit, and the kernel refuses them: its files are served through
// the daemon, node by node, and read right.
TEST_F(MountTest, BackingFilesTooDeepAreServedThroughTheDaemon) {
  fs::path empty = tmp_ / "empty", on_overlay = tmp_ / "on-overlay", first = tmp_ / "first",
           second = tmp_ / "second";
  for (const fs::path& d : {empty, on_overlay, first, second}) fs::create_directories(d);
  std::string options = "ro,lowerdir=" + booted_.string() + ":" + empty.string();
  ASSERT_EQ(::mount("overlay", on_overlay.c_str(), "overlay", MS_RDONLY, options.c_str()), 0)
      << strerror(errno);
  {
    testing::ServedView over_overlay(on_overlay, store_, empty_layer(), first);
    ASSERT_TRUE(over_overlay.ok()) << over_overlay.error();
    testing::ServedView over_view(first, store_, empty_layer(), second);
    ASSERT_TRUE(over_view.ok()) << over_view.error();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(read_file(second / "bin/tool"), "old tool\n");
      EXPECT_EQ(read_file(second / "etc/conf"), "conf\n");
    }
    if (kLibfuseHasPassthrough) {
      FileIo upper = over_view.fs().file_io(), lower = over_overlay.fs().file_io();
      EXPECT_TRUE(lower.passthrough) << lower.why_not;
      EXPECT_EQ(lower.fallbacks, 0u);
      EXPECT_GE(lower.backing_files, 2u);
      EXPECT_TRUE(upper.passthrough) << upper.why_not;
      EXPECT_EQ(upper.backing_files, 0u);
      EXPECT_EQ(upper.fallbacks, 4u) << "every open of both files";
    }
  }
  EXPECT_EQ(::umount2(on_overlay.c_str(), MNT_DETACH), 0);
}

// ---- symlinks ---------------------------------------------------------------------------------

TEST_F(MountTest, ALayerDirectoryOverABootedSymlinkDoesNotReachOutside) {
  write_file(tmp_ / "outside/shadow", "host secret\n", 0600);
  ASSERT_EQ(symlink((tmp_ / "outside").c_str(), (booted_ / "lnk").c_str()), 0);
  start(*store::Tree::build({layer_file("lnk/hotfix", "hotfix\n")}), mnt_);
  EXPECT_EQ(read_file(mnt_ / "lnk/hotfix"), "hotfix\n");
  struct stat st;
  EXPECT_EQ(lstat((mnt_ / "lnk/shadow").c_str(), &st), -1) << "the host's file is served";
  EXPECT_EQ(errno, ENOENT);
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(mnt_ / "lnk")) names.insert(e.path().filename());
  EXPECT_EQ(names, std::set<std::string>{"hotfix"});
}

TEST_F(MountTest, ReadlinkServesATargetThatGrewSinceTheLookup) {
  start(empty_layer(), mnt_);
  struct stat st;
  ASSERT_EQ(lstat((mnt_ / "bin/alias").c_str(), &st), 0);  // the node, not yet its target
  std::string longer(300, 'y');
  ASSERT_EQ(unlink((booted_ / "bin/alias").c_str()), 0);
  ASSERT_EQ(symlink(longer.c_str(), (booted_ / "bin/alias").c_str()), 0);
  // In a child: the old daemon spun forever on this request, and its reader could not even
  // be killed.
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char buf[512];
    ssize_t n = readlink((mnt_ / "bin/alias").c_str(), buf, sizeof buf);
    _exit(n >= 0 && std::string(buf, static_cast<size_t>(n)) == longer ? 0 : 1);
  }
  auto status = wait_child(child, std::chrono::seconds(60));
  ASSERT_TRUE(status) << "readlink hung";
  ASSERT_TRUE(WIFEXITED(*status));
  EXPECT_EQ(WEXITSTATUS(*status), 0);
}

// ---- listings ---------------------------------------------------------------------------------

struct Listed {
  std::string name;
  ino_t ino;
};

// getdents64 with a small buffer, so a listing takes many calls; `between` runs after each.
std::vector<Listed> list_in_small_steps(const fs::path& dir, const std::function<void()>& between) {
  std::vector<Listed> out;
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << dir;
  if (fd < 0) return out;
  alignas(8) char buf[160];
  for (;;) {
    long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    EXPECT_GE(n, 0) << strerror(errno);
    if (n <= 0) break;
    for (long pos = 0; pos < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf + pos);
      out.push_back({d->d_name, d->d_ino});
      pos += d->d_reclen;
    }
    between();
  }
  close(fd);
  return out;
}

TEST_F(MountTest, DotAndDotDotCarryTheirInodeNumbers) {
  start(*store::Tree::build({layer_file("new/deep/file", "f")}), mnt_);
  auto ino = [](const fs::path& p) {
    struct stat st {};
    EXPECT_EQ(stat(p.c_str(), &st), 0) << p;
    return st.st_ino;
  };
  for (auto [dir, parent] : {std::pair{mnt_, mnt_}, std::pair{mnt_ / "bin", mnt_},
                             std::pair{mnt_ / "new/deep", mnt_ / "new"}}) {
    // glibc's readdir, as ls uses it: entries numbered 0 are dropped.
    DIR* d = opendir(dir.c_str());
    ASSERT_NE(d, nullptr) << dir;
    std::map<std::string, ino_t> seen;
    while (dirent* e = readdir(d)) seen[e->d_name] = e->d_ino;
    closedir(d);
    ASSERT_TRUE(seen.contains(".") && seen.contains("..")) << dir;
    EXPECT_EQ(seen["."], ino(dir)) << dir;
    EXPECT_EQ(seen[".."], ino(parent)) << dir;
  }
}

TEST_F(MountTest, AListingAcrossSwitchesNeitherSkipsNorRepeatsNames) {
  for (int i = 0; i < 150; ++i) write_file(booted_ / "many" / ("keep" + std::to_string(i)), "k");
  for (int i = 0; i < 60; ++i) write_file(booted_ / "many" / ("vol" + std::to_string(i)), "v");
  start(empty_layer(), mnt_);
  uint64_t generation = 0;
  // Each generation removes another third of the vol names and adds names of its own.
  auto next_generation = [&] {
    ++generation;
    std::vector<store::Entry> entries;
    for (int i = 0; i < 60; ++i)
      if ((i + generation) % 3 == 0) entries.push_back(whiteout("many/vol" + std::to_string(i)));
    for (int j = 0; j < 4; ++j)
      entries.push_back(
          layer_file("many/add" + std::to_string(generation) + "-" + std::to_string(j), "a"));
    switch_to(std::move(entries), generation);
  };
  auto listed = list_in_small_steps(mnt_ / "many", next_generation);
  ASSERT_GT(generation, 20u) << "the listing took too few calls to test anything";
  std::map<std::string, int> count;
  for (const Listed& l : listed) ++count[l.name];
  for (const auto& [name, n] : count) EXPECT_EQ(n, 1) << name << " listed " << n << " times";
  for (int i = 0; i < 150; ++i)
    EXPECT_TRUE(count.contains("keep" + std::to_string(i))) << "keep" << i << " skipped";
  EXPECT_TRUE(count.contains(".") && count.contains(".."));
}

TEST_F(MountTest, ADirectoryKeepsItsInodeNumberWhenSomethingBelowChanges) {
  start(*store::Tree::build({layer_file("new/deep/file", "one")}), mnt_);
  auto ino = [&](const char* rel) {
    struct stat st {};
    EXPECT_EQ(stat((mnt_ / rel).c_str(), &st), 0) << rel;
    return st.st_ino;
  };
  ino_t new_before = ino("new"), deep_before = ino("new/deep");
  switch_to({layer_file("new/deep/file", "two, longer"), layer_file("new/other", "o")}, 1);
  EXPECT_EQ(read_file(mnt_ / "new/deep/file"), "two, longer");
  EXPECT_EQ(ino("new"), new_before);
  EXPECT_EQ(ino("new/deep"), deep_before);
}

TEST_F(MountTest, NamesOfAnyBytesAreListedAndLookedUp) {
  std::vector<std::string> booted_names = {"\xff",    "new\nline",        "back\\slash",
                                           "caf\xe9", " lead and trail ", "tab\there"};
  for (const std::string& n : booted_names) write_file(booted_ / "odd" / n, "booted " + n);
  std::string layer_name = "lay\xfe\n\\";
  start(*store::Tree::build({layer_file("odd/" + layer_name, "layer")}), mnt_);
  std::set<std::string> want(booted_names.begin(), booted_names.end());
  want.insert(layer_name);
  std::set<std::string> got;
  for (auto& e : fs::directory_iterator(mnt_ / "odd")) got.insert(e.path().filename().string());
  EXPECT_EQ(got, want);
  for (const std::string& n : booted_names) EXPECT_EQ(read_file(mnt_ / "odd" / n), "booted " + n);
  EXPECT_EQ(read_file(mnt_ / "odd" / layer_name), "layer");
}

// What /proc/self/maps shows for the mapping that starts at `addr` (the path column and what
// follows it), or "" when there is none.
std::string mapped_path(const void* addr) {
  std::string maps = read_file("/proc/self/maps");
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(addr));
  size_t pos = 0;
  while (pos < maps.size()) {
    size_t end = maps.find('\n', pos);
    if (end == std::string::npos) end = maps.size();
    std::string_view line(maps.data() + pos, end - pos);
    if (line.starts_with(start)) {
      size_t slash = line.find('/');
      return slash == std::string_view::npos ? "" : std::string(line.substr(slash));
    }
    pos = end + 1;
  }
  return "";
}

// The link count the daemon serves for `fd` now: asked for with GETATTR (forced), not what
// the kernel cached.
nlink_t served_nlink(int fd) {
  struct statx stx {};
  EXPECT_EQ(statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_NLINK, &stx), 0)
      << strerror(errno);
  return stx.stx_nlink;
}

nlink_t nlink_of(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0) << strerror(errno);
  return st.st_nlink;
}

struct HeldFile {
  UniqueFd fd;
  void* map = nullptr;
  size_t size = 0;
  ~HeldFile() {
    if (map != nullptr) munmap(map, size);
  }
};

// Opens and maps `path` (executable, as the loader maps a library).
std::unique_ptr<HeldFile> hold(const fs::path& path) {
  auto held = std::make_unique<HeldFile>();
  held->fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(held->fd) << path << ": " << strerror(errno);
  if (!held->fd) return held;
  struct stat st {};
  EXPECT_EQ(fstat(held->fd.get(), &st), 0);
  held->size = static_cast<size_t>(st.st_size);
  void* map = mmap(nullptr, held->size, PROT_READ | PROT_EXEC, MAP_PRIVATE, held->fd.get(), 0);
  EXPECT_NE(map, MAP_FAILED) << strerror(errno);
  if (map != MAP_FAILED) held->map = map;
  return held;
}

std::string pread_all(int fd) {
  char buf[256];
  ssize_t n = pread(fd, buf, sizeof buf, 0);
  EXPECT_GE(n, 0) << strerror(errno);
  return n < 0 ? "" : std::string(buf, static_cast<size_t>(n));
}

// After a switch replaces or removes a file, a process still holding its old version sees
// what it would after a package upgrade: the mapping's path ends in " (deleted)" and the
// old inode has no links (what `zypper ps` and needrestart look for), also when the daemon
// is asked again; the path itself serves the new version with its links. A switch back
// makes the version live again, links and all. Files the switch leaves alone keep theirs.
void replaced_files_look_deleted(
    const fs::path& mnt, const std::function<void(std::vector<store::Entry>, uint64_t)>& switch_to,
    const std::function<store::Entry(std::string, std::string)>& layer_file) {
  auto booted = hold(mnt / "bin/keep");
  auto linked = hold(mnt / "lib/linked");
  ASSERT_NE(booted->map, nullptr);
  ASSERT_NE(linked->map, nullptr);
  EXPECT_EQ(mapped_path(booted->map), (mnt / "bin/keep").string());
  EXPECT_EQ(nlink_of(booted->fd.get()), 1u);
  EXPECT_EQ(nlink_of(linked->fd.get()), 2u);

  // The booted file replaced by a layer file.
  switch_to({layer_file("bin/keep", "keep v1\n")}, 1);
  EXPECT_EQ(mapped_path(booted->map), (mnt / "bin/keep").string() + " (deleted)");
  EXPECT_EQ(nlink_of(booted->fd.get()), 0u);
  EXPECT_EQ(served_nlink(booted->fd.get()), 0u);
  EXPECT_EQ(pread_all(booted->fd.get()), "keep\n") << "the old version is still served";
  EXPECT_EQ(std::string(static_cast<const char*>(booted->map), 5), "keep\n");
  auto v1 = hold(mnt / "bin/keep");
  EXPECT_EQ(pread_all(v1->fd.get()), "keep v1\n");
  EXPECT_EQ(nlink_of(v1->fd.get()), 1u);
  EXPECT_EQ(mapped_path(v1->map), (mnt / "bin/keep").string());
  // Untouched hard links keep their count, cached and served.
  EXPECT_EQ(nlink_of(linked->fd.get()), 2u);
  EXPECT_EQ(served_nlink(linked->fd.get()), 2u);
  struct stat st {};
  ASSERT_EQ(stat((mnt / "lib/linked-too").c_str(), &st), 0);
  EXPECT_EQ(st.st_nlink, 2u);

  // A layer file replaced by another, then removed.
  switch_to({layer_file("bin/keep", "keep v2\n")}, 2);
  EXPECT_EQ(nlink_of(v1->fd.get()), 0u);
  EXPECT_EQ(served_nlink(v1->fd.get()), 0u);
  EXPECT_EQ(mapped_path(v1->map), (mnt / "bin/keep").string() + " (deleted)");
  auto v2 = hold(mnt / "bin/keep");
  EXPECT_EQ(pread_all(v2->fd.get()), "keep v2\n");
  EXPECT_EQ(nlink_of(v2->fd.get()), 1u);
  store::Entry gone;
  gone.path = "bin/keep";
  gone.type = store::EntryType::whiteout;
  switch_to({gone}, 3);
  EXPECT_FALSE(fs::exists(mnt / "bin/keep"));
  EXPECT_EQ(nlink_of(v2->fd.get()), 0u);
  EXPECT_EQ(served_nlink(v2->fd.get()), 0u);
  EXPECT_EQ(pread_all(v2->fd.get()), "keep v2\n");

  // Back to v1 (a rollback): the version held since is live again, with its link.
  switch_to({layer_file("bin/keep", "keep v1\n")}, 4);
  UniqueFd again(::open((mnt / "bin/keep").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(again);
  EXPECT_EQ(pread_all(again.get()), "keep v1\n");
  EXPECT_EQ(nlink_of(again.get()), 1u);
  EXPECT_EQ(served_nlink(again.get()), 1u);
  EXPECT_EQ(nlink_of(v1->fd.get()), 1u) << "the same node as the fresh open";
  EXPECT_EQ(served_nlink(v1->fd.get()), 1u);
  EXPECT_EQ(nlink_of(v2->fd.get()), 0u);
  EXPECT_EQ(served_nlink(v2->fd.get()), 0u);

  // And back to the booted tree.
  switch_to({}, 5);
  UniqueFd booted_again(::open((mnt / "bin/keep").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(booted_again);
  EXPECT_EQ(pread_all(booted_again.get()), "keep\n");
  EXPECT_EQ(nlink_of(booted_again.get()), 1u);
  EXPECT_EQ(served_nlink(booted_again.get()), 1u);
  EXPECT_EQ(nlink_of(booted->fd.get()), 1u);
  EXPECT_EQ(nlink_of(v1->fd.get()), 0u);
  EXPECT_EQ(served_nlink(v1->fd.get()), 0u);
  EXPECT_EQ(nlink_of(linked->fd.get()), 2u);
  EXPECT_EQ(served_nlink(linked->fd.get()), 2u);
}

TEST_F(MountTest, ReplacedFilesLookDeletedToProcessesStillUsingThem) {
  write_file(booted_ / "lib/linked", "linked\n");
  ASSERT_EQ(link((booted_ / "lib/linked").c_str(), (booted_ / "lib/linked-too").c_str()), 0);
  start(empty_layer(), mnt_);
  replaced_files_look_deleted(
      mnt_, [&](auto entries, uint64_t g) { switch_to(std::move(entries), g); },
      [&](std::string path, std::string content) { return layer_file(path, content); });
}

TEST_F(MountTestNoPassthrough, ReplacedFilesLookDeletedToProcessesStillUsingThem) {
  write_file(booted_ / "lib/linked", "linked\n");
  ASSERT_EQ(link((booted_ / "lib/linked").c_str(), (booted_ / "lib/linked-too").c_str()), 0);
  start(empty_layer(), mnt_);
  replaced_files_look_deleted(
      mnt_, [&](auto entries, uint64_t g) { switch_to(std::move(entries), g); },
      [&](std::string path, std::string content) { return layer_file(path, content); });
}

// A switch of two files is one step for readers: while the kernel still has the old entries
// (the hook runs after the new view is published, before the kernel is told), opening either
// file already gives its new version, never one new and the other old. Both were looked up
// (and their entries cached) before the switch.
void a_switch_is_one_step_for_readers(Filesystem& fs, const fs::path& mnt,
                                      const std::function<void()>& do_switch) {
  EXPECT_EQ(read_file(mnt / "lib/a"), "a booted\n");
  EXPECT_EQ(read_file(mnt / "lib/b"), "b booted\n");
  std::string a_during, b_during;
  fs.set_switch_hook_for_tests([&] {
    a_during = read_file(mnt / "lib/a");
    b_during = read_file(mnt / "lib/b");
  });
  do_switch();
  fs.set_switch_hook_for_tests(nullptr);
  EXPECT_EQ(a_during, "a new\n");
  EXPECT_EQ(b_during, "b new\n");
  EXPECT_EQ(read_file(mnt / "lib/a"), "a new\n");
  EXPECT_EQ(read_file(mnt / "lib/b"), "b new\n");
}

TEST_F(MountTest, ASwitchIsOneStepForReaders) {
  write_file(booted_ / "lib/a", "a booted\n");
  write_file(booted_ / "lib/b", "b booted\n");
  start(empty_layer(), mnt_);
  a_switch_is_one_step_for_readers(*fs_, mnt_, [&] {
    switch_to({layer_file("lib/a", "a new\n"), layer_file("lib/b", "b new\n")}, 1);
  });
}

// A layer directory that goes takes its files with it: each held one looks deleted too
// (its name is deleted before its directory's entry goes, while the kernel can still find it).
TEST_F(MountTest, FilesOfARemovedLayerDirectoryLookDeleted) {
  start(*store::Tree::build({layer_file("opt/pkg/lib/libx.so", "x v1\n"),
                             layer_file("opt/pkg/bin/tool", "tool\n", 0755)}),
        mnt_);
  auto lib = hold(mnt_ / "opt/pkg/lib/libx.so");
  ASSERT_NE(lib->map, nullptr);
  EXPECT_EQ(nlink_of(lib->fd.get()), 1u);
  switch_to({}, 1);
  EXPECT_FALSE(fs::exists(mnt_ / "opt"));
  EXPECT_EQ(mapped_path(lib->map), (mnt_ / "opt/pkg/lib/libx.so").string() + " (deleted)");
  EXPECT_EQ(nlink_of(lib->fd.get()), 0u);
  EXPECT_EQ(served_nlink(lib->fd.get()), 0u);
  EXPECT_EQ(pread_all(lib->fd.get()), "x v1\n");
}

// A booted directory hidden by a whiteout or an opaque layer directory takes its booted
// files with it (the layer lists none of them): each held one looks deleted too, and comes
// back with its links when the directory does.
TEST_F(MountTest, FilesOfAHiddenBootedDirectoryLookDeleted) {
  write_file(booted_ / "lib/opaque/y", "y\n");
  write_file(booted_ / "lib/opaque/sub/z", "z\n");
  start(empty_layer(), mnt_);
  auto gone = hold(mnt_ / "lib/gone/x");
  auto hidden = hold(mnt_ / "lib/opaque/sub/z");
  ASSERT_NE(gone->map, nullptr);
  ASSERT_NE(hidden->map, nullptr);
  store::Entry opaque;
  opaque.path = "lib/opaque";
  opaque.type = store::EntryType::dir;
  opaque.mode = 0755;
  opaque.opaque = true;
  switch_to({whiteout("lib/gone"), opaque, layer_file("lib/opaque/y", "new y\n")}, 1);
  EXPECT_FALSE(fs::exists(mnt_ / "lib/gone"));
  EXPECT_FALSE(fs::exists(mnt_ / "lib/opaque/sub"));
  EXPECT_EQ(mapped_path(gone->map), (mnt_ / "lib/gone/x").string() + " (deleted)");
  EXPECT_EQ(nlink_of(gone->fd.get()), 0u);
  EXPECT_EQ(served_nlink(gone->fd.get()), 0u);
  EXPECT_EQ(nlink_of(hidden->fd.get()), 0u);
  EXPECT_EQ(served_nlink(hidden->fd.get()), 0u);
  EXPECT_EQ(pread_all(hidden->fd.get()), "z\n");

  switch_to({}, 2);
  UniqueFd again(::open((mnt_ / "lib/gone/x").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(again);
  EXPECT_EQ(nlink_of(again.get()), 1u);
  EXPECT_EQ(nlink_of(gone->fd.get()), 1u);
  EXPECT_EQ(served_nlink(gone->fd.get()), 1u);
}

}  // namespace
}  // namespace livefs::overlay
