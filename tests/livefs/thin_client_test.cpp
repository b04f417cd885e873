// The `livefs` executable is a thin client: it loads no libostree, libfuse or GLib, hands
// every command it does not serve to livefsd unchanged, and turns a daemon's answer that is
// not what it expects into one error line (never an exception that aborts it).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "livefs/control.h"
#include "livefs/protocol.h"
#include "support/temp_dir.h"

namespace livefs {
namespace {

using livefs::testing::run;
using livefs::testing::TempDir;

std::string cli() { return LIVEFS_BINARY; }

// Runs the client with stderr joined to stdout.
int run_cli(const std::string& args, std::string* out, const std::string& env = "") {
  return run(env + " " + cli() + " " + args + " 2>&1", out);
}

// What the dynamic loader opens for `livefs ARGS`, as glibc's LD_DEBUG=libs reports it.
std::string loaded_libraries(const std::string& args) {
  std::string out;
  run("LD_DEBUG=libs " + cli() + " " + args + " 2>&1 >/dev/null | grep 'calling init'", &out);
  return out;
}

TEST(ThinClientTest, ClientCommandsLoadNoOstreeFuseOrGlib) {
  TempDir state("livefs-thin");
  for (std::string args :
       {"status --state " + state.path().string(), "apply --all --state " + state.path().string(),
        "diff --state " + state.path().string(), "hotfix list --state " + state.path().string(),
        "umount --state " + state.path().string()}) {
    std::string libs = loaded_libraries(args);
    // The loader ran (it reports libc at least), and none of the heavy libraries.
    EXPECT_NE(libs.find("libc.so"), std::string::npos) << args << ":\n" << libs;
    for (const char* heavy : {"libostree", "libfuse", "libglib", "libgio", "libspdlog"})
      EXPECT_EQ(libs.find(heavy), std::string::npos) << args << " loads " << heavy << ":\n" << libs;
  }
}

TEST(ThinClientTest, OtherCommandsRunInLivefsdWithArgvUnchanged) {
  TempDir dir("livefs-thin");
  std::string out;
  // --help lists every command, those of livefsd included.
  ASSERT_EQ(run_cli("--help", &out), 0) << out;
  for (const char* c : {"store", "diff", "mount", "apply", "rollback", "reset", "status", "stage",
                        "hotfix", "umount"})
    EXPECT_NE(out.find("\n  " + std::string(c) + " "), std::string::npos) << c << "\n" << out;
  // A store command is served by livefsd: told where it is not, the client says so.
  std::string store = (dir / "store").string();
  EXPECT_EQ(run_cli("store stats --store " + store, &out, "LIVEFSD=/nonexistent/livefsd"), 1);
  EXPECT_NE(out.find("livefs: exec(/nonexistent/livefsd): No such file or directory"),
            std::string::npos)
      << out;
  // ... and found beside the client by default.
  ASSERT_EQ(run_cli("store stats --json --store " + store, &out), 0) << out;
  EXPECT_NE(out.find("\"objects\": 0"), std::string::npos) << out;
  // The tree diff is livefsd's, the live diff (--state) the client's.
  ::mkdir((dir / "a").c_str(), 0755);
  ::mkdir((dir / "b").c_str(), 0755);
  testing::write_file(dir / "b/new", "x");
  testing::settle_times(dir / "a");
  testing::settle_times(dir / "b");
  ASSERT_EQ(run_cli("diff " + (dir / "a").string() + " " + (dir / "b").string(), &out), 0) << out;
  EXPECT_EQ(out, "A new\n");
  EXPECT_EQ(
      run_cli("diff --state " + (dir / "none").string(), &out, "LIVEFSD=/nonexistent/livefsd"), 1);
  EXPECT_NE(out.find("no livefs daemon for"), std::string::npos) << out;
  // --version is the client's own too (bench/bench_apply times it as the CLI's floor).
  EXPECT_EQ(run_cli("--version", &out, "LIVEFSD=/nonexistent/livefsd"), 0) << out;
  EXPECT_EQ(out, "livefs 0.1\n");
  ASSERT_EQ(run_cli("--version", &out), 0) << out;
  // A usage error of a client command is the client's own (exit 2), without livefsd.
  EXPECT_EQ(run_cli("status --no-such-option", &out, "LIVEFSD=/nonexistent/livefsd"), 2) << out;
  EXPECT_NE(out.find("--no-such-option"), std::string::npos) << out;
  // So is finding no daemon without --state (exit 1).
  EXPECT_EQ(run_cli("status", &out,
                    "LIVEFSD=/nonexistent/livefsd LIVEFS_RUNTIME_DIR=" + (dir / "run").string()),
            1)
      << out;
  EXPECT_NE(out.find("no livefs daemon is running"), std::string::npos) << out;
  EXPECT_EQ(run_cli("diff", &out,
                    "LIVEFSD=/nonexistent/livefsd LIVEFS_RUNTIME_DIR=" + (dir / "run").string()),
            1)
      << out;
  EXPECT_NE(out.find("no livefs daemon is running"), std::string::npos) << out;
}

// A daemon stand-in: answers one connection on STATEDIR/control.sock with `answer`; the
// request line it got is in `*request` once it is destroyed.
class FakeDaemon {
 public:
  FakeDaemon(const std::filesystem::path& state, std::string answer, std::string* request = nullptr)
      : answer_(std::move(answer)), request_(request) {
    auto fd = cli::listen_control(cli::control_socket_path(state));
    EXPECT_TRUE(fd.has_value());
    if (fd) listener_ = std::move(*fd);
    thread_ = std::thread([this] {
      UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) return;
      auto line = cli::read_line(conn.get());
      if (line && request_ != nullptr) *request_ = *line;
      (void)cli::write_line(conn.get(), answer_);
    });
  }
  ~FakeDaemon() {
    // Unblocks accept() when the client never connected.
    ::shutdown(listener_.get(), SHUT_RDWR);
    thread_.join();
  }

 private:
  std::string answer_;
  std::string* request_;
  UniqueFd listener_;
  std::thread thread_;
};

TEST(ThinClientTest, AMalformedReplyIsAnErrorLineNotACrash) {
  struct Case {
    std::string args, answer, needle;
  };
  std::vector<Case> cases = {
      {"status", R"({"ok":true})", "reply: missing field \"pid\""},
      {"status --json", R"({"ok":true,"pid":"12"})", "reply.pid: an integer expected"},
      {"apply --all", R"({"ok":true,"dry_run":false,"applied":[{"path":1}]})",
       "reply.applied[0].path: a string expected"},
      {"rollback", R"({"ok":true,"op":"rollback","generation":-3})",
       "reply.generation: -3 is out of range"},
      {"hotfix list", R"({"ok":true,"watches":{}})", "reply.watches: an array expected"},
      {"umount", R"([1,2])", "malformed response"},
  };
  for (const auto& c : cases) {
    TempDir state("livefs-thin");
    std::string out;
    int status;
    {
      FakeDaemon daemon(state.path(), c.answer);
      status = run_cli(c.args + " --state " + state.path().string(), &out);
    }
    EXPECT_EQ(status, 1) << c.args << ": " << out;
    EXPECT_NE(out.find("livefs: "), std::string::npos) << c.args << ": " << out;
    EXPECT_NE(out.find(c.needle), std::string::npos) << c.args << ": " << out;
  }
}

TEST(ThinClientTest, TheDaemonsRefusalIsPrintedAsItsSentence) {
  TempDir state("livefs-thin");
  std::string out, request;
  int status;
  {
    FakeDaemon daemon(state.path(), R"({"ok":false,"error":"no hotfix to reset","code":"ENOENT"})",
                      &request);
    status = run_cli("hotfix reset bin --state " + state.path().string(), &out);
  }
  EXPECT_EQ(status, 1);
  EXPECT_EQ(out, "livefs: no hotfix to reset\n");
  auto sent = cli::parse_wire_line(request);
  ASSERT_TRUE(sent.has_value()) << request;
  auto parsed = protocol::parse_request(*sent);
  ASSERT_TRUE(parsed.has_value()) << request;
  EXPECT_EQ(std::get<protocol::HotfixResetRequest>(*parsed).prefix, "bin");
}

}  // namespace
}  // namespace livefs
