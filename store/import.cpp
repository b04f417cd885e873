// Import of a directory tree: an iterative walk (no recursion, so depth is not a limit)
// that records every entry and hashes — and, when asked, stores — every regular file.
#include "store/import.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
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

// Reads the xattrs of `name` in the directory `dirfd` without following a symlink.
Result<std::vector<Xattr>> read_xattrs(int dirfd, const std::string& name, const std::string& rel) {
  std::string proc = "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  std::vector<Xattr> out;
  std::vector<char> names;
  for (;;) {
    ssize_t len = ::llistxattr(proc.c_str(), nullptr, 0);
    if (len < 0) {
      if (errno == ENOTSUP) return out;
      return fail_errno("llistxattr(" + rel + ")");
    }
    if (len == 0) return out;
    names.resize(static_cast<size_t>(len));
    len = ::llistxattr(proc.c_str(), names.data(), names.size());
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
      ssize_t vlen = ::lgetxattr(proc.c_str(), key.c_str(), nullptr, 0);
      if (vlen < 0) return fail_errno("lgetxattr(" + rel + ", " + key + ")");
      value.resize(static_cast<size_t>(vlen));
      vlen = ::lgetxattr(proc.c_str(), key.c_str(), value.data(), value.size());
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

class Importer {
 public:
  Importer(ObjectStore* store, const ImportOptions& options) : store_(store), options_(options) {
    progress_ = options.progress && ::isatty(STDERR_FILENO);
    if (options_.store_objects) {
      own_batch_.emplace(*store_);
      batch_ = &*own_batch_;
    }
  }
  // Stores through the caller's batch (null: hash only).
  explicit Importer(ObjectStore::Batch* batch) : batch_(batch) {}

  // One entry `name` of the directory `dirfd`, recorded as `path`.
  Result<Entry> import_one(int dirfd, const std::string& name, const std::string& path) {
    struct stat st;
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
      return fail_errno("fstatat(" + path + ")");
    Entry e = metadata(path, st);
    auto xattrs = read_xattrs(dirfd, name, path);
    if (!xattrs) return std::unexpected(xattrs.error());
    e.xattrs = std::move(*xattrs);
    switch (e.type) {
      case EntryType::dir:
        ++stats_.dirs;
        break;
      case EntryType::symlink: {
        std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
        for (;;) {
          ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
          if (n < 0) return fail_errno("readlinkat(" + path + ")");
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
        auto id = file_content(dirfd, name, path, st, e.link_group);
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

  Result<ImportResult> run(const std::filesystem::path& dir) {
    auto start = std::chrono::steady_clock::now();
    UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) return fail_errno("import(" + dir.string() + ")");
    struct stat st;
    if (::fstat(root.get(), &st) < 0) return fail_errno("fstat(" + dir.string() + ")");
    Entry root_entry = metadata("", st);
    if (auto x = read_xattrs(root.get(), ".", "."); x)
      root_entry.xattrs = std::move(*x);
    else
      return std::unexpected(with_context(x.error(), "import(" + dir.string() + ")"));
    entries_.push_back(std::move(root_entry));
    ++stats_.dirs;

    // Directories still to read: (open fd, relative path).
    std::vector<std::pair<UniqueFd, std::string>> pending;
    pending.emplace_back(std::move(root), "");
    while (!pending.empty()) {
      auto [fd, rel] = std::move(pending.back());
      pending.pop_back();
      auto st2 = read_directory(fd.get(), rel, pending);
      if (!st2) return std::unexpected(with_context(st2.error(), "import(" + dir.string() + ")"));
    }
    if (batch_) {
      if (auto st3 = batch_->commit(); !st3)
        return std::unexpected(with_context(st3.error(), "import(" + dir.string() + ")"));
    }
    if (progress_) std::fputs("\n", stderr);
    auto tree = Tree::build(std::move(entries_));
    if (!tree) return std::unexpected(tree.error());
    stats_.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return ImportResult{std::move(*tree), stats_};
  }

 private:
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
    std::vector<std::string> names;
    errno = 0;
    while (dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      names.emplace_back(de->d_name);
      errno = 0;
    }
    int err = errno;
    ::closedir(d);
    if (err != 0)
      return std::unexpected(make_error(err, "readdir(" + (rel.empty() ? "." : rel) + ")"));

    for (const std::string& name : names) {
      std::string path = join(rel, name);
      auto e = import_one(dirfd, name, path);
      if (!e) return std::unexpected(e.error());
      if (e->type == EntryType::dir) {
        UniqueFd sub(
            ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub) return fail_errno("openat(" + path + ")");
        pending.emplace_back(std::move(sub), path);
      }
      entries_.push_back(std::move(*e));
      report_progress();
    }
    return {};
  }

  Result<ObjectId> file_content(int dirfd, const std::string& name, const std::string& path,
                                const struct stat& st, uint32_t link_group) {
    // A hard link already seen in this import has the same content.
    if (link_group != 0) {
      if (auto it = group_ids_.find(link_group); it != group_ids_.end()) return it->second;
    }
    UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME));
    if (!fd && errno == EPERM)  // O_NOATIME needs ownership (or CAP_FOWNER)
      fd.reset(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return fail_errno("openat(" + path + ")");
    Hasher hasher;
    uint64_t total = 0;
    std::vector<char>& buf = read_buffer();
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("read(" + path + ")");
      }
      if (n == 0) break;
      hasher.update(buf.data(), static_cast<size_t>(n));
      total += static_cast<uint64_t>(n);
    }
    if (total != static_cast<uint64_t>(st.st_size))
      return fail(EAGAIN, "read(" + path + "): file changed while being imported");
    stats_.bytes += total;
    ObjectId id = hasher.finish();
    if (batch_ && !unchanged(path, id)) {
      bool present = batch_->store().has(id);
      auto stored = options_.link
                        ? batch_->put_at(dirfd, name.c_str(), PutOptions{.link = true}, &id)
                        : batch_->put_fd(fd.get(), &id, path);
      if (!stored) return std::unexpected(stored.error());
      if (!present) stats_.bytes_stored += total;
      if (batch_->pending() >= kBatchObjects) {
        if (auto st2 = batch_->commit(); !st2) return std::unexpected(st2.error());
      }
    }
    if (link_group != 0) group_ids_.emplace(link_group, id);
    return id;
  }

  bool unchanged(const std::string& path, const ObjectId& id) {
    if (options_.unchanged_from == nullptr) return false;
    auto e = options_.unchanged_from->find(path);
    if (!e || e->type() != EntryType::file || e->object() != id) return false;
    ++stats_.files_unchanged;
    return true;
  }

  void report_progress() {
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
  std::optional<ObjectStore::Batch> own_batch_;
  ObjectStore::Batch* batch_ = nullptr;
  std::vector<Entry> entries_;
  std::map<std::pair<dev_t, ino_t>, uint32_t> link_groups_;
  std::map<uint32_t, ObjectId> group_ids_;
  ImportStats stats_;
  bool progress_ = false;
  std::chrono::steady_clock::time_point last_progress_{};
};

}  // namespace

Result<Entry> import_entry(const std::filesystem::path& path, std::string rel,
                           ObjectStore::Batch* batch) {
  std::filesystem::path parent = path.parent_path();
  if (parent.empty()) parent = ".";
  UniqueFd dir(::open(parent.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return fail_errno("import(" + path.string() + ")");
  std::string name = path.filename().string();
  if (name.empty()) return fail(EINVAL, "import(" + path.string() + "): no file name");
  return Importer(batch).import_one(dir.get(), name, rel);
}

Result<ImportResult> import_directory(const std::filesystem::path& dir, ObjectStore* store,
                                      const ImportOptions& options) {
  if (options.store_objects && store == nullptr)
    return fail(EINVAL, "import(" + dir.string() + "): no store given");
  struct stat st;
  if (::stat(dir.c_str(), &st) < 0) return fail_errno("import(" + dir.string() + ")");
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, "import(" + dir.string() + ")");
  return Importer(store, options).run(dir);
}

}  // namespace livefs::store
