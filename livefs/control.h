// The control socket between the CLI and the daemon: one JSON request line and one JSON
// response line per connection, over a Unix socket at STATEDIR/control.sock (mode 0600).
// The daemon checks the peer's credentials: only root or the daemon's own user may talk.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "common/error.h"
#include "common/unique_fd.h"

namespace livefs::cli {

std::filesystem::path control_socket_path(const std::filesystem::path& statedir);

// Binds and listens (removing a stale socket file first; the caller holds the state lock,
// so no live daemon owns it). The socket file is 0600.
Result<UniqueFd> listen_control(const std::filesystem::path& socket_path);

// The peer of an accepted connection, by SO_PEERCRED.
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<PeerCred> peer_credentials(int fd);
// Root and the daemon's own user may control it; nobody else.
bool peer_allowed(const PeerCred& peer);
// The answer a refused peer gets.
std::string refusal_message(const PeerCred& peer);

// One line, up to `limit` bytes (EMSGSIZE beyond), without its '\n'.
Result<std::string> read_line(int fd, size_t limit = 1 << 20);
Status write_line(int fd, const std::string& line);

// JSON on the wire. Strings inside livefs are bytes (paths, command names, messages that
// name paths); on the wire every string (keys included) is mapped with to_wire()
// (common/wire_text.h), so that any byte string crosses losslessly and serializing can never
// throw. encode_wire() is what goes out (and what `--json` prints); decode_wire() undoes it.
nlohmann::json encode_wire(const nlohmann::json& value);
nlohmann::json decode_wire(const nlohmann::json& value);
// One JSON value as one line (encoded); never throws.
std::string wire_line(const nlohmann::json& value);
// Parses and decodes one line; EBADMSG when it is not JSON.
Result<nlohmann::json> parse_wire_line(std::string_view line);

// Responses: {"ok": true, ...} or {"ok": false, "error": "message", "code": "ENOENT"}.
nlohmann::json error_response(const Error& error);

// ---- Finding a daemon without --state ---------------------------------------------------
// One daemon per mount point. Its state is STATE_ROOT/NAME by default (0700), and it
// registers in RUNTIME: RUNTIME/NAME.sock, a symlink to STATEDIR/control.sock. The socket
// itself stays in the state directory, whose 0700 guards it; the link is what the commands
// find daemons by. NAME is the mount point escaped as systemd escapes paths ("/usr" → "usr",
// "/srv/a-b" → "srv-a\x2db", "/" → "-").

// $LIVEFS_RUNTIME_DIR, else /run/livefs.
std::filesystem::path runtime_dir();
// $LIVEFS_STATE_ROOT, else /var/lib/livefs.
std::filesystem::path state_root();
// The mount point as the daemon registers it: absolute (from the working directory) and
// lexically normal, without symlinks resolved (a dead FUSE mount cannot be resolved).
std::filesystem::path normal_mountpoint(const std::filesystem::path& mountpoint);
std::string mount_name(const std::filesystem::path& mountpoint);
// The inverse of mount_name; nullopt for a name it cannot have made.
std::optional<std::filesystem::path> mountpoint_of_name(std::string_view name);
std::filesystem::path registration_path(const std::filesystem::path& mountpoint);

// The state directory of the daemon a client command talks to: `state` when given; else the
// daemon registered for `mount`; else the one daemon registered at all. ENOENT when there is
// none ("no livefs daemon is running ..."), EINVAL naming the mount points when there are
// several. A registration whose daemon is gone (nothing listens) is not a daemon.
Result<std::filesystem::path> find_daemon_state(const std::string& state, const std::string& mount);

// The state directory a link registered for `mountpoint` leads to, when a daemon answers on
// it (nullopt: none does).
std::optional<std::filesystem::path> registered_daemon(const std::filesystem::path& mountpoint);

// Client side: connects to STATEDIR's daemon, sends `request`, returns its response. A
// missing daemon is "no livefs daemon for STATEDIR: connect(…/control.sock): …".
Result<nlohmann::json> call_daemon(const std::filesystem::path& statedir,
                                   const nlohmann::json& request);

}  // namespace livefs::cli
