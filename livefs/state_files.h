// The daemon's own files in the state directory besides the journal: config.json (what was
// mounted and staged) and hotfix.json (the hotfix watches and added files to restore). Both
// are parsed before anything is mounted, into typed structs, by parsers that never throw:
// a damaged file is a clear error at `livefs mount`, never a daemon that dies after mounting.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace livefs::cli {

// config.json. Unknown fields are ignored (a newer livefs may add some); the fields below
// must have their types.
struct DaemonConfig {
  std::string booted_key;      // what the cached booted manifest (booted.tree) describes
  std::string staged_commit;   // a commit staged by `livefs stage` (OSTree mode), or ""
  std::string staged_pending;  // the sysroot's pending deployment when it was staged
};

// hotfix.json: paths are bytes (stored with to_wire, common/wire_text.h).
struct HotfixPlace {
  std::filesystem::path source;
  std::string at;
};
struct HotfixConfig {
  std::vector<HotfixPlace> watches;
  std::vector<HotfixPlace> adds;
};

// EBADMSG naming `what` and the reason when the text is not such a file.
Result<DaemonConfig> parse_daemon_config(std::string_view text, const std::string& what);
Result<HotfixConfig> parse_hotfix_config(std::string_view text, const std::string& what);

// The file contents the daemon writes (with a final newline).
std::string hotfix_config_text(const HotfixConfig& config);

}  // namespace livefs::cli
