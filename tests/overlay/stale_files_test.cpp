// Filesystem::stale_files and the holder scan over a real FUSE mount: real processes execute,
// map and hold open files of the view (or of the booted directory itself, as programs
// started before an over-mount do), switches replace the files, and the scan, run in this
// process (the one serving the mount) and by inode numbers only, finds exactly the processes
// that use an old version.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "host/holder_monitor.h"
#include "host/holders.h"
#include "livefs/view_holders.h"
#include "overlay/filesystem.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

// A child process, killed and reaped at scope exit.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

// What a child does once forked: exec a program, hold a file open as descriptor 3 (while
// running /bin/sleep), or map a file and close its descriptor.
struct Hold {
  enum Kind { exec, open_fd3, map } kind;
  fs::path file;
};

// Forks a child that sets up `hold`, and returns once it has: the close-on-exec pipe reads
// end-of-file after an exec, "ok" after a mapping; anything else is the child's failure.
std::unique_ptr<Child> spawn(const Hold& hold) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  std::string file = hold.file.string();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::close(p[0]);
    auto die = [&](const char* why) {
      (void)!::write(p[1], why, std::strlen(why));
      ::_exit(127);
    };
    if (hold.kind == Hold::exec) {
      ::execl(file.c_str(), "sleep", "60", nullptr);
      die("exec");
    }
    // A forked child shares this process's descriptors (the view's backing descriptors of
    // booted files among them) until it execs: only the pipe stays.
    if (hold.kind == Hold::map && (::close_range(3, static_cast<unsigned>(p[1]) - 1, 0) != 0 ||
                                   ::close_range(static_cast<unsigned>(p[1]) + 1, ~0U, 0) != 0))
      die("close_range");
    int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) die("open");
    if (hold.kind == Hold::open_fd3) {
      if (fd != 3 && (::dup2(fd, 3) != 3 || ::close(fd) != 0)) die("dup2");
      ::execl("/bin/sleep", "sleep", "60", nullptr);
      die("exec");
    }
    void* m = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) die("mmap");
    ::close(fd);
    (void)!::write(p[1], "ok", 2);
    ::close(p[1]);
    for (;;) ::pause();
  }
  ::close(p[1]);
  std::string got;
  char buf[64];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (got == "ok") break;
  }
  ::close(p[0]);
  auto child = std::make_unique<Child>(pid);
  if (got != (hold.kind == Hold::map ? "ok" : "")) throw std::runtime_error("child: " + got);
  return child;
}

std::vector<std::string> holds_of(const std::vector<host::Holder>& all, pid_t pid) {
  std::vector<std::string> out;
  for (const host::Holder& h : all)
    if (h.pid == pid) out.push_back(h.path + ": " + h.how);
  return out;
}

class StaleFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    booted_ = tmp_ / "booted";
    fs::create_directories(booted_ / "bin");
    fs::copy_file("/bin/sleep", booted_ / "bin/tool");
    fs::permissions(booted_ / "bin/tool", fs::perms(0755));
    write_file(booted_ / "data", "booted data\n");
    write_file(booted_ / "lib/libdata.so", std::string(8192, 'b'));
    write_file(booted_ / "lib/keep.so", std::string(8192, 'k'));
    auto s = store::ObjectStore::open(tmp_ / "store");
    ASSERT_TRUE(s);
    store_ = std::make_shared<store::ObjectStore>(std::move(*s));
    mnt_ = tmp_ / "mnt";
    fs::create_directories(mnt_);
  }

  void TearDown() override {
    holders_.clear();  // no process uses the view any more
    if (fs_) {
      fs_->abort();
      if (server_.joinable()) server_.join();
      fs_.reset();
    }
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }

  void start(const fs::path& mountpoint) {
    UniqueFd fd(::open(booted_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(fd);
    auto view = View::create(std::move(fd), store_, *store::Tree::build({}), 0);
    mnt_ = mountpoint;
    auto mounted = Filesystem::mount({.mountpoint = mountpoint}, view);
    ASSERT_TRUE(mounted) << mounted.error().message();
    fs_ = std::move(*mounted);
    server_ = std::thread([this] { (void)fs_->serve(); });
  }

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

  void switch_to(std::vector<store::Entry> entries, uint64_t generation) {
    auto layer = store::Tree::build(std::move(entries));
    ASSERT_TRUE(layer) << layer.error().message();
    ASSERT_TRUE(fs_->switch_to(fs_->current()->with_layer(std::move(*layer), generation)));
  }

  // A layer with new versions of the three held files (version `v`).
  std::vector<store::Entry> new_versions(const std::string& v) {
    return {layer_file("bin/tool", read_file("/bin/sleep") + v, 0755),
            layer_file("data", "data " + v + "\n"),
            layer_file("lib/libdata.so", std::string(8192, v[0]))};
  }

  pid_t hold(Hold::Kind kind, const fs::path& file) {
    holders_.push_back(spawn(Hold{kind, file}));
    return holders_.back()->pid();
  }

  std::vector<host::Holder> scan(const std::vector<std::string>& touched) {
    auto query = cli::view_holder_query(*fs_)(touched);
    EXPECT_TRUE(query) << query.error().message();
    if (!query) return {};
    auto found = host::find_holders(*query);
    EXPECT_TRUE(found) << found.error().message();
    return found.value_or(std::vector<host::Holder>{});
  }

  const std::vector<std::string> touched_ = {"bin/tool", "data", "lib/libdata.so"};
  TempDir tmp_{"livefs-stale"};
  fs::path booted_, mnt_;
  std::shared_ptr<store::ObjectStore> store_;
  std::unique_ptr<Filesystem> fs_;
  std::thread server_;
  std::vector<std::unique_ptr<Child>> holders_;
};

TEST_F(StaleFilesTest, NothingIsStaleBeforeASwitch) {
  start(mnt_);
  pid_t runner = hold(Hold::exec, mnt_ / "bin/tool");
  EXPECT_EQ(fs_->stale_files(touched_), std::vector<StaleFile>{});
  EXPECT_EQ(holds_of(scan(touched_), runner), std::vector<std::string>{});
}

// A change of metadata only (the content is the booted file's) leaves nobody with an old
// version: neither a process holding the booted file nor one holding the view's node of it.
TEST_F(StaleFilesTest, AChangeOfMetadataOnlyLeavesNobodyStale) {
  start(mnt_);
  pid_t through_view = hold(Hold::open_fd3, mnt_ / "data");
  pid_t direct = hold(Hold::open_fd3, booted_ / "data");
  store::Entry touched;
  touched.path = "data";
  touched.type = store::EntryType::file;
  touched.mode = 0600;
  touched.mtime_sec = 1'700'000'000;
  touched.size = read_file(booted_ / "data").size();
  touched.object = store::ObjectId::of(std::string_view(read_file(booted_ / "data")));
  touched.content_booted = true;
  switch_to({touched}, 1);
  struct stat st;
  ASSERT_EQ(::stat((mnt_ / "data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'700'000'000);
  EXPECT_EQ(read_file(mnt_ / "data"), "booted data\n");  // the booted file's, not the store's

  EXPECT_EQ(fs_->stale_files({"data"}), std::vector<StaleFile>{});
  std::vector<host::Holder> found = scan({"data"});
  EXPECT_EQ(holds_of(found, through_view), std::vector<std::string>{});
  EXPECT_EQ(holds_of(found, direct), std::vector<std::string>{});
}

TEST_F(StaleFilesTest, HoldersOfReplacedBootedFilesThroughTheView) {
  start(mnt_);
  pid_t runner = hold(Hold::exec, mnt_ / "bin/tool");
  pid_t opener = hold(Hold::open_fd3, mnt_ / "data");
  pid_t mapper = hold(Hold::map, mnt_ / "lib/libdata.so");
  pid_t keeper = hold(Hold::map, mnt_ / "lib/keep.so");
  struct stat old_data;
  ASSERT_EQ(::stat((mnt_ / "data").c_str(), &old_data), 0);

  switch_to(new_versions("1"), 1);
  ASSERT_EQ(read_file(mnt_ / "data"), "data 1\n");
  pid_t current = hold(Hold::open_fd3, mnt_ / "data");

  // Each path: the view's node of the booted version (held) and the booted file itself.
  std::vector<StaleFile> stale = fs_->stale_files(touched_);
  auto view_node = std::ranges::find(stale, StaleFile{.path = "data", .ino = old_data.st_ino});
  EXPECT_NE(view_node, stale.end()) << ::testing::PrintToString(stale.size());
  EXPECT_EQ(std::ranges::count(stale, true, &StaleFile::booted), 3);

  std::vector<host::Holder> found = scan(touched_);
  EXPECT_EQ(holds_of(found, runner), std::vector<std::string>{"bin/tool: exe"});
  EXPECT_EQ(holds_of(found, opener), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(holds_of(found, mapper), std::vector<std::string>{"lib/libdata.so: mapped"});
  EXPECT_EQ(holds_of(found, keeper), std::vector<std::string>{}) << "never replaced";
  EXPECT_EQ(holds_of(found, current), std::vector<std::string>{}) << "holds the new version";
  auto runner_holder = std::ranges::find(found, runner, &host::Holder::pid);
  ASSERT_NE(runner_holder, found.end());
  EXPECT_EQ(runner_holder->command, "tool");
  EXPECT_EQ(found.size(), 3u);
}

TEST_F(StaleFilesTest, HoldersOfAnEarlierLayerVersionAndNotOfTheCurrentOne) {
  start(mnt_);
  switch_to(new_versions("1"), 1);
  pid_t runner1 = hold(Hold::exec, mnt_ / "bin/tool");
  pid_t opener1 = hold(Hold::open_fd3, mnt_ / "data");
  pid_t mapper1 = hold(Hold::map, mnt_ / "lib/libdata.so");
  EXPECT_EQ(scan(touched_), std::vector<host::Holder>{}) << "version 1 is live";

  switch_to(new_versions("2"), 2);
  pid_t opener2 = hold(Hold::open_fd3, mnt_ / "data");
  std::vector<host::Holder> found = scan(touched_);
  EXPECT_EQ(holds_of(found, runner1), std::vector<std::string>{"bin/tool: exe"});
  EXPECT_EQ(holds_of(found, opener1), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(holds_of(found, mapper1), std::vector<std::string>{"lib/libdata.so: mapped"});
  EXPECT_EQ(holds_of(found, opener2), std::vector<std::string>{});

  // Back to version 1 (a rollback): its holders are current again, version 2's are not.
  switch_to(new_versions("1"), 1);
  found = scan(touched_);
  EXPECT_EQ(holds_of(found, opener1), std::vector<std::string>{});
  EXPECT_EQ(holds_of(found, runner1), std::vector<std::string>{});
  EXPECT_EQ(holds_of(found, opener2), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(found.size(), 1u);
}

TEST_F(StaleFilesTest, AFileRemovedFromTheViewStillHeld) {
  start(mnt_);
  pid_t opener = hold(Hold::open_fd3, mnt_ / "data");
  store::Entry whiteout;
  whiteout.path = "data";
  whiteout.type = store::EntryType::whiteout;
  switch_to({whiteout}, 1);
  ASSERT_FALSE(fs::exists(mnt_ / "data"));
  EXPECT_EQ(holds_of(scan({"data"}), opener), std::vector<std::string>{"data: fd 3"});
}

// The scan asks the mount nothing: after a switch nobody has looked up the new versions, and
// after the scan still nobody has (a stat of mnt/P, as the path-based scan did, would have
// made the kernel look P up and the view create a node for the new version).
TEST_F(StaleFilesTest, TheScanSendsTheMountNoLookup) {
  start(mnt_);
  pid_t opener = hold(Hold::open_fd3, mnt_ / "data");
  pid_t runner = hold(Hold::exec, mnt_ / "bin/tool");
  switch_to(new_versions("1"), 1);
  auto new_version_looked_up = [&] {
    std::vector<std::string> out;
    for (const std::string& p : touched_) {
      auto now = fs_->current()->resolve(p);
      EXPECT_TRUE(now) << p;
      if (now && fs_->nodes().find(*now)) out.push_back(p);
    }
    return out;
  };
  ASSERT_EQ(new_version_looked_up(), std::vector<std::string>{});
  std::vector<host::Holder> found = scan(touched_);
  EXPECT_EQ(holds_of(found, opener), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(holds_of(found, runner), std::vector<std::string>{"bin/tool: exe"});
  EXPECT_EQ(new_version_looked_up(), std::vector<std::string>{});
}

// Over-mounted, as on /usr: programs started before the mount use the booted files
// themselves, which the view never served them; the scan finds them by the booted file's
// device and inode (fdinfo's mount id is the covered mount's).
TEST_F(StaleFilesTest, ProgramsStartedBeforeAnOverMountHoldTheBootedFiles) {
  pid_t runner = hold(Hold::exec, booted_ / "bin/tool");
  pid_t opener = hold(Hold::open_fd3, booted_ / "data");
  pid_t mapper = hold(Hold::map, booted_ / "lib/libdata.so");
  start(booted_);
  EXPECT_EQ(scan(touched_), std::vector<host::Holder>{}) << "nothing replaced yet";

  switch_to(new_versions("1"), 1);
  ASSERT_EQ(read_file(booted_ / "data"), "data 1\n");  // through the view
  std::vector<host::Holder> found = scan(touched_);
  EXPECT_EQ(holds_of(found, runner), std::vector<std::string>{"bin/tool: exe"});
  EXPECT_EQ(holds_of(found, opener), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(holds_of(found, mapper), std::vector<std::string>{"lib/libdata.so: mapped"});
  EXPECT_EQ(found.size(), 3u);
}

// The monitor the daemon owns, on the real view: a switch hands over its paths and returns;
// the result follows.
TEST_F(StaleFilesTest, TheMonitorFindsTheHoldersAfterASwitch) {
  start(mnt_);
  pid_t opener = hold(Hold::open_fd3, mnt_ / "data");
  host::HolderMonitor monitor(cli::view_holder_query(*fs_));
  switch_to(new_versions("1"), 1);
  uint64_t n = monitor.request(touched_);
  host::HolderReport report = monitor.wait_for(n, std::chrono::seconds(60));
  ASSERT_GE(report.covered, n);
  EXPECT_FALSE(report.error) << report.error->message();
  EXPECT_EQ(holds_of(report.holders, opener), std::vector<std::string>{"data: fd 3"});
}

}  // namespace
}  // namespace livefs::overlay
