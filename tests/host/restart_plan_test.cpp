// plan_restart: holders grouped into systemd units (system and user), sessions, interpreters
// and processes to restart by hand, from their cgroup and command line; the facts read from a
// made-up /proc; the cgroup, interpreter and script classifiers.
#include "host/restart_plan.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace livefs::host {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;
using livefs::testing::TempDir;
using livefs::testing::write_file;

Holder hold(pid_t pid, std::string command, std::string path, std::string how = "mapped",
            std::string unit = "") {
  return Holder{.pid = pid,
                .command = std::move(command),
                .path = std::move(path),
                .how = std::move(how),
                .unit = std::move(unit)};
}

ProcessFacts in(std::string cgroup, std::vector<std::string> cmdline = {}, std::string cwd = "/") {
  return ProcessFacts{.cgroup = std::move(cgroup), .cmdline = std::move(cmdline), .cwd = cwd};
}

const UnitRestart* unit_named(const RestartPlan& plan, const std::string& name) {
  for (const auto& u : plan.units)
    if (u.unit == name) return &u;
  return nullptr;
}

// A container's own systemd (its units below the container's unit) and the services whose
// restart would end sessions are never restarted on the host.
TEST(RestartPlan, ContainersAndSessionServicesAreNotRestarted) {
  std::vector<Holder> holders = {
      hold(100, "systemd-journal", "lib/libc.so.6"),
      hold(200, "gdm3", "lib/libc.so.6"),
      hold(300, "agetty", "lib/libc.so.6"),
      hold(400, "dbus-daemon", "lib/libc.so.6"),
      hold(500, "sshd", "lib/libc.so.6"),
  };
  std::map<pid_t, ProcessFacts> facts = {
      {100, in("/machine.slice/systemd-nspawn@c1.service/payload/system.slice/"
               "systemd-journald.service")},
      {200, in("/system.slice/gdm.service")},
      {300, in("/system.slice/system-getty.slice/getty@tty1.service")},
      {400, in("/system.slice/dbus.service")},
      {500, in("/system.slice/ssh.service")},
  };
  RestartPlan plan = plan_restart(holders, facts, {.own_unit = "", .mountpoint = "/usr"});
  EXPECT_EQ(unit_named(plan, "systemd-journald.service"), nullptr);
  for (const char* name :
       {"systemd-nspawn@c1.service", "gdm.service", "getty@tty1.service", "dbus.service"}) {
    const UnitRestart* u = unit_named(plan, name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_FALSE(u->restart) << name;
    EXPECT_NE(u->note.find("by hand"), std::string::npos) << name << ": " << u->note;
  }
  ASSERT_NE(unit_named(plan, "ssh.service"), nullptr);
  EXPECT_TRUE(unit_named(plan, "ssh.service")->restart);
  EXPECT_EQ(plan.units_to_restart(), std::vector<std::string>{"ssh.service"});
}

TEST(RestartPlan, GroupsHoldersByWhatRestartsThem) {
  std::vector<Holder> holders = {
      hold(1, "systemd", "lib/libc.so.6"),
      hold(100, "nginx", "sbin/nginx", "exe"),
      hold(100, "nginx", "lib/libssl.so.3"),
      hold(101, "nginx", "lib/libssl.so.3"),
      hold(200, "livefsd", "lib/libc.so.6"),
      hold(300, "pipewire", "lib/libc.so.6"),
      hold(310, "systemd", "lib/libc.so.6"),
      hold(400, "bash", "lib/libc.so.6"),
      hold(500, "python3", "lib/python3/dist-packages/mod.py", "fd 3"),
      hold(500, "python3", "lib/libc.so.6"),
      hold(600, "vim", "lib/libc.so.6"),
      hold(700, "gone", "lib/libc.so.6"),
      hold(800, "cron", "lib/libc.so.6"),
  };
  std::map<pid_t, ProcessFacts> facts = {
      {1, in("/init.scope", {"/sbin/init"})},
      {100, in("/system.slice/nginx.service", {"nginx: master process"})},
      {101, in("/system.slice/nginx.service", {"nginx: worker process"})},
      {200, in("/system.slice/livefs-usr.service", {"/usr/sbin/livefs"})},
      {300, in("/user.slice/user-1000.slice/user@1000.service/session.slice/pipewire.service")},
      {310,
       in("/user.slice/user-1000.slice/user@1000.service/init.scope", {"/lib/systemd/systemd"})},
      {400, in("/user.slice/user-1000.slice/session-3.scope", {"-bash"})},
      {500, in("/", {"python3", "-c", "import mod"})},
      {600, in("/", {"vim", "notes"})},
      {800, in("/system.slice/cron.service/payload", {"/usr/sbin/cron"})},
  };
  RestartPlan plan =
      plan_restart(holders, facts, {.own_unit = "livefs-usr.service", .mountpoint = "/usr"});

  // System units first (a user's manager is one), by name; then the user's units.
  std::vector<std::string> names;
  for (const auto& u : plan.units) names.push_back(u.manager + "/" + u.unit);
  EXPECT_EQ(names, (std::vector<std::string>{"/cron.service", "/init.scope", "/livefs-usr.service",
                                             "/nginx.service", "/user@1000.service",
                                             "user@1000.service/pipewire.service"}));
  const UnitRestart* nginx = unit_named(plan, "nginx.service");
  ASSERT_NE(nginx, nullptr);
  EXPECT_TRUE(nginx->restart);
  ASSERT_EQ(nginx->processes.size(), 2u);
  EXPECT_EQ(nginx->processes[0].pid, 100);
  EXPECT_EQ(nginx->processes[0].paths, (std::vector<std::string>{"sbin/nginx", "lib/libssl.so.3"}));
  EXPECT_TRUE(nginx->processes[0].scripts.empty());
  // A delegated subtree belongs to its unit.
  ASSERT_NE(unit_named(plan, "cron.service"), nullptr);
  EXPECT_TRUE(unit_named(plan, "cron.service")->restart);

  // Never restarted: livefs's own unit, PID 1, a user's units and a user's manager.
  for (const char* never :
       {"livefs-usr.service", "init.scope", "pipewire.service", "user@1000.service"}) {
    const UnitRestart* u = unit_named(plan, never);
    ASSERT_NE(u, nullptr) << never;
    EXPECT_FALSE(u->restart) << never;
    EXPECT_FALSE(u->note.empty()) << never;
  }
  EXPECT_NE(unit_named(plan, "livefs-usr.service")->note.find("own unit"), std::string::npos);
  EXPECT_EQ(unit_named(plan, "pipewire.service")->manager, "user@1000.service");
  EXPECT_EQ(plan.units_to_restart(), (std::vector<std::string>{"cron.service", "nginx.service"}));

  // A login session: its user logs out and in.
  ASSERT_EQ(plan.sessions.size(), 1u);
  EXPECT_EQ(plan.sessions[0].session, "session-3.scope");
  EXPECT_EQ(plan.sessions[0].slice, "user-1000.slice");
  ASSERT_EQ(plan.sessions[0].processes.size(), 1u);
  EXPECT_EQ(plan.sessions[0].processes[0].pid, 400);

  // An interpreter with a module open, in no unit; the rest by hand; the exited one is gone.
  ASSERT_EQ(plan.interpreters.size(), 1u);
  EXPECT_EQ(plan.interpreters[0].pid, 500);
  EXPECT_EQ(plan.interpreters[0].scripts,
            (std::vector<std::string>{"lib/python3/dist-packages/mod.py"}));
  ASSERT_EQ(plan.processes.size(), 1u);
  EXPECT_EQ(plan.processes[0].pid, 600);
  EXPECT_EQ(plan.processes[0].command, "vim");
  EXPECT_EQ(plan.own_unit, "livefs-usr.service");
}

TEST(RestartPlan, AnInterpreterRunsTheScriptsItsCommandLineNames) {
  // A script without an extension (run through its #! line: comm is the script's name, argv[0]
  // the interpreter) held by the shell that reads it, named absolutely and relative to the
  // working directory.
  std::vector<Holder> holders = {
      hold(10, "tool", "bin/tool", "fd 255"),         hold(10, "tool", "lib/libc.so.6"),
      hold(20, "perl", "share/perl5/Foo.pm", "fd 4"), hold(20, "perl", "lib/helper", "fd 5"),
      hold(30, "sleep", "bin/sleep", "exe"),
  };
  std::map<pid_t, ProcessFacts> facts = {
      {10, in("/system.slice/tool.service", {"/bin/bash", "/usr/bin/tool", "--now"})},
      {20, in("/", {"/usr/bin/perl", "-w", "../lib/helper"}, "/usr/bin")},
      {30, in("/", {"sleep", "/usr/bin/sleep"})},
  };
  RestartPlan plan = plan_restart(holders, facts, {.own_unit = "", .mountpoint = "/usr"});
  const UnitRestart* tool = unit_named(plan, "tool.service");
  ASSERT_NE(tool, nullptr);
  ASSERT_EQ(tool->processes.size(), 1u);
  EXPECT_EQ(tool->processes[0].scripts, std::vector<std::string>{"bin/tool"});
  EXPECT_EQ(tool->processes[0].unit, "tool.service");
  ASSERT_EQ(plan.interpreters.size(), 1u);
  EXPECT_EQ(plan.interpreters[0].scripts,
            (std::vector<std::string>{"share/perl5/Foo.pm", "lib/helper"}));
  // Not an interpreter: naming the file it executes makes no script of it.
  ASSERT_EQ(plan.processes.size(), 1u);
  EXPECT_EQ(plan.processes[0].pid, 30);
  EXPECT_TRUE(plan.processes[0].scripts.empty());

  // A view mounted elsewhere: /usr/bin/tool is not in it.
  RestartPlan other = plan_restart(holders, facts, {.own_unit = "", .mountpoint = "/srv/view"});
  ASSERT_NE(unit_named(other, "tool.service"), nullptr);
  EXPECT_TRUE(unit_named(other, "tool.service")->processes[0].scripts.empty());
}

TEST(RestartPlan, OnlyServicesAreRestarted) {
  std::vector<Holder> holders = {hold(10, "x", "lib/a"), hold(11, "y", "lib/a"),
                                 hold(12, "z", "lib/a")};
  std::map<pid_t, ProcessFacts> facts = {
      {10, in("/system.slice/run-r1.scope")},
      {11, in("/system.slice/x.socket")},
      {12, in("/system.slice/z.service")},
  };
  RestartPlan plan = plan_restart(holders, facts, {});
  EXPECT_EQ(plan.units_to_restart(), std::vector<std::string>{"z.service"});
  EXPECT_NE(unit_named(plan, "run-r1.scope")->note.find("scope"), std::string::npos);
  EXPECT_FALSE(unit_named(plan, "x.socket")->restart);
}

TEST(RestartPlan, NothingHeldIsAnEmptyPlan) {
  RestartPlan plan = plan_restart({}, std::map<pid_t, ProcessFacts>{},
                                  {.own_unit = "a.service", .mountpoint = ""});
  EXPECT_TRUE(plan.empty());
  EXPECT_TRUE(plan.units_to_restart().empty());
}

TEST(RestartPlan, SystemdCgroupPath) {
  EXPECT_EQ(systemd_cgroup_path("0::/system.slice/ssh.service\n"), "/system.slice/ssh.service");
  // Hybrid: the unified hierarchy names no unit (processes stay at its root), name=systemd
  // does.
  EXPECT_EQ(systemd_cgroup_path("9:name=systemd:/system.slice/a.service\n4:memory:/x\n0::/\n"),
            "/system.slice/a.service");
  EXPECT_EQ(systemd_cgroup_path("9:name=systemd:/system.slice/a.service\n"
                                "0::/livefs-test.slice/b.service\n"),
            "/livefs-test.slice/b.service");
  EXPECT_EQ(systemd_cgroup_path("4:memory:/system.slice/c.service\n1:name=systemd:/\n"),
            "/system.slice/c.service");
  EXPECT_EQ(systemd_cgroup_path("0::/\n"), "");
  EXPECT_EQ(systemd_cgroup_path(""), "");
}

TEST(RestartPlan, FactsAreReadFromProc) {
  TempDir dir("livefs-restart-plan");
  fs::path proc = dir / "proc";
  write_file(proc / "42/cgroup", "1:name=systemd:/\n0::/system.slice/web.service\n");
  write_file(proc / "42/cmdline", "/usr/bin/python3\0/usr/lib/web/app.py\0"s);
  fs::create_directories(dir / "work");
  fs::create_directory_symlink(dir / "work", proc / "42/cwd");
  auto facts = read_process_facts(42, proc);
  ASSERT_TRUE(facts.has_value());
  EXPECT_EQ(facts->cgroup, "/system.slice/web.service");
  EXPECT_EQ(facts->cmdline, (std::vector<std::string>{"/usr/bin/python3", "/usr/lib/web/app.py"}));
  EXPECT_EQ(facts->cwd, (dir / "work").string());
  EXPECT_FALSE(read_process_facts(43, proc).has_value());

  // The plan reads them itself: app.py (named and a module) under web.service; pid 43 exited.
  std::vector<Holder> holders = {hold(42, "python3", "lib/web/app.py", "fd 3"),
                                 hold(43, "gone", "lib/web/app.py", "fd 3")};
  RestartPlan plan = plan_restart(holders, {.own_unit = "", .mountpoint = "/usr"}, proc);
  ASSERT_EQ(plan.units.size(), 1u);
  EXPECT_EQ(plan.units[0].unit, "web.service");
  EXPECT_TRUE(plan.units[0].restart);
  ASSERT_EQ(plan.units[0].processes.size(), 1u);
  EXPECT_EQ(plan.units[0].processes[0].scripts, std::vector<std::string>{"lib/web/app.py"});
  EXPECT_TRUE(plan.processes.empty());
}

TEST(RestartPlan, InterpretersAndScripts) {
  for (const char* name : {"python3", "python3.11", "python", "perl", "perl5.36", "ruby3.1", "node",
                           "php8.2", "bash", "sh", "lua5.4", "tclsh8.6"})
    EXPECT_TRUE(is_interpreter(name)) << name;
  for (const char* name : {"sshd", "nginx", "php-fpm8.2", "shutdown", "", "perlbug", "bashbug"})
    EXPECT_FALSE(is_interpreter(name)) << name;
  for (const char* path :
       {"lib/python3/dist-packages/x.py", "lib/python3/__pycache__/x.cpython-311.pyc",
        "share/perl5/Foo.pm", "lib/x.rb", "share/app/main.js", "lib/init.sh"})
    EXPECT_TRUE(is_script_path(path)) << path;
  for (const char* path : {"lib/libc.so.6", "bin/python3", "lib/.py", "share/doc/py"})
    EXPECT_FALSE(is_script_path(path)) << path;
}

}  // namespace
}  // namespace livefs::host
