// Debian's own tool sees what an apply left behind: `needrestart -v` names a process that
// maps a library the apply replaced through the view, as after a package upgrade.
//
// needrestart ignores mappings below /tmp and /run (blacklist_mappings of its stock
// configuration), where test trees live: the library is mapped through a bind mount of the
// view at /mnt/usr, in a private mount namespace (a tmpfs over /mnt there), and needrestart
// runs in that namespace too. The mount, the apply and the daemon are the real ones. The
// mapped old inode also has no links any more, as an unlinked file.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>

#include "e2e/live_support.h"

namespace livefs::e2e {
namespace {

// The host's zlib: a real shared object the loader maps (executable segments included).
std::optional<fs::path> host_libz() {
  for (const char* p :
       {"/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/aarch64-linux-gnu/libz.so.1", "/usr/lib64/libz.so.1", "/usr/lib/libz.so.1"}) {
    std::error_code ec;
    fs::path real = fs::canonical(p, ec);
    if (!ec && fs::is_regular_file(real)) return real;
  }
  return std::nullopt;
}

std::string which(const std::string& program) {
  std::string out;
  if (livefs::testing::run("command -v " + program + " 2>/dev/null", &out) != 0) return "";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A script run in its own process group, read line by line and told to go on; killed
// (group and all) and reaped at scope exit.
class Script {
 public:
  explicit Script(const std::string& command) {
    int to[2], from[2];
    if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::dup2(to[0], 0);
      ::dup2(from[1], 1);
      ::dup2(from[1], 2);
      ::execlp("bash", "bash", "-c", command.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(to[0]);
    ::close(from[1]);
    in_ = to[1];
    out_ = ::fdopen(from[0], "r");
  }
  ~Script() {
    if (in_ >= 0) ::close(in_);
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ != nullptr) std::fclose(out_);
  }
  Script(const Script&) = delete;
  Script& operator=(const Script&) = delete;

  // The next line without its newline; nullopt at the end of the output.
  std::optional<std::string> line() {
    if (out_ == nullptr) return std::nullopt;
    char* buf = nullptr;
    size_t cap = 0;
    ssize_t n = ::getline(&buf, &cap, out_);
    std::optional<std::string> l;
    if (n >= 0) l = std::string(buf, static_cast<size_t>(n > 0 && buf[n - 1] == '\n' ? n - 1 : n));
    std::free(buf);
    return l;
  }
  void go() {
    EXPECT_EQ(::write(in_, "go\n", 3), 3);
    ::close(in_);
    in_ = -1;
  }
  // The exit status once the output has ended.
  int wait() {
    int status = -1;
    EXPECT_EQ(::waitpid(pid_, &status, 0), pid_);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int in_ = -1;
  FILE* out_ = nullptr;
};

TEST(NeedRestart, NamesAProcessMappingALibraryAnApplyReplaced) {
  std::string needrestart = which("needrestart");
  if (needrestart.empty() && fs::exists("/usr/sbin/needrestart"))
    needrestart = "/usr/sbin/needrestart";
  if (needrestart.empty())
    GTEST_SKIP() << "needrestart is not installed (scripts/lib.sh installs it)";
  if (which("python3").empty()) GTEST_SKIP() << "python3 is not installed";
  if (which("unshare").empty()) GTEST_SKIP() << "unshare (util-linux) is not installed";
  auto libz = host_libz();
  if (!libz) GTEST_SKIP() << "no libz.so.1 on this host to map";

  LiveWorld w;
  std::string booted = livefs::testing::read_file(*libz);
  livefs::testing::write_file(w.booted / "lib/libz.so.1", booted, 0755);
  // The staged version differs in content (the loader ignores bytes past the sections).
  livefs::testing::write_file(w.staged / "lib/libz.so.1", booted + "staged\n", 0755);
  w.settle();
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;

  const std::string lib = "/mnt/usr/lib/libz.so.1";
  std::ostringstream script;
  script << "set -e\n"
         << "mount -t tmpfs livefs-needrestart /mnt\n"
         << "mkdir /mnt/usr\n"
         << "mount --bind " << quote(w.mnt.string()) << " /mnt/usr\n"
         << "python3 -c 'import ctypes, signal, sys; ctypes.CDLL(sys.argv[1]); signal.pause()' "
         << lib << " </dev/null &\n"
         << "py=$!\n"
         // Waits for the loader's mapping (a condition, bounded by the test's timeout).
         << "until grep -qF ' " << lib << "' /proc/$py/maps 2>/dev/null; do\n"
         << "  kill -0 $py; sleep 0.01\n"
         << "done\n"
         << "echo pid $py\n"
         << quote(needrestart) << " -v -b -r l -l 2>&1 | sed 's/^/before: /'\n"
         << "echo ready\n"
         << "read -r go\n"
         << "grep -F ' " << lib
         << "' /proc/$py/maps | sed 's/^/maps: /'\n"
         // The link count of the mapped inode (what lsof +L1 and zypper-style checks read).
         << "addr=$(grep -F ' " << lib << "' /proc/$py/maps | head -1 | cut -d' ' -f1)\n"
         << "stat -L -c 'links: %h' /proc/$py/map_files/$addr\n"
         << quote(needrestart) << " -v -b -r l -l 2>&1 | sed 's/^/after: /'\n"
         << "kill $py; wait $py || true\n";
  Script s("exec timeout 300 unshare --mount --propagation private bash -c " + quote(script.str()));

  pid_t py = 0;
  std::string before, after, maps;
  bool ready = false;
  while (auto l = s.line()) {
    if (l->starts_with("pid ")) py = std::stoi(l->substr(4));
    if (l->starts_with("before: ")) before += *l + "\n";
    if (*l == "ready") {
      ready = true;
      break;
    }
  }
  ASSERT_TRUE(ready) << "the script ended before python mapped the library:\n" << before;
  ASSERT_GT(py, 0);
  const std::string named = "#" + std::to_string(py) + " uses ";
  EXPECT_EQ(before.find(named), std::string::npos) << "nothing replaced yet:\n" << before;

  Ran a = w.cmd("apply", "--allow-replace lib/libz.so.1");
  ASSERT_EQ(a.status, 0) << a.out;
  s.go();
  while (auto l = s.line()) {
    if (l->starts_with("after: ")) after += *l + "\n";
    if (l->starts_with("maps: ") || l->starts_with("links: ")) maps += *l + "\n";
  }
  EXPECT_EQ(s.wait(), 0) << before << maps << after;
  EXPECT_NE(maps.find(lib + " (deleted)"), std::string::npos) << maps;
  EXPECT_NE(maps.find("links: 0\n"), std::string::npos) << maps;
  EXPECT_NE(after.find(named + "deleted " + lib), std::string::npos)
      << "needrestart -v does not name python (pid " << py << "):\n"
      << after;
  // The view serves the new version at the path.
  EXPECT_EQ(livefs::testing::read_file(w.mnt / "lib/libz.so.1"), booted + "staged\n");
}

}  // namespace
}  // namespace livefs::e2e
