// The service manager's readiness protocol (see service_notify.h).
#include "common/service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "common/unique_fd.h"

namespace livefs {

Status notify_socket(const std::string& address, std::string_view state) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (address.empty() || (address[0] != '/' && address[0] != '@'))
    return fail(EINVAL, "NOTIFY_SOCKET: not a path or an abstract name: " + address);
  if (address.size() >= sizeof addr.sun_path)
    return fail(ENAMETOOLONG, "NOTIFY_SOCKET: " + address);
  std::memcpy(addr.sun_path, address.data(), address.size());
  if (address[0] == '@') addr.sun_path[0] = '\0';  // abstract: no NUL at the end either
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() +
                                         (address[0] == '@' ? 0 : 1));
  UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return fail_errno("socket(NOTIFY_SOCKET)");
  ssize_t n = ::sendto(fd.get(), state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                       reinterpret_cast<const sockaddr*>(&addr), len);
  if (n < 0) return fail_errno("sendto(" + address + ")");
  return {};
}

Status notify_service_manager(std::string_view state) {
  const char* address = std::getenv("NOTIFY_SOCKET");
  if (address == nullptr || *address == '\0') return {};
  return notify_socket(address, state);
}

}  // namespace livefs
