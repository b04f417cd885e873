// End to end through the real `livefs` binary and real FUSE mounts: mount, diff, apply,
// rollback, reset, status, umount; refusals; over-mount; a corrupted journal.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <cstring>

#include "e2e/live_support.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::write_file;

// booted: bin/ls, bin/cat, etc/conf, lib/modules/6.1/vmlinuz
// staged: bin/ls changed, bin/cat removed, bin/new added, etc/conf same, kernel changed,
//         share/new/doc added (a new directory).
void make_trees(LiveWorld& w) {
  write_file(w.booted / "bin/ls", "ls version 1\n", 0755);
  write_file(w.booted / "bin/cat", "cat\n", 0755);
  write_file(w.booted / "etc/conf", "conf\n");
  write_file(w.booted / "lib/modules/6.1/vmlinuz", "kernel 1\n");
  write_file(w.staged / "bin/ls", "ls version 2, longer\n", 0755);
  write_file(w.staged / "bin/new", "new file\n", 0755);
  write_file(w.staged / "etc/conf", "conf\n");
  write_file(w.staged / "lib/modules/6.1/vmlinuz", "kernel 2\n");
  write_file(w.staged / "share/new/doc", "doc\n");
  w.settle();
}

TEST(Live, MountDiffApplyRollbackResetStatusUmount) {
  LiveWorld w;
  make_trees(w);
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  ASSERT_TRUE(has_mount(w.mnt));
  EXPECT_EQ(read_file(w.mnt / "bin/ls"), "ls version 1\n");
  EXPECT_FALSE(present(w.mnt / "bin/new"));

  Ran d = w.cmd("diff", "--json");
  ASSERT_EQ(d.status, 0) << d.out;
  auto diff = nlohmann::json::parse(d.out);
  std::map<std::string, std::string> kinds;
  for (const auto& c : diff["changes"]) kinds[c["path"]] = c["kind"];
  EXPECT_EQ(kinds["bin/ls"], "modified");
  EXPECT_EQ(kinds["bin/cat"], "removed");
  EXPECT_EQ(kinds["bin/new"], "added");
  EXPECT_EQ(kinds["lib/modules/6.1/vmlinuz"], "modified");
  EXPECT_FALSE(kinds.contains("etc/conf"));

  Ran a = w.cmd("apply", "/bin/new");
  ASSERT_EQ(a.status, 0) << a.out;
  EXPECT_NE(a.out.find("bin/new"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("took"), std::string::npos) << a.out;
  std::printf("apply output:\n%s", a.out.c_str());
  EXPECT_EQ(read_file(w.mnt / "bin/new"), "new file\n");
  EXPECT_EQ(read_file(w.mnt / "bin/ls"), "ls version 1\n");
  EXPECT_TRUE(present(w.mnt / "bin/cat"));

  Ran refused = w.cmd("apply", "bin/ls");
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.out.find("--allow-replace"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("bin/ls"), std::string::npos) << refused.out;

  Ran r = w.cmd("apply", "--allow-replace --json bin/ls bin/cat");
  ASSERT_EQ(r.status, 0) << r.out;
  auto applied = nlohmann::json::parse(r.out);
  EXPECT_EQ(applied["generation"], 2);
  EXPECT_GE(applied["switch"]["seconds"].get<double>(), 0.0);
  std::printf("switch seconds (2 changes): %.6f\n", applied["switch"]["seconds"].get<double>());
  EXPECT_EQ(read_file(w.mnt / "bin/ls"), "ls version 2, longer\n");
  EXPECT_FALSE(present(w.mnt / "bin/cat"));

  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  EXPECT_EQ(st["live_generation"], 2);
  ASSERT_EQ(st["generations"].size(), 3u);
  EXPECT_EQ(st["generations"][1]["paths"], nlohmann::json({"bin/new"}));
  EXPECT_TRUE(st["journal_error"].is_null());
  // This machine's kernel (6.9 or later) and the libfuse built with livefs have passthrough:
  // the files read above were served by it (unless built against a libfuse without it).
  if (!st["file_io"]["why_not"].get<std::string>().starts_with("libfuse")) {
    EXPECT_EQ(st["file_io"]["passthrough"], true) << st["file_io"].dump();
    EXPECT_GE(st["file_io"]["backing_files"].get<int>(), 2) << st["file_io"].dump();
    EXPECT_NE(w.cmd("status").out.find("file io:     FUSE passthrough"), std::string::npos);
  }

  Ran rb = w.cmd("rollback");
  ASSERT_EQ(rb.status, 0) << rb.out;
  EXPECT_EQ(read_file(w.mnt / "bin/ls"), "ls version 1\n");
  EXPECT_TRUE(present(w.mnt / "bin/cat"));
  EXPECT_EQ(read_file(w.mnt / "bin/new"), "new file\n");
  EXPECT_EQ(w.status_json()["live_generation"], 1);

  Ran rs = w.cmd("reset");
  ASSERT_EQ(rs.status, 0) << rs.out;
  EXPECT_FALSE(present(w.mnt / "bin/new"));
  EXPECT_EQ(w.status_json()["live_generation"], 0);

  // A new directory comes with what is in it.
  ASSERT_EQ(w.cmd("apply", "share/new/doc").status, 0);
  EXPECT_EQ(read_file(w.mnt / "share/new/doc"), "doc\n");
  // --dry-run changes nothing.
  Ran dry = w.cmd("apply", "--dry-run bin/new");
  ASSERT_EQ(dry.status, 0) << dry.out;
  EXPECT_NE(dry.out.find("would apply"), std::string::npos);
  EXPECT_FALSE(present(w.mnt / "bin/new"));

  Ran u = w.cmd("umount");
  ASSERT_EQ(u.status, 0) << u.out;
  EXPECT_FALSE(has_mount(w.mnt));
  EXPECT_FALSE(present(w.mnt / "bin"));
}

TEST(Live, RefusalsAreClear) {
  LiveWorld w;
  make_trees(w);
  Ran none = w.cmd("apply", "bin/new");
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.out.find("no livefs daemon for " + w.state.string()), std::string::npos)
      << none.out;
  EXPECT_NE(none.out.find("control.sock): No such file or directory"), std::string::npos)
      << none.out;

  ASSERT_EQ(w.mount().status, 0);
  Ran unknown = w.cmd("apply", "no/such/path");
  EXPECT_EQ(unknown.status, 1);
  EXPECT_NE(unknown.out.find("selection matches no pending change: no/such/path"),
            std::string::npos)
      << unknown.out;
  Ran same = w.cmd("apply", "etc/conf");
  EXPECT_EQ(same.status, 1);
  EXPECT_NE(same.out.find("selection matches no pending change: etc/conf"), std::string::npos);
  Ran kernel = w.cmd("apply", "--allow-replace lib/modules");
  EXPECT_EQ(kernel.status, 1);
  EXPECT_NE(kernel.out.find("kernel update: needs a reboot"), std::string::npos) << kernel.out;
  EXPECT_EQ(w.status_json()["live_generation"], 0);

  // A second daemon for the same state, and a second livefs mount on the mount point.
  Ran second = w.mount();
  EXPECT_EQ(second.status, 1);
  EXPECT_NE(second.out.find("already running for " + w.state.string()), std::string::npos)
      << second.out;
  LiveWorld other;
  make_trees(other);
  other.booted = w.booted;
  Ran on_top = other.mount(w.mnt);
  other.mounted_at.clear();  // it must not clean up w's mount
  EXPECT_EQ(on_top.status, 1);
  EXPECT_NE(on_top.out.find("is served already, by the livefs daemon of " + w.state.string()),
            std::string::npos)
      << on_top.out;
  // Bad paths.
  Ran bad = livefs("mount --booted /no/such --staged " + quote(w.staged.string()) + " --state " +
                   quote((other.dir / "s2").string()) + " " + quote(w.mnt.string()));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("booted tree /no/such"), std::string::npos) << bad.out;
}

// What a process of another user gets: connect as uid 65534 from a forked child.
std::string connect_as_nobody(const fs::path& socket) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string result;
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) {
      result = "setresuid failed";
    } else {
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        result = std::string("connect: ") + std::strerror(errno);
      } else {
        const char req[] = "{\"cmd\":\"status\"}\n";
        (void)!::write(fd, req, sizeof req - 1);
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) result.append(buf, static_cast<size_t>(n));
      }
    }
    (void)!::write(pipefd[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

TEST(Live, SocketRefusesOtherUsers) {
  LiveWorld w;
  make_trees(w);
  ASSERT_EQ(w.mount().status, 0);
  fs::path sock = w.state / "control.sock";
  struct stat st {};
  ASSERT_EQ(::stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Let the other user reach the socket file so only the socket's own checks stand.
  ::chmod(w.dir.path().c_str(), 0755);
  ::chmod(w.state.c_str(), 0755);
  EXPECT_EQ(connect_as_nobody(sock), "connect: Permission denied");
  // Even with the file mode opened up, the daemon's peer check refuses.
  ::chmod(sock.c_str(), 0666);
  std::string answer = connect_as_nobody(sock);
  EXPECT_NE(answer.find("permission denied: uid 65534 may not control this livefs daemon"),
            std::string::npos)
      << answer;
  EXPECT_EQ(answer.find("live_generation"), std::string::npos) << answer;
  ::chmod(sock.c_str(), 0600);
  EXPECT_EQ(w.cmd("status").status, 0);
}

TEST(Live, CorruptedJournalServesBootedAndSaysWhy) {
  LiveWorld w;
  make_trees(w);
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.cmd("apply", "bin/new").status, 0);
  ASSERT_EQ(w.cmd("apply", "share").status, 0);
  ASSERT_EQ(w.cmd("umount").status, 0);
  std::string journal = read_file(w.state / "journal");
  size_t first_end = journal.find('\n') + 1;
  write_file(
      w.state / "journal",
      journal.substr(0, first_end) + "\x01garbage\xff in the middle\n" + journal.substr(first_end),
      0600);
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  EXPECT_EQ(st["live_generation"], 0);
  ASSERT_TRUE(st["journal_error"].is_string());
  EXPECT_NE(st["journal_error"].get<std::string>().find("journal line 2"), std::string::npos)
      << st["journal_error"];
  Ran text = w.cmd("status");
  EXPECT_NE(text.out.find("JOURNAL ERROR"), std::string::npos) << text.out;
  EXPECT_FALSE(present(w.mnt / "bin/new"));
  EXPECT_EQ(read_file(w.mnt / "bin/ls"), "ls version 1\n");
  Ran a = w.cmd("apply", "bin/new");
  EXPECT_EQ(a.status, 1);
  EXPECT_NE(a.out.find("journal is corrupt"), std::string::npos) << a.out;
}

TEST(Live, OverMountTheBootedDirectory) {
  LiveWorld w;
  make_trees(w);
  Ran m = w.mount(w.booted);
  ASSERT_EQ(m.status, 0) << m.out;
  ASSERT_TRUE(has_mount(w.booted));
  EXPECT_EQ(read_file(w.booted / "bin/ls"), "ls version 1\n");
  ASSERT_EQ(w.cmd("apply", "--allow-replace bin").status, 0);
  EXPECT_EQ(read_file(w.booted / "bin/ls"), "ls version 2, longer\n");
  EXPECT_EQ(read_file(w.booted / "bin/new"), "new file\n");
  EXPECT_FALSE(present(w.booted / "bin/cat"));
  ASSERT_EQ(w.cmd("umount").status, 0);
  EXPECT_FALSE(has_mount(w.booted));
  // Underneath, the booted tree was never touched.
  EXPECT_EQ(read_file(w.booted / "bin/ls"), "ls version 1\n");
  EXPECT_TRUE(present(w.booted / "bin/cat"));
  EXPECT_FALSE(present(w.booted / "bin/new"));

  // Again: the booted manifest cached by the first mount is found (it was keyed by the
  // directory under the view, not by the view), so the journalled generation is served from
  // the start, without a scan of the booted tree.
  ASSERT_EQ(w.mount(w.booted).status, 0);
  nlohmann::json st = w.status_json();
  EXPECT_EQ(st["live_generation"], 1) << st.dump();
  EXPECT_EQ(read_file(w.booted / "bin/new"), "new file\n");
  ASSERT_EQ(w.cmd("umount").status, 0);
  std::string log = read_file(w.state / "daemon.log");
  size_t scans = 0;
  for (size_t at = log.find("scanning the booted tree"); at != std::string::npos;
       at = log.find("scanning the booted tree", at + 1))
    ++scans;
  EXPECT_EQ(scans, 1u) << log;
}

}  // namespace
}  // namespace livefs::e2e
