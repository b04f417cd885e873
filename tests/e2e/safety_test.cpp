// The daemon as the single point of failure of a machine's /usr (issue 10), through the real
// binary: names that are not UTF-8, malformed requests and state files, a restart while the
// killed daemon is still exiting, a private state directory, the CLI's check of who
// listens, signals during teardown, and view paths given as absolute paths.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>
#include <fstream>
#include <random>

#include "common/wire_text.h"
#include "e2e/live_support.h"
#include "livefs/control.h"

namespace livefs::e2e {
namespace {

using livefs::cli::decode_wire;
using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::write_file;

// Fills the file system of `path` to the last byte while it lives.
struct DiskFiller {
  explicit DiskFiller(const char* path) : fd(::open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) {
    std::string chunk(1 << 16, 'x');
    for (size_t size = chunk.size(); size > 0;) {
      if (::write(fd, chunk.data(), size) < 0) size /= 2;
    }
    ::fsync(fd);
  }
  ~DiskFiller() { ::close(fd); }
  int fd;
};

// A raw request line to the daemon; its raw answer line ("" when the connection failed).
std::string raw_request(const fs::path& state, const std::string& line) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = (state / "control.sock").string();
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    (void)!::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) answer.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return answer;
}

bool daemon_answers(LiveWorld& w) {
  auto st = w.status_json();
  return st.is_object() && st.contains("live_generation");
}

// A staged file and a hotfix file whose names are not UTF-8: diff, apply, status and hotfix
// list work, the JSON carries the exact bytes, and the daemon lives on.
TEST(Safety, NamesThatAreNotUtf8) {
  LiveWorld w;
  const std::string cafe = "caf\xe9";  // Latin-1, not UTF-8
  const std::string ff = "\xff";
  write_file(w.booted / "bin/tool", "tool\n");
  write_file(w.staged / "bin/tool", "tool\n");
  write_file(w.staged / ("share/" + cafe), "new\n");
  fs::path src = w.dir / "src";
  write_file(src / "keep", "keep\n");
  w.settle();
  ASSERT_EQ(w.mount().status, 0);

  Ran d = w.cmd("diff", "--json");
  ASSERT_EQ(d.status, 0) << d.out;
  auto diff = decode_wire(nlohmann::json::parse(d.out));
  ASSERT_EQ(diff["changes"].size(), 2u) << d.out;  // share/ and share/café
  EXPECT_EQ(diff["changes"][1]["path"], "share/" + cafe);

  Ran a = w.cmd("apply", quote("/share/" + cafe));
  ASSERT_EQ(a.status, 0) << a.out;
  EXPECT_NE(a.out.find("share/" + cafe), std::string::npos) << a.out;  // printed as bytes
  EXPECT_EQ(read_file(w.mnt / "share" / cafe), "new\n");

  // Every status afterwards, and after a restart.
  for (int round = 0; round < 2; ++round) {
    Ran s = w.cmd("status", "--json");
    ASSERT_EQ(s.status, 0) << s.out;
    auto st = decode_wire(nlohmann::json::parse(s.out));
    const auto& paths = st["generations"][1]["paths"];
    EXPECT_NE(std::find(paths.begin(), paths.end(), "share/" + cafe), paths.end()) << s.out;
    EXPECT_EQ(w.cmd("status").status, 0);
    if (round == 0) {
      ASSERT_EQ(w.cmd("umount").status, 0);
      ASSERT_EQ(w.mount().status, 0);
    }
  }

  // A hotfix watch whose source gains a file named "\xff".
  ASSERT_EQ(w.cmd("hotfix watch", quote(src.string()) + " --at opt").status, 0);
  write_file(src / ff, "ff\n");
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(w.mnt / "opt" / ff);
    return static_cast<bool>(in);
  }));
  Ran l = w.cmd("hotfix list", "--json");
  ASSERT_EQ(l.status, 0) << l.out;
  auto list = decode_wire(nlohmann::json::parse(l.out));
  bool found = false;
  for (const auto& f : list["files"]) found = found || f == "opt/" + ff;
  EXPECT_TRUE(found) << l.out;
  EXPECT_EQ(w.cmd("hotfix list").status, 0);
  EXPECT_TRUE(daemon_answers(w));
  EXPECT_EQ(read_file(w.mnt / "opt" / ff), "ff\n");
}

// The JSON printed by --json is valid UTF-8 and maps back to the bytes exactly.
// A staged tree that cannot be read (here: a hard link to a file its owner cannot read,
// which the import refuses) leaves nothing staged: the view serves the booted tree, status
// says why, as for an OSTree commit that cannot be staged.
TEST(Safety, AStagedTreeThatCannotBeReadLeavesNothingStaged) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool\n");
  write_file(w.staged / "bin/tool", "tool 2\n");
  write_file(w.staged / "secret", "secret\n", 0600);
  ASSERT_EQ(::chown((w.staged / "secret").c_str(), 65534, 65534), 0);
  ASSERT_EQ(::link((w.staged / "secret").c_str(), (w.staged / "bin/link").c_str()), 0);
  ASSERT_EQ(::chown(w.staged.c_str(), 1000, 1000), 0);
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  ASSERT_TRUE(eventually([&] {
    st = w.status_json();
    return st.is_object() && st["loading"].is_null();
  }));
  ASSERT_TRUE(st["stage_error"].is_string()) << st.dump(2);
  EXPECT_NE(st["stage_error"].get<std::string>().find("cannot read"), std::string::npos)
      << st["stage_error"];
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "tool\n");
  Ran d = w.cmd("diff", "--json");
  ASSERT_EQ(d.status, 0) << d.out;
  EXPECT_EQ(nlohmann::json::parse(d.out)["changes"].size(), 0u) << d.out;
}

TEST(Safety, WireTextRoundTripsEveryByteString) {
  std::mt19937 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(rng() % 12, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? 0xF4 : rng());
    std::string wire = to_wire(bytes);
    ASSERT_TRUE(is_utf8(wire));
    ASSERT_EQ(from_wire(wire), bytes);
  }
  EXPECT_EQ(to_wire("caf\xc3\xa9 /usr/bin"), "caf\xc3\xa9 /usr/bin");  // UTF-8 unchanged
  EXPECT_NE(to_wire("\xf4\x8f\xbf\xbf"), "\xf4\x8f\xbf\xbf");          // U+10FFFF escaped
}

// No request, however malformed, takes the daemon down or changes anything.
// `umount --wait` returns once the daemon has exited, not only once it gave up the state
// directory (its answer names the pid to wait for).
TEST(Safety, UmountWaitReturnsOnceTheDaemonIsGone) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool\n");
  ASSERT_EQ(w.mount().status, 0);
  pid_t pid = daemon_pid(w.state);
  ASSERT_GT(pid, 0);
  Ran r = w.cmd("umount", "--wait --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["pid"], pid) << r.out;
  EXPECT_TRUE(thread_group_gone(pid));
}

TEST(Safety, MalformedRequestsGetAnErrorAndTheDaemonLives) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool\n");
  write_file(w.staged / "bin/new", "new\n");
  ASSERT_EQ(w.mount().status, 0);
  const std::vector<std::string> requests = {
      "garbage\n",
      "{\"cmd\": 5}\n",
      "[1,2,3]\n",
      "{\"cmd\": \"apply\", \"patterns\": 7}\n",
      "{\"cmd\": \"apply\", \"patterns\": [1, null]}\n",
      "{\"cmd\": \"apply\", \"all\": \"yes\"}\n",
      "{\"cmd\": \"hotfix_watch\", \"source\": [\"x\"]}\n",
      "{\"cmd\": \"hotfix_add\"}\n",
      "{\"cmd\": \"hotfix_reset\", \"prefix\": 3}\n",
      "{\"cmd\": \"stage\", \"commit\": {}}\n",
      "{\"cmd\": \"diff\", \"by_package\": \"no\"}\n",
      "{\"cmd\": \"status\", \"x\": \"\xff\xfe\"}\n",  // raw bytes that are not UTF-8
      std::string("{\"cmd\": \"st\0atus\"}\n", 20),
      "{\"cmd\": \"" + std::string(100000, 'a') + "\"}\n",
  };
  for (const std::string& r : requests) {
    std::string answer = raw_request(w.state, r);
    ASSERT_FALSE(answer.empty()) << "no answer to " << r.substr(0, 80);
    auto response = nlohmann::json::parse(answer, nullptr, false);
    ASSERT_TRUE(response.is_object()) << answer;
    EXPECT_EQ(response["ok"], false) << r.substr(0, 80) << " -> " << answer;
    ASSERT_TRUE(daemon_answers(w)) << "after " << r.substr(0, 80);
  }
  EXPECT_EQ(w.status_json()["live_generation"], 0);
  EXPECT_FALSE(present(w.mnt / "bin/new"));
}

// A daemon killed with SIGKILL keeps its state lock until its last thread is gone. A mount
// started meanwhile waits for it instead of refusing. The dying daemon is played by a
// process whose leader thread has exited (a zombie) while another thread still holds the
// lock, until the test lets it go.
TEST(Safety, MountWaitsForAnExitingDaemon) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.cmd("umount").status, 0);

  int release[2];
  ASSERT_EQ(::pipe2(release, O_CLOEXEC), 0);  // not inherited by the mount
  pid_t dying = ::fork();
  ASSERT_GE(dying, 0);
  if (dying == 0) {
    int lock = ::open((w.state / "lock").c_str(), O_RDWR);
    if (lock < 0 || ::flock(lock, LOCK_EX) != 0) ::_exit(3);
    FILE* pid = std::fopen((w.state / "daemon.pid").c_str(), "w");
    std::fprintf(pid, "%d\n", ::getpid());
    std::fclose(pid);
    ::close(release[1]);
    std::thread([fd = release[0]] {
      char c;
      (void)!::read(fd, &c, 1);  // until the test closes its end
      ::_exit(0);
    }).detach();
    ::syscall(SYS_exit, 0);  // the leader alone: the process lives on in the other thread
  }
  ::close(release[0]);
  ASSERT_TRUE(eventually([&] {
    std::ifstream in("/proc/" + std::to_string(dying) + "/stat");
    std::string line;
    std::getline(in, line);
    auto close = line.rfind(')');
    return close != std::string::npos && line[close + 2] == 'Z';
  }));
  ASSERT_FALSE(thread_group_gone(dying));

  // The mount, started now, must be waiting for the lock when the dying process goes.
  FILE* out = ::popen(
      (std::string(LIVEFS_BINARY) + " mount --booted " + quote(w.booted.string()) + " --staged " +
       quote(w.staged.string()) + " " + w.state_arg() + " " + quote(w.mnt.string()) + " 2>&1")
          .c_str(),
      "r");
  ASSERT_NE(out, nullptr);
  std::string said;
  char buf[512];
  while (said.find("exiting") == std::string::npos && said.find("livefs:") == std::string::npos &&
         std::fgets(buf, sizeof buf, out) != nullptr) {
    said += buf;
  }
  ::close(release[1]);
  while (std::fgets(buf, sizeof buf, out) != nullptr) said += buf;
  int status = ::pclose(out);
  int ws = 0;
  ::waitpid(dying, &ws, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << said;
  EXPECT_TRUE(daemon_answers(w)) << said;
}

// A live daemon is still refused at once.
TEST(Safety, MountRefusesWhileADaemonRuns) {
  LiveWorld w;
  ASSERT_EQ(w.mount().status, 0);
  fs::path other = w.dir / "other";
  fs::create_directories(other);
  auto start = std::chrono::steady_clock::now();
  Ran again = w.mount(other);
  w.mounted_at = w.mnt;
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.out.find("already running"), std::string::npos) << again.out;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// Damaged state files are a clear error before anything is mounted.
TEST(Safety, MalformedStateFilesAreRefusedBeforeMounting) {
  for (const char* name : {"hotfix.json", "config.json"}) {
    for (const char* text : {"{not json", "[]", "{\"watches\": 5}", "{\"booted_key\": 3}",
                             "{\"watches\": [{\"source\": \"relative\", \"at\": \"x\"}]}"}) {
      LiveWorld w;
      write_file(w.booted / "bin/tool", "tool\n");
      fs::create_directories(w.state);
      fs::permissions(w.state, fs::perms::owner_all, fs::perm_options::replace);
      write_file(w.state / name, text);
      Ran m = w.mount();
      bool relevant = std::string(name) == "hotfix.json"
                          ? std::string(text).find("booted_key") == std::string::npos
                          : std::string(text).find("watches") == std::string::npos;
      if (!relevant) {
        EXPECT_EQ(m.status, 0) << name << ": " << text << "\n" << m.out;
        continue;
      }
      EXPECT_EQ(m.status, 1) << name << ": " << text;
      EXPECT_NE(m.out.find(name), std::string::npos) << m.out;
      EXPECT_FALSE(has_mount(w.mnt)) << name << ": " << text;
    }
  }
}

// The state directory is root's alone: created 0700, an older 0755 one tightened, one that
// others may write or that someone else owns refused; the socket is 0600.
TEST(Safety, StateDirectoryIsPrivate) {
  {
    LiveWorld w;
    ASSERT_EQ(w.mount().status, 0);
    struct stat st {};
    ASSERT_EQ(::stat(w.state.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(::stat((w.state / "control.sock").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  {
    LiveWorld w;
    fs::create_directories(w.state);
    ::chmod(w.state.c_str(), 0755);
    ASSERT_EQ(w.mount().status, 0);
    struct stat st {};
    ASSERT_EQ(::stat(w.state.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
  }
  {
    LiveWorld w;
    fs::create_directories(w.state);
    ::chmod(w.state.c_str(), 0777);
    Ran m = w.mount();
    EXPECT_EQ(m.status, 1);
    EXPECT_NE(m.out.find("writable by group or others"), std::string::npos) << m.out;
    EXPECT_FALSE(has_mount(w.mnt));
  }
  {
    LiveWorld w;
    fs::create_directories(w.state);
    ASSERT_EQ(::chown(w.state.c_str(), 65534, 65534), 0);
    ::chmod(w.state.c_str(), 0700);
    Ran m = w.mount();
    EXPECT_EQ(m.status, 1);
    EXPECT_NE(m.out.find("owned by uid 65534"), std::string::npos) << m.out;
    EXPECT_FALSE(has_mount(w.mnt));
  }
}

// The CLI believes only a listener that runs as root or as the caller.
TEST(Safety, CliRefusesAListenerOfAnotherUser) {
  livefs::testing::TempDir dir("livefs-e2e");
  ASSERT_EQ(::chmod(dir.path().c_str(), 0777), 0);
  fs::path state = dir / "state";
  fs::create_directories(state);
  ASSERT_EQ(::chmod(state.c_str(), 0777), 0);
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t fake = ::fork();
  ASSERT_GE(fake, 0);
  if (fake == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = (state / "control.sock").string();
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4) != 0)
      ::_exit(4);
    (void)!::write(ready[1], "r", 1);
    for (;;) {
      int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) ::_exit(0);
      const char answer[] = "{\"ok\": true, \"live_generation\": 99}\n";
      (void)!::write(c, answer, sizeof answer - 1);
      ::close(c);
    }
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  Ran r = livefs("status --json --state " + quote(state.string()));
  ::kill(fake, SIGKILL);
  ::waitpid(fake, nullptr, 0);
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("uid 65534"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("99"), std::string::npos) << r.out;
}

// SIGTERM and SIGINT at any moment of a foreground daemon's life, teardown included, end it
// cleanly (the signal thread never outlives the daemon it stops).
TEST(Safety, SignalsDuringTeardownAreHarmless) {
  for (int round = 0; round < 5; ++round) {
    LiveWorld w;
    write_file(w.booted / "bin/tool", "tool\n");
    fs::create_directories(w.state);
    ::chmod(w.state.c_str(), 0700);
    pid_t daemon = ::fork();
    ASSERT_GE(daemon, 0);
    if (daemon == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(LIVEFS_BINARY, "livefs", "mount", "--foreground", "--booted", w.booted.c_str(),
              "--staged", w.staged.c_str(), "--state", w.state.c_str(), w.mnt.c_str(), nullptr);
      ::_exit(127);
    }
    w.mounted_at = w.mnt;
    ASSERT_TRUE(eventually([&] { return daemon_answers(w); }));
    int status = 0;
    pid_t done = 0;
    // A stream of signals while it unmounts and exits.
    while ((done = ::waitpid(daemon, &status, WNOHANG)) == 0) {
      ::kill(daemon, round % 2 == 0 ? SIGTERM : SIGINT);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ASSERT_EQ(done, daemon);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
}

// A view path may be given as the mount point's own path; another absolute path is refused
// rather than silently landing at MNT/that/path.
TEST(Safety, HotfixPathsUnderTheMountPoint) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "booted tool\n");
  write_file(w.dir / "fix", "fixed tool\n");
  ASSERT_EQ(w.mount().status, 0);
  Ran a = w.cmd("hotfix add",
                quote((w.dir / "fix").string()) + " --at " + quote((w.mnt / "bin/tool").string()));
  ASSERT_EQ(a.status, 0) << a.out;
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "fixed tool\n");
  EXPECT_FALSE(present(w.mnt / w.mnt.relative_path()));
  Ran outside = w.cmd("hotfix add", quote((w.dir / "fix").string()) + " --at /elsewhere/tool");
  EXPECT_EQ(outside.status, 1);
  EXPECT_NE(outside.out.find("is not under the mount point"), std::string::npos) << outside.out;
  EXPECT_FALSE(present(w.mnt / "elsewhere"));
  Ran reset = w.cmd("hotfix reset", quote((w.mnt / "bin").string()));
  ASSERT_EQ(reset.status, 0) << reset.out;
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "booted tool\n");
}

}  // namespace
}  // namespace livefs::e2e

namespace livefs::e2e {
namespace {

// A hotfix add that failed (the state's file system is full) leaves no trace: a later
// change does not bring it live.
TEST(Safety, AFailedHotfixAddNeverGoesLive) {
  LiveWorld w;
  fs::path small = w.dir / "small";
  fs::create_directories(small);
  ASSERT_EQ(::mount("livefs-test", small.c_str(), "tmpfs", 0, "size=8m,mode=0700"), 0);
  struct Unmount {
    fs::path p;
    LiveWorld& w;
    ~Unmount() {
      w.cleanup();
      w.mounted_at.clear();
      ::umount2(p.c_str(), MNT_DETACH);
    }
  } unmount{small, w};
  w.state = small / "state";
  write_file(w.booted / "bin/tool", "booted tool\n");
  write_file(w.dir / "fix", std::string(100000, 'f'));
  write_file(w.dir / "other", "other\n");
  ASSERT_EQ(w.mount().status, 0);
  // The content is stored once, so that the failing add needs to write only its layer.
  ASSERT_EQ(w.cmd("hotfix add", quote((w.dir / "fix").string()) + " --at opt/first").status, 0);
  ASSERT_EQ(w.cmd("hotfix reset").status, 0);

  {
    DiskFiller filler((small / "filler").c_str());
    Ran failed = w.cmd("hotfix add", quote((w.dir / "fix").string()) + " --at bin/tool");
    EXPECT_EQ(failed.status, 1) << failed.out;
    std::printf("the add on a full disk: %s", failed.out.c_str());
  }
  fs::remove(small / "filler");
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "booted tool\n");
  Ran later = w.cmd("hotfix add", quote((w.dir / "other").string()) + " --at opt/other");
  ASSERT_EQ(later.status, 0) << later.out;
  EXPECT_EQ(read_file(w.mnt / "opt/other"), "other\n");
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "booted tool\n");
  auto list = w.cmd("hotfix list", "--json");
  EXPECT_EQ(list.out.find("bin/tool"), std::string::npos) << list.out;
}

}  // namespace
}  // namespace livefs::e2e

namespace livefs::e2e {
namespace {

// Generations belong to the booted tree they were applied on: another booted tree (a
// reboot into a new deployment) starts at generation 0, the old journal kept aside.
TEST(Safety, AnotherBootedTreeStartsAtGenerationZero) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool 1\n");
  write_file(w.staged / "bin/tool", "tool 1\n");
  write_file(w.staged / "bin/added", "added\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.cmd("apply", "/bin/added").status, 0);
  ASSERT_EQ(read_file(w.mnt / "bin/added"), "added\n");
  ASSERT_EQ(w.cmd("umount").status, 0);
  // The same booted tree again: generation 1 is live.
  ASSERT_EQ(w.mount().status, 0);
  EXPECT_EQ(w.status_json()["live_generation"], 1);
  ASSERT_EQ(w.cmd("umount").status, 0);

  // The machine "rebooted" into another tree: the staged one, whose bin/added exists.
  fs::path old_booted = w.booted;
  w.booted = w.dir / "booted2";
  write_file(w.booted / "bin/tool", "tool 2\n");
  ASSERT_EQ(w.mount().status, 0);
  // A booted tree not seen before is read in the background while the view serves it.
  ASSERT_TRUE(eventually([&] { return w.status_json()["loading"].is_null(); }));
  auto st = w.status_json();
  EXPECT_EQ(st["live_generation"], 0);
  EXPECT_NE(st["journal_note"].get<std::string>().find("booted tree changed"), std::string::npos)
      << st.dump();
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "tool 2\n");
  EXPECT_FALSE(present(w.mnt / "bin/added"));  // not resurrected from the old journal
  int kept = 0;
  for (const auto& e : fs::directory_iterator(w.state))
    if (e.path().filename().string().starts_with("journal.")) ++kept;
  EXPECT_EQ(kept, 1);
  ASSERT_EQ(w.cmd("umount").status, 0);
  ASSERT_EQ(w.mount().status, 0);
  EXPECT_EQ(w.status_json()["journal_note"], "");
}

}  // namespace
}  // namespace livefs::e2e
