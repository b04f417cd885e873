// The live commands: mount (starts the daemon), and diff --state, apply,
// rollback, reset, status, umount, which talk to the daemon over
// STATEDIR/control.sock.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "livefs/cli_output.h"
#include "livefs/commands.h"
#include "livefs/control.h"
#include "livefs/daemon.h"
#include "livefs/hotfix.h"
#include "overlay/selection.h"

namespace livefs::cli {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Sends a request; prints the error line and returns nullopt when it fails.
std::optional<json> request(const fs::path& state, const json& req) {
  auto response = call_daemon(state, req);
  if (!response) {
    std::fprintf(stderr, "livefs: %s\n", response.error().message().c_str());
    return std::nullopt;
  }
  if (!response->value("ok", false)) {
    std::fprintf(stderr, "livefs: %s\n", response->value("error", "daemon error").c_str());
    return std::nullopt;
  }
  return std::move(*response);
}

std::string show_path(const std::string& p) { return "/" + p; }

// A daemon response as --json prints it: without the protocol's "ok".
void print_response(json response) {
  response.erase("ok");
  print_json(response);
}

// The daemon has its own working directory: paths are sent absolute, without a trailing
// slash.
std::string absolute_path(const std::string& p) {
  fs::path a = fs::absolute(p).lexically_normal();
  if (a.filename().empty() && a.has_relative_path()) a = a.parent_path();
  return a.string();
}

void print_changes(const json& changes) {
  for (const auto& c : changes) {
    std::printf("  %-12s %s%s\n", c.at("kind").get<std::string>().c_str(),
                show_path(c.at("path").get<std::string>()).c_str(),
                c.value("kernel", false) ? "  (kernel: needs a reboot)" : "");
  }
}

void print_switch(const json& s) {
  std::printf(
      "switch %llu -> %llu took %.6f s (%llu paths changed, %llu "
      "invalidations)\n",
      static_cast<unsigned long long>(s.at("from_generation").get<uint64_t>()),
      static_cast<unsigned long long>(s.at("to_generation").get<uint64_t>()),
      s.at("seconds").get<double>(),
      static_cast<unsigned long long>(s.at("changed_paths").get<uint64_t>()),
      static_cast<unsigned long long>(s.at("invalidations").get<uint64_t>()));
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

void print_holders(const json& holders) {
  if (holders.empty()) return;
  std::printf("processes still using replaced files (restart them to use the new ones):\n");
  for (const auto& h : holders) {
    std::string unit = h.value("unit", "");
    std::printf("  pid %-7d %-16s %-10s /%s%s\n", h.at("pid").get<int>(),
                h.at("command").get<std::string>().c_str(), h.at("how").get<std::string>().c_str(),
                h.at("path").get<std::string>().c_str(),
                unit.empty() ? "" : ("  (unit " + unit + ")").c_str());
  }
}

int live_diff(const fs::path& state, bool as_json, bool by_package) {
  auto r = request(state, {{"cmd", "diff"}, {"by_package", by_package}});
  if (!r) return kExitError;
  if (as_json) {
    print_response(*r);
    return kExitOk;
  }
  const json& changes = r->at("changes");
  std::printf("%zu pending change%s (staged %s vs live generation %llu)\n", changes.size(),
              changes.size() == 1 ? "" : "s", r->value("staged", "").c_str(),
              static_cast<unsigned long long>(r->at("live_generation").get<uint64_t>()));
  if (r->contains("packages")) {
    std::map<std::string, std::string> kinds;
    for (const auto& c : changes) kinds[c.at("path")] = c.at("kind");
    for (const auto& g : r->at("packages")) {
      std::string name = g.at("package");
      std::string from = g.at("old_version"), to = g.at("new_version");
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
      for (const auto& p : g.at("paths")) {
        std::string path = p;
        std::printf("  %-12s /%s%s\n", kinds[path].c_str(), path.c_str(),
                    overlay::is_kernel_path(path) ? "  (kernel: needs a reboot)" : "");
      }
    }
  } else {
    print_changes(changes);
  }
  const json& config = r->at("config_changes");
  if (!config.empty()) {
    std::printf("configuration: %zu change%s in /etc between the deployments (not applied: %s)\n",
                config.size(), config.size() == 1 ? "" : "s",
                "merge them yourself or reboot into the new deployment");
    for (const auto& c : config)
      std::printf("  %-12s /%s\n", c.at("kind").get<std::string>().c_str(),
                  c.at("path").get<std::string>().c_str());
  }
  return kExitOk;
}

}  // namespace

void register_live_commands(CLI::App& app, int& status) {
  // mount
  {
    auto args = std::make_shared<MountArgs>();
    auto store = std::make_shared<std::string>();
    auto booted = std::make_shared<std::string>();
    auto staged = std::make_shared<std::string>();
    auto sysroot = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("mount", "Start the daemon and mount the live view");
    cmd->add_option("--booted", *booted,
                    "The booted tree (a directory, served from where it is); with --sysroot: "
                    "the booted deployment (index or checksum) when the sysroot is not running");
    cmd->add_option("--staged", *staged, "The staged tree (a directory)");
    cmd->add_option("--sysroot", *sysroot, "An OSTree sysroot: booted and staged deployments");
    cmd->add_option("--os", args->os, "With --sysroot: the OS (stateroot) name");
    cmd->add_option("--subdir", args->subdir, "With --sysroot: the part served (default usr)");
    cmd->add_option("--state", args->state, "State directory")->required();
    cmd->add_option("--store", *store, "Object store (default STATEDIR/store)");
    cmd->add_flag("--allow-other,!--no-allow-other", args->allow_other,
                  "Every user may use the view (the default; the kernel checks the modes), or "
                  "only root");
    cmd->add_flag("--foreground", args->foreground, "Stay attached");
    cmd->add_flag("--debug", args->debug, "libfuse debug output");
    cmd->add_option("MOUNTPOINT", args->mountpoint, "Where to mount (may be the booted dir)")
        ->required();
    cmd->callback([args, store, booted, staged, sysroot, &status] {
      if (!store->empty()) args->store = *store;
      if (!sysroot->empty()) {
        if (!staged->empty()) {
          std::fprintf(stderr, "livefs: --staged is not used with --sysroot (see livefs stage)\n");
          status = kExitUsage;
          return;
        }
        args->sysroot = *sysroot;
        if (!booted->empty()) args->booted_spec = *booted;
        auto sub = clean_view_path(args->subdir);
        if (!sub) {
          std::fprintf(stderr, "livefs: --subdir: %s\n", sub.error().message().c_str());
          status = kExitUsage;
          return;
        }
        args->subdir = *sub;
      } else {
        if (booted->empty() || staged->empty()) {
          std::fprintf(stderr, "livefs: mount needs --booted DIR and --staged DIR, or --sysroot\n");
          status = kExitUsage;
          return;
        }
        args->booted = *booted;
        args->staged = *staged;
      }
      status = run_mount(*args);
    });
  }

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
      cmd->add_option("--state", *state, "State directory of a running daemon")->required();
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
      cmd->add_flag("--by-package", *by_package,
                    "With --state: group the changes by owning package");
    }
  }

  // apply
  {
    struct ApplyArgs {
      std::string state;
      std::vector<std::string> patterns;
      std::vector<std::string> packages;
      bool all = false, allow_replace = false, dry_run = false, json = false;
    };
    auto a = std::make_shared<ApplyArgs>();
    auto* cmd = app.add_subcommand("apply", "Make selected staged changes live");
    cmd->add_option("--state", a->state, "State directory")->required();
    cmd->add_option("PATHS", a->patterns, "Paths or globs (a directory selects its subtree)");
    cmd->add_flag("--all", a->all, "Select every pending change");
    cmd->add_option("--package", a->packages,
                    "Select what the package owns in the staged tree (repeatable)");
    cmd->add_flag("--allow-replace", a->allow_replace, "Allow replacing or removing booted files");
    cmd->add_flag("--dry-run", a->dry_run, "Show what would be applied");
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      auto r = request(a->state, {{"cmd", "apply"},
                                  {"patterns", a->patterns},
                                  {"packages", a->packages},
                                  {"all", a->all},
                                  {"allow_replace", a->allow_replace},
                                  {"dry_run", a->dry_run}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_response(*r);
      } else {
        const json& applied = r->at("applied");
        if (a->dry_run) {
          std::printf("would apply %zu change%s:\n", applied.size(),
                      applied.size() == 1 ? "" : "s");
        } else {
          std::printf("applied generation %llu: %zu change%s\n",
                      static_cast<unsigned long long>(r->at("generation").get<uint64_t>()),
                      applied.size(), applied.size() == 1 ? "" : "s");
        }
        print_changes(applied);
        for (const auto& k : r->at("skipped_kernel")) {
          std::printf("  skipped      /%s  (kernel: needs a reboot)\n",
                      k.get<std::string>().c_str());
        }
        if (r->contains("switch")) print_switch(r->at("switch"));
        if (r->contains("holders")) print_holders(r->at("holders"));
      }
      status = kExitOk;
    });
  }

  // rollback, reset
  for (const char* name : {"rollback", "reset"}) {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    std::string op = name;
    auto* cmd = app.add_subcommand(
        name, op == "rollback" ? "Back one generation" : "Back to the booted tree (generation 0)");
    cmd->add_option("--state", *state, "State directory")->required();
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->callback([state, as_json, op, &status] {
      auto r = request(*state, {{"cmd", op}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_response(*r);
      } else {
        std::printf("%s: live generation is now %llu\n", op.c_str(),
                    static_cast<unsigned long long>(r->at("generation").get<uint64_t>()));
        print_switch(r->at("switch"));
      }
      status = kExitOk;
    });
  }

  // status
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand("status", "Generations, what each applied, timings");
    cmd->add_option("--state", *state, "State directory")->required();
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->callback([state, as_json, &status] {
      auto r = request(*state, {{"cmd", "status"}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_response(*r);
        status = kExitOk;
        return;
      }
      std::printf("mount point: %s (daemon pid %d)\n",
                  r->at("mountpoint").get<std::string>().c_str(), r->at("pid").get<int>());
      std::printf("booted:      %s\nstaged:      %s\n", r->at("booted").get<std::string>().c_str(),
                  r->at("staged").get<std::string>().c_str());
      if (!r->at("stage_error").is_null())
        std::printf("STAGING FAILED: %s\n", r->at("stage_error").get<std::string>().c_str());
      if (!r->value("config_note", "").empty())
        std::printf("note:        %s\n", r->value("config_note", "").c_str());
      if (!r->at("journal_error").is_null()) {
        std::printf("JOURNAL ERROR: %s\n  (serving the booted tree, generation 0)\n",
                    r->at("journal_error").get<std::string>().c_str());
      }
      if (!r->value("journal_note", "").empty())
        std::printf("note:        %s\n", r->value("journal_note", "").c_str());
      for (const auto& w : r->at("warnings")) {
        std::printf("warning: %s\n", w.get<std::string>().c_str());
      }
      uint64_t live = r->at("live_generation").get<uint64_t>();
      std::printf("live generation: %llu\ngenerations:\n", static_cast<unsigned long long>(live));
      for (const auto& g : r->at("generations")) {
        uint64_t n = g.at("number").get<uint64_t>();
        std::printf("  %c %llu  %-7s %zu path%s  %s\n", n == live ? '*' : ' ',
                    static_cast<unsigned long long>(n), g.at("op").get<std::string>().c_str(),
                    g.at("path_count").get<size_t>(),
                    g.at("path_count").get<size_t>() == 1 ? "" : "s",
                    g.at("time").get<std::string>().c_str());
      }
      const json& hot = r->at("hotfix");
      for (const auto& w : hot.at("watches")) {
        std::string err = w.value("error", "");
        std::printf("hotfix watch: %s -> /%s (%zu entries, %llu changes, last %s)%s%s\n",
                    w.at("source").get<std::string>().c_str(),
                    w.at("at").get<std::string>().c_str(), w.at("entries").get<size_t>(),
                    static_cast<unsigned long long>(w.at("changes").get<uint64_t>()),
                    w.at("last_change").get<std::string>().c_str(), err.empty() ? "" : ": ",
                    err.c_str());
      }
      for (const auto& a : hot.at("adds"))
        std::printf("hotfix file:  %s -> /%s\n", a.at("source").get<std::string>().c_str(),
                    a.at("at").get<std::string>().c_str());
      if (!r->at("last_switch").is_null()) {
        std::printf("last ");
        print_switch(r->at("last_switch"));
      }
      print_holders(r->at("holders"));
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
    cmd->add_option("--state", a->state, "State directory")->required();
    cmd->add_option("--commit", a->commit, "A ref or checksum of the sysroot's repository");
    cmd->add_option("--pull", a->pull, "REMOTE REF: pull from an OSTree remote, then stage")
        ->expected(2);
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      json req = {{"cmd", "stage"}};
      if (!a->commit.empty()) req["commit"] = a->commit;
      if (a->pull.size() == 2) {
        if (!a->commit.empty()) {
          std::fprintf(stderr, "livefs: --commit and --pull exclude each other\n");
          status = kExitUsage;
          return;
        }
        req["remote"] = a->pull[0];
        req["ref"] = a->pull[1];
      }
      auto r = request(a->state, req);
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_response(*r);
      } else {
        std::printf(
            "staged %s: %llu files (%llu as booted, %llu already stored, %llu read, "
            "%.1f MiB) in %.3f s; %zu pending changes\n",
            r->at("staged").get<std::string>().c_str(),
            static_cast<unsigned long long>(r->at("files").get<uint64_t>()),
            static_cast<unsigned long long>(r->at("files_as_booted").get<uint64_t>()),
            static_cast<unsigned long long>(r->at("files_reused").get<uint64_t>()),
            static_cast<unsigned long long>(r->at("files_read").get<uint64_t>()),
            static_cast<double>(r->at("bytes_read").get<uint64_t>()) / (1 << 20),
            r->at("seconds").get<double>(), r->at("pending").get<size_t>());
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
    auto print = [a, &status](const std::optional<json>& r, const char* what) {
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_response(*r);
      } else {
        std::printf("%s\n", what);
        if (r->contains("switch")) print_switch(r->at("switch"));
      }
      status = kExitOk;
    };
    auto* watch = hot->add_subcommand("watch", "Mirror SRC_DIR onto PREFIX, following its edits");
    watch->add_option("--state", a->state, "State directory")->required();
    watch->add_option("SRC_DIR", a->source, "The directory to mirror")->required();
    watch->add_option("--at", a->at, "Where in the view (e.g. bin)")->required();
    watch->add_flag("--json", a->json, "JSON output");
    watch->callback([a, print] {
      auto r = request(
          a->state, {{"cmd", "hotfix_watch"}, {"source", absolute_path(a->source)}, {"at", a->at}});
      std::string what = r ? "watching " + r->at("source").get<std::string>() + " at /" +
                                 r->at("at").get<std::string>() + " (" +
                                 std::to_string(r->at("entries").get<size_t>()) + " entries)"
                           : "";
      print(r, what.c_str());
    });
    auto* add = hot->add_subcommand("add", "Put FILE at PATH in the view");
    add->add_option("--state", a->state, "State directory")->required();
    add->add_option("FILE", a->source, "The file")->required();
    add->add_option("--at", a->at, "Its path in the view")->required();
    add->add_flag("--json", a->json, "JSON output");
    add->callback([a, print] {
      auto r = request(
          a->state, {{"cmd", "hotfix_add"}, {"source", absolute_path(a->source)}, {"at", a->at}});
      std::string what = r ? "added /" + r->at("at").get<std::string>() : "";
      print(r, what.c_str());
    });
    auto* list = hot->add_subcommand("list", "Hotfix watches, files and the paths they serve");
    list->add_option("--state", a->state, "State directory")->required();
    list->add_flag("--json", a->json, "JSON output");
    list->callback([a, &status] {
      auto r = request(a->state, {{"cmd", "hotfix_list"}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        print_response(*r);
      } else {
        for (const auto& w : r->at("watches")) {
          std::string err = w.value("error", "");
          std::printf("watch %s -> /%s%s%s\n", w.at("source").get<std::string>().c_str(),
                      w.at("at").get<std::string>().c_str(), err.empty() ? "" : ": ", err.c_str());
        }
        for (const auto& x : r->at("adds"))
          std::printf("file  %s -> /%s\n", x.at("source").get<std::string>().c_str(),
                      x.at("at").get<std::string>().c_str());
        for (const auto& f : r->at("files")) std::printf("  /%s\n", f.get<std::string>().c_str());
      }
      status = kExitOk;
    });
    auto* reset = hot->add_subcommand("reset", "Drop the hotfix layer (or what is under PREFIX)");
    reset->add_option("--state", a->state, "State directory")->required();
    reset->add_option("PREFIX", a->prefix, "Only what is at or below this path");
    reset->add_flag("--json", a->json, "JSON output");
    reset->callback([a, print] {
      json req = {{"cmd", "hotfix_reset"}};
      if (!a->prefix.empty()) req["prefix"] = a->prefix;
      auto r = request(a->state, req);
      std::string what =
          r ? "hotfix reset: " + std::to_string(r->at("removed_paths").get<size_t>()) +
                  " paths back to the generation below"
            : "";
      print(r, what.c_str());
    });
  }

  // umount
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    auto wait = std::make_shared<bool>(false);
    auto* cmd = app.add_subcommand(
        "umount", "Detach the view; the daemon serves what is still open or mapped, then exits");
    cmd->add_option("--state", *state, "State directory")->required();
    cmd->add_flag("--json", *as_json, "JSON output");
    cmd->add_flag("--wait", *wait,
                  "Return only when the daemon has exited (its last user is gone)");
    cmd->callback([state, as_json, wait, &status] {
      auto r = request(*state, {{"cmd", "umount"}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (!wait_for_state_release(*state)) {
        std::fprintf(stderr, "livefs: the daemon for %s did not release its state directory\n",
                     state->c_str());
        status = kExitError;
        return;
      }
      if (*as_json) {
        print_response(*r);
      } else {
        std::printf("unmounted %s\n", r->value("mountpoint", "").c_str());
        if (!*wait && r->contains("users") && !r->at("users").empty()) {
          const json& users = r->at("users");
          std::printf(
              "%zu process%s still use%s the detached view; it is served until they "
              "exit:",
              users.size(), users.size() == 1 ? "" : "es", users.size() == 1 ? "s" : "");
          for (const auto& u : users) std::printf(" %d", u.get<int>());
          std::printf("\n");
        }
      }
      if (*wait) {
        pid_t pid = r->value("pid", 0);
        while (pid > 0 && !process_gone(pid))
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      status = kExitOk;
    });
  }
}

}  // namespace livefs::cli
