#include "host/proc_files.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "common/unique_fd.h"

namespace livefs::host {

std::optional<std::string> read_all_at(int dirfd, const char* name, int* err) {
  UniqueFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC));
  if (!fd) {
    *err = errno;
    return std::nullopt;
  }
  std::string out;
  std::array<char, 16384> buf;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return std::nullopt;
    }
    if (n == 0) return out;
    out.append(buf.data(), static_cast<size_t>(n));
  }
}

}  // namespace livefs::host
