// Control socket: listening, peer checks, line framing, and the client call.
#include "livefs/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

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
  auto addr = socket_address(socket_path);
  if (!addr) return std::unexpected(addr.error());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket(AF_UNIX)");
  if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT) {
    return fail_errno("unlink(" + socket_path.string() + ")");
  }
  // The file is created with the umask applied: make it 0600 from the start so there is
  // no moment where others could connect.
  mode_t old = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr);
  ::umask(old);
  if (rc != 0) return fail_errno("bind(" + socket_path.string() + ")");
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    return fail_errno("chmod(" + socket_path.string() + ")");
  }
  if (::listen(fd.get(), 16) != 0) return fail_errno("listen(" + socket_path.string() + ")");
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
  if (auto st = write_line(fd.get(), request.dump()); !st) return std::unexpected(st.error());
  auto line = read_line(fd.get());
  if (!line) {
    // The daemon may have acted on the request before it went away (a journalled apply is
    // live after a restart): say so rather than implying nothing happened.
    return std::unexpected(
        with_context(line.error(),
                     "the livefs daemon went away before answering; the request may have "
                     "taken effect: check `livefs status --state " +
                         statedir.string() + "` after mounting again"));
  }
  auto response = nlohmann::json::parse(*line, nullptr, false);
  if (response.is_discarded() || !response.is_object()) {
    return fail(EBADMSG, "livefs daemon: malformed response");
  }
  return response;
}

}  // namespace livefs::cli
