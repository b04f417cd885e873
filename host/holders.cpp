// find_holders: one pass over /proc, reading each process's exe, maps and fd links and
// matching (device, inode) pairs against a hash table, with nothing stat'ed.
#include "host/holders.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <memory>
#include <optional>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/log.h"
#include "common/text.h"
#include "common/unique_fd.h"
#include "host/mount_users.h"
#include "host/proc_files.h"

namespace livefs::host {
namespace {

namespace fs = std::filesystem;

// A process's hold on a file looked for; the kinds are in report order.
enum class HoldKind { exe, mapped, fd };

struct Hold {
  HoldKind kind;
  int fd = -1;       // for HoldKind::fd
  size_t index = 0;  // into the query's paths

  auto key() const { return std::tuple(kind, fd, index); }
};

void note_unexpected(pid_t pid, const char* what, int err) {
  if (expected_while_scanning(err)) return;
  logger("host")->debug("read /proc/{}/{}: {} (process skipped)", pid, what,
                        make_error(err, "").code_name());
}

std::optional<std::string> read_link_at(int dirfd, const char* name, int* err) {
  std::string buf(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name, buf.data(), buf.size());
    if (n < 0) {
      *err = errno;
      return std::nullopt;
    }
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 4);  // possibly truncated: readlink does not say
  }
}

std::string trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

template <class T>
bool parse_number(std::string_view s, int base, T* out) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out, base);
  return ec == std::errc() && ptr == s.data() + s.size();
}

std::string describe(const Hold& h) {
  switch (h.kind) {
    case HoldKind::exe:
      return "exe";
    case HoldKind::mapped:
      return "mapped";
    case HoldKind::fd:
      return "fd " + std::to_string(h.fd);
  }
  return {};
}

// The deepest unit-like component of a cgroup path, or "".
std::string_view unit_in_cgroup_path(std::string_view path) {
  while (!path.empty()) {
    size_t slash = path.rfind('/');
    std::string_view name = slash == std::string_view::npos ? path : path.substr(slash + 1);
    if (is_unit_name(name)) return name;
    if (slash == std::string_view::npos) break;
    path = path.substr(0, slash);
  }
  return {};
}

struct FileKey {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileKey&) const = default;
};
struct FileKeyHash {
  size_t operator()(const FileKey& k) const {
    return std::hash<uint64_t>{}(static_cast<uint64_t>(k.ino) * 0x9e3779b97f4a7c15ULL ^
                                 static_cast<uint64_t>(k.dev));
  }
};

// The files of a query: (device, inode) to the index of their path (paths in order of first
// appearance), and the devices, so most maps lines are dismissed by their device alone.
class FileIds {
 public:
  explicit FileIds(const std::vector<HeldFile>& files) {
    std::unordered_map<std::string_view, size_t> index_of;
    for (const HeldFile& f : files) {
      auto [it, inserted] = index_of.try_emplace(f.path, paths_.size());
      if (inserted) paths_.push_back(f.path);
      by_id_.try_emplace(FileKey{f.dev, f.ino}, it->second);  // the first path of a file wins
      devices_.insert(f.dev);
    }
  }
  bool has_device(dev_t dev) const { return devices_.contains(dev); }
  std::optional<size_t> find(dev_t dev, ino_t ino) const {
    auto it = by_id_.find(FileKey{dev, ino});
    if (it == by_id_.end()) return std::nullopt;
    return it->second;
  }
  const std::string& path(size_t index) const { return paths_[index]; }
  bool empty() const { return by_id_.empty(); }

 private:
  std::vector<std::string> paths_;
  std::unordered_map<FileKey, size_t, FileKeyHash> by_id_;
  std::unordered_set<dev_t> devices_;
};

// Mount ids to devices: this process's mount table, and the tables of processes in other
// mount namespaces as their descriptors name mounts this one does not see (mount ids are
// unique system-wide, so one table serves every namespace).
class MountDevices {
 public:
  explicit MountDevices(const fs::path& proc) {
    int err = 0;
    if (auto text = read_all_at(AT_FDCWD, (proc / "self/mountinfo").c_str(), &err)) add(*text);
  }

  // The device of mount `mnt_id`, reading `pid_dir`'s mountinfo (once per process) when the
  // table does not have it yet.
  std::optional<dev_t> device(int mnt_id, int pid_dir, bool* read_process_table) {
    if (auto it = devices_.find(mnt_id); it != devices_.end()) return it->second;
    if (mnt_id < 0 || *read_process_table) return std::nullopt;
    *read_process_table = true;
    int err = 0;
    if (auto text = read_all_at(pid_dir, "mountinfo", &err)) add(*text);
    if (auto it = devices_.find(mnt_id); it != devices_.end()) return it->second;
    return std::nullopt;
  }

 private:
  void add(std::string_view mountinfo) {
    for (const MountInfo& m : parse_mountinfo(mountinfo)) devices_.try_emplace(m.id, m.dev);
  }
  std::unordered_map<int, dev_t> devices_;
};

// The fdinfo text of one of this process's own descriptors (always the real /proc: the
// descriptor is ours, whatever `proc` the scan reads).
FdInfo own_fdinfo(int fd) {
  int err = 0;
  auto text = read_all_at(AT_FDCWD, ("/proc/self/fdinfo/" + std::to_string(fd)).c_str(), &err);
  return text ? parse_fdinfo(*text) : FdInfo{};
}

// Reads one process through a descriptor of its /proc directory, so that every file read is
// about the same process even if the pid is reused meanwhile (reads then fail with ESRCH).
class IdScan {
 public:
  IdScan(int pid_dir, pid_t pid, const FileIds& files, MountDevices& mounts)
      : pid_dir_(pid_dir), pid_(pid), files_(files), mounts_(mounts) {}

  std::vector<Hold> holds() {
    scan_exe();
    scan_maps();
    scan_fds();
    std::ranges::sort(holds_, {}, &Hold::key);
    auto [first, last] = std::ranges::unique(holds_, {}, &Hold::key);
    holds_.erase(first, last);
    return std::move(holds_);
  }

 private:
  void add(HoldKind kind, size_t index, int fd = -1) {
    holds_.push_back(Hold{.kind = kind, .fd = fd, .index = index});
  }

  std::optional<size_t> match(const FdInfo& info) {
    if (info.mnt_id < 0 || info.ino == 0) return std::nullopt;
    auto dev = mounts_.device(info.mnt_id, pid_dir_, &read_mount_table_);
    if (!dev || !files_.has_device(*dev)) return std::nullopt;
    return files_.find(*dev, info.ino);
  }

  // The exe link opened with O_PATH: the walk jumps to the file without a lookup, and an
  // O_PATH open neither checks permissions nor calls the file system (nor does its close).
  void scan_exe() {
    UniqueFd exe(::openat(pid_dir_, "exe", O_PATH | O_CLOEXEC));
    if (!exe) return note_unexpected(pid_, "exe", errno);
    if (auto index = match(own_fdinfo(exe.get()))) {
      add(HoldKind::exe, *index);
      exe_index_ = *index;
    }
  }

  void scan_maps() {
    int err = 0;
    auto maps = read_all_at(pid_dir_, "maps", &err);
    if (!maps) return note_unexpected(pid_, "maps", err);
    std::string_view rest = *maps;
    std::string_view line;
    dev_t last_dev = 0;
    ino_t last_ino = 0;
    while (next_line(rest, line)) {
      dev_t dev = 0;
      ino_t ino = 0;
      if (!parse_maps_line(line, &dev, &ino) || ino == 0) continue;
      // A file's mappings come one after another: look it up once.
      if (dev == last_dev && ino == last_ino) continue;
      last_dev = dev;
      last_ino = ino;
      if (!files_.has_device(dev)) continue;
      auto index = files_.find(dev, ino);
      if (index && index != exe_index_) add(HoldKind::mapped, *index);
    }
  }

  void scan_fds() {
    UniqueFd fd_dir(::openat(pid_dir_, "fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd_dir) return note_unexpected(pid_, "fd", errno);
    UniqueFd info_dir;  // opened at the first descriptor with a path
    // fdopendir takes the descriptor; closedir closes it.
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(fd_dir.get()), &::closedir);
    if (!dir) return note_unexpected(pid_, "fd", errno);
    int dfd = fd_dir.release();
    while (dirent* e = ::readdir(dir.get())) {
      int fd = -1;
      if (!parse_number(std::string_view(e->d_name), 10, &fd)) continue;  // "." and ".."
      // Only a descriptor of a file with a path can be one looked for; most others are
      // sockets, pipes and anonymous inodes ("socket:[123]"), dismissed by their link.
      int err = 0;
      auto link = read_link_at(dfd, e->d_name, &err);
      if (!link || !link->starts_with('/')) continue;
      if (!info_dir) {
        info_dir = UniqueFd(::openat(pid_dir_, "fdinfo", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!info_dir) return note_unexpected(pid_, "fdinfo", errno);
      }
      auto info = read_all_at(info_dir.get(), e->d_name, &err);
      if (!info) continue;  // closed meanwhile
      if (auto index = match(parse_fdinfo(*info))) add(HoldKind::fd, *index, fd);
    }
  }

  int pid_dir_;
  pid_t pid_;
  const FileIds& files_;
  MountDevices& mounts_;
  bool read_mount_table_ = false;
  std::optional<size_t> exe_index_;
  std::vector<Hold> holds_;
};

}  // namespace

FdInfo parse_fdinfo(std::string_view text) {
  FdInfo out;
  std::string_view line;
  while (next_line(text, line)) {
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view key = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == '\t' || value.front() == ' '))
      value.remove_prefix(1);
    if (key == "mnt_id") {
      int id = -1;
      if (parse_number(value, 10, &id) && id >= 0) out.mnt_id = id;
    } else if (key == "ino") {
      unsigned long long ino = 0;
      if (parse_number(value, 10, &ino)) out.ino = static_cast<ino_t>(ino);
    }
  }
  return out;
}

bool parse_maps_line(std::string_view line, dev_t* dev, ino_t* ino) {
  // Columns are separated by single spaces up to the inode; padding follows it.
  size_t pos = 0;
  std::string_view column[5];
  for (int i = 0; i < 5; ++i) {
    if (pos > line.size()) return false;
    size_t end = line.find(' ', pos);
    if (end == std::string_view::npos) end = line.size();
    column[i] = line.substr(pos, end - pos);
    if (column[i].empty()) return false;
    pos = end + 1;
  }
  size_t colon = column[3].find(':');
  if (colon == std::string_view::npos) return false;
  unsigned major_no = 0;
  unsigned minor_no = 0;
  unsigned long long inode = 0;
  if (!parse_number(column[3].substr(0, colon), 16, &major_no) ||
      !parse_number(column[3].substr(colon + 1), 16, &minor_no) ||
      !parse_number(column[4], 10, &inode)) {
    return false;
  }
  *dev = makedev(major_no, minor_no);
  *ino = static_cast<ino_t>(inode);
  return true;
}

bool is_unit_name(std::string_view name) {
  static constexpr std::string_view kUnitSuffixes[] = {
      ".service", ".scope", ".socket", ".mount",  ".swap",
      ".timer",   ".path",  ".target", ".device", ".automount"};
  for (std::string_view suffix : kUnitSuffixes) {
    if (name.size() > suffix.size() && name.ends_with(suffix)) return true;
  }
  return false;
}

std::string systemd_cgroup_path(std::string_view contents) {
  std::string_view unified, named_systemd, other;
  std::string_view line;
  while (next_line(contents, line)) {
    // "hierarchy-ID:controller-list:cgroup-path"; the path may itself hold ':'.
    size_t c1 = line.find(':');
    if (c1 == std::string_view::npos) continue;
    size_t c2 = line.find(':', c1 + 1);
    if (c2 == std::string_view::npos) continue;
    std::string_view id = line.substr(0, c1);
    std::string_view controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string_view path = line.substr(c2 + 1);
    if (unit_in_cgroup_path(path).empty()) continue;
    if (id == "0" && controllers.empty()) {
      if (unified.empty()) unified = path;
    } else if (controllers == "name=systemd") {
      if (named_systemd.empty()) named_systemd = path;
    } else if (other.empty()) {
      other = path;
    }
  }
  if (!unified.empty()) return std::string(unified);
  if (!named_systemd.empty()) return std::string(named_systemd);
  return std::string(other);
}

std::string unit_from_cgroup(std::string_view contents) {
  return std::string(unit_in_cgroup_path(systemd_cgroup_path(contents)));
}

Result<std::vector<Holder>> find_holders(const HolderQuery& query, const fs::path& proc) {
  FileIds files(query.files);
  UniqueFd proc_fd(::open(proc.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!proc_fd) return fail_errno("open(" + proc.string() + ")");
  if (files.empty()) return std::vector<Holder>{};
  std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(proc_fd.get()), &::closedir);
  if (!dir) return fail_errno("fdopendir(" + proc.string() + ")");
  int proc_dfd = proc_fd.release();
  MountDevices mounts(proc);

  const pid_t self = ::getpid();
  std::vector<Holder> holders;
  while (dirent* e = ::readdir(dir.get())) {
    pid_t pid = 0;
    if (!parse_number(std::string_view(e->d_name), 10, &pid) || pid <= 0 || pid == self ||
        pid == query.also_skip)
      continue;
    UniqueFd pid_dir(::openat(proc_dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!pid_dir) continue;  // exited since the listing
    std::vector<Hold> holds = IdScan(pid_dir.get(), pid, files, mounts).holds();
    if (holds.empty()) continue;

    int err = 0;
    std::string command = trim(read_all_at(pid_dir.get(), "comm", &err).value_or(""));
    std::string unit = unit_from_cgroup(read_all_at(pid_dir.get(), "cgroup", &err).value_or(""));
    for (const Hold& h : holds) {
      holders.push_back(Holder{.pid = pid,
                               .command = command,
                               .path = files.path(h.index),
                               .how = describe(h),
                               .unit = unit});
    }
  }
  std::ranges::stable_sort(holders, {}, &Holder::pid);
  return holders;
}

}  // namespace livefs::host
