// livefs: apply OS updates to a running system through a merged FUSE view.
//
// The command the operator types. It serves the client commands (status, diff --state,
// apply, rollback, reset, stage, hotfix, umount, restart: one request on the daemon's socket
// each) itself, and links nothing else: no libostree, libfuse or GLib for the dynamic loader to
// resolve, so `livefs status` costs what the request costs. Every other command line (mount, store,
// diff OLD NEW, --help, --version, anything it does not recognise) is handed to livefsd with
// argv unchanged, by exec: the same process, so `livefs mount --foreground` is the daemon's
// pid as before.
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "livefs/commands.h"

namespace {

// Overrides where livefsd is (tests, an installation that keeps it elsewhere).
constexpr const char* kDaemonEnv = "LIVEFSD";

// Whether this executable answers the command line itself: a client command, after the
// global flags (-v; --version, which both executables answer alike; --help lists every
// command, which livefsd knows). `diff` is the live diff only with --state (else it compares
// two trees).
bool served_here(int argc, char** argv) {
  std::string_view command;
  int i = 1;
  for (; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-v" || a == "--verbose") continue;
    if (a == "--version") return true;
    if (a.starts_with("-")) return false;
    command = a;
    break;
  }
  for (std::string_view c :
       {"status", "apply", "rollback", "reset", "stage", "hotfix", "umount", "restart"})
    if (command == c) return true;
  if (command != "diff") return false;
  // `diff --state DIR`, `diff --mount PATH` and `diff` alone (the one daemon running) are the
  // live diff; `diff OLD NEW` (and anything with --store) compares two trees.
  int trees = 0;
  for (++i; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") {
      trees += argc - i - 1;
      break;
    }
    if (a == "--state" || a.starts_with("--state=") || a == "--mount" || a.starts_with("--mount="))
      return true;
    if (a == "--store" || a.starts_with("--store")) return false;
    if (!a.starts_with("-")) ++trees;
  }
  return trees == 0;
}

// livefsd: $LIVEFSD, else beside this executable (the build tree), else in
// ../libexec/livefs/ (an installation).
std::string daemon_path() {
  if (const char* env = std::getenv(kDaemonEnv); env != nullptr && *env != '\0') return env;
  char self[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "livefsd";
  std::string dir(self, static_cast<size_t>(n));
  dir.resize(dir.rfind('/') + 1);
  std::string beside = dir + "livefsd";
  if (::access(beside.c_str(), X_OK) == 0) return beside;
  std::string libexec = dir + "../libexec/livefs/livefsd";
  if (::access(libexec.c_str(), X_OK) == 0) return libexec;
  return beside;
}

}  // namespace

int main(int argc, char** argv) {
  if (!served_here(argc, argv)) {
    std::string path = daemon_path();
    ::execv(path.c_str(), argv);
    std::fprintf(stderr, "livefs: exec(%s): %s (set %s to livefsd's path)\n", path.c_str(),
                 std::strerror(errno), kDaemonEnv);
    return livefs::cli::kExitError;
  }
  CLI::App app{"livefs: apply OS updates to a running system without a reboot"};
  app.require_subcommand(1);
  app.set_version_flag("--version", livefs::cli::kVersion);
  // Accepted as livefsd accepts it; the client commands log nothing of their own.
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log debug messages");
  int status = livefs::cli::kExitOk;
  livefs::cli::register_live_commands(app, status);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? livefs::cli::kExitOk : livefs::cli::kExitUsage;
  }
  return status;
}
