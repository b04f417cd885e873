// Crashes and concurrency through the real binary: SIGKILL the daemon at random moments
// of an apply series and remount; readers during many apply/rollback cycles.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "e2e/live_support.h"
#include "livefs/control.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::write_file;

std::string name_of(int i) { return "add/f" + std::to_string(100 + i); }

// The staged tree adds add/f100 … ; each apply makes the next one live. After any crash,
// the live generation must be a committed one: exactly the files its stack applied show.
TEST(Crash, KillDuringAppliesThenRemountServesACommittedGeneration) {
  constexpr int kFiles = 40;
  LiveWorld w;
  write_file(w.booted / "base", "base\n");
  write_file(w.staged / "base", "base\n");
  for (int i = 0; i < kFiles; ++i) write_file(w.staged / name_of(i), "content " + name_of(i));
  std::mt19937 rng(20261123);
  int next = 0;
  for (int round = 0; round < 4 && next < kFiles; ++round) {
    Ran m = w.mount();
    ASSERT_EQ(m.status, 0) << "round " << round << ": " << m.out;
    auto st = w.status_json();
    ASSERT_TRUE(st.is_object());
    ASSERT_TRUE(st["journal_error"].is_null()) << st["journal_error"];
    // What the stack says is live, and what the mount shows, agree.
    std::set<std::string> live;
    for (const auto& g : st["generations"]) {
      for (const auto& p : g["paths"]) live.insert(p.get<std::string>());
    }
    for (int i = 0; i < kFiles; ++i) {
      bool shown = present(w.mnt / name_of(i));
      EXPECT_EQ(shown, live.contains(name_of(i))) << "round " << round << " " << name_of(i);
      if (shown) {
        EXPECT_EQ(read_file(w.mnt / name_of(i)), "content " + name_of(i));
      }
    }
    // Applies resume after the last file that is live.
    next = 0;
    while (next < kFiles && live.contains(name_of(next))) ++next;
    std::atomic<bool> done{false};
    std::thread applier([&] {
      for (int i = next; i < kFiles && !done; ++i) {
        if (w.cmd("apply", name_of(i)).status != 0) break;  // the daemon died under it
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 150));
    pid_t pid = daemon_pid(w.state);
    ASSERT_GT(pid, 0);
    ::kill(pid, SIGKILL);
    done = true;
    applier.join();
    // The dead daemon's mount stays behind, stale; the next mount cleans it up.
  }
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  EXPECT_TRUE(st["journal_error"].is_null());
  std::printf("after crashes: live generation %d\n", st["live_generation"].get<int>());
}

// An apply that replaces a file someone holds open scans for holders, which stats files of
// the view. Killed at any moment of that, the daemon must go away completely: a thread of its
// own waiting on its own mount would keep the FUSE device open and hang the mount for good.
TEST(Crash, KillDuringAHolderScanLeavesNoHungMount) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool 1\n");
  write_file(w.staged / "bin/tool", "tool 2\n");
  std::mt19937 rng(20261124);
  for (int round = 0; round < 8; ++round) {
    Ran m = w.mount();
    ASSERT_EQ(m.status, 0) << "round " << round << ": " << m.out;
    if (w.status_json()["live_generation"] != 0) {
      ASSERT_EQ(w.cmd("reset").status, 0);
    }
    // A holder of the booted tool, through the view.
    pid_t holder = ::fork();
    if (holder == 0) {
      int fd = ::open((w.mnt / "bin/tool").c_str(), O_RDONLY);
      if (fd < 0) ::_exit(1);
      ::pause();
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::thread applier([&] { (void)w.cmd("apply", "--allow-replace bin/tool"); });
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 40));
    pid_t pid = daemon_pid(w.state);
    ASSERT_GT(pid, 0);
    ::kill(pid, SIGKILL);
    applier.join();
    // The daemon's process is gone within seconds, and the mount answers (ENOTCONN), not hangs.
    bool gone = false;
    for (int i = 0; i < 100 && !gone; ++i) {
      std::error_code ec;
      gone = !fs::exists("/proc/" + std::to_string(pid) + "/task", ec) ||
             fs::is_empty("/proc/" + std::to_string(pid) + "/task", ec);
      if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_TRUE(gone) << "round " << round << ": daemon " << pid << " is still there";
    int rc = livefs::testing::run("timeout -s KILL 10 stat " + quote(w.mnt.string()) +
                                  " >/dev/null 2>&1");
    EXPECT_TRUE(rc != 124 && rc != 137) << "round " << round << ": stat of the mount hung";
    ::kill(holder, SIGKILL);
    ::waitpid(holder, nullptr, 0);
    if (!gone) break;
  }
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
}

// Readers read and list continuously during 1,000 apply/rollback cycles; each read is
// wholly one version, and the only error is ENOENT for a path absent in a generation. The
// first cycles go through the CLI, the rest straight to the control socket with the CLI's
// own client (a process start per request would take most of the suite's time budget).
TEST(Concurrency, ReadersDuringApplyRollbackCycles) {
  constexpr int kCycles = 1000, kCliCycles = 50;
  LiveWorld w;
  std::string v1(5000, 'a'), v2(9000, 'b');
  write_file(w.booted / "bin/tool", v1);
  write_file(w.booted / "bin/other", "other\n");
  write_file(w.staged / "bin/tool", v2);
  write_file(w.staged / "bin/other", "other\n");
  write_file(w.staged / "bin/added", "added\n");
  ASSERT_EQ(w.mount().status, 0);
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0}, bad{0};
  std::vector<std::string> failures;
  std::mutex failures_mutex;
  auto fail = [&](const std::string& what) {
    ++bad;
    std::lock_guard lock(failures_mutex);
    if (failures.size() < 10) failures.push_back(what);
  };
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop) {
        try {
          std::string s = read_file(w.mnt / "bin/tool");
          if (s != v1 && s != v2) fail("bin/tool: mixed read of " + std::to_string(s.size()));
        } catch (const std::exception& e) {
          fail(e.what());
        }
        std::error_code ec;
        for (auto& entry : fs::directory_iterator(w.mnt / "bin", ec)) {
          if (entry.path().filename() == "added") {
            FILE* f = std::fopen(entry.path().c_str(), "r");
            if (f == nullptr) {
              if (errno != ENOENT) fail("bin/added: " + std::string(std::strerror(errno)));
              continue;
            }
            char buf[64];
            size_t n = std::fread(buf, 1, sizeof buf, f);
            std::fclose(f);
            if (std::string(buf, n) != "added\n") fail("bin/added: wrong content");
          }
        }
        if (ec) fail("readdir: " + ec.message());
        ++reads;
      }
    });
  }
  auto call = [&](const nlohmann::json& request) {
    auto r = cli::call_daemon(w.state, request);
    if (!r) {
      fail(r.error().message());
      return false;
    }
    if (!r->value("ok", false)) fail(r->dump());
    return r->value("ok", false);
  };
  const nlohmann::json apply = {{"cmd", "apply"}, {"patterns", {"bin"}}, {"allow_replace", true}};
  int cycles_ok = 0;
  for (int i = 0; i < kCycles; ++i) {
    if (i < kCliCycles) {
      if (w.cmd("apply", "--allow-replace bin").status != 0) break;
      if (w.cmd("rollback").status != 0) break;
    } else {
      if (!call(apply) || !call({{"cmd", "rollback"}})) break;
    }
    ++cycles_ok;
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(cycles_ok, kCycles);
  EXPECT_EQ(bad.load(), 0) << (failures.empty() ? "" : failures.front());
  EXPECT_GT(reads.load(), 0);
  auto st = w.status_json();
  EXPECT_EQ(st["live_generation"], 0);
  std::printf("%d apply/rollback cycles, %ld reader passes\n", cycles_ok, reads.load());
}

}  // namespace
}  // namespace livefs::e2e
