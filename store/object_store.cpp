// The object store on disk.
//
// Layout: objects/ab/cdef… (the id's first two hex digits name the fan-out directory),
// tmp/ for objects being written, trees/<hex> one empty file per tree root.
// Publication: content is written to tmp/, made 0444, made durable (fsync, or one syncfs for
// a whole batch), and only then renamed into objects/ — so a name under objects/ always
// holds the whole content it is named after, whatever crashes or fails on the way.
#include "store/object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <vector>

#include "common/log.h"

namespace livefs::store {
namespace {

constexpr size_t kChunk = 1 << 20;
constexpr mode_t kObjectMode = 0444;
// gc leaves younger temporary files alone: another process may be writing them.
constexpr time_t kStaleTmpSeconds = 600;

std::string fanout_dir(const ObjectId& id) { return "objects/" + id.hex().substr(0, 2); }

std::string unique_tmp_name() {
  static std::atomic<uint64_t> counter{0};
  return "tmp/obj." + std::to_string(getpid()) + "." + std::to_string(counter++);
}

// Writes all of `data` (looping over short writes and EINTR) through the seam.
Status write_all(Sys& sys, int fd, const char* data, size_t size, const std::string& what) {
  while (size > 0) {
    ssize_t n = sys.write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("write(" + what + ")");
    }
    if (n == 0) return fail(EIO, "write(" + what + "): no progress");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return {};
}

// Hashes a whole file from offset 0; returns its id and size.
Result<std::pair<ObjectId, uint64_t>> hash_fd(Sys& sys, int fd, const std::string& what) {
  std::vector<char> buf(kChunk);
  Hasher hasher;
  uint64_t total = 0;
  for (;;) {
    ssize_t n = sys.pread(fd, buf.data(), buf.size(), static_cast<off_t>(total));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read(" + what + ")");
    }
    if (n == 0) break;
    hasher.update(buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  return std::pair{hasher.finish(), total};
}

// Calls `fn(name)` for every entry of the directory `rel` under `root_fd`, "." and ".."
// excepted. ENOENT for the directory itself is an empty listing.
template <class Fn>
Status for_each_name(int root_fd, const std::string& rel, Fn&& fn) {
  int fd = ::openat(root_fd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return {};
    return fail_errno("opendir(" + rel + ")");
  }
  DIR* dir = fdopendir(fd);
  if (dir == nullptr) {
    ::close(fd);
    return fail_errno("fdopendir(" + rel + ")");
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* d = readdir(dir)) {
    if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
    names.emplace_back(d->d_name);
  }
  int err = errno;
  closedir(dir);
  if (err != 0) return std::unexpected(make_error(err, "readdir(" + rel + ")"));
  for (const std::string& name : names) {
    if (auto st = fn(name); !st) return st;
  }
  return {};
}

// Calls `fn(id, relpath)` for every well-named object, and `stray(relpath)` for every other
// file found under objects/.
template <class Fn, class Stray>
Status for_each_object(int root_fd, Fn&& fn, Stray&& stray) {
  return for_each_name(root_fd, "objects", [&](const std::string& fan) -> Status {
    std::string fan_rel = "objects/" + fan;
    return for_each_name(root_fd, fan_rel, [&](const std::string& rest) -> Status {
      std::string rel = fan_rel + "/" + rest;
      auto id = ObjectId::parse_hex(fan + rest);
      if (fan.size() != 2 || !id) return stray(rel);
      return fn(*id, rel);
    });
  });
}

}  // namespace

Result<ObjectStore> ObjectStore::open(const std::filesystem::path& dir, Sys& sys) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return fail(ec.value(), "create store directory(" + dir.string() + ")");
  ObjectStore store;
  store.root_ = dir;
  store.sys_ = &sys;
  store.root_fd_.reset(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!store.root_fd_) return fail_errno("open store(" + dir.string() + ")");
  for (const char* sub : {"objects", "tmp", "trees"}) {
    if (sys.mkdirat(store.root_fd(), sub, 0755) < 0 && errno != EEXIST)
      return fail_errno("mkdir(" + dir.string() + "/" + sub + ")");
  }
  return store;
}

std::string ObjectStore::relative_path(const ObjectId& id) {
  std::string hex = id.hex();
  return "objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
}

bool ObjectStore::has(const ObjectId& id) const {
  struct stat st;
  return ::fstatat(root_fd(), relative_path(id).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(st.st_mode);
}

Result<UniqueFd> ObjectStore::open_object(const ObjectId& id) const {
  std::string rel = relative_path(id);
  UniqueFd fd(::openat(root_fd(), rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return fail_errno("openat(" + rel + ")");
  return fd;
}

Result<std::string> ObjectStore::read_verified(const ObjectId& id) const {
  auto fd = open_object(id);
  if (!fd) return std::unexpected(fd.error());
  std::string rel = relative_path(id);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("read(" + rel + ")");
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  if (ObjectId::of(out) != id) {
    logger("store")->error("read {}: corrupt object (content does not match its id)", rel);
    return fail(EIO, "corrupt object " + rel);
  }
  return out;
}

// ---- Batch ----------------------------------------------------------------------------

ObjectStore::Batch::Batch(ObjectStore& store) : store_(&store) {}

ObjectStore::Batch::~Batch() { abort(); }

void ObjectStore::Batch::abort() {
  for (const Pending& p : pending_) store_->sys_->unlinkat(store_->root_fd(), p.tmp.c_str(), 0);
  pending_.clear();
  pending_ids_.clear();
}

Result<std::string> ObjectStore::Batch::create_tmp(UniqueFd& fd) {
  std::string tmp = unique_tmp_name();
  fd.reset(store_->sys_->openat(store_->root_fd(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600));
  if (!fd) return fail_errno("openat(" + tmp + ")");
  return tmp;
}

Status ObjectStore::Batch::finish_tmp(UniqueFd fd, const std::string& tmp, const ObjectId& id) {
  Sys& sys = *store_->sys_;
  if (sys.fchmod(fd.get(), kObjectMode) < 0) {
    auto err = errno_error("fchmod(" + tmp + ")");
    sys.unlinkat(store_->root_fd(), tmp.c_str(), 0);
    return std::unexpected(err);
  }
  pending_.push_back(Pending{id, tmp});
  pending_ids_.insert(id);
  return {};
}

Result<ObjectId> ObjectStore::Batch::put_bytes(std::string_view data) {
  ObjectId id = ObjectId::of(data);
  if (pending_ids_.contains(id) || store_->has(id)) return id;
  UniqueFd fd;
  auto tmp = create_tmp(fd);
  if (!tmp) return std::unexpected(tmp.error());
  if (auto st = write_all(*store_->sys_, fd.get(), data.data(), data.size(), *tmp); !st) {
    store_->sys_->unlinkat(store_->root_fd(), tmp->c_str(), 0);
    return std::unexpected(st.error());
  }
  if (auto st = finish_tmp(std::move(fd), *tmp, id); !st) return std::unexpected(st.error());
  return id;
}

Result<ObjectId> ObjectStore::Batch::put_fd(int src, const ObjectId* known_id,
                                            const std::string& what) {
  Sys& sys = *store_->sys_;
  ObjectId id;
  if (known_id != nullptr) {
    id = *known_id;
  } else {
    auto hashed = hash_fd(sys, src, what);
    if (!hashed) return std::unexpected(hashed.error());
    id = hashed->first;
  }
  if (pending_ids_.contains(id) || store_->has(id)) return id;

  UniqueFd fd;
  auto tmp = create_tmp(fd);
  if (!tmp) return std::unexpected(tmp.error());
  auto cleanup_fail = [&](Error e) -> Result<ObjectId> {
    sys.unlinkat(store_->root_fd(), tmp->c_str(), 0);
    return std::unexpected(std::move(e));
  };
  // copy_file_range first (a reflink where the file system can), plain read/write when the
  // kernel or file system cannot.
  off_t in_off = 0;
  bool fallback = false;
  for (;;) {
    ssize_t n = sys.copy_file_range(src, &in_off, fd.get(), nullptr, kChunk * 16);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (in_off == 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                          errno == EOPNOTSUPP || errno == EBADF)) {
        fallback = true;
        break;
      }
      return cleanup_fail(errno_error("copy_file_range(" + what + " -> " + *tmp + ")"));
    }
    if (n == 0) break;
  }
  if (fallback) {
    std::vector<char> buf(kChunk);
    for (;;) {
      ssize_t n = sys.pread(src, buf.data(), buf.size(), in_off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return cleanup_fail(errno_error("read(" + what + ")"));
      }
      if (n == 0) break;
      if (auto st = write_all(sys, fd.get(), buf.data(), static_cast<size_t>(n), *tmp); !st)
        return cleanup_fail(st.error());
      in_off += n;
    }
  }
  if (auto st = finish_tmp(std::move(fd), *tmp, id); !st) return std::unexpected(st.error());
  return id;
}

Result<ObjectId> ObjectStore::Batch::put_at(int dirfd, const char* name, PutOptions options,
                                            const ObjectId* known_id) {
  Sys& sys = *store_->sys_;
  std::string what = name;
  UniqueFd src(sys.openat(dirfd, name, O_RDONLY | O_NOFOLLOW, 0));
  if (!src) return fail_errno("openat(" + what + ")");
  ObjectId id;
  if (known_id != nullptr) {
    id = *known_id;
  } else {
    auto hashed = hash_fd(sys, src.get(), what);
    if (!hashed) return std::unexpected(hashed.error());
    id = hashed->first;
  }
  if (pending_ids_.contains(id) || store_->has(id)) return id;
  if (options.link) {
    // A hard link publishes the (immutable) source as it is: no temporary copy is needed,
    // the name appears with the whole content or not at all.
    if (auto st = store_->ensure_fanout(id); !st) return std::unexpected(st.error());
    std::string rel = relative_path(id);
    if (sys.linkat(dirfd, name, store_->root_fd(), rel.c_str(), 0) == 0 || errno == EEXIST) {
      linked_.push_back(id);
      return id;
    }
    if (errno != EXDEV && errno != EPERM) return fail_errno("linkat(" + what + " -> " + rel + ")");
    // Another file system (or a protected source): copy instead.
  }
  return put_fd(src.get(), &id, what);
}

Status ObjectStore::Batch::commit() {
  Sys& sys = *store_->sys_;
  auto fail_all = [&](Error e) -> Status {
    abort();
    return std::unexpected(std::move(e));
  };
  // Durability first: one fsync for a single object, one syncfs for many.
  if (pending_.size() == 1) {
    UniqueFd fd(sys.openat(store_->root_fd(), pending_[0].tmp.c_str(), O_RDONLY, 0));
    if (!fd || sys.fsync(fd.get()) < 0)
      return fail_all(errno_error("fsync(" + pending_[0].tmp + ")"));
  } else if (!pending_.empty() || !linked_.empty()) {
    if (sys.syncfs(store_->root_fd()) < 0) return fail_all(errno_error("syncfs(store)"));
  }
  for (size_t i = 0; i < pending_.size(); ++i) {
    Pending& p = pending_[i];
    if (auto st = store_->ensure_fanout(p.id); !st) return fail_all(st.error());
    std::string rel = relative_path(p.id);
    if (sys.renameat(store_->root_fd(), p.tmp.c_str(), store_->root_fd(), rel.c_str()) < 0) {
      // The objects renamed so far are whole and durable; only the rest is dropped.
      pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(i));
      return fail_all(errno_error("rename(" + p.tmp + " -> " + rel + ")"));
    }
  }
  // Make the new names durable too.
  if ((!pending_.empty() || !linked_.empty()) && sys.syncfs(store_->root_fd()) < 0)
    return fail_all(errno_error("syncfs(store)"));
  pending_.clear();
  pending_ids_.clear();
  linked_.clear();
  return {};
}

Status ObjectStore::ensure_fanout(const ObjectId& id) {
  std::string fan = fanout_dir(id);
  if (sys_->mkdirat(root_fd(), fan.c_str(), 0755) < 0 && errno != EEXIST)
    return fail_errno("mkdir(" + fan + ")");
  return {};
}

// ---- single puts: a batch of one ---------------------------------------------------------

Result<ObjectId> ObjectStore::put_bytes(std::span<const std::byte> data) {
  return put_bytes(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
}

Result<ObjectId> ObjectStore::put_bytes(std::string_view data) {
  Batch batch(*this);
  auto id = batch.put_bytes(data);
  if (!id) return id;
  if (auto st = batch.commit(); !st) return std::unexpected(st.error());
  return id;
}

Result<ObjectId> ObjectStore::put_fd(int fd) {
  Batch batch(*this);
  auto id = batch.put_fd(fd, nullptr, "fd " + std::to_string(fd));
  if (!id) return id;
  if (auto st = batch.commit(); !st) return std::unexpected(st.error());
  return id;
}

Result<ObjectId> ObjectStore::put_path(const std::filesystem::path& path, PutOptions options) {
  return put_at(AT_FDCWD, path.c_str(), options);
}

Result<ObjectId> ObjectStore::put_at(int dirfd, const char* name, PutOptions options,
                                     const ObjectId* known_id) {
  Batch batch(*this);
  auto id = batch.put_at(dirfd, name, options, known_id);
  if (!id) return id;
  if (auto st = batch.commit(); !st) return std::unexpected(st.error());
  return id;
}

// ---- tree roots ----------------------------------------------------------------------------

Status ObjectStore::add_tree_root(const ObjectId& tree_id, bool sync) {
  std::string rel = "trees/" + tree_id.hex();
  UniqueFd fd(sys_->openat(root_fd(), rel.c_str(), O_WRONLY | O_CREAT, 0644));
  if (!fd) return fail_errno("openat(" + rel + ")");
  if (!sync) return {};
  UniqueFd dir(sys_->openat(root_fd(), "trees", O_RDONLY | O_DIRECTORY, 0));
  if (!dir || sys_->fsync(dir.get()) < 0) return fail_errno("fsync(trees)");
  return {};
}

Status ObjectStore::remove_tree_root(const ObjectId& tree_id) {
  std::string rel = "trees/" + tree_id.hex();
  if (sys_->unlinkat(root_fd(), rel.c_str(), 0) < 0 && errno != ENOENT)
    return fail_errno("unlink(" + rel + ")");
  return {};
}

Result<std::vector<ObjectId>> ObjectStore::tree_roots() const {
  std::vector<ObjectId> roots;
  auto st = for_each_name(root_fd(), "trees", [&](const std::string& name) -> Status {
    if (auto id = ObjectId::parse_hex(name)) roots.push_back(*id);
    return {};
  });
  if (!st) return std::unexpected(st.error());
  return roots;
}

// ---- whole-store operations ----------------------------------------------------------------

Result<StoreStats> ObjectStore::stats() const {
  StoreStats s;
  auto st = for_each_object(
      root_fd(),
      [&](const ObjectId&, const std::string& rel) -> Status {
        struct stat sb;
        if (::fstatat(root_fd(), rel.c_str(), &sb, AT_SYMLINK_NOFOLLOW) < 0)
          return fail_errno("stat(" + rel + ")");
        ++s.objects;
        s.bytes += static_cast<uint64_t>(sb.st_size);
        return {};
      },
      [](const std::string&) -> Status { return {}; });
  if (!st) return std::unexpected(st.error());
  auto roots = tree_roots();
  if (!roots) return std::unexpected(roots.error());
  s.trees = roots->size();
  return s;
}

Result<VerifyReport> ObjectStore::verify() const {
  VerifyReport report;
  auto st = for_each_object(
      root_fd(),
      [&](const ObjectId& id, const std::string& rel) -> Status {
        ++report.checked;
        UniqueFd fd(::openat(root_fd(), rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd) {
          report.problems.push_back({rel, std::string("unreadable: ") + strerrorname_np(errno)});
          return {};
        }
        struct stat sb;
        if (::fstat(fd.get(), &sb) == 0 && sb.st_nlink == 1 && (sb.st_mode & 07777) != kObjectMode)
          report.problems.push_back(
              {rel, "not read-only (mode " + std::to_string(sb.st_mode & 07777) + ")"});
        auto hashed = hash_fd(Sys::real(), fd.get(), rel);
        if (!hashed) {
          report.problems.push_back({rel, "unreadable: " + hashed.error().message()});
        } else if (hashed->first != id) {
          report.problems.push_back({rel, "content hashes to " + hashed->first.hex()});
          logger("store")->error("verify {}: corrupt object (content hashes to {})", rel,
                                 hashed->first.hex());
        }
        return {};
      },
      [&](const std::string& rel) -> Status {
        report.problems.push_back({rel, "stray file (not an object name)"});
        return {};
      });
  if (!st) return std::unexpected(st.error());
  return report;
}

Result<GcReport> ObjectStore::gc(const IdSet& live) {
  GcReport report;
  auto st = for_each_object(
      root_fd(),
      [&](const ObjectId& id, const std::string& rel) -> Status {
        if (live.contains(id)) {
          ++report.kept;
          return {};
        }
        struct stat sb;
        uint64_t size = ::fstatat(root_fd(), rel.c_str(), &sb, 0) == 0 ? sb.st_size : 0;
        if (sys_->unlinkat(root_fd(), rel.c_str(), 0) < 0 && errno != ENOENT)
          return fail_errno("unlink(" + rel + ")");
        ++report.removed;
        report.bytes_freed += size;
        return {};
      },
      [](const std::string&) -> Status { return {}; });
  if (!st) return std::unexpected(st.error());
  time_t now = ::time(nullptr);
  auto tmp_st = for_each_name(root_fd(), "tmp", [&](const std::string& name) -> Status {
    std::string rel = "tmp/" + name;
    struct stat sb;
    if (::fstatat(root_fd(), rel.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
        now - sb.st_mtime > kStaleTmpSeconds)
      sys_->unlinkat(root_fd(), rel.c_str(), 0);
    return {};
  });
  if (!tmp_st) return std::unexpected(tmp_st.error());
  return report;
}

}  // namespace livefs::store
