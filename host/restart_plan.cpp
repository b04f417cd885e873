// plan_restart: each holder placed by its cgroup path (system unit, user unit, session, PID 1
// or none), interpreters told apart by their command and the scripts among what they hold.
#include "host/restart_plan.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <optional>

#include "common/text.h"
#include "host/proc_files.h"

namespace livefs::host {
namespace {

namespace fs = std::filesystem;

std::vector<std::string_view> components(std::string_view path) {
  std::vector<std::string_view> out;
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view c = path.substr(0, slash);
    if (!c.empty()) out.push_back(c);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Where a process sits in systemd's tree, from its cgroup path.
struct Placement {
  enum class Kind { none, system_unit, user_unit, user_manager, session, init };
  Kind kind = Kind::none;
  std::string unit;     // the unit (or session scope) that holds it
  std::string manager;  // user units: "user@UID.service"
  std::string slice;    // sessions: "user-UID.slice"
};

// systemd's layout: system units under system.slice (or any slice), PID 1 in /init.scope,
// logins in user.slice/user-UID.slice/session-N.scope, a user's own manager in
// user-UID.slice/user@UID.service with its units below it (its own process in init.scope).
// The host's manager nests units only under user@UID.service: below any other unit is a
// delegated subtree (plain directories, or a container's own systemd with units of its own:
// machine.slice/systemd-nspawn@c1.service/payload/system.slice/journald.service belongs to
// systemd-nspawn@c1.service, never to the host's journald). So the first unit counts, and
// below a user's manager the first unit under it.
Placement place(std::string_view cgroup_path) {
  Placement p;
  std::string_view manager;
  std::string_view first;          // the first unit of all
  std::string_view first_in_user;  // ... below the user's manager
  std::string_view slice;          // the last slice above `first`
  std::string_view last_slice;
  for (std::string_view c : components(cgroup_path)) {
    if (c.ends_with(".slice")) {
      last_slice = c;
      continue;
    }
    if (!is_unit_name(c)) continue;
    if (first.empty() && manager.empty() && c.starts_with("user@") && c.ends_with(".service")) {
      manager = c;
    } else if (!manager.empty()) {
      if (first_in_user.empty()) first_in_user = c;
      continue;
    } else if (!first.empty()) {
      continue;  // inside a unit's delegated subtree
    }
    first = c;
    slice = last_slice;
  }
  if (!manager.empty()) {
    if (first_in_user.empty() || first_in_user == "init.scope") {
      p.kind = Placement::Kind::user_manager;
      p.unit = std::string(manager);
    } else {
      p.kind = Placement::Kind::user_unit;
      p.unit = std::string(first_in_user);
      p.manager = std::string(manager);
    }
    return p;
  }
  if (first.empty()) return p;
  p.unit = std::string(first);
  if (first.starts_with("session-") && first.ends_with(".scope")) {
    p.kind = Placement::Kind::session;
    p.slice = std::string(slice);
  } else if (first == "init.scope") {
    p.kind = Placement::Kind::init;
  } else {
    p.kind = Placement::Kind::system_unit;
  }
  return p;
}

// Services whose restart ends users' sessions or the machine's plumbing (as needrestart
// leaves them out by default): listed, never restarted. Why, or nullopt for any other unit.
std::optional<std::string> ends_sessions(std::string_view unit) {
  static constexpr std::string_view kPrefixes[] = {"display-manager.service",
                                                   "gdm.service",
                                                   "gdm3.service",
                                                   "sddm.service",
                                                   "lightdm.service",
                                                   "xdm.service",
                                                   "lxdm.service",
                                                   "getty@",
                                                   "serial-getty@",
                                                   "autovt@",
                                                   "console-getty.service",
                                                   "container-getty@",
                                                   "dbus.service",
                                                   "dbus-broker.service",
                                                   "systemd-logind.service",
                                                   "systemd-journald.service",
                                                   "systemd-udevd.service",
                                                   "user-runtime-dir@",
                                                   "systemd-nspawn@"};
  for (std::string_view prefix : kPrefixes) {
    if (unit.starts_with(prefix))
      return "restarting it would end users' sessions or the machine's own services: restart it "
             "by hand when that is acceptable";
  }
  return std::nullopt;
}

std::string_view base_name(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// `arg` of a process's command line as a path in the view, or nullopt when it names no path
// under the mount point.
std::optional<std::string> view_path_of(const std::string& arg, const ProcessFacts& facts,
                                        const std::string& mountpoint) {
  if (arg.empty() || arg[0] == '-') return std::nullopt;
  fs::path abs;
  if (arg[0] == '/') {
    abs = fs::path(arg);
  } else {
    if (facts.cwd.empty() || facts.cwd[0] != '/') return std::nullopt;
    abs = fs::path(facts.cwd) / arg;
  }
  std::string normal = abs.lexically_normal().string();
  std::string_view rest = normal;
  if (!mountpoint.empty() && mountpoint != "/") {
    if (!rest.starts_with(mountpoint) || rest.size() <= mountpoint.size() ||
        rest[mountpoint.size()] != '/')
      return std::nullopt;
    rest.remove_prefix(mountpoint.size());
  }
  while (rest.starts_with('/')) rest.remove_prefix(1);
  if (rest.empty()) return std::nullopt;
  return std::string(rest);
}

// One process's holds, gathered (holders come one per (pid, path, how)).
struct Gathered {
  const Holder* first = nullptr;
  std::vector<std::string> paths;
};

StaleProcess stale_process(const Gathered& g, const ProcessFacts& facts, const Placement& placement,
                           const RestartPlanOptions& options) {
  StaleProcess p{.pid = g.first->pid,
                 .command = g.first->command,
                 .unit = placement.unit,
                 .paths = g.paths,
                 .scripts = {}};
  bool interpreter = is_interpreter(g.first->command) ||
                     (!facts.cmdline.empty() && is_interpreter(base_name(facts.cmdline[0])));
  if (!interpreter) return p;
  std::vector<std::string> named;
  for (size_t i = 1; i < facts.cmdline.size(); ++i) {
    if (auto v = view_path_of(facts.cmdline[i], facts, options.mountpoint)) named.push_back(*v);
  }
  for (const std::string& path : g.paths) {
    if (is_script_path(path) || std::ranges::find(named, path) != named.end())
      p.scripts.push_back(path);
  }
  return p;
}

}  // namespace

bool is_interpreter(std::string_view command) {
  // The name, then an optional version: "python3", "python3.11", "perl5.36", "ruby3.1".
  static constexpr std::array<std::string_view, 17> kNames = {
      "python", "pypy", "perl", "ruby", "node", "nodejs", "php", "lua",  "luajit",
      "tclsh",  "wish", "bash", "sh",   "dash", "zsh",    "ksh", "guile"};
  for (std::string_view name : kNames) {
    if (!command.starts_with(name)) continue;
    std::string_view version = command.substr(name.size());
    if (std::ranges::all_of(version, [](char c) { return (c >= '0' && c <= '9') || c == '.'; }))
      return true;
  }
  return false;
}

bool is_script_path(std::string_view path) {
  static constexpr std::array<std::string_view, 16> kExtensions = {
      ".py",  ".pyc", ".pyo", ".pm",  ".pl", ".rb",   ".php", ".js",
      ".mjs", ".cjs", ".lua", ".tcl", ".sh", ".bash", ".scm", ".pth"};
  std::string_view name = base_name(path);
  for (std::string_view ext : kExtensions) {
    if (name.size() > ext.size() && name.ends_with(ext)) return true;
  }
  return false;
}

std::optional<ProcessFacts> read_process_facts(pid_t pid, const fs::path& proc) {
  fs::path dir_path = proc / std::to_string(pid);
  int fd = ::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  ProcessFacts facts;
  int err = 0;
  auto cgroup = read_all_at(fd, "cgroup", &err);
  auto cmdline = read_all_at(fd, "cmdline", &err);
  if (!cgroup && !cmdline) {
    ::close(fd);
    return std::nullopt;  // exited (or not ours to read)
  }
  if (cgroup) facts.cgroup = systemd_cgroup_path(*cgroup);
  if (cmdline) {
    std::string_view rest = *cmdline;
    while (!rest.empty()) {
      size_t nul = rest.find('\0');
      facts.cmdline.emplace_back(rest.substr(0, nul));
      if (nul == std::string_view::npos) break;
      rest.remove_prefix(nul + 1);
    }
  }
  // readlink of /proc/PID/cwd asks no file system: the kernel prints the path it holds.
  char buf[4096];
  ssize_t n = ::readlinkat(fd, "cwd", buf, sizeof buf);
  if (n > 0 && static_cast<size_t>(n) < sizeof buf) facts.cwd.assign(buf, static_cast<size_t>(n));
  ::close(fd);
  return facts;
}

RestartPlan plan_restart(const std::vector<Holder>& holders,
                         const std::map<pid_t, ProcessFacts>& facts,
                         const RestartPlanOptions& options) {
  std::map<pid_t, Gathered> by_pid;
  for (const Holder& h : holders) {
    Gathered& g = by_pid[h.pid];
    if (g.first == nullptr) g.first = &h;
    if (std::ranges::find(g.paths, h.path) == g.paths.end()) g.paths.push_back(h.path);
  }

  RestartPlan plan;
  plan.own_unit = options.own_unit;
  std::map<std::pair<std::string, std::string>, UnitRestart> units;  // (manager, unit)
  std::map<std::string, SessionRestart> sessions;
  for (const auto& [pid, g] : by_pid) {
    auto f = facts.find(pid);
    if (f == facts.end()) continue;  // exited since the scan
    // A process whose cgroup could not be read is placed by the unit the scan saw.
    Placement where = place(f->second.cgroup.empty() ? "/" + g.first->unit : f->second.cgroup);
    StaleProcess process = stale_process(g, f->second, where, options);
    using Kind = Placement::Kind;
    if (where.kind == Kind::none) {
      (process.scripts.empty() ? plan.processes : plan.interpreters).push_back(std::move(process));
      continue;
    }
    if (where.kind == Kind::session) {
      SessionRestart& s = sessions[where.unit];
      s.session = where.unit;
      s.slice = where.slice;
      s.processes.push_back(std::move(process));
      continue;
    }
    UnitRestart& u = units[{where.manager, where.unit}];
    u.unit = where.unit;
    u.manager = where.manager;
    u.processes.push_back(std::move(process));
    switch (where.kind) {
      case Kind::system_unit:
        if (!options.own_unit.empty() && where.unit == options.own_unit) {
          u.note = "livefs's own unit: restarting it would stop the daemon that serves the view";
        } else if (auto why = ends_sessions(where.unit)) {
          u.note = *why;
        } else if (where.unit.ends_with(".service")) {
          u.restart = true;
        } else if (where.unit.ends_with(".scope")) {
          u.note = "a scope is not started by systemd: restart what runs in it by hand";
        } else {
          u.note = "only services are restarted";
        }
        break;
      case Kind::user_unit:
        u.note =
            "a user's unit: its user restarts it (systemctl --user try-restart " + where.unit + ")";
        break;
      case Kind::user_manager:
        u.note = "a user's service manager: restarted when the user logs out and in again";
        break;
      case Kind::init:
        u.note = "PID 1: never restarted (systemctl daemon-reexec, or a reboot)";
        break;
      case Kind::none:
      case Kind::session:
        break;
    }
  }
  // System units first (manager ""), then each user's, by name: the map's order.
  for (auto& [key, u] : units) plan.units.push_back(std::move(u));
  for (auto& [key, s] : sessions) plan.sessions.push_back(std::move(s));
  return plan;
}

RestartPlan plan_restart(const std::vector<Holder>& holders, const RestartPlanOptions& options,
                         const fs::path& proc) {
  std::map<pid_t, ProcessFacts> facts;
  for (const Holder& h : holders) {
    if (facts.contains(h.pid)) continue;
    if (auto f = read_process_facts(h.pid, proc)) facts.emplace(h.pid, std::move(*f));
  }
  return plan_restart(holders, facts, options);
}

}  // namespace livefs::host
