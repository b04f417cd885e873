// End-to-end test support: a booted and a staged tree in a temp dir, the real `livefs`
// binary run against them, and cleanup of mounts and daemons even when a test fails.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "support/temp_dir.h"

namespace livefs::e2e {

namespace fs = std::filesystem;

struct Ran {
  int status = -1;
  std::string out;  // stdout and stderr together
};

inline std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}

// Runs `livefs ARGS` (ARGS already quoted as needed).
inline Ran livefs(const std::string& args) {
  Ran r;
  r.status = livefs::testing::run(std::string(LIVEFS_BINARY) + " " + args + " 2>&1", &r.out);
  return r;
}

inline bool present(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

inline bool has_mount(const fs::path& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  std::string needle = " " + mountpoint.string() + " ";
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos && line.find("livefs") != std::string::npos) {
      return true;
    }
  }
  return false;
}

inline pid_t daemon_pid(const fs::path& state) {
  std::ifstream in(state / "daemon.pid");
  pid_t pid = 0;
  in >> pid;
  return pid;
}

// A killed process is gone when its whole thread group is: its leader may be a zombie (or
// flagged as exiting) while other threads still run, and those keep its descriptors (a
// daemon's state lock, its FUSE device) open.
inline bool thread_group_gone(pid_t pid) {
  std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  fs::directory_iterator it(proc + "/task", ec);
  if (ec) return true;
  for (const auto& task : it) {
    std::ifstream in(task.path() / "stat");
    std::string line;
    if (!std::getline(in, line)) continue;  // gone meanwhile
    auto close = line.rfind(')');
    if (close == std::string::npos || close + 2 >= line.size()) continue;
    char state = line[close + 2];
    if (state != 'Z' && state != 'X') return false;
  }
  return true;
}

// Polls `done` until it holds or `limit` passes.
template <class F>
bool eventually(F&& done, std::chrono::milliseconds limit = std::chrono::milliseconds(20000)) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return done();
}

// Guards against a recycled pid: only a livefs process is killed.
inline bool is_livefs_process(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0;
  std::getline(in, argv0, '\0');
  return argv0.ends_with("livefs");
}

// Runs a shell command that must succeed; its stdout without the trailing newlines.
inline std::string sh_out(const std::string& command) {
  std::string out;
  int status = livefs::testing::run(command + " 2>/dev/null", &out);
  EXPECT_EQ(status, 0) << command;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Runs a shell command that must succeed (its output is shown when it does not).
inline bool sh(const std::string& command) {
  std::string out;
  int status = livefs::testing::run(command + " 2>&1", &out);
  EXPECT_EQ(status, 0) << command << "\n" << out;
  return status == 0;
}

// A process that keeps `file` open on fd 3 (bash execs sleep, so the pid stays), killed and
// reaped at scope exit.
class Holder {
 public:
  explicit Holder(const fs::path& file) {
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      std::string script = "exec 3<" + quote(file.string()) + "; exec sleep 60";
      ::execlp("bash", "bash", "-c", script.c_str(), nullptr);
      ::_exit(127);
    }
  }
  ~Holder() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;
  pid_t pid() const { return pid_; }
  // Waits (bounded) until bash has become `sleep` with the file open.
  bool wait_holding() const {
    return eventually([&] {
      std::string comm;
      std::ifstream in("/proc/" + std::to_string(pid_) + "/comm");
      std::getline(in, comm);
      return comm == "sleep" && present("/proc/" + std::to_string(pid_) + "/fd/3");
    });
  }

 private:
  pid_t pid_ = -1;
};

// One test's world: booted/, staged/, state/, mnt/ under a temp dir.
class LiveWorld {
 public:
  // Declared first: the paths below are made from it.
  livefs::testing::TempDir dir{"livefs-e2e"};
  fs::path booted, staged, state, mnt;

  LiveWorld()
      : booted(dir / "booted"), staged(dir / "staged"), state(dir / "state"), mnt(dir / "mnt") {
    fs::create_directories(booted);
    fs::create_directories(staged);
    fs::create_directories(mnt);
  }
  ~LiveWorld() { cleanup(); }
  LiveWorld(const LiveWorld&) = delete;
  LiveWorld& operator=(const LiveWorld&) = delete;

  // Both trees' times set to one (settle_times): they then differ where the test wrote
  // something different, not in the moment it was written.
  void settle() {
    livefs::testing::settle_times(booted);
    livefs::testing::settle_times(staged);
  }

  std::string state_arg() const { return "--state " + quote(state.string()); }

  Ran mount(const fs::path& mountpoint) {
    mounted_at = mountpoint;
    return livefs("mount --booted " + quote(booted.string()) + " --staged " +
                  quote(staged.string()) + " " + state_arg() + " " + quote(mountpoint.string()));
  }
  Ran mount() { return mount(mnt); }
  Ran cmd(const std::string& command, const std::string& args = "") {
    return livefs(command + " " + state_arg() + " " + args);
  }
  nlohmann::json status_json() {
    Ran r = cmd("status", "--json");
    if (r.status != 0) return nlohmann::json();
    return nlohmann::json::parse(r.out, nullptr, false);
  }

  // Always: ask the daemon to go, then force whatever is left.
  void cleanup() {
    if (mounted_at.empty()) return;
    if (daemon_pid(state) > 0) cmd("umount");
    pid_t pid = daemon_pid(state);
    if (pid > 0 && is_livefs_process(pid)) ::kill(pid, SIGKILL);
    for (int i = 0; i < 10 && has_mount(mounted_at); ++i) {
      livefs::testing::run("umount -l " + quote(mounted_at.string()) + " 2>/dev/null");
    }
  }

  fs::path mounted_at;
};

}  // namespace livefs::e2e
