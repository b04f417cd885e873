// Control socket: listening, peer checks, line framing, and the client call.
#include "livefs/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

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

namespace fs = std::filesystem;

fs::path runtime_dir() {
  const char* env = std::getenv("LIVEFS_RUNTIME_DIR");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path("/run/livefs");
}

fs::path state_root() {
  const char* env = std::getenv("LIVEFS_STATE_ROOT");
  return env != nullptr && *env != '\0' ? fs::path(env) : fs::path("/var/lib/livefs");
}

fs::path normal_mountpoint(const fs::path& mountpoint) {
  std::error_code ec;
  fs::path absolute = fs::absolute(mountpoint, ec);
  if (ec) absolute = mountpoint;
  fs::path normal = absolute.lexically_normal();
  std::string text = normal.native();
  while (text.size() > 1 && text.back() == '/') text.pop_back();
  return text;
}

std::string mount_name(const fs::path& mountpoint) {
  std::string path = normal_mountpoint(mountpoint).native();
  std::string_view rest = path;
  while (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  if (rest.empty()) return "-";
  std::string out;
  for (size_t i = 0; i < rest.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(rest[i]);
    bool plain = std::isalnum(c) || c == '_' || c == ':' || (c == '.' && i > 0);
    if (c == '/') {
      out += '-';
    } else if (plain) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

std::optional<fs::path> mountpoint_of_name(std::string_view name) {
  if (name == "-") return fs::path("/");
  std::string out = "/";
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c == '-') {
      out += '/';
    } else if (c == '\\') {
      if (i + 3 >= name.size() || name[i + 1] != 'x') return std::nullopt;
      auto digit = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        return -1;
      };
      int hi = digit(name[i + 2]), lo = digit(name[i + 3]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 3;
    } else {
      out += c;
    }
  }
  return fs::path(out);
}

fs::path registration_path(const fs::path& mountpoint) {
  return runtime_dir() / (mount_name(mountpoint) + ".sock");
}

namespace {

// Whether something listens on the socket `path` leads to.
bool answers(const fs::path& path) {
  auto addr = socket_address(path);
  if (!addr) return false;
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0;
}

// The state directory a registration link names (its target's directory).
std::optional<fs::path> state_of_link(const fs::path& link) {
  std::error_code ec;
  fs::path target = fs::read_symlink(link, ec);
  if (ec || target.filename() != "control.sock") return std::nullopt;
  return target.parent_path();
}

}  // namespace

std::optional<fs::path> registered_daemon(const fs::path& mountpoint) {
  fs::path link = registration_path(mountpoint);
  auto state = state_of_link(link);
  if (!state || !answers(link)) return std::nullopt;
  return state;
}

Result<fs::path> find_daemon_state(const std::string& state, const std::string& mount) {
  if (!state.empty() && !mount.empty()) {
    return fail(EINVAL, "--state and --mount name the daemon each: give one");
  }
  if (!state.empty()) return fs::path(state);
  fs::path dir = runtime_dir();
  if (!mount.empty()) {
    fs::path mountpoint = normal_mountpoint(mount);
    if (auto found = registered_daemon(mountpoint)) return *found;
    return fail(ENOENT, "no livefs daemon serves " + mountpoint.string() + " (nothing answers at " +
                            registration_path(mountpoint).string() + ")");
  }
  std::vector<std::pair<fs::path, fs::path>> running;  // mount point, state
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string file = it->path().filename().native();
    if (!file.ends_with(".sock")) continue;
    auto mountpoint = mountpoint_of_name(std::string_view(file).substr(0, file.size() - 5));
    auto target = state_of_link(it->path());
    if (!mountpoint || !target || !answers(it->path())) continue;
    running.emplace_back(*mountpoint, *target);
  }
  if (running.size() == 1) return running.front().second;
  if (running.empty()) {
    return fail(ENOENT, "no livefs daemon is running (none is registered in " + dir.string() +
                            "): start one with `livefs mount`, or name its state directory "
                            "with --state");
  }
  std::sort(running.begin(), running.end());
  std::string list;
  for (const auto& [mountpoint, statedir] : running) {
    list +=
        (list.empty() ? "" : ", ") + mountpoint.string() + " (--mount " + mountpoint.string() + ")";
  }
  return fail(EINVAL,
              "several livefs daemons are running: " + list + "; name one with --mount or --state");
}

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
