// Control socket: listening, peer checks, line framing, and the client call.
#include "livefs/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/wire_text.h"

namespace livefs::cli {

namespace {

Result<sockaddr_un> socket_address(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string& s = path.native();
  if (s.size() >= sizeof addr.sun_path) {
    return fail(ENAMETOOLONG, "control socket path " + s);
  }
  std::memcpy(addr.sun_path, s.c_str(), s.size() + 1);
  return addr;
}

}  // namespace

std::filesystem::path control_socket_path(const std::filesystem::path& statedir) {
  return statedir / "control.sock";
}

Result<UniqueFd> listen_control(const std::filesystem::path& socket_path) {
  // Bound under a temporary name, made 0600, then renamed into place: the socket is never
  // visible with other modes (and no process-wide umask is changed under other threads).
  std::filesystem::path tmp = socket_path;
  tmp += ".new-" + std::to_string(::getpid());
  auto addr = socket_address(tmp);
  if (!addr) return std::unexpected(addr.error());
  if (auto final_addr = socket_address(socket_path); !final_addr)
    return std::unexpected(final_addr.error());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket(AF_UNIX)");
  if (::unlink(tmp.c_str()) != 0 && errno != ENOENT)
    return fail_errno("unlink(" + tmp.string() + ")");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0)
    return fail_errno("bind(" + tmp.string() + ")");
  if (::chmod(tmp.c_str(), 0600) != 0 || ::listen(fd.get(), 64) != 0 ||
      ::rename(tmp.c_str(), socket_path.c_str()) != 0) {
    Error e = errno_error("listen(" + socket_path.string() + ")");
    ::unlink(tmp.c_str());
    return std::unexpected(e);
  }
  return fd;
}

Result<PeerCred> peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return fail_errno("getsockopt(SO_PEERCRED)");
  }
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

bool peer_allowed(const PeerCred& peer) { return peer.uid == 0 || peer.uid == ::geteuid(); }

std::string refusal_message(const PeerCred& peer) {
  return "permission denied: uid " + std::to_string(peer.uid) +
         " may not control this livefs daemon (only root or uid " + std::to_string(::geteuid()) +
         ")";
}

Result<std::string> read_line(int fd, size_t limit) {
  std::string line;
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("recv(control)");
    }
    if (n == 0) return fail(ECONNRESET, "recv(control): connection closed before a full line");
    line.append(buf, static_cast<size_t>(n));
    if (auto nl = line.find('\n'); nl != std::string::npos) {
      line.resize(nl);
      return line;
    }
    if (line.size() > limit) return fail(EMSGSIZE, "recv(control)");
  }
}

Status write_line(int fd, const std::string& line) {
  std::string data = line + '\n';
  std::string_view rest = data;
  while (!rest.empty()) {
    ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("send(control)");
    }
    rest.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

namespace {

template <class Map>
nlohmann::json map_strings(const nlohmann::json& value, Map&& map) {
  switch (value.type()) {
    case nlohmann::json::value_t::string:
      return map(value.get_ref<const std::string&>());
    case nlohmann::json::value_t::array: {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& v : value) out.push_back(map_strings(v, map));
      return out;
    }
    case nlohmann::json::value_t::object: {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& [k, v] : value.items()) out[map(k)] = map_strings(v, map);
      return out;
    }
    default:
      return value;
  }
}

}  // namespace

nlohmann::json encode_wire(const nlohmann::json& value) {
  return map_strings(value, [](const std::string& s) { return to_wire(s); });
}

nlohmann::json decode_wire(const nlohmann::json& value) {
  return map_strings(value, [](const std::string& s) { return from_wire(s); });
}

std::string wire_line(const nlohmann::json& value) {
  try {
    // encode_wire makes every string valid UTF-8; `replace` is the belt to those braces.
    return encode_wire(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (...) {
    // Only an allocation failure is left; answer with something the peer can parse.
    return R"({"ok":false,"error":"livefs: response could not be serialized","code":"EIO"})";
  }
}

Result<nlohmann::json> parse_wire_line(std::string_view line) {
  auto value = nlohmann::json::parse(line, nullptr, false);
  if (value.is_discarded()) return fail(EBADMSG, "control: a line that is not JSON");
  return decode_wire(value);
}

nlohmann::json error_response(const Error& error) {
  return {{"ok", false}, {"error", error.message()}, {"code", error.code_name()}};
}

Result<nlohmann::json> call_daemon(const std::filesystem::path& statedir,
                                   const nlohmann::json& request) {
  auto path = control_socket_path(statedir);
  std::string prefix = "no livefs daemon for " + statedir.string();
  auto addr = socket_address(path);
  if (!addr) return std::unexpected(addr.error());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket(AF_UNIX)");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    if (errno == EACCES || errno == EPERM) {
      return fail_errno("livefs daemon for " + statedir.string() + " refused: connect(" +
                        path.string() + ")");
    }
    return fail_errno(prefix + ": connect(" + path.string() + ")");
  }
  // Whoever listens there gets our request and its answer is believed: it must be root or
  // ourselves (a socket file swapped by someone else is not the daemon).
  auto peer = peer_credentials(fd.get());
  if (!peer) return std::unexpected(peer.error());
  if (!peer_allowed(*peer)) {
    return fail(EPERM, "refusing " + path.string() + ": its listener runs as uid " +
                           std::to_string(peer->uid) + ", not root or uid " +
                           std::to_string(::geteuid()));
  }
  if (auto st = write_line(fd.get(), wire_line(request)); !st) return std::unexpected(st.error());
  // An answer may list every change of a large update (a request is small: the daemon
  // reads at most 1 MiB of one).
  auto line = read_line(fd.get(), size_t{1} << 30);
  if (!line) {
    // The daemon may have acted on the request before it went away (a journalled apply is
    // live after a restart): say so rather than implying nothing happened.
    return std::unexpected(
        with_context(line.error(),
                     "the livefs daemon went away before answering; the request may have "
                     "taken effect: check `livefs status --state " +
                         statedir.string() + "` after mounting again"));
  }
  auto response = parse_wire_line(*line);
  if (!response || !response->is_object()) {
    return fail(EBADMSG, "livefs daemon: malformed response");
  }
  return response;
}

}  // namespace livefs::cli
