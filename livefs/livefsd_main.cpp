// livefsd: the part of livefs that links the view, the object store and OSTree: `mount` (the
// daemon), `store ...` and `diff OLD NEW`. The thin `livefs`
// executable (main.cpp) serves the client commands itself and execs this one, with argv
// unchanged, for everything else, so this program takes the whole command line: every
// command, and the help that lists them all.
#include <sys/prctl.h>

#include <cstdio>
#include <cstring>
#include <string_view>

#include "common/log.h"
#include "livefs/cli_docs.h"
#include "livefs/commands.h"
#include "overlay/filesystem.h"

int main(int argc, char** argv) {
  // The units start livefsd through the dynamic loader of a private bind of the real /usr
  // (systemd/): without this its process would be called ld-linux-x86-64.
  ::prctl(PR_SET_NAME, "livefsd");
  CLI::App app{"livefs: apply OS updates to a running system without a reboot"};
  app.require_subcommand(1);
  // The daemon's version names the libfuse it serves with (passthrough needs 3.16 or later).
  app.set_version_flag("--version", std::string(livefs::cli::kVersion) + "\n" +
                                        livefs::overlay::Filesystem::libfuse_description());
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log debug messages");
  int status = livefs::cli::kExitOk;
  livefs::cli::register_store_commands(app, status);
  livefs::cli::register_mount_command(app, status);
  livefs::cli::register_live_commands(app, status);
  // The build's way to the man pages and the completion (not a command: CLI11 would ask for
  // one of the subcommands).
  if (argc == 3 && std::strcmp(argv[1], "--write-docs") == 0) {
    if (auto st = livefs::cli::write_docs(app, argv[2]); !st) {
      std::fprintf(stderr, "livefsd: --write-docs: %s\n", st.error().message().c_str());
      return livefs::cli::kExitError;
    }
    return livefs::cli::kExitOk;
  }
  app.parse_complete_callback([&] {
    if (verbose) livefs::set_log_level(spdlog::level::debug);
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? livefs::cli::kExitOk : livefs::cli::kExitUsage;
  }
  return status;
}
