// `livefs mount`: the daemon's command line. It starts the daemon (livefs/daemon.h), so it
// belongs to livefsd, the executable that links the view, the store and OSTree; the client
// commands that talk to a running daemon are in cli_live.cpp.
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "livefs/commands.h"
#include "livefs/control.h"
#include "livefs/daemon.h"
#include "livefs/hotfix.h"

namespace livefs::cli {

namespace {
// Present on a system booted into an OSTree deployment (ostree-prepare-root creates it).
constexpr const char* kOstreeBooted = "/run/ostree-booted";
}  // namespace

void register_mount_command(CLI::App& app, int& status) {
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
  cmd->add_option("--state", args->state,
                  "State directory (default: /var/lib/livefs/NAME, NAME the mount point escaped: "
                  "usr for /usr)");
  cmd->add_option("--store", *store, "Object store (default STATEDIR/store)");
  cmd->add_flag("--allow-other,!--no-allow-other", args->allow_other,
                "Every user may use the view (the default; the kernel checks the modes), or "
                "only root");
  cmd->add_flag("--passthrough,!--no-passthrough", args->passthrough,
                "FUSE passthrough: the kernel reads and maps opened files straight from the "
                "booted tree and the store (the default, where the kernel has it), or every "
                "read through the daemon");
  cmd->add_flag("--foreground", args->foreground, "Stay attached");
  cmd->add_flag("--debug", args->debug, "libfuse debug output");
  cmd->add_option("MOUNTPOINT", args->mountpoint,
                  "Where to mount (may be the booted dir; with --sysroot the default is /SUBDIR)");
  cmd->callback([args, store, booted, staged, sysroot, &status] {
    if (!store->empty()) args->store = *store;
    // No arguments on a booted OSTree system: the view over /usr of the running deployment,
    // as livefs-usr.service serves it.
    if (sysroot->empty() && booted->empty() && staged->empty() && args->mountpoint.empty()) {
      if (::access(kOstreeBooted, F_OK) != 0) {
        std::fprintf(stderr,
                     "livefs: mount without arguments serves /usr of a booted OSTree system, and "
                     "this is not one (%s is missing): give --booted DIR --staged DIR MOUNTPOINT, "
                     "or --sysroot PATH\n",
                     kOstreeBooted);
        status = kExitUsage;
        return;
      }
      *sysroot = "/sysroot";
    }
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
      if (args->mountpoint.empty()) args->mountpoint = "/" + args->subdir;
    } else {
      if (booted->empty() || staged->empty() || args->mountpoint.empty()) {
        std::fprintf(stderr,
                     "livefs: mount needs --booted DIR, --staged DIR and MOUNTPOINT, or "
                     "--sysroot\n");
        status = kExitUsage;
        return;
      }
      args->booted = *booted;
      args->staged = *staged;
    }
    if (args->state.empty()) args->state = state_root() / mount_name(args->mountpoint);
    status = run_mount(*args);
  });
}

}  // namespace livefs::cli
