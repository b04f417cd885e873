// The live commands: mount (starts the daemon), and diff --state, apply,
// rollback, reset, status, umount, which talk to the daemon over
// STATEDIR/control.sock.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "livefs/commands.h"
#include "livefs/control.h"
#include "livefs/daemon.h"

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

// Waits until the daemon of `state` has exited (it releases the state lock last
// thing).
bool wait_for_daemon_exit(const fs::path& state) {
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

int live_diff(const fs::path& state, bool as_json) {
  auto r = request(state, {{"cmd", "diff"}});
  if (!r) return kExitError;
  if (as_json) {
    r->erase("ok");
    std::cout << r->dump(2) << "\n";
    return kExitOk;
  }
  const json& changes = r->at("changes");
  std::printf("%zu pending change%s (staged vs live generation %llu)\n", changes.size(),
              changes.size() == 1 ? "" : "s",
              static_cast<unsigned long long>(r->at("live_generation").get<uint64_t>()));
  print_changes(changes);
  return kExitOk;
}

}  // namespace

void register_live_commands(CLI::App& app, int& status) {
  // mount
  {
    auto args = std::make_shared<MountArgs>();
    auto store = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("mount", "Start the daemon and mount the live view");
    cmd->add_option("--booted", args->booted, "The booted tree (served from where it is)")
        ->required();
    cmd->add_option("--staged", args->staged, "The staged deployment")->required();
    cmd->add_option("--state", args->state, "State directory")->required();
    cmd->add_option("--store", *store, "Object store (default STATEDIR/store)");
    cmd->add_flag("--allow-other", args->allow_other, "Let other users see the mount");
    cmd->add_flag("--foreground", args->foreground, "Stay attached");
    cmd->add_flag("--debug", args->debug, "libfuse debug output");
    cmd->add_option("MOUNTPOINT", args->mountpoint, "Where to mount (may be the booted dir)")
        ->required();
    cmd->callback([args, store, &status] {
      if (!store->empty()) args->store = *store;
      status = run_mount(*args);
    });
  }

  // diff --state: pending changes. `livefs diff` of two trees belongs to
  // cli_import.cpp; when it is registered already, --state joins it and takes
  // over when given.
  {
    auto state = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    CLI::App* cmd = nullptr;
    for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "diff"; })) {
      cmd = sub;
    }
    if (cmd == nullptr) {
      cmd = app.add_subcommand("diff", "Pending changes: staged vs what is live");
      cmd->add_option("--state", *state, "State directory of a running daemon")->required();
      cmd->add_flag("--json", *as_json, "JSON output");
      cmd->callback([state, as_json, &status] { status = live_diff(*state, *as_json); });
    } else {
      // Option callbacks run before the subcommand's own requirements and
      // callback: the live diff answers and ends the process there.
      cmd->add_option_function<std::string>(
          "--state",
          [cmd](const std::string& dir) {
            bool j = false;
            if (auto* opt = cmd->get_option_no_throw("--json")) j = opt->count() > 0;
            int rc = live_diff(dir, j);
            std::fflush(nullptr);
            std::exit(rc);
          },
          "Pending changes of a running daemon (staged vs live)");
    }
  }

  // apply
  {
    struct ApplyArgs {
      std::string state;
      std::vector<std::string> patterns;
      bool all = false, allow_replace = false, dry_run = false, json = false;
    };
    auto a = std::make_shared<ApplyArgs>();
    auto* cmd = app.add_subcommand("apply", "Make selected staged changes live");
    cmd->add_option("--state", a->state, "State directory")->required();
    cmd->add_option("PATHS", a->patterns, "Paths or globs (a directory selects its subtree)");
    cmd->add_flag("--all", a->all, "Select every pending change");
    cmd->add_flag("--allow-replace", a->allow_replace, "Allow replacing or removing booted files");
    cmd->add_flag("--dry-run", a->dry_run, "Show what would be applied");
    cmd->add_flag("--json", a->json, "JSON output");
    cmd->callback([a, &status] {
      auto r = request(a->state, {{"cmd", "apply"},
                                  {"patterns", a->patterns},
                                  {"all", a->all},
                                  {"allow_replace", a->allow_replace},
                                  {"dry_run", a->dry_run}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (a->json) {
        r->erase("ok");
        std::cout << r->dump(2) << "\n";
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
        r->erase("ok");
        std::cout << r->dump(2) << "\n";
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
        r->erase("ok");
        std::cout << r->dump(2) << "\n";
        status = kExitOk;
        return;
      }
      std::printf("mount point: %s (daemon pid %d)\n",
                  r->at("mountpoint").get<std::string>().c_str(), r->at("pid").get<int>());
      std::printf("booted:      %s\nstaged:      %s\n", r->at("booted").get<std::string>().c_str(),
                  r->at("staged").get<std::string>().c_str());
      if (!r->at("journal_error").is_null()) {
        std::printf("JOURNAL ERROR: %s\n  (serving the booted tree, generation 0)\n",
                    r->at("journal_error").get<std::string>().c_str());
      }
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
      if (!r->at("last_switch").is_null()) {
        std::printf("last ");
        print_switch(r->at("last_switch"));
      }
      status = kExitOk;
    });
  }

  // umount
  {
    auto state = std::make_shared<std::string>();
    auto* cmd = app.add_subcommand("umount", "Unmount the view and stop the daemon");
    cmd->add_option("--state", *state, "State directory")->required();
    cmd->callback([state, &status] {
      auto r = request(*state, {{"cmd", "umount"}});
      if (!r) {
        status = kExitError;
        return;
      }
      if (!wait_for_daemon_exit(*state)) {
        std::fprintf(stderr, "livefs: the daemon for %s did not exit\n", state->c_str());
        status = kExitError;
        return;
      }
      status = kExitOk;
    });
  }
}

}  // namespace livefs::cli
