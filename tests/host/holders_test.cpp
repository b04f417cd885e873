// find_holders with real processes on real files: an executable, an open descriptor and a
// mapping of files that are then replaced (rename over); the /proc parsers on a made-up /proc;
// unit_from_cgroup on v2 and v1 contents.
#include "host/holders.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace livefs::host {
namespace {

namespace fs = std::filesystem;
using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;

// A child process, killed and reaped at scope exit.
class Child {
 public:
  explicit Child(pid_t pid) : pid_(pid) {}
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_;
};

// A pipe whose ends are close-on-exec and above the descriptors the children set up (3).
struct ReadyPipe {
  int read_end = -1;
  int write_end = -1;
  ReadyPipe() {
    int p[2];
    if (::pipe(p) != 0) throw std::runtime_error("pipe");
    read_end = ::fcntl(p[0], F_DUPFD_CLOEXEC, 10);
    write_end = ::fcntl(p[1], F_DUPFD_CLOEXEC, 10);
    ::close(p[0]);
    ::close(p[1]);
  }
  ~ReadyPipe() {
    if (read_end >= 0) ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  // Parent side: closes its write end and reads what the child wrote until it closed its own.
  std::string wait() {
    ::close(write_end);
    write_end = -1;
    std::string got;
    char c;
    ssize_t n;
    while ((n = ::read(read_end, &c, 1)) != 0) {
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) break;
      got += c;
      if (c == '!') break;
    }
    return got;
  }
};

// Starts `program` with `args`; with `fd3`, the child opens it as descriptor 3 first. Returns
// once the exec happened: the close-on-exec pipe then reads end-of-file.
pid_t spawn(const fs::path& program, std::vector<std::string> args, const fs::path& fd3 = {}) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::string prog = program.string();
  std::string held = fd3.string();
  ReadyPipe ready;
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    if (!held.empty()) {
      int fd = ::open(held.c_str(), O_RDONLY);
      // fd 3 may be taken by a descriptor inherited from the test runner: data goes there,
      // and nowhere else.
      if (fd < 0 || (fd != 3 && (::dup2(fd, 3) != 3 || ::close(fd) != 0))) {
        (void)!::write(ready.write_end, "open failed!", 12);
        ::_exit(127);
      }
    }
    ::execv(prog.c_str(), argv.data());
    (void)!::write(ready.write_end, "exec failed!", 12);
    ::_exit(127);
  }
  std::string got = ready.wait();
  if (!got.empty()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("child " + prog + ": " + got);
  }
  return pid;
}

// Forks a child (no exec) that maps `file`, closes the descriptor and waits to be killed: the
// file is then held by the mapping only.
pid_t spawn_mapper(const fs::path& file) {
  std::string path = file.string();
  ReadyPipe ready;
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    void* map = fd < 0 ? MAP_FAILED : ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      (void)!::write(ready.write_end, "mmap failed!", 12);
      ::_exit(127);
    }
    ::close(fd);
    (void)!::write(ready.write_end, "ok!", 3);
    ::close(ready.write_end);
    for (;;) ::pause();
  }
  std::string got = ready.wait();
  if (got != "ok!") {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("mapper: " + got);
  }
  return pid;
}

// Gives `path` new content the way an update does: a new file renamed over the old one.
void replace(const fs::path& path, const fs::path& new_content_from) {
  fs::path tmp = path;
  tmp += ".new";
  fs::copy_file(new_content_from, tmp, fs::copy_options::overwrite_existing);
  fs::permissions(tmp, fs::status(path).permissions());
  fs::rename(tmp, path);
}

std::vector<Holder> holders_of(const std::vector<Holder>& all, pid_t pid) {
  std::vector<Holder> out;
  std::ranges::copy_if(all, std::back_inserter(out), [&](const Holder& h) { return h.pid == pid; });
  return out;
}

std::vector<std::string> hows(const std::vector<Holder>& hs) {
  std::vector<std::string> out;
  for (const Holder& h : hs) out.push_back(h.path + ": " + h.how);
  return out;
}

// Files in a temporary directory and three processes holding them.
class FindHoldersTest : public ::testing::Test {
 protected:
  FindHoldersTest() : tmp_("livefs-holders") {
    fs::create_directories(tmp_ / "bin");
    fs::copy_file("/bin/sleep", tmp_ / "bin/sleep");
    fs::permissions(tmp_ / "bin/sleep", fs::perms(0755));
    write_file(tmp_ / "data", "old data\n");
    write_file(tmp_ / "lib/libdata.so", std::string(8192, 'o'));
    write_file(tmp_ / "unused", "never held\n");
    write_file(tmp_ / "new-content", "new\n");
  }

  // Starts the three holders: bin/sleep executing, /bin/sleep with "data" open as fd 3, and
  // a mapper of lib/libdata.so.
  void start_holders() {
    runner_ = std::make_unique<Child>(spawn(tmp_ / "bin/sleep", {"sleep", "60"}));
    opener_ = std::make_unique<Child>(spawn("/bin/sleep", {"sleep", "60"}, tmp_ / "data"));
    mapper_ = std::make_unique<Child>(spawn_mapper(tmp_ / "lib/libdata.so"));
  }

  // The holders are found by (device, inode) of the old versions, taken before the files
  // were replaced; nothing is looked up by path.
  HeldFile id_of(const std::string& path) {
    struct stat st;
    EXPECT_EQ(::stat((tmp_ / path).c_str(), &st), 0) << path;
    return HeldFile{.dev = st.st_dev, .ino = st.st_ino, .path = path};
  }

  std::vector<Holder> find_ids(const std::vector<HeldFile>& files) {
    auto found = find_holders(HolderQuery{.files = files});
    EXPECT_TRUE(found.has_value()) << found.error().message();
    return found.value_or(std::vector<Holder>{});
  }

  TempDir tmp_;
  // Declared after tmp_: killed before the directory goes.
  std::unique_ptr<Child> runner_;
  std::unique_ptr<Child> opener_;
  std::unique_ptr<Child> mapper_;
};

TEST_F(FindHoldersTest, OldVersionsAreFoundByDeviceAndInode) {
  start_holders();
  std::vector<HeldFile> old = {id_of("bin/sleep"), id_of("data"), id_of("lib/libdata.so"),
                               id_of("unused")};
  replace(tmp_ / "bin/sleep", "/bin/sleep");
  replace(tmp_ / "data", tmp_ / "new-content");
  replace(tmp_ / "lib/libdata.so", tmp_ / "new-content");
  Child current(spawn("/bin/sleep", {"sleep", "60"}, tmp_ / "data"));

  std::vector<Holder> found = find_ids(old);
  std::vector<Holder> runner = holders_of(found, runner_->pid());
  ASSERT_EQ(hows(runner), std::vector<std::string>{"bin/sleep: exe"});
  EXPECT_EQ(runner[0].command, "sleep");
  EXPECT_EQ(runner[0].unit, unit_from_cgroup(read_file("/proc/self/cgroup")));
  EXPECT_EQ(hows(holders_of(found, opener_->pid())), std::vector<std::string>{"data: fd 3"});
  EXPECT_EQ(hows(holders_of(found, mapper_->pid())),
            std::vector<std::string>{"lib/libdata.so: mapped"});
  EXPECT_EQ(hows(holders_of(found, current.pid())), std::vector<std::string>{});
  EXPECT_EQ(found.size(), 3u) << ::testing::PrintToString(hows(found));
}

TEST_F(FindHoldersTest, TwoFilesOfOnePathAreOneHolderLine) {
  start_holders();
  HeldFile data = id_of("data");
  HeldFile other = data;
  other.ino += 1000000;  // another (unheld) version of the same path
  std::vector<Holder> found = find_ids({other, data, data});
  EXPECT_EQ(hows(holders_of(found, opener_->pid())), std::vector<std::string>{"data: fd 3"});
}

TEST_F(FindHoldersTest, NoFilesReadsNothing) {
  auto found = find_holders(HolderQuery{}, tmp_ / "no-proc");
  ASSERT_FALSE(found.has_value()) << "an unreadable proc is an error even then";
  found = find_holders(HolderQuery{});
  ASSERT_TRUE(found.has_value());
  EXPECT_TRUE(found->empty());
}

// A made-up /proc for find_holders: maps lines matched by device and inode only (the path
// column is not looked at), an fd whose mount this process does not see (found in the
// process's own mountinfo), a socket whose fdinfo would match (skipped by its link), an fd on
// an unknown mount, and the exe (a link to a real file, identified from this process's fdinfo
// of an O_PATH descriptor) hiding the mapping of the same file.
TEST(FindHoldersFakeProcTest, ProcFilesAreMatchedByIds) {
  TempDir tmp("livefs-holders");
  write_file(tmp / "exe-file", "exe\n");
  struct stat exe_st;
  ASSERT_EQ(::stat((tmp / "exe-file").c_str(), &exe_st), 0);
  fs::path proc = tmp / "proc";
  // This process's mount table, as the real one (the exe link names a real file).
  write_file(proc / "self/mountinfo", read_file("/proc/self/mountinfo"));

  pid_t pid = ::getpid() == 4242 ? 4243 : 4242;
  fs::path p = proc / std::to_string(pid);
  write_file(p / "comm", "fake\n");
  write_file(p / "cgroup", "0::/system.slice/fake.service\n");
  write_file(p / "mountinfo", "99999 1 0:99 / /private rw,relatime - tmpfs tmpfs rw\n");
  ASSERT_EQ(::symlink((tmp / "exe-file").c_str(), (p / "exe").c_str()), 0);
  char exe_dev[32];
  std::snprintf(exe_dev, sizeof exe_dev, "%02x:%02x", major(exe_st.st_dev), minor(exe_st.st_dev));
  std::string exe_ino = std::to_string(exe_st.st_ino);
  write_file(p / "maps",
             "55d0c0000000-55d0c0001000 r--p 00000000 00:63 1234                       "
             "/somewhere/else (deleted)\n"
             "55d0c0001000-55d0c0002000 r-xp 00001000 00:63 1234                       "
             "/somewhere/else (deleted)\n"
             "55d0c0003000-55d0c0004000 rw-p 00000000 00:00 0                          [heap]\n"
             "7f0000000000-7f0000001000 r--p 00000000 00:64 1234                       /x\n"
             "7f0000002000-7f0000003000 r-xp 00000000 " +
                 std::string(exe_dev) + " " + exe_ino + "   " + (tmp / "exe-file").string() +
                 "\n"
                 "7f0000004000-7f0000005000 rw-p 00000000 00:00 0\n"
                 "garbage\n");
  fs::create_directories(p / "fd");
  ASSERT_EQ(::symlink("/private/b", (p / "fd/3").c_str()), 0);
  ASSERT_EQ(::symlink("socket:[77]", (p / "fd/4").c_str()), 0);
  ASSERT_EQ(::symlink("/unknown/c", (p / "fd/5").c_str()), 0);
  write_file(p / "fdinfo/3", "pos:\t0\nflags:\t0100000\nmnt_id:\t99999\nino:\t5678\n");
  write_file(p / "fdinfo/4", "pos:\t0\nflags:\t02\nmnt_id:\t99999\nino:\t5678\n");
  write_file(p / "fdinfo/5", "pos:\t0\nflags:\t0100000\nmnt_id:\t12345\nino:\t5678\n");
  // A process whose entries cannot be read.
  fs::create_directories(proc / "4244");

  HolderQuery query{.files = {{.dev = makedev(0, 0x63), .ino = 1234, .path = "lib/a.so"},
                              {.dev = makedev(0, 99), .ino = 5678, .path = "data"},
                              {.dev = exe_st.st_dev, .ino = exe_st.st_ino, .path = "bin/exe"}}};
  auto found = find_holders(query, proc);
  ASSERT_TRUE(found.has_value()) << found.error().message();
  auto holder = [&](std::string path, std::string how) {
    return Holder{.pid = pid, .command = "fake", .path = path, .how = how, .unit = "fake.service"};
  };
  std::vector<Holder> expected = {holder("bin/exe", "exe"), holder("lib/a.so", "mapped"),
                                  holder("data", "fd 3")};
  EXPECT_EQ(*found, expected) << ::testing::PrintToString(hows(*found));
}

TEST(FindHoldersFakeProcTest, Parsers) {
  FdInfo info = parse_fdinfo("pos:\t0\nflags:\t02\nmnt_id:\t31\nino:\t18446744073709551615\n");
  EXPECT_EQ(info.mnt_id, 31);
  EXPECT_EQ(info.ino, static_cast<ino_t>(18446744073709551615ULL));
  info = parse_fdinfo("pos:\t0\nmnt_id:\tx\n");
  EXPECT_EQ(info.mnt_id, -1);
  EXPECT_EQ(info.ino, 0u);

  dev_t dev = 0;
  ino_t ino = 0;
  ASSERT_TRUE(parse_maps_line(
      "7f0000000000-7f0000001000 r--p 00000000 fd:01 9223372036854775809   /usr/lib/x", &dev,
      &ino));
  EXPECT_EQ(dev, makedev(0xfd, 0x01));
  EXPECT_EQ(ino, static_cast<ino_t>(9223372036854775809ULL));
  // A replaced file (unlinked, or deleted by a livefs switch) carries " (deleted)".
  ASSERT_TRUE(parse_maps_line(
      "7f0000002000-7f0000003000 r-xp 00003000 00:3a 17   /usr/lib/libz.so.1 (deleted)", &dev,
      &ino));
  EXPECT_EQ(dev, makedev(0, 0x3a));
  EXPECT_EQ(ino, 17u);
  ASSERT_TRUE(parse_maps_line("7f0000004000-7f0000005000 rw-p 00000000 00:00 0", &dev, &ino));
  EXPECT_EQ(ino, 0u);
  EXPECT_FALSE(parse_maps_line("7f0000004000-7f0000005000 rw-p 00000000 0000 0", &dev, &ino));
  EXPECT_FALSE(parse_maps_line("7f0000004000-7f0000005000 rw-p", &dev, &ino));
  EXPECT_FALSE(parse_maps_line("", &dev, &ino));
}

TEST(UnitFromCgroupTest, CgroupV2Paths) {
  EXPECT_EQ(unit_from_cgroup("0::/system.slice/ssh.service\n"), "ssh.service");
  EXPECT_EQ(unit_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n"),
            "session-3.scope");
  EXPECT_EQ(
      unit_from_cgroup("0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service\n"),
      "foo.service");
  EXPECT_EQ(unit_from_cgroup("0::/system.slice/docker.socket"), "docker.socket");
  // A delegated subtree below the unit.
  EXPECT_EQ(unit_from_cgroup("0::/system.slice/foo.service/payload\n"), "foo.service");
  EXPECT_EQ(unit_from_cgroup("0::/init.scope\n"), "init.scope");
}

TEST(UnitFromCgroupTest, NoUnit) {
  EXPECT_EQ(unit_from_cgroup("0::/\n"), "");
  EXPECT_EQ(unit_from_cgroup(""), "");
  EXPECT_EQ(unit_from_cgroup("0::/system.slice\n"), "");
  EXPECT_EQ(unit_from_cgroup("0::/docker/4f2a9c\n"), "");
  EXPECT_EQ(unit_from_cgroup("0::/.service\n"), "");
  EXPECT_EQ(unit_from_cgroup("garbage without colons\n"), "");
}

TEST(UnitFromCgroupTest, CgroupV1Lines) {
  // Hybrid: the v2 line is preferred.
  EXPECT_EQ(unit_from_cgroup("12:pids:/system.slice/other.service\n"
                             "1:name=systemd:/system.slice/cron.service\n"
                             "0::/system.slice/cron.service\n"),
            "cron.service");
  // Legacy: the name=systemd hierarchy, wherever it is listed.
  EXPECT_EQ(unit_from_cgroup("11:memory:/system.slice/other.service\n"
                             "10:cpu,cpuacct:/\n"
                             "1:name=systemd:/system.slice/nginx.service\n"),
            "nginx.service");
  // Only a controller hierarchy names a unit.
  EXPECT_EQ(unit_from_cgroup("9:name=systemd:/\n"
                             "4:memory:/system.slice/postgresql.service\n"
                             "0::/\n"),
            "postgresql.service");
  // Not a unit anywhere (a container's own cgroups).
  EXPECT_EQ(unit_from_cgroup("4:memory:/process_api/1a07\n3:cpuset:/\n0::/\n"), "");
}

}  // namespace
}  // namespace livefs::host
