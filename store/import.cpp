// Import of a directory tree: an iterative walk (no recursion, so depth is not a limit)
// that records every entry and hashes — and, when asked, stores — every regular file.
#include "store/import.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "common/log.h"
#include "common/unique_fd.h"

namespace livefs::store {
namespace {

constexpr size_t kReadChunk = 1 << 20;
// Objects per batch: bounds the temporary files in flight (and the syncfs cost of a failure).
constexpr size_t kBatchObjects = 8192;

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

EntryType type_of(mode_t mode) {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return EntryType::dir;
    case S_IFLNK:
      return EntryType::symlink;
    case S_IFCHR:
      return EntryType::chardev;
    case S_IFBLK:
      return EntryType::blockdev;
    case S_IFIFO:
      return EntryType::fifo;
    case S_IFSOCK:
      return EntryType::socket;
    default:
      return EntryType::file;
  }
}

// An entry opened for import: its metadata, xattrs and content all come from this one
// descriptor, never from a second lookup of its name.
struct Opened {
  UniqueFd fd;  // readable for regular files and directories, O_PATH for everything else
  bool path_only = false;
  struct stat st {};
};

std::string proc_fd(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// O_NOATIME needs ownership (or CAP_FOWNER): without it, open as usual.
int open_noatime(int dirfd, const char* name, int flags) {
  int fd = ::openat(dirfd, name, flags | O_NOATIME);
  if (fd < 0 && errno == EPERM) fd = ::openat(dirfd, name, flags);
  return fd;
}

// Opens `name` in `dirfd` without following a symlink. `likely_file` (readdir said so)
// opens it for reading at once; anything else is first opened O_PATH (opening a fifo or a
// device for reading has effects) and a regular file or directory then reopened — the same
// inode, through its descriptor, not its name.
Result<Opened> open_entry(int dirfd, const std::string& name, const std::string& path,
                          bool likely_file) {
  constexpr int kRead = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  Opened o;
  if (likely_file) {
    o.fd.reset(open_noatime(dirfd, name.c_str(), kRead));
    if (o.fd) {
      if (::fstat(o.fd.get(), &o.st) < 0) return fail_errno("fstat(" + path + ")");
      if (S_ISREG(o.st.st_mode)) return o;
      o.fd.reset();  // something else by now: look again
    } else if (errno == ENOENT || errno == ENOTDIR) {
      return fail_errno("openat(" + path + ")");
    }
    // ELOOP (a symlink by now), ENXIO (a socket), ...: as any other entry.
  }
  o.fd.reset(::openat(dirfd, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!o.fd) return fail_errno("openat(" + path + ")");
  if (::fstat(o.fd.get(), &o.st) < 0) return fail_errno("fstat(" + path + ")");
  if (S_ISREG(o.st.st_mode)) {
    // The magic link names the inode the descriptor holds, whatever its name is now.
    UniqueFd file(open_noatime(AT_FDCWD, proc_fd(o.fd.get()).c_str(),
                               O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!file) return fail_errno("openat(" + path + ")");
    o.fd = std::move(file);
  } else if (S_ISDIR(o.st.st_mode)) {
    UniqueFd dir(::openat(o.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return fail_errno("openat(" + path + ")");
    o.fd = std::move(dir);
  } else {
    o.path_only = true;
  }
  return o;
}

// The xattrs of an opened entry. An O_PATH descriptor has no f*xattr calls; its magic link
// in /proc, followed, is the very inode (a symlink's own, not its target's).
Result<std::vector<Xattr>> read_xattrs(const Opened& o, const std::string& rel) {
  std::string proc = o.path_only ? proc_fd(o.fd.get()) : std::string();
  auto list = [&](char* buf, size_t size) {
    return o.path_only ? ::listxattr(proc.c_str(), buf, size) : ::flistxattr(o.fd.get(), buf, size);
  };
  auto get = [&](const char* key, void* buf, size_t size) {
    return o.path_only ? ::getxattr(proc.c_str(), key, buf, size)
                       : ::fgetxattr(o.fd.get(), key, buf, size);
  };
  std::vector<Xattr> out;
  std::vector<char> names;
  for (;;) {
    ssize_t len = list(nullptr, 0);
    if (len < 0) {
      if (errno == ENOTSUP) return out;
      return fail_errno("llistxattr(" + rel + ")");
    }
    if (len == 0) return out;
    names.resize(static_cast<size_t>(len));
    len = list(names.data(), names.size());
    if (len < 0 && errno == ERANGE) continue;  // grew in between
    if (len < 0) return fail_errno("llistxattr(" + rel + ")");
    names.resize(static_cast<size_t>(len));
    break;
  }
  for (size_t pos = 0; pos < names.size();) {
    std::string key(names.data() + pos);
    pos += key.size() + 1;
    std::string value;
    for (;;) {
      ssize_t vlen = get(key.c_str(), nullptr, 0);
      if (vlen < 0) return fail_errno("lgetxattr(" + rel + ", " + key + ")");
      value.resize(static_cast<size_t>(vlen));
      vlen = get(key.c_str(), value.data(), value.size());
      if (vlen < 0 && errno == ERANGE) continue;
      if (vlen < 0) return fail_errno("lgetxattr(" + rel + ", " + key + ")");
      value.resize(static_cast<size_t>(vlen));
      break;
    }
    out.push_back(Xattr{std::move(key), std::move(value)});
  }
  return out;
}

// The read buffer, one per thread: an import of one file (the hotfix loop's unit) must not
// pay for mapping and zeroing a fresh megabyte.
std::vector<char>& read_buffer() {
  thread_local std::vector<char> buf(kReadChunk);
  return buf;
}

std::string mode_text(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

class Importer {
 public:
  Importer(ObjectStore* store, const ImportOptions& options) : store_(store), options_(options) {
    progress_ = options.progress && ::isatty(STDERR_FILENO);
    if (options_.batch != nullptr) {
      batch_ = options_.batch;
    } else if (options_.store_objects) {
      // Before the batch: held on after it, until the caller roots the tree.
      lock_ = store_->lock_shared();
      own_batch_.emplace(*store_);
      batch_ = &*own_batch_;
    }
  }
  // Stores through the caller's batch (null: hash only). `owner` is the stat of the
  // directory whose owner's reach bounds the hard links imported.
  Importer(ObjectStore::Batch* batch, const struct stat& owner) : batch_(batch) {
    set_owner(owner);
  }

  // One opened entry, recorded as `path`; `what` names it in errors.
  Result<Entry> import_opened(const Opened& o, const std::string& path, const std::string& what) {
    const struct stat& st = o.st;
    if (S_ISREG(st.st_mode) && st.st_nlink > 1 && !owner_can_read(st)) {
      return fail(EACCES,
                  "import(" + what + "): a hard link to a file that uid " +
                      std::to_string(owner_uid_) + ", the owner of the source, cannot read (uid " +
                      std::to_string(st.st_uid) + ", mode " + mode_text(st.st_mode) + "): refused");
    }
    Entry e = metadata(path, st);
    auto xattrs = read_xattrs(o, what);
    if (!xattrs) return std::unexpected(xattrs.error());
    e.xattrs = std::move(*xattrs);
    switch (e.type) {
      case EntryType::dir:
        ++stats_.dirs;
        break;
      case EntryType::symlink: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        for (;;) {
          ssize_t n = ::readlinkat(o.fd.get(), "", target.data(), target.size());
          if (n < 0) return fail_errno("readlinkat(" + what + ")");
          if (static_cast<size_t>(n) < target.size()) {
            target.resize(static_cast<size_t>(n));
            break;
          }
          target.resize(target.size() * 2);
        }
        e.target = std::move(target);
        e.size = e.target.size();
        ++stats_.other;
        break;
      }
      case EntryType::file: {
        auto id = file_content(o.fd.get(), path, what, st, e.link_group);
        if (!id) return std::unexpected(id.error());
        e.object = *id;
        ++stats_.files;
        break;
      }
      default:
        ++stats_.other;
        break;
    }
    return e;
  }

  Result<ImportResult> run(int dir_fd, const std::string& what) {
    auto start = std::chrono::steady_clock::now();
    if (lock_ && !*lock_)
      return std::unexpected(with_context(lock_->error(), "import(" + what + ")"));
    UniqueFd root(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return fail_errno("import(" + what + ")");
    Opened o;
    if (::fstat(root.get(), &o.st) < 0) return fail_errno("fstat(" + what + ")");
    o.fd = std::move(root);
    set_owner(o.st);
    Entry root_entry = metadata("", o.st);
    if (auto x = read_xattrs(o, "."); x)
      root_entry.xattrs = std::move(*x);
    else
      return std::unexpected(with_context(x.error(), "import(" + what + ")"));
    entries_.push_back(std::move(root_entry));
    ++stats_.dirs;

    // Directories still to read: (open fd, relative path).
    std::vector<std::pair<UniqueFd, std::string>> pending;
    pending.emplace_back(std::move(o.fd), "");
    while (!pending.empty()) {
      auto [fd, rel] = std::move(pending.back());
      pending.pop_back();
      auto st2 = read_directory(fd.get(), rel, pending);
      if (!st2) return std::unexpected(with_context(st2.error(), "import(" + what + ")"));
    }
    if (own_batch_) {
      if (auto st3 = own_batch_->commit(); !st3)
        return std::unexpected(with_context(st3.error(), "import(" + what + ")"));
    }
    if (progress_) std::fputs("\n", stderr);
    auto tree = Tree::build(std::move(entries_));
    if (!tree) return std::unexpected(tree.error());
    stats_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ImportResult result{std::move(*tree), stats_, {}};
    if (lock_) result.lock = std::move(**lock_);
    return result;
  }

 private:
  void set_owner(const struct stat& st) {
    owner_uid_ = st.st_uid;
    owner_gid_ = st.st_gid;
  }

  bool owner_can_read(const struct stat& st) const {
    if (owner_uid_ == 0) return true;
    if (st.st_uid == owner_uid_) return (st.st_mode & S_IRUSR) != 0;
    if (st.st_gid == owner_gid_) return (st.st_mode & S_IRGRP) != 0;
    return (st.st_mode & S_IROTH) != 0;
  }

  Entry metadata(const std::string& rel, const struct stat& st) {
    Entry e;
    e.path = rel;
    e.type = type_of(st.st_mode);
    e.mode = st.st_mode & 07777;
    e.uid = st.st_uid;
    e.gid = st.st_gid;
    e.size = e.type == EntryType::file || e.type == EntryType::symlink ? st.st_size : 0;
    e.mtime_sec = st.st_mtim.tv_sec;
    e.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    if (e.type == EntryType::chardev || e.type == EntryType::blockdev) e.rdev = st.st_rdev;
    if (e.type == EntryType::file && st.st_nlink > 1) {
      auto [it, inserted] = link_groups_.try_emplace(
          std::pair{st.st_dev, st.st_ino}, static_cast<uint32_t>(link_groups_.size() + 1));
      e.link_group = it->second;
    }
    return e;
  }

  Status read_directory(int dirfd, const std::string& rel,
                        std::vector<std::pair<UniqueFd, std::string>>& pending) {
    int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return fail_errno("dup(" + rel + ")");
    DIR* d = ::fdopendir(dup);
    if (d == nullptr) {
      ::close(dup);
      return fail_errno("fdopendir(" + rel + ")");
    }
    // Only the regular files from readdir are opened for reading straight away.
    std::vector<std::pair<std::string, bool>> names;
    errno = 0;
    while (dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      names.emplace_back(de->d_name, de->d_type == DT_REG);
      errno = 0;
    }
    int err = errno;
    ::closedir(d);
    if (err != 0)
      return std::unexpected(make_error(err, "readdir(" + (rel.empty() ? "." : rel) + ")"));

    for (auto& [name, likely_file] : names) {
      std::string path = join(rel, name);
      auto o = open_entry(dirfd, name, path, likely_file);
      if (!o) return std::unexpected(o.error());
      auto e = import_opened(*o, path, path);
      if (!e) return std::unexpected(e.error());
      // The directory walked is the one whose metadata was just recorded.
      if (e->type == EntryType::dir) pending.emplace_back(std::move(o->fd), path);
      entries_.push_back(std::move(*e));
      report_progress();
    }
    return {};
  }

  Result<ObjectId> file_content(int fd, const std::string& path, const std::string& what,
                                const struct stat& st, uint32_t link_group) {
    // A hard link already seen in this import has the same content. It was not stored when
    // that link was the same as the booted file at its path; this one may not be (a new
    // link to an unchanged file): then it is stored now, from this descriptor (the inode).
    if (link_group != 0) {
      if (auto it = group_ids_.find(link_group); it != group_ids_.end()) {
        ObjectId id = it->second;
        if (batch_ && !groups_stored_.contains(link_group) && !unchanged(path, id)) {
          if (auto st2 = store_content(fd, id, what, static_cast<uint64_t>(st.st_size)); !st2)
            return std::unexpected(st2.error());
          groups_stored_.insert(link_group);
        }
        return id;
      }
    }
    Hasher hasher;
    uint64_t total = 0;
    std::vector<char>& buf = read_buffer();
    for (;;) {
      ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("read(" + what + ")");
      }
      if (n == 0) break;
      hasher.update(buf.data(), static_cast<size_t>(n));
      total += static_cast<uint64_t>(n);
    }
    if (total != static_cast<uint64_t>(st.st_size))
      return fail(EAGAIN, "read(" + what + "): file changed while being imported");
    stats_.bytes += total;
    ObjectId id = hasher.finish();
    bool store_it = batch_ && !unchanged(path, id);
    if (store_it) {
      if (auto st2 = store_content(fd, id, what, total); !st2) return std::unexpected(st2.error());
    }
    if (link_group != 0) {
      group_ids_.emplace(link_group, id);
      if (store_it) groups_stored_.insert(link_group);
    }
    return id;
  }

  // Stores the content of `fd`, whose id is `id`, from the descriptor (copied, or linked:
  // its inode, not a name).
  Status store_content(int fd, const ObjectId& id, const std::string& what, uint64_t size) {
    bool present = batch_->store().has(id);
    auto stored = batch_->put_fd(fd, &id, what, PutOptions{.link = options_.link});
    if (!stored) return std::unexpected(stored.error());
    if (!present) stats_.bytes_stored += size;
    if (batch_->pending() >= kBatchObjects) return batch_->commit();
    return {};
  }

  bool unchanged(const std::string& path, const ObjectId& id) {
    if (options_.unchanged_from == nullptr) return false;
    auto e = options_.unchanged_from->find(path);
    if (!e || e->type() != EntryType::file || e->object() != id) return false;
    ++stats_.files_unchanged;
    return true;
  }

  void report_progress() {
    if (options_.entries_done != nullptr)
      options_.entries_done->store(entries_.size(), std::memory_order_relaxed);
    if (!progress_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress_ < std::chrono::milliseconds(200)) return;
    last_progress_ = now;
    std::fprintf(stderr, "\rimporting: %llu files, %llu dirs, %.1f MB",
                 static_cast<unsigned long long>(stats_.files),
                 static_cast<unsigned long long>(stats_.dirs), stats_.bytes / 1e6);
  }

  ObjectStore* store_ = nullptr;
  ImportOptions options_;
  std::optional<Result<StoreLock>> lock_;
  std::optional<ObjectStore::Batch> own_batch_;
  ObjectStore::Batch* batch_ = nullptr;
  std::vector<Entry> entries_;
  std::map<std::pair<dev_t, ino_t>, uint32_t> link_groups_;
  std::map<uint32_t, ObjectId> group_ids_;
  std::set<uint32_t> groups_stored_;  // groups whose content this import stored
  ImportStats stats_;
  bool progress_ = false;
  std::chrono::steady_clock::time_point last_progress_{};
  uid_t owner_uid_ = 0;
  gid_t owner_gid_ = 0;
};

}  // namespace

Result<UniqueFd> open_beneath(int root_fd, std::string_view rel, int flags,
                              const std::string& what) {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  std::string path(rel.empty() ? "." : rel);
  for (int attempt = 0;; ++attempt) {
    int fd = static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how));
    if (fd >= 0) return UniqueFd(fd);
    // EAGAIN: a rename somewhere raced with the resolution; it is safe to try again.
    if (errno == EAGAIN && attempt < 16) continue;
    if (errno == ELOOP)
      return fail(ELOOP, "openat(" + what + "): a symlink on the way (not followed)");
    if (errno == EXDEV) return fail(EXDEV, "openat(" + what + "): leaves the source directory");
    return fail_errno("openat(" + what + ")");
  }
}

Result<Entry> import_entry_at(int root_fd, std::string_view rel, std::string record_as,
                              ObjectStore::Batch* batch, const std::string& what) {
  struct stat root_st;
  if (::fstat(root_fd, &root_st) < 0) return fail_errno("fstat(" + what + ")");
  Importer importer(batch, root_st);
  Opened o;
  if (rel.empty()) {
    o.fd.reset(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!o.fd) return fail_errno("openat(" + what + ")");
    o.st = root_st;
    return importer.import_opened(o, record_as, what);
  }
  size_t slash = rel.rfind('/');
  std::string name(slash == std::string_view::npos ? rel : rel.substr(slash + 1));
  if (name.empty() || name == "." || name == "..")
    return fail(EINVAL, "import(" + what + "): not a name");
  UniqueFd parent;
  if (slash != std::string_view::npos) {
    auto opened = open_beneath(root_fd, rel.substr(0, slash), O_PATH | O_DIRECTORY, what);
    if (!opened) return std::unexpected(opened.error());
    parent = std::move(*opened);
  }
  auto opened = open_entry(parent ? parent.get() : root_fd, name, what, false);
  if (!opened) return std::unexpected(opened.error());
  return importer.import_opened(*opened, record_as, what);
}

Result<Entry> import_entry(const std::filesystem::path& path, std::string rel,
                           ObjectStore::Batch* batch) {
  std::filesystem::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  std::string name = path.filename().string();
  if (name.empty()) return fail(EINVAL, "import(" + path.string() + "): no file name");
  UniqueFd dir(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("import(" + path.string() + ")");
  return import_entry_at(dir.get(), name, std::move(rel), batch, path.string());
}

Result<ImportResult> import_directory_at(int dir_fd, const std::string& what, ObjectStore* store,
                                         const ImportOptions& options) {
  if (options.store_objects && store == nullptr && options.batch == nullptr)
    return fail(EINVAL, "import(" + what + "): no store given");
  return Importer(store, options).run(dir_fd, what);
}

Result<ImportResult> import_directory(const std::filesystem::path& dir, ObjectStore* store,
                                      const ImportOptions& options) {
  if (options.store_objects && store == nullptr && options.batch == nullptr)
    return fail(EINVAL, "import(" + dir.string() + "): no store given");
  UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("import(" + dir.string() + ")");
  return Importer(store, options).run(fd.get(), dir.string());
}

}  // namespace livefs::store
