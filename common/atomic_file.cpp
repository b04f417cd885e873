// Whole-file replacement through a private temporary, and bounded reads that do not
// follow symlinks.
#include "common/atomic_file.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <random>

#include "common/unique_fd.h"

namespace livefs {

namespace {

bool is_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string::npos;
}

std::string random_hex() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof v)) {
    // Only uniqueness matters here (O_EXCL / linkat refuse a name that exists).
    static thread_local std::mt19937_64 gen{std::random_device{}()};
    v = gen();
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Hidden and recognisable; the name is cut so the temporary stays within NAME_MAX.
std::string temp_name(const std::string& name) {
  return "." + name.substr(0, 200) + ".tmp-" + random_hex();
}

Status write_all(Sys& sys, int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = sys.write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write(" + what + ")");
    }
    if (n == 0) return fail(EIO, "write(" + what + "): no progress");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// The content, the exact mode, and both made durable before the file gets its name.
Status fill(Sys& sys, int fd, std::string_view data, mode_t mode, const std::string& what) {
  if (sys.fchmod(fd, mode) != 0) return fail_errno("fchmod(" + what + ")");
  if (auto st = write_all(sys, fd, data, what); !st) return st;
  if (sys.fsync(fd) != 0) return fail_errno("fsync(" + what + ")");
  return {};
}

Status sync_dir(Sys& sys, int dirfd) {
  if (sys.fsync(dirfd) == 0) return {};
  if (errno != EBADF) return fail_errno("fsync(directory)");
  // An O_PATH descriptor cannot be synced; the directory itself can.
  UniqueFd dir(sys.openat(dirfd, ".", O_RDONLY | O_DIRECTORY, 0));
  if (!dir) return fail_errno("open(directory)");
  if (sys.fsync(dir.get()) != 0) return fail_errno("fsync(directory)");
  return {};
}

// Gives the unnamed, complete file `fd` a fresh random name in `dirfd`. An empty result:
// it could not be linked for a reason the named route does not share (no
// CAP_DAC_READ_SEARCH and no /proc), so the caller writes a named temporary instead.
std::string link_unnamed(Sys& sys, int dirfd, int fd, const std::string& name) {
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string tmp = temp_name(name);
    if (sys.linkat(fd, "", dirfd, tmp.c_str(), AT_EMPTY_PATH) == 0) return tmp;
    if (errno == EEXIST) continue;
    if (sys.linkat(AT_FDCWD, proc.c_str(), dirfd, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) return tmp;
    if (errno == EEXIST) continue;
    return {};
  }
  return {};
}

Status replace(Sys& sys, int dirfd, const std::string& name, const std::string& display,
               std::string_view data, mode_t mode) {
  auto failed = [&](Error e) {
    return std::unexpected(with_context(std::move(e), "replace " + display));
  };
  if (!is_file_name(name)) return failed(make_error(EINVAL, "not a file name"));

  std::string tmp;
  // The preferred temporary has no name until it is complete and durable, so a crash
  // leaves nothing behind; it then needs a (random) name only because linkat cannot
  // replace an existing file.
  if (UniqueFd fd(sys.openat(dirfd, ".", O_TMPFILE | O_WRONLY, mode)); fd) {
    if (auto st = fill(sys, fd.get(), data, mode, "unnamed temporary"); !st) {
      return failed(st.error());
    }
    tmp = link_unnamed(sys, dirfd, fd.get(), name);
  }
  // No O_TMPFILE here (EOPNOTSUPP, or EISDIR from an old kernel), or it could not be linked.
  for (int attempt = 0; tmp.empty(); ++attempt) {
    std::string candidate = temp_name(name);
    UniqueFd fd(
        sys.openat(dirfd, candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode));
    if (!fd) {
      if (errno == EEXIST && attempt < 16) continue;
      return failed(errno_error("create(" + candidate + ")"));
    }
    if (auto st = fill(sys, fd.get(), data, mode, candidate); !st) {
      sys.unlinkat(dirfd, candidate.c_str(), 0);
      return failed(st.error());
    }
    tmp = std::move(candidate);
  }

  if (sys.renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
    Error e = errno_error("rename(" + tmp + ")");
    sys.unlinkat(dirfd, tmp.c_str(), 0);
    return failed(std::move(e));
  }
  if (auto st = sync_dir(sys, dirfd); !st) return failed(st.error());
  return {};
}

Result<std::string> read_limited(Sys& sys, int dirfd, const std::string& name,
                                 const std::string& display, size_t limit) {
  if (!is_file_name(name)) return fail(EINVAL, "read " + display + ": not a file name");
  // O_NONBLOCK: a FIFO planted under the name must not hang the reader in open().
  UniqueFd fd(sys.openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0));
  if (!fd) {
    if (errno == ELOOP) return fail(ELOOP, "open(" + display + "): a symbolic link, not followed");
    return fail_errno("open(" + display + ")");
  }
  struct stat st {};
  if (sys.fstat(fd.get(), &st) != 0) return fail_errno("fstat(" + display + ")");
  if (!S_ISREG(st.st_mode)) return fail(EINVAL, "read " + display + ": not a regular file");
  auto too_big = [&] {
    return fail(EFBIG, "read " + display + ": larger than " + std::to_string(limit) + " bytes");
  };
  if (static_cast<uint64_t>(st.st_size) > limit) return too_big();
  std::string out;
  out.reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  for (;;) {
    // Up to one byte past the limit, to tell a file that grew after the fstat.
    size_t room = limit - out.size();
    ssize_t n = sys.read(fd.get(), buf, room < sizeof buf ? room + 1 : sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read(" + display + ")");
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > limit) return too_big();
  }
}

// The directory to open and the component to replace or read in it.
Result<std::pair<UniqueFd, std::string>> split_path(Sys& sys, const std::filesystem::path& path) {
  std::filesystem::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  UniqueFd dir(sys.openat(AT_FDCWD, parent.c_str(), O_PATH | O_DIRECTORY, 0));
  if (!dir) return fail_errno("open(" + parent.string() + ")");
  return std::pair{std::move(dir), path.filename().string()};
}

}  // namespace

Status write_file_atomic(int dirfd, const std::string& name, std::string_view data, mode_t mode,
                         Sys& sys) {
  return replace(sys, dirfd, name, name, data, mode);
}

Status write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode,
                         Sys& sys) {
  auto dir = split_path(sys, path);
  if (!dir) return std::unexpected(with_context(dir.error(), "replace " + path.string()));
  return replace(sys, dir->first.get(), dir->second, path.string(), data, mode);
}

Result<std::string> read_file_limited(int dirfd, const std::string& name, size_t limit, Sys& sys) {
  return read_limited(sys, dirfd, name, name, limit);
}

Result<std::string> read_file_limited(const std::filesystem::path& path, size_t limit, Sys& sys) {
  auto dir = split_path(sys, path);
  if (!dir) return std::unexpected(dir.error());
  return read_limited(sys, dir->first.get(), dir->second, path.string(), limit);
}

}  // namespace livefs
