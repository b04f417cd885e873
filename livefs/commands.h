// The livefs command line: each command group registers its subcommands on the app.
// Every command returns its process exit status: 0 ok, 1 operational error (one line on
// stderr naming the path and the errno), 2 usage error.
#pragma once

#include <CLI/CLI.hpp>

namespace livefs::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

// Each register_* adds its subcommands; a subcommand's callback stores its exit status in
// `status`. (Groups are added here as they are written.)

// store import|verify|stats|gc, diff OLD NEW (cli_store.cpp; livefsd).
void register_store_commands(CLI::App& app, int& status);

// mount: starts the daemon (cli_mount.cpp; livefsd).
void register_mount_command(CLI::App& app, int& status);

// diff --state, apply, rollback, reset, status, stage, hotfix, umount, restart: the client
// commands, which talk to a running daemon (cli_live.cpp; both executables). Registered after
// register_store_commands, --state joins its `diff`.
void register_live_commands(CLI::App& app, int& status);

inline constexpr const char* kVersion = "livefs 0.1";

}  // namespace livefs::cli
