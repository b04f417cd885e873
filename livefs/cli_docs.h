// Man pages and bash completion written from the command line's own definition (the CLI11
// app livefsd builds, which has every command): what they say cannot drift from --help.
// `livefsd --write-docs DIR` writes them; the build runs it and `cmake --install` installs
// the result.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "common/error.h"

namespace livefs::cli {

// livefs(8): every command, one line each, with a pointer to its page.
std::string man_page_overview(const CLI::App& app, const std::string& date);
// livefs-COMMAND(8): the command (and its subcommands: `store`, `hotfix`) with every option.
std::string man_page_command(const CLI::App& app, const CLI::App& command, const std::string& date);
// The bash completion script: commands, options, files where an option takes a path, and
// from a running daemon the pending packages after --package and the pending paths as
// apply's arguments.
std::string bash_completion(const CLI::App& app);

// DIR/man8/livefs.8, DIR/man8/livefs-COMMAND.8, DIR/bash-completion/livefs.
Status write_docs(const CLI::App& app, const std::filesystem::path& dir);

}  // namespace livefs::cli
