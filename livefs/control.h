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

// Client side: connects to STATEDIR's daemon, sends `request`, returns its response. A
// missing daemon is "no livefs daemon for STATEDIR: connect(…/control.sock): …".
Result<nlohmann::json> call_daemon(const std::filesystem::path& statedir,
                                   const nlohmann::json& request);

}  // namespace livefs::cli
