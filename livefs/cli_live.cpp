// The client commands: diff --state, apply, rollback, reset, status, stage, hotfix, umount,
// restart.
// Each sends one typed request (livefs/protocol.h) over STATEDIR/control.sock and prints the
// typed reply. This file is part of the thin `livefs` executable: it links no view, store
// or OSTree code (mount is in cli_mount.cpp, in livefsd).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "livefs/cli_output.h"
#include "livefs/commands.h"
#include "livefs/control.h"
#include "livefs/protocol.h"

namespace livefs::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;
namespace proto = livefs::protocol;

// --mount PATH of the command being run (one command per process).
std::string& mount_option() {
  static std::string mount;
  return mount;
}

// The state directory of the command's daemon: --state, else the daemon of --mount, else the
// only one running (control.h). Without one, the command ends here with the reason.
fs::path daemon_state(const fs::path& state) {
  static std::optional<fs::path> found;
  if (!state.empty() && mount_option().empty()) return state;
  if (!found) {
    auto r = find_daemon_state(state.string(), mount_option());
    if (!r) {
      std::fprintf(stderr, "livefs: %s\n", r.error().message().c_str());
      std::fflush(nullptr);
      std::exit(kExitError);
    }
    found = *r;
  }
  return *found;
}

// Sends a request and reads its reply; prints the error line and returns nullopt when it
// fails (the daemon's refusal as the daemon worded it).
template <class Reply>
std::optional<Reply> request(const fs::path& state, const proto::Request& req) {
  auto response = call_daemon(daemon_state(state), proto::to_json(req));
  if (!response) {
    std::fprintf(stderr, "livefs: %s\n", response.error().message().c_str());
    return std::nullopt;
  }
  auto reply = proto::parse_reply<Reply>(*response);
  if (!reply) {
    // A refusal's context is the daemon's whole sentence; a malformed answer is ours.
    const Error& e = reply.error();
    std::fprintf(stderr, "livefs: %s\n",
                 e.code == EPROTO ? e.message().c_str() : e.context.c_str());
    return std::nullopt;
  }
  return std::move(*reply);
}

// ", about 42%" of an estimated end; "" without one.
std::string percent_text(const std::optional<uint64_t>& percent) {
  return percent ? ", about " + std::to_string(*percent) + "%" : "";
}

// A request that may wait in the daemon (for the booted manifest at start-up, behind a stage,
// or a stage itself): when it has not been answered within half a second, what the daemon is
// busy with is shown on stderr (when it is a terminal) until it is.
template <class Reply>
std::optional<Reply> request_showing_progress(const fs::path& state_option,
                                              const proto::Request& req) {
  // Found here, on this thread: finding none ends the process.
  const fs::path state = daemon_state(state_option);
  auto answer = std::async(std::launch::async, [&] { return request<Reply>(state, req); });
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  bool shown = false;
  while (answer.wait_for(std::chrono::milliseconds(500)) != std::future_status::ready) {
    if (!tty) continue;
    auto st = call_daemon(state, proto::to_json(proto::Request{proto::StatusRequest{}}));
    if (!st) continue;
    auto r = proto::parse_reply<proto::StatusReply>(*st);
    if (!r) continue;
    std::string what;
    if (r->loading) {
      what = r->loading->phase + ": " + std::to_string(r->loading->entries) + " entries" +
             percent_text(r->loading->percent);
    } else if (r->staging) {
      what = "staging " + r->staging->what + ": " + std::to_string(r->staging->files) + " files" +
             percent_text(r->staging->percent);
    }
    if (what.empty()) continue;
    std::fprintf(stderr, "\rlivefs: waiting for the daemon: %s\033[K", what.c_str());
    shown = true;
  }
  if (shown) std::fprintf(stderr, "\r\033[K");
  return answer.get();
}

std::string show_path(const std::string& p) { return "/" + p; }

// A reply as --json prints it: the reply's fields, without the protocol's "ok".
template <class Reply>
void print_reply(const Reply& reply) {
  print_json(proto::to_json(reply));
}

// The daemon has its own working directory: paths are sent absolute, without a trailing
// slash.
std::string absolute_path(const std::string& p) {
  fs::path a = fs::absolute(p).lexically_normal();
  if (a.filename().empty() && a.has_relative_path()) a = a.parent_path();
  return a.string();
}

// "  (REASON)" of a change that needs a reboot, "" for one that can go live.
std::string reboot_note(const proto::Change& c) {
  if (!c.kernel) return "";
  return "  (" + c.reboot.value_or("kernel: needs a reboot") + ")";
}

void print_changes(const std::vector<proto::Change>& changes) {
  for (const auto& c : changes) {
    std::printf("  %-12s %s%s\n", c.kind.c_str(), show_path(c.path).c_str(),
                reboot_note(c).c_str());
  }
}

// status: "reboot still needed for:" and what, at most `max` items each.
void print_reboot_needs(const std::vector<proto::RebootNeed>& needs, size_t max = 10) {
  if (needs.empty()) return;
  std::printf("reboot still needed for:\n");
  for (const auto& n : needs) {
    std::printf("  %s: %s\n", n.what.c_str(), n.reason.c_str());
    for (size_t i = 0; i < n.items.size() && i < max; ++i) {
      if (n.what == "kernel_arguments") {
        std::printf("    %s: %s\n", i == 0 ? "booted" : "next boot",
                    n.items[i].empty() ? "(none)" : n.items[i].c_str());
      } else if (n.what == "processes") {
        std::printf("    pid %s\n", n.items[i].c_str());
      } else {
        std::printf("    %s\n", show_path(n.items[i]).c_str());
      }
    }
    if (n.items.size() > max) std::printf("    ... (%zu more)\n", n.items.size() - max);
  }
}

void print_switch(const proto::SwitchStats& s) {
  std::printf(
      "switch %llu -> %llu took %.6f s (%llu paths changed, %llu "
      "invalidations)\n",
      static_cast<unsigned long long>(s.from_generation),
      static_cast<unsigned long long>(s.to_generation), s.seconds,
      static_cast<unsigned long long>(s.changed_paths),
      static_cast<unsigned long long>(s.invalidations));
}

// Waits until the daemon of `state` has given up the state directory (it releases the
// state lock last thing; it may still serve a detached view to its remaining users).
bool wait_for_state_release(const fs::path& state) {
  UniqueFd lock(::open((state / "lock").c_str(), O_RDWR | O_CLOEXEC));
  if (!lock) return true;
  for (int i = 0; i < 6000; ++i) {
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) {
      ::flock(lock.get(), LOCK_UN);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// Whether the process `pid` is gone, its whole thread group (a leader that exited may be a
// zombie while other threads still serve).
bool process_gone(pid_t pid) {
  std::error_code ec;
  fs::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec);
  if (ec) return true;
  for (const auto& task : it) {
    std::FILE* f = std::fopen((task.path() / "stat").c_str(), "re");
    if (f == nullptr) continue;
    char line[512] = {};
    size_t n = std::fread(line, 1, sizeof line - 1, f);
    std::fclose(f);
    std::string_view text(line, n);
    size_t close = text.rfind(')');
    if (close != std::string_view::npos && close + 2 < text.size() && text[close + 2] != 'Z' &&
        text[close + 2] != 'X')
      return false;
  }
  return true;
}

// --state DIR or --mount PATH on a command that talks to a daemon; neither: the one daemon
// running. Resolved when the command first talks to it (daemon_state), so usage errors come
// first.
void add_daemon_options(CLI::App* cmd, std::string& state) {
  cmd->add_option("--state", state,
                  "State directory of the daemon (default: the daemon of --mount, or the only "
                  "one running)");
  cmd->add_option("--mount", mount_option(), "Mount point of the daemon, when several run");
}

void print_holders(const std::vector<proto::Holder>& holders) {
  if (holders.empty()) return;
  std::printf("processes still using replaced files (restart them to use the new ones):\n");
  for (const auto& h : holders) {
    std::printf("  pid %-7d %-16s %-10s /%s%s\n", static_cast<int>(h.pid), h.command.c_str(),
                h.how.c_str(), h.path.c_str(),
                h.unit.empty() ? "" : ("  (unit " + h.unit + ")").c_str());
  }
}

int live_diff(const fs::path& state, bool as_json, bool by_package) {
  auto r = request_showing_progress<proto::DiffReply>(state,
                                                      proto::DiffRequest{.by_package = by_package});
  if (!r) return kExitError;
  if (as_json) {
    print_reply(*r);
    return kExitOk;
  }
  const auto& changes = r->changes;
  std::printf("%zu pending change%s (staged %s vs live generation %llu)\n", changes.size(),
              changes.size() == 1 ? "" : "s", r->staged.c_str(),
              static_cast<unsigned long long>(r->live_generation));
  if (r->packages) {
    std::map<std::string, const proto::Change*> by_path;
    for (const auto& c : changes) by_path[c.path] = &c;
    for (const auto& g : *r->packages) {
      const std::string& name = g.package;
      const std::string &from = g.old_version, &to = g.new_version;
      if (name.empty()) {
        std::printf("(no package)\n");
      } else if (from.empty()) {
        std::printf("%s: new %s\n", name.c_str(), to.c_str());
      } else if (to.empty()) {
        std::printf("%s: removed (was %s)\n", name.c_str(), from.c_str());
      } else if (from == to) {
        std::printf("%s %s\n", name.c_str(), to.c_str());
      } else {
        std::printf("%s: %s -> %s\n", name.c_str(), from.c_str(), to.c_str());
      }
      if (g.goes_with) {
        std::string partners;
        for (const auto& p : *g.goes_with) partners += (partners.empty() ? "" : ", ") + p;
        std::printf("  needs, to go live: %s  (apply --package %s --with-deps)\n", partners.c_str(),
                    name.c_str());
      }
      for (const auto& path : g.paths) {
        auto it = by_path.find(path);
        const proto::Change* c = it == by_path.end() ? nullptr : it->second;
        std::printf("  %-12s /%s%s\n", c ? c->kind.c_str() : "", path.c_str(),
                    c ? reboot_note(*c).c_str() : "");
      }
    }
  } else {
    print_changes(changes);
  }
  const auto& config = r->config_changes;
  if (!config.empty()) {
    std::printf("configuration: %zu change%s in /etc between the deployments (%s)\n", config.size(),
                config.size() == 1 ? "" : "s", "`livefs apply --etc` merges them");
    for (const auto& c : config) std::printf("  %-12s /%s\n", c.kind.c_str(), c.path.c_str());
  }
  return kExitOk;
}

void print_etc_merge(const proto::EtcMerge& m) {
  for (const auto& p : m.updated) std::printf("  %-12s /%s\n", "etc updated", p.c_str());
  for (const auto& p : m.added) std::printf("  %-12s /%s\n", "etc added", p.c_str());
  for (const auto& p : m.removed) std::printf("  %-12s /%s\n", "etc removed", p.c_str());
  for (const auto& c : m.conflicts)
    std::printf("  %-12s /%s  (kept: %s)\n", "etc conflict", c.path.c_str(), c.reason.c_str());
}

// ---- restart -----------------------------------------------------------------------------
//
// The daemon plans (restart_plan: it knows the holders and its own unit) and this process
// runs `systemctl try-restart`. Not the daemon: it serves the view — over /usr, every
// program's files — and a fork of it is a copy of a many-threaded FUSE server whose child
// would exec from the view it serves; a unit whose stop waits on a file of the view would
// wait on the daemon from inside it. Here, systemctl runs as the operator on the host, its
// messages and its exit status reach the operator, and the daemon stays a server that forks
// nothing.

// What sd_booted() checks: systemd is the service manager (PID 1) when it made this directory.
bool systemd_booted() {
  struct stat st {};
  return ::lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
}

// The units of the plan that systemctl may be given. The daemon decides (never its own unit,
// PID 1, a scope, a user's unit or manager); an answer that says otherwise is not trusted.
std::vector<std::string> units_to_restart(const proto::RestartPlanReply& r) {
  std::vector<std::string> out;
  for (const auto& u : r.plan.units) {
    if (!u.restart || !u.manager.empty() || !u.unit.ends_with(".service") ||
        u.unit == r.plan.own_unit || u.unit.starts_with("user@"))
      continue;
    out.push_back(u.unit);
  }
  return out;
}

// `systemctl try-restart -- UNIT...`, waited for; its exit status (-1: it could not run).
// Its output goes to stderr, so that --json's stdout stays one document.
int run_systemctl_try_restart(const std::vector<std::string>& units) {
  std::vector<char*> argv;
  std::string systemctl = "systemctl", verb = "try-restart", end = "--";
  argv.push_back(systemctl.data());
  argv.push_back(verb.data());
  argv.push_back(end.data());
  std::vector<std::string> names = units;
  for (auto& u : names) argv.push_back(u.data());
  argv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "livefs: exec(systemctl): %s\n", std::strerror(errno));
    ::_exit(127);
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

std::string stale_paths(const proto::StaleProcess& p) {
  std::string out;
  for (const auto& path : p.paths) out += (out.empty() ? "" : " ") + show_path(path);
  return out;
}

void print_stale_process(const proto::StaleProcess& p) {
  if (!p.scripts.empty()) {
    std::string scripts;
    for (const auto& s : p.scripts) scripts += (scripts.empty() ? "" : " ") + show_path(s);
    std::printf("    interpreter %d %s running %s\n", static_cast<int>(p.pid), p.command.c_str(),
                scripts.c_str());
  } else {
    std::printf("    pid %-7d %-16s %s\n", static_cast<int>(p.pid), p.command.c_str(),
                stale_paths(p).c_str());
  }
}

void print_restart_plan(const proto::RestartPlanReply& r) {
  const host::RestartPlan& plan = r.plan;
  if (plan.empty()) {
    std::printf("no process uses replaced files\n");
  }
  if (!plan.units.empty()) std::printf("systemd units:\n");
  for (const auto& u : plan.units) {
    std::string what = u.restart ? "systemctl try-restart" : "not restarted: " + u.note;
    std::printf("  %s%s%s  (%s)\n", u.manager.empty() ? "" : u.manager.c_str(),
                u.manager.empty() ? "" : " ", u.unit.c_str(), what.c_str());
    for (const auto& p : u.processes) print_stale_process(p);
  }
  if (!plan.sessions.empty()) std::printf("user sessions (the user logs out and in again):\n");
  for (const auto& s : plan.sessions) {
    std::printf("  %s%s%s%s\n", s.session.c_str(), s.slice.empty() ? "" : " (", s.slice.c_str(),
                s.slice.empty() ? "" : ")");
    for (const auto& p : s.processes) print_stale_process(p);
  }
  if (!plan.interpreters.empty()) std::printf("interpreters (restart by hand):\n");
  for (const auto& p : plan.interpreters) print_stale_process(p);
  if (!plan.processes.empty()) std::printf("other processes (restart by hand):\n");
  for (const auto& p : plan.processes) print_stale_process(p);
  const proto::HolderScan& h = r.holders_scan;
  if (h.error) std::printf("holder scan failed: %s\n", h.error->c_str());
  if (!h.current)
    std::printf("holder scan: not finished in time (the plan is from %s)\n",
                h.finished.empty() ? "no scan yet" : h.finished.c_str());
}

// `restart` (and `apply --restart`): the plan, systemctl for its units unless a dry run, and
// the plan again from a new scan: what is still stale. Returns the JSON `--json` prints and
// the exit status; prints the text itself unless `as_json`.
struct RestartOutcome {
  json out;
  int status = kExitOk;
};

RestartOutcome run_restart(const fs::path& state, bool dry_run, bool as_json) {
  RestartOutcome o;
  auto plan = request<proto::RestartPlanReply>(state, proto::RestartPlanRequest{});
  if (!plan) {
    o.status = kExitError;
    return o;
  }
  std::vector<std::string> units = units_to_restart(*plan);
  o.out = proto::to_json(*plan);
  o.out["dry_run"] = dry_run;
  o.out["restarted"] = json::array();
  o.out["not_restarted"] = nullptr;
  if (!as_json) print_restart_plan(*plan);
  auto not_restarted = [&](const std::string& why, int status) {
    o.out["not_restarted"] = why;
    o.status = status;
    if (!as_json) std::printf("nothing was restarted: %s\n", why.c_str());
  };
  if (dry_run) {
    if (!as_json && !units.empty()) std::printf("(dry run: nothing was restarted)\n");
    if (units.empty()) o.out["not_restarted"] = "no unit to restart";
    return o;
  }
  if (units.empty()) {
    not_restarted("no unit to restart", kExitOk);
    return o;
  }
  if (!systemd_booted()) {
    not_restarted(
        "systemd is not the service manager (PID 1) of this machine (no /run/systemd/system); "
        "restart the units listed by hand",
        kExitError);
    return o;
  }
  int rc = run_systemctl_try_restart(units);
  if (rc != 0) {
    std::string why = rc < 0 ? std::string("systemctl could not be run")
                             : "systemctl try-restart exited with status " + std::to_string(rc);
    o.out["systemctl_error"] = why;
    o.status = kExitError;
    std::fprintf(stderr, "livefs: %s\n", why.c_str());
  }
  o.out["restarted"] = units;
  if (!as_json) {
    std::printf("systemctl try-restart:");
    for (const auto& u : units) std::printf(" %s", u.c_str());
    std::printf("\n");
  }
  // A new scan: what the restarted units run now uses the new files.
  auto after = request<proto::RestartPlanReply>(state, proto::RestartPlanRequest{});
  if (!after) {
    o.status = kExitError;
    return o;
  }
  o.out["after"] = proto::to_json(*after);
  if (!as_json) {
    std::printf("still using replaced files after the restart:\n");
    print_restart_plan(*after);
  }
  return o;
}

}  // namespace

void register_live_commands(CLI::App& app, int& status) {
  // diff --state: pending changes. `livefs diff` of two trees belongs to
  // cli_import.cpp; when it is registered already, --state joins it and takes
  // over when given.
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto by_package = std::make_shared<bool>(false);
    CLI::App* cmd = nullptr;
    for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "diff"; })) {
      cmd = sub;
    }
    if (cmd == nullptr) {
      cmd = app.add_subcommand("diff", "Pending changes: staged vs what is live");
      add_daemon_options(cmd, *state);
      cmd->add_flag("--json", *as_json, "JSON output");
      cmd->add_flag("--by-package", *by_package, "Group the changes by owning package");
      cmd->callback([state, as_json, by_package, &status] {
        status = live_diff(*state, *as_json, *by_package);
      });
    } else {
      // Option callbacks run before the subcommand's own requirements and
      // callback: the live diff answers and ends the process there.
      cmd->add_option_function<std::string>(
          "--state",
          [cmd](const std::string& dir) {
            bool j = false, p = false;
            if (auto* opt = cmd->get_option_no_throw("--json")) j = opt->count() > 0;
            if (auto* opt = cmd->get_option_no_throw("--by-package")) p = opt->count() > 0;
            int rc = live_diff(dir, j, p);
            std::fflush(nullptr);
            std::exit(rc);
          },
          "Pending changes of a running daemon (staged vs live)");
      cmd->add_option_function<std::string>(
          "--mount",
          [cmd](const std::string& mount) {
            bool j = false, p = false;
            if (auto* opt = cmd->get_option_no_throw("--json")) j = opt->count() > 0;
            if (auto* opt = cmd->get_option_no_throw("--by-package")) p = opt->count() > 0;
            auto found = find_daemon_state("", mount);
            int rc = kExitError;
            if (found) {
              rc = live_diff(*found, j, p);
            } else {
              std::fprintf(stderr, "livefs: %s\n", found.error().message().c_str());
            }
            std::fflush(nullptr);
            std::exit(rc);
          },
          "Pending changes of the daemon serving this mount point");
      cmd->add_flag("--by-package", *by_package,
                    "With --state or --mount: group the changes by owning package");
    }
  }

  // apply
  {
    struct ApplyArgs {
      std::string state;
      std::vector<std::string> patterns;
      std::vector<std::string> packages;
      bool all = false, allow_replace = false, dry_run = false, json = false, etc = false;
      bool with_deps = false, ignore_deps = false;
      bool restart = false;
    };
    auto a = std::make_shared<ApplyArgs>();
    auto* cmd = app.add_subcommand("apply", "Make selected staged changes live");
    add_daemon_options(cmd, a->state);
    cmd->add_option("PATHS", a->patterns, "Paths or globs (a directory selects its subtree)");
    cmd->add_flag("--all", a->all, "Select every pending change");
    cmd->add_option("--package", a->packages,
                    "Select what the package owns in the staged tree (repeatable)");
    auto* with_deps = cmd->add_flag(
        "--with-deps", a->with_deps,
        "With --package: also apply the pending packages their requirements need (else an "
        "unmet requirement refuses the apply)");
    cmd->add_flag("--ignore-deps", a->ignore_deps,
                  "With --package: apply even when requirements are unmet (they are listed)")
        ->excludes(with_deps);
    cmd->add_flag("--allow-replace", a->allow_replace, "Allow replacing or removing booted files");
    cmd->add_flag("--dry-run", a->dry_run, "Show what would be applied");
    cmd->add_flag("--etc", a->etc,
                  "Also merge /etc: the staged default configuration where the administrator "
                  "did not change it (alone: only /etc)");
    cmd->add_flag("--restart", a->restart,
                  "After the apply, restart the systemd units still using replaced files "
                  "(livefs restart)");
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      auto r = request_showing_progress<proto::ApplyReply>(a->state,
                                                           proto::ApplyRequest{
                                                               .patterns = a->patterns,
                                                               .packages = a->packages,
                                                               .all = a->all,
                                                               .allow_replace = a->allow_replace,
                                                               .dry_run = a->dry_run,
                                                               .etc = a->etc,
                                                               .with_deps = a->with_deps,
                                                               .ignore_deps = a->ignore_deps,
                                                           });
      if (!r) {
        status = kExitError;
        return;
      }
      status = kExitOk;
      // --restart: not after a dry run (nothing was switched).
      const bool restart = a->restart && !a->dry_run;
      if (a->json) {
        json j = proto::to_json(*r);
        if (restart) {
          RestartOutcome o = run_restart(a->state, false, true);
          j["restart"] = o.out;
          status = o.status;
        }
        print_json(j);
      } else {
        const auto& applied = r->applied;
        // --all --etc with no tree change pending is answered as --etc alone, with a note.
        bool etc_only = a->etc && ((a->patterns.empty() && a->packages.empty() && !a->all) ||
                                   (r->note && applied.empty()));
        if (r->note) std::printf("note: %s\n", r->note->c_str());
        if (etc_only) {
          if (a->dry_run)
            std::printf("would merge /etc:\n");
          else if (r->generation)
            std::printf("applied generation %llu: /etc merged\n",
                        static_cast<unsigned long long>(*r->generation));
          else
            std::printf("nothing to merge in /etc\n");
        } else if (a->dry_run) {
          std::printf("would apply %zu change%s:\n", applied.size(),
                      applied.size() == 1 ? "" : "s");
        } else {
          std::printf("applied generation %llu: %zu change%s\n",
                      static_cast<unsigned long long>(r->generation.value_or(0)), applied.size(),
                      applied.size() == 1 ? "" : "s");
        }
        if (r->added_packages) {
          for (const auto& added : *r->added_packages)
            std::printf("added package %s: %s\n", added.package.c_str(), added.because.c_str());
        }
        if (r->dependency_problems) {
          for (const auto& problem : *r->dependency_problems)
            std::printf("unmet (--ignore-deps): %s\n", problem.c_str());
        }
        if (!etc_only) print_changes(applied);
        if (r->etc) print_etc_merge(*r->etc);
        if (r->kept) {
          for (const auto& k : *r->kept) {
            std::printf("  kept         %s  (%s %s)\n", show_path(k.path).c_str(), k.kind.c_str(),
                        k.reason.c_str());
          }
        } else {
          for (const auto& k : r->skipped_kernel)
            std::printf("  kept         /%s  (kernel: needs a reboot)\n", k.c_str());
        }
        if (r->switch_stats) print_switch(*r->switch_stats);
        if (r->holders) print_holders(*r->holders);
        if (restart) {
          status = run_restart(a->state, false, false).status;
        } else if (!a->dry_run && !r->applied.empty()) {
          std::printf(
              "processes still using replaced files: `livefs status` (scanned in the "
              "background)\n");
        }
      }
    });
  }

  // restart
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto dry_run = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand(
        "restart",
        "Restart the systemd units whose processes still use replaced files; list the rest");
    add_daemon_options(cmd, *state);
    cmd->add_flag("--dry-run", *dry_run, "Print the plan; restart nothing");
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->callback([state, as_json, dry_run, &status] {
      RestartOutcome o = run_restart(*state, *dry_run, *as_json);
      if (*as_json && !o.out.is_null()) print_json(o.out);
      status = o.status;
    });
  }

  // rollback, reset
  for (const char* name : {"rollback", "reset"}) {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto to = std::make_shared<std::optional<uint64_t>>();
    std::string op = name;
    auto* cmd = app.add_subcommand(
        name, op == "rollback" ? "Back one generation" : "Back to the booted tree (generation 0)");
    add_daemon_options(cmd, *state);
    cmd->add_flag("--json", *as_json, "JSON output");
    if (op == "rollback")
      cmd->add_option("--to", *to, "Back to this earlier generation, in one switch");
    cmd->callback([state, as_json, to, op, &status] {
      proto::Request req = op == "rollback" ? proto::Request(proto::RollbackRequest{.to = *to})
                                            : proto::Request(proto::ResetRequest{});
      auto r = request<proto::GoBackReply>(*state, req);
      if (!r) {
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_reply(*r);
      } else {
        std::printf("%s: live generation is now %llu\n", op.c_str(),
                    static_cast<unsigned long long>(r->generation));
        print_switch(r->switch_stats);
        if (r->etc_restored) {
          for (uint64_t g : *r->etc_restored)
            std::printf("/etc: the merge of generation %llu undone\n",
                        static_cast<unsigned long long>(g));
        }
        if (r->etc_kept) {
          for (const auto& k : *r->etc_kept) std::printf("/etc: kept %s\n", k.c_str());
        }
        if (r->etc_error) std::printf("/etc: undo failed: %s\n", r->etc_error->c_str());
      }
      // The switch happened, but /etc is not back: a script must not take that for success.
      status = r->etc_error ? kExitError : kExitOk;
    });
  }

  // status
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("status", "Generations, what each applied, timings");
    add_daemon_options(cmd, *state);
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->callback([state, as_json, &status] {
      auto r = request<proto::StatusReply>(*state, proto::StatusRequest{});
      if (!r) {
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_reply(*r);
        status = kExitOk;
        return;
      }
      std::printf("mount point: %s (daemon pid %d)\n", r->mountpoint.c_str(), r->pid);
      std::printf("booted:      %s\nstaged:      %s\n", r->booted.c_str(), r->staged.c_str());
      if (r->loading) {
        std::printf("loading:     %s (%llu entries so far%s)\n", r->loading->phase.c_str(),
                    static_cast<unsigned long long>(r->loading->entries),
                    percent_text(r->loading->percent).c_str());
      }
      if (r->staging) {
        std::printf("staging:     %s (%llu files read so far%s)\n", r->staging->what.c_str(),
                    static_cast<unsigned long long>(r->staging->files),
                    percent_text(r->staging->percent).c_str());
      }
      if (r->file_io) {
        const proto::FileIo& io = *r->file_io;
        if (io.passthrough) {
          std::printf("file io:     FUSE passthrough (%s; %llu backing files", io.libfuse.c_str(),
                      static_cast<unsigned long long>(io.backing_files));
          if (io.fallbacks > 0)
            std::printf(", %llu opens through the daemon",
                        static_cast<unsigned long long>(io.fallbacks));
          std::printf(")\n");
        } else {
          std::printf("file io:     through the daemon (%s; no passthrough: %s)\n",
                      io.libfuse.c_str(),
                      io.why_not.empty() ? "not negotiated yet" : io.why_not.c_str());
        }
      }
      if (r->stage_error) std::printf("STAGING FAILED: %s\n", r->stage_error->c_str());
      if (!r->config_note.empty()) std::printf("note:        %s\n", r->config_note.c_str());
      if (r->journal_error) {
        std::printf("JOURNAL ERROR: %s\n  (serving the booted tree, generation 0)\n",
                    r->journal_error->c_str());
      }
      if (!r->journal_note.empty()) std::printf("note:        %s\n", r->journal_note.c_str());
      for (const auto& w : r->warnings) std::printf("warning: %s\n", w.c_str());
      uint64_t live = r->live_generation;
      std::printf("live generation: %llu\ngenerations:\n", static_cast<unsigned long long>(live));
      for (const auto& g : r->generations) {
        std::printf("  %c %llu  %-7s %llu path%s  %s\n", g.number == live ? '*' : ' ',
                    static_cast<unsigned long long>(g.number), g.op.c_str(),
                    static_cast<unsigned long long>(g.path_count), g.path_count == 1 ? "" : "s",
                    g.time.c_str());
      }
      for (const auto& w : r->hotfix.watches) {
        std::printf("hotfix watch: %s -> /%s (%llu entries, %llu changes, last %s)%s%s\n",
                    w.source.c_str(), w.at.c_str(), static_cast<unsigned long long>(w.entries),
                    static_cast<unsigned long long>(w.changes), w.last_change.c_str(),
                    w.error.empty() ? "" : ": ", w.error.c_str());
      }
      for (const auto& a : r->hotfix.adds)
        std::printf("hotfix file:  %s -> /%s\n", a.source.c_str(), a.at.c_str());
      if (r->last_switch) {
        std::printf("last ");
        print_switch(*r->last_switch);
      }
      print_holders(r->holders);
      if (r->reboot_needed_for) print_reboot_needs(*r->reboot_needed_for);
      if (r->holders_scan) {
        const proto::HolderScan& h = *r->holders_scan;
        if (h.error) std::printf("holder scan failed: %s\n", h.error->c_str());
        if (!h.current)
          std::printf("holder scan: %s (the list above is from %s)\n",
                      h.scanning ? "running" : "pending",
                      h.finished.empty() ? "no scan yet" : h.finished.c_str());
      }
      status = kExitOk;
    });
  }

  // stage (OSTree)
  {
    struct StageArgs {
      std::string state, commit;
      std::vector<std::string> pull;
      bool json = false;
    };
    auto a = std::make_shared<StageArgs>();
    auto* cmd = app.add_subcommand(
        "stage", "Stage an OSTree commit (default: the sysroot's pending deployment)");
    add_daemon_options(cmd, a->state);
    cmd->add_option("--commit", a->commit, "A ref or checksum of the sysroot's repository");
    cmd->add_option("--pull", a->pull, "REMOTE REF: pull from an OSTree remote, then stage")
        ->expected(2);
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      proto::StageRequest req;
      if (!a->commit.empty()) req.commit = a->commit;
      if (a->pull.size() == 2) {
        if (!a->commit.empty()) {
          std::fprintf(stderr, "livefs: --commit and --pull exclude each other\n");
          status = kExitUsage;
          return;
        }
        req.remote = a->pull[0];
        req.ref = a->pull[1];
      }
      auto r = request_showing_progress<proto::StageReply>(a->state, req);
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_reply(*r);
      } else {
        std::printf(
            "staged %s: %llu files (%llu as booted, %llu already stored, %llu read, "
            "%.1f MiB) in %.3f s; %zu pending changes\n",
            r->staged.c_str(), static_cast<unsigned long long>(r->files),
            static_cast<unsigned long long>(r->files_as_booted),
            static_cast<unsigned long long>(r->files_reused),
            static_cast<unsigned long long>(r->files_read),
            static_cast<double>(r->bytes_read) / (1 << 20), r->seconds,
            static_cast<size_t>(r->pending));
      }
      status = kExitOk;
    });
  }

  // hotfix
  {
    auto* hot = app.add_subcommand("hotfix", "A developer's files live on top of the view");
    hot->require_subcommand(1);
    struct HotArgs {
      std::string state, source, at, prefix;
      bool json = false;
    };
    auto a = std::make_shared<HotArgs>();
    // Prints a reply (its --json, or `what` and the switch), sets the exit status.
    auto finish = [a, &status](const auto& r, auto&& what) {
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_reply(*r);
      } else {
        std::printf("%s\n", what(*r).c_str());
        print_switch(r->switch_stats);
      }
      status = kExitOk;
    };
    auto* watch = hot->add_subcommand("watch", "Mirror SRC_DIR onto PREFIX, following its edits");
    add_daemon_options(watch, a->state);
    watch->add_option("SRC_DIR", a->source, "The directory to mirror")->required();
    watch->add_option("--at", a->at, "Where in the view (e.g. bin)")->required();
    watch->add_flag("--json", a->json, "JSON output");
    watch->callback([a, finish] {
      auto r = request<proto::HotfixWatchReply>(
          a->state, proto::HotfixWatchRequest{.source = absolute_path(a->source), .at = a->at});
      finish(r, [](const proto::HotfixWatchReply& x) {
        return "watching " + x.source + " at /" + x.at + " (" + std::to_string(x.entries) +
               " entries)";
      });
    });
    auto* add = hot->add_subcommand("add", "Put FILE at PATH in the view");
    add_daemon_options(add, a->state);
    add->add_option("FILE", a->source, "The file")->required();
    add->add_option("--at", a->at, "Its path in the view")->required();
    add->add_flag("--json", a->json, "JSON output");
    add->callback([a, finish] {
      auto r = request<proto::HotfixAddReply>(
          a->state, proto::HotfixAddRequest{.source = absolute_path(a->source), .at = a->at});
      finish(r, [](const proto::HotfixAddReply& x) { return "added /" + x.at; });
    });
    auto* list = hot->add_subcommand("list", "Hotfix watches, files and the paths they serve");
    add_daemon_options(list, a->state);
    list->add_flag("--json", a->json, "JSON output");
    list->callback([a, &status] {
      auto r = request<proto::HotfixListReply>(a->state, proto::HotfixListRequest{});
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_reply(*r);
      } else {
        for (const auto& w : r->hotfix.watches) {
          std::printf("watch %s -> /%s%s%s\n", w.source.c_str(), w.at.c_str(),
                      w.error.empty() ? "" : ": ", w.error.c_str());
        }
        for (const auto& x : r->hotfix.adds)
          std::printf("file  %s -> /%s\n", x.source.c_str(), x.at.c_str());
        for (const auto& f : r->files) std::printf("  /%s\n", f.c_str());
      }
      status = kExitOk;
    });
    auto* reset = hot->add_subcommand("reset", "Drop the hotfix layer (or what is under PREFIX)");
    add_daemon_options(reset, a->state);
    reset->add_option("PREFIX", a->prefix, "Only what is at or below this path");
    reset->add_flag("--json", a->json, "JSON output");
    reset->callback([a, finish] {
      proto::HotfixResetRequest req;
      if (!a->prefix.empty()) req.prefix = a->prefix;
      auto r = request<proto::HotfixResetReply>(a->state, req);
      finish(r, [](const proto::HotfixResetReply& x) {
        return "hotfix reset: " + std::to_string(x.removed_paths) +
               " paths back to the generation below";
      });
    });
  }

  // umount
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto wait = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand(
        "umount", "Detach the view; the daemon serves what is still open or mapped, then exits");
    add_daemon_options(cmd, *state);
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->add_flag("--wait", *wait,
                  "Return only when the daemon has exited (its last user is gone)");
    cmd->callback([state, as_json, wait, &status] {
      auto r = request<proto::UmountReply>(*state, proto::UmountRequest{});
      if (!r) {
        status = kExitError;
        return;
      }
      if (!wait_for_state_release(daemon_state(*state))) {
        std::fprintf(stderr, "livefs: the daemon for %s did not release its state directory\n",
                     state->c_str());
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_reply(*r);
      } else {
        std::printf("unmounted %s\n", r->mountpoint.c_str());
        if (!*wait && !r->users.empty()) {
          const auto& users = r->users;
          std::printf(
              "%zu process%s still use%s the detached view; it is served until they "
              "exit:",
              users.size(), users.size() == 1 ? "" : "es", users.size() == 1 ? "s" : "");
          for (pid_t u : users) std::printf(" %d", static_cast<int>(u));
          std::printf("\n");
        }
      }
      if (*wait) {
        pid_t pid = r->pid.value_or(0);
        while (pid > 0 && !process_gone(pid))
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      status = kExitOk;
    });
  }
}

}  // namespace livefs::cli
