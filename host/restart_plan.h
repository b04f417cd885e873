// What to restart so that no process runs old files any more: the holders of replaced files
// (host/holders.h) grouped by what restarts them — systemd units, user sessions, interpreters
// running replaced scripts, and processes only the operator can restart. Reads /proc only
// (each holder's cgroup, command line and working directory); restarts nothing itself.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/holders.h"

namespace livefs::host {

// A process of the plan: what it still uses of the replaced files.
struct StaleProcess {
  pid_t pid = 0;
  std::string command;             // /proc/PID/comm
  std::string unit;                // its systemd unit, "" when none
  std::vector<std::string> paths;  // the replaced files it uses (paths in the view)
  // When it is an interpreter (python3, perl, ...): the replaced scripts or modules among
  // `paths` that it runs ("interpreter PID running SCRIPT"); empty otherwise.
  std::vector<std::string> scripts;
  bool operator==(const StaleProcess&) const = default;
};

// A systemd unit whose processes use replaced files.
struct UnitRestart {
  std::string unit;     // "nginx.service"
  std::string manager;  // "" for the system manager, "user@1000.service" for a user's units
  // Whether `systemctl try-restart UNIT` is to run: only system services, never livefs's own
  // unit nor PID 1's (`note` says why not).
  bool restart = false;
  std::string note;
  std::vector<StaleProcess> processes;
  bool operator==(const UnitRestart&) const = default;
};

// A login session (session-N.scope): its user has to log out and in again; never restarted.
struct SessionRestart {
  std::string session;  // "session-3.scope"
  std::string slice;    // "user-1000.slice", "" when not under one
  std::vector<StaleProcess> processes;
  bool operator==(const SessionRestart&) const = default;
};

struct RestartPlan {
  // System units first (user@UID.service is one), then each user's units, by name.
  std::vector<UnitRestart> units;
  std::vector<SessionRestart> sessions;
  // Interpreters in no unit or session (those in one are listed there, with their scripts).
  std::vector<StaleProcess> interpreters;
  // Everything else in no unit or session: to be restarted by hand.
  std::vector<StaleProcess> processes;
  std::string own_unit;  // livefs's own unit (never restarted), "" when it runs in none
  bool operator==(const RestartPlan&) const = default;

  // The units `systemctl try-restart` is given, in plan order.
  std::vector<std::string> units_to_restart() const {
    std::vector<std::string> out;
    for (const UnitRestart& u : units)
      if (u.restart) out.push_back(u.unit);
    return out;
  }
  bool empty() const {
    return units.empty() && sessions.empty() && interpreters.empty() && processes.empty();
  }
};

// What the plan needs of a process besides its holds, read from /proc/PID.
struct ProcessFacts {
  std::string cgroup;                // the cgroup path ("/system.slice/x.service"), see below
  std::vector<std::string> cmdline;  // argv, as bytes
  std::string cwd;                   // where its relative arguments are relative to
  bool operator==(const ProcessFacts&) const = default;
};

struct RestartPlanOptions {
  std::string own_unit;  // the caller's unit (own_unit_from_cgroup of /proc/self/cgroup)
  // Where the view is mounted ("/usr"): an argument "/usr/bin/tool" names the view's
  // "bin/tool". Empty or "/": arguments are paths in the view as they are.
  std::string mountpoint;
};

// The plan for `holders` (find_holders' order: by pid). `facts` has an entry for every
// running holder; a holder without one has exited since the scan and is left out.
RestartPlan plan_restart(const std::vector<Holder>& holders,
                         const std::map<pid_t, ProcessFacts>& facts,
                         const RestartPlanOptions& options);

// plan_restart with the facts of each holder read from `proc` (tests give a made-up one).
RestartPlan plan_restart(const std::vector<Holder>& holders, const RestartPlanOptions& options,
                         const std::filesystem::path& proc = "/proc");

// The facts of `pid` from `proc`/PID; nullopt when the process is gone (or unreadable).
std::optional<ProcessFacts> read_process_facts(pid_t pid, const std::filesystem::path& proc);

// Whether `command` (a comm or argv[0]'s base name) is a script interpreter: python3,
// python3.11, perl, ruby, node, php, lua, tclsh, bash, sh, ...
bool is_interpreter(std::string_view command);
// Whether `path` names a script or a module by its extension (.py, .pyc, .pm, .pl, .rb, ...).
bool is_script_path(std::string_view path);

}  // namespace livefs::host
