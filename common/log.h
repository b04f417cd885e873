// One spdlog logger per component ("store", "overlay", "inotify", "daemon", "cli").
// Lines name the operation, the inode or path, and the errno name.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace livefs {

// Returns the component's logger, creating it (stderr sink, shared level) on first use.
std::shared_ptr<spdlog::logger> logger(const std::string& component);

// Sets the level of every livefs logger, present and future ("debug", "info", "warn", ...).
void set_log_level(spdlog::level::level_enum level);

// Sends every livefs logger to a file instead of stderr (the daemon after it detaches).
void log_to_file(const std::string& path);

}  // namespace livefs
