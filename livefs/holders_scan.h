// The stale-holder scan (host/holders.h) run in a child process. The scan stats files under
// the daemon's own mount point, which the daemon itself serves: a daemon killed while one of
// its threads waits on such a request of its own would stay behind as an unkillable zombie
// that keeps the FUSE device open, and the mount would hang for good. A child holds no
// descriptor of the device, so when the daemon dies its requests fail and it exits.
#pragma once

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"
#include "host/holders.h"

namespace livefs::cli {

// argv[1] that makes the livefs binary the scanner (not a user command).
inline constexpr const char* kHoldersScannerArg = "__scan-holders";

// find_stale_holders(root, paths) in a child process (this executable, re-executed); the
// child is killed after `timeout`.
Result<std::vector<host::Holder>> scan_holders_isolated(const std::filesystem::path& root,
                                                        const std::vector<std::string>& paths,
                                                        std::chrono::milliseconds timeout);

// The child's side: the request on stdin, the answer on stdout. Returns the exit status.
int run_holders_scanner();

// A holder as the scanner and the daemon's responses show it.
nlohmann::json holder_json(const host::Holder& h);

}  // namespace livefs::cli
