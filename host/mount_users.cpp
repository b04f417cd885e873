// processes_using_mount: one pass over /proc reading each process's maps, fdinfo and cwd/root;
// find_mount: the mount table read as text.
#include "host/mount_users.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <vector>

#include "common/log.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "host/proc_files.h"

namespace livefs::host {
namespace {

template <class T>
bool parse_number(std::string_view s, int base, T* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

// "MAJ:MIN" in `base` (10 in mountinfo, 16 in maps).
bool parse_device(std::string_view s, int base, dev_t* dev) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  unsigned major_no = 0;
  unsigned minor_no = 0;
  if (!parse_number(s.substr(0, colon), base, &major_no) ||
      !parse_number(s.substr(colon + 1), base, &minor_no)) {
    return false;
  }
  *dev = makedev(major_no, minor_no);
  return true;
}

// mountinfo writes a space, tab, newline and backslash of a path as \040, \011, \012, \134.
std::string unescape_octal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      unsigned value = 0;
      if (parse_number(s.substr(i + 1, 3), 8, &value) && value < 256) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

// The "mnt_id:" of one fdinfo text, or -1.
int mnt_id_of(std::string_view fdinfo) {
  std::string_view line;
  while (next_line(fdinfo, line)) {
    constexpr std::string_view kKey = "mnt_id:";
    if (!line.starts_with(kKey)) continue;
    line.remove_prefix(kKey.size());
    while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
    int id = -1;
    return parse_number(line, 10, &id) ? id : -1;
  }
  return -1;
}

// The mount of the directory a /proc/PID/{cwd,root} magic link names. Opened with O_PATH:
// the walk jumps to the directory without a lookup, and an O_PATH open neither checks
// permissions nor calls the file system, so a FUSE mount (ours, maybe) gets no request.
int mount_of_link(int pid_dir, const char* name) {
  UniqueFd fd(::openat(pid_dir, name, O_PATH | O_CLOEXEC));
  if (!fd) return -1;
  int err = 0;
  auto info =
      read_all_at(AT_FDCWD, ("/proc/self/fdinfo/" + std::to_string(fd.get())).c_str(), &err);
  return info ? mnt_id_of(*info) : -1;
}

bool maps_device(int pid_dir, dev_t dev) {
  int err = 0;
  auto maps = read_all_at(pid_dir, "maps", &err);
  if (!maps) return false;
  std::string_view rest = *maps;
  std::string_view line;
  while (next_line(rest, line)) {
    // "start-end perms offset MAJ:MIN INODE PATH": the fourth column.
    std::vector<std::string_view> w = split_words(line);
    if (w.size() < 4) continue;
    dev_t d = 0;
    if (parse_device(w[3], 16, &d) && d == dev) return true;
  }
  return false;
}

bool has_fd_on(int pid_dir, int mount_id) {
  UniqueFd dir_fd(::openat(pid_dir, "fdinfo", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) return false;
  DIR* d = ::fdopendir(dir_fd.get());
  if (d == nullptr) return false;
  (void)dir_fd.release();
  bool found = false;
  while (dirent* de = ::readdir(d)) {
    if (de->d_name[0] == '.') continue;
    int err = 0;
    auto info = read_all_at(::dirfd(d), de->d_name, &err);
    if (info && mnt_id_of(*info) == mount_id) {
      found = true;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

std::vector<MountInfo> parse_mountinfo(std::string_view text) {
  std::vector<MountInfo> out;
  std::string_view line;
  while (next_line(text, line)) {
    // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
    std::vector<std::string_view> w = split_words(line);
    if (w.size() < 7) continue;
    MountInfo m;
    if (!parse_number(w[0], 10, &m.id) || !parse_number(w[1], 10, &m.parent_id) ||
        !parse_device(w[2], 10, &m.dev)) {
      continue;
    }
    m.mount_point = unescape_octal(w[4]);
    m.options = w[5];
    auto dash = std::find(w.begin() + 6, w.end(), std::string_view("-"));
    if (dash == w.end() || dash + 1 == w.end()) continue;
    m.fstype = unescape_octal(*(dash + 1));
    if (dash + 3 < w.end()) m.super_options = *(dash + 3);
    out.push_back(std::move(m));
  }
  return out;
}

Result<MountInfo> find_mount(const std::filesystem::path& mount_point,
                             const std::filesystem::path& mountinfo) {
  int err = 0;
  auto text = read_all_at(AT_FDCWD, mountinfo.c_str(), &err);
  if (!text) return std::unexpected(make_error(err, "read(" + mountinfo.string() + ")"));
  std::string want = mount_point.string();
  while (want.size() > 1 && want.back() == '/') want.pop_back();
  std::vector<MountInfo> at;
  for (MountInfo& m : parse_mountinfo(*text))
    if (m.mount_point == want) at.push_back(std::move(m));
  // Mounts stacked on one path: the top one is not the parent of another one there.
  for (const MountInfo& m : at) {
    bool covered = std::ranges::any_of(at, [&](const MountInfo& o) { return o.parent_id == m.id; });
    if (!covered) return m;
  }
  return fail(ENOENT, "find_mount(" + want + "): not a mount point");
}

Result<std::vector<pid_t>> processes_using_mount(int mount_id, dev_t dev,
                                                 const std::filesystem::path& proc) {
  UniqueFd proc_fd(::open(proc.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc_fd) return fail_errno("open(" + proc.string() + ")");
  DIR* d = ::fdopendir(proc_fd.get());
  if (d == nullptr) return fail_errno("fdopendir(" + proc.string() + ")");
  (void)proc_fd.release();
  std::vector<pid_t> users;
  errno = 0;
  while (dirent* de = ::readdir(d)) {
    pid_t pid = 0;
    if (!parse_number(std::string_view(de->d_name), 10, &pid) || pid <= 0) continue;
    // Every read below is through this descriptor: the same process even if the pid is
    // reused meanwhile (reads then fail with ESRCH and the process is skipped).
    UniqueFd pid_dir(::openat(::dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pid_dir) {
      if (!expected_while_scanning(errno))
        logger("host")->debug("open /proc/{}: {} (skipped)", pid,
                              make_error(errno, "").code_name());
      errno = 0;
      continue;
    }
    bool uses = mount_of_link(pid_dir.get(), "cwd") == mount_id ||
                mount_of_link(pid_dir.get(), "root") == mount_id ||
                maps_device(pid_dir.get(), dev) || has_fd_on(pid_dir.get(), mount_id);
    if (uses) users.push_back(pid);
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return std::unexpected(make_error(err, "readdir(" + proc.string() + ")"));
  std::ranges::sort(users);
  return users;
}

}  // namespace livefs::host
