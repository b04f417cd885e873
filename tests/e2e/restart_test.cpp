// The restart plan end to end, through the real `livefs` binary and a real FUSE mount: a
// long-running process in a unit-like cgroup (a cgroup v2 directory named like a systemd
// service) and a python3 process with a module of the view open; after an apply that replaces
// both files, `restart --dry-run` names the unit and the interpreter with its script and
// restarts nothing, the plan follows the processes (a fresh scan each time), and where systemd
// is not PID 1 `restart` and `apply --restart` say that nothing was restarted.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "e2e/live_support.h"

namespace livefs::e2e {
namespace {

using livefs::testing::write_file;
using json = nlohmann::json;

// Where the cgroup v2 hierarchy is mounted ("/sys/fs/cgroup", or "/sys/fs/cgroup/unified" in
// systemd's hybrid layout); "" when there is none.
fs::path cgroup2_root() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    size_t dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    // "id parent maj:min root mountpoint ..."
    std::istringstream fields(line);
    std::string id, parent, dev, root, mountpoint;
    fields >> id >> parent >> dev >> root >> mountpoint;
    return mountpoint;
  }
  return {};
}

// A cgroup named like a systemd service, livefs-test.slice/livefs-test-PID-N.service, removed
// (once its processes are gone) at scope exit.
class UnitCgroup {
 public:
  UnitCgroup() {
    static std::atomic<int> counter{0};
    fs::path root = cgroup2_root();
    if (root.empty()) return;
    unit_ =
        "livefs-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".service";
    slice_ = root / "livefs-test.slice";
    ::mkdir(slice_.c_str(), 0755);
    dir_ = slice_ / unit_;
    if (::mkdir(dir_.c_str(), 0755) != 0) dir_.clear();
  }
  ~UnitCgroup() {
    if (dir_.empty()) return;
    // A reaped process leaves its cgroup a moment later: rmdir is EBUSY until then.
    EXPECT_TRUE(eventually([&] { return ::rmdir(dir_.c_str()) == 0 || errno == ENOENT; })) << dir_;
    ::rmdir(slice_.c_str());  // EBUSY while another test's unit is in it
  }
  UnitCgroup(const UnitCgroup&) = delete;
  UnitCgroup& operator=(const UnitCgroup&) = delete;

  bool ok() const { return !dir_.empty(); }
  const std::string& unit() const { return unit_; }
  bool add(pid_t pid) const {
    std::ofstream out(dir_ / "cgroup.procs");
    out << pid << "\n";
    out.flush();
    return static_cast<bool>(out);
  }

 private:
  fs::path slice_, dir_;
  std::string unit_;
};

// python3 with `module` open (and imported), waiting on its stdin; ended (stdin closed,
// then killed) and reaped at scope exit.
class Python {
 public:
  explicit Python(const fs::path& module) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    std::string code = "import sys\nsys.path.insert(0, " + quote(module.parent_path().string()) +
                       ")\nf = open(" + quote(module.string()) + ")\nimport " +
                       module.stem().string() + "\nprint('ready', flush=True)\nsys.stdin.read()\n";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::execl("/usr/bin/python3", "/usr/bin/python3", "-B", "-c", code.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~Python() {
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Python(const Python&) = delete;
  Python& operator=(const Python&) = delete;
  pid_t pid() const { return pid_; }
  // Blocks until python said it holds the module (or exited).
  bool wait_ready() {
    std::string said;
    char c;
    while (said.size() < 6 && ::read(stdout_, &c, 1) == 1) said += c;
    return said == "ready\n";
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
};

bool alive(pid_t pid, const std::string& comm) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string line;
  return std::getline(in, line) && line == comm && !thread_group_gone(pid);
}

bool systemd_booted() {
  struct stat st {};
  return ::lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

json unit_of(const json& plan, const std::string& unit) {
  for (const auto& u : plan.value("units", json::array()))
    if (u.value("unit", "") == unit) return u;
  return nullptr;
}

json process_of(const json& list, pid_t pid) {
  for (const auto& p : list)
    if (p.value("pid", 0) == pid) return p;
  return nullptr;
}

json run_json(LiveWorld& w, const std::string& command, const std::string& args, int want) {
  Ran r = w.cmd(command, "--json " + args);
  EXPECT_EQ(r.status, want) << command << " " << args << "\n" << r.out;
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.out;
  return j;
}

class RestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cgroup2_root().empty()) GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
    write_file(w.booted / "bin/daemon-tool", "tool 1\n", 0755);
    write_file(w.booted / "lib/python3/livefs_mod.py", "VERSION = 1\n");
    write_file(w.booted / "bin/other", "other 1\n", 0755);
    write_file(w.staged / "bin/daemon-tool", "tool 2\n", 0755);
    write_file(w.staged / "lib/python3/livefs_mod.py", "VERSION = 2\n");
    write_file(w.staged / "bin/other", "other 2\n", 0755);
    w.settle();
    Ran m = w.mount();
    ASSERT_EQ(m.status, 0) << m.out;
  }

  LiveWorld w;
};

TEST_F(RestartTest, ThePlanNamesTheUnitAndTheInterpreterAndRestartsNothing) {
  UnitCgroup cgroup;
  ASSERT_TRUE(cgroup.ok());
  Holder service(w.mnt / "bin/daemon-tool");
  ASSERT_TRUE(cgroup.add(service.pid()));
  ASSERT_TRUE(service.wait_holding());
  Python python(w.mnt / "lib/python3/livefs_mod.py");
  ASSERT_TRUE(python.wait_ready());

  json applied = run_json(w, "apply", "--allow-replace bin/daemon-tool lib/python3", 0);
  ASSERT_EQ(applied["applied"].size(), 2u) << applied.dump(2);

  // Right after the apply, without waiting: the plan is made from a scan of its own.
  json plan = run_json(w, "restart", "--dry-run", 0);
  EXPECT_EQ(plan["dry_run"], true);
  EXPECT_EQ(plan["restarted"], json::array());
  EXPECT_EQ(plan["holders_scan"]["current"], true) << plan.dump(2);
  json unit = unit_of(plan, cgroup.unit());
  ASSERT_FALSE(unit.is_null()) << plan.dump(2);
  EXPECT_EQ(unit["restart"], true);
  EXPECT_EQ(unit["manager"], "");
  json in_unit = process_of(unit["processes"], service.pid());
  ASSERT_FALSE(in_unit.is_null()) << plan.dump(2);
  EXPECT_EQ(in_unit["paths"], json({"bin/daemon-tool"}));
  EXPECT_EQ(in_unit["scripts"], json::array());
  json interpreter = process_of(plan["interpreters"], python.pid());
  ASSERT_FALSE(interpreter.is_null()) << plan.dump(2);
  EXPECT_EQ(interpreter["scripts"], json({"lib/python3/livefs_mod.py"}));
  EXPECT_EQ(interpreter["unit"], "");
  EXPECT_TRUE(process_of(plan["processes"], python.pid()).is_null()) << plan.dump(2);

  Ran text = w.cmd("restart", "--dry-run");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("  " + cgroup.unit() + "  (systemctl try-restart)"), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("interpreter " + std::to_string(python.pid()) +
                          " python3 running /lib/python3/livefs_mod.py"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("(dry run: nothing was restarted)"), std::string::npos) << text.out;

  // Nothing was restarted: the same processes, still holding the old files.
  EXPECT_TRUE(alive(service.pid(), "sleep"));
  EXPECT_TRUE(alive(python.pid(), "python3"));
  EXPECT_TRUE(present("/proc/" + std::to_string(service.pid()) + "/fd/3"));

  if (systemd_booted()) {
    // A real try-restart of a unit systemd does not know cannot be tested here.
    std::cout << "systemd is PID 1: the restart without --dry-run is not run\n";
    return;
  }
  // Without systemd as PID 1: the plan, and a clear "nothing was restarted".
  json refused = run_json(w, "restart", "", 1);
  EXPECT_EQ(refused["restarted"], json::array());
  EXPECT_NE(refused["not_restarted"].get<std::string>().find(
                "systemd is not the service manager (PID 1)"),
            std::string::npos)
      << refused.dump(2);
  EXPECT_FALSE(unit_of(refused, cgroup.unit()).is_null()) << refused.dump(2);
  EXPECT_FALSE(refused.contains("after"));
  Ran said = w.cmd("restart");
  EXPECT_EQ(said.status, 1) << said.out;
  EXPECT_NE(said.out.find("nothing was restarted: systemd is not the service manager"),
            std::string::npos)
      << said.out;
  // apply --restart: the apply is made, the restart is refused the same way.
  json both = run_json(w, "apply", "--allow-replace --restart bin/other", 1);
  EXPECT_EQ(both["applied"].size(), 1u) << both.dump(2);
  EXPECT_TRUE(both.contains("generation")) << both.dump(2);
  EXPECT_NE(both["restart"]["not_restarted"].get<std::string>().find("systemd is not"),
            std::string::npos)
      << both.dump(2);
  EXPECT_FALSE(unit_of(both["restart"], cgroup.unit()).is_null()) << both.dump(2);
  EXPECT_TRUE(alive(service.pid(), "sleep"));
  EXPECT_TRUE(alive(python.pid(), "python3"));
}

TEST_F(RestartTest, ThePlanFollowsTheProcesses) {
  UnitCgroup cgroup;
  ASSERT_TRUE(cgroup.ok());
  auto service = std::make_unique<Holder>(w.mnt / "bin/daemon-tool");
  ASSERT_TRUE(cgroup.add(service->pid()));
  ASSERT_TRUE(service->wait_holding());
  Python python(w.mnt / "lib/python3/livefs_mod.py");
  ASSERT_TRUE(python.wait_ready());
  run_json(w, "apply", "--allow-replace bin/daemon-tool lib/python3", 0);
  json plan = run_json(w, "restart", "--dry-run", 0);
  ASSERT_FALSE(unit_of(plan, cgroup.unit()).is_null()) << plan.dump(2);

  // The unit's process ends (as a restart would end it): the next plan, asked for at once,
  // no longer names the unit; the interpreter is still stale.
  service.reset();
  json after = run_json(w, "restart", "--dry-run", 0);
  EXPECT_TRUE(unit_of(after, cgroup.unit()).is_null()) << after.dump(2);
  EXPECT_FALSE(process_of(after["interpreters"], python.pid()).is_null()) << after.dump(2);
  EXPECT_EQ(after["not_restarted"], "no unit to restart");
  // status shows the same scan.
  json st = w.status_json();
  for (const auto& h : st["holders"]) EXPECT_EQ(h["unit"], "") << st.dump(2);
  EXPECT_FALSE(process_of(st["holders"], python.pid()).is_null()) << st.dump(2);
}

}  // namespace
}  // namespace livefs::e2e
