// The object store on disk.
//
// Layout: objects/ab/cdef… (the id's first two hex digits name the fan-out directory),
// tmp/ for objects being written, trees/<hex> one empty file per tree root, pins/ one file
// per process that pins trees, and `lock`, the store lock. Every directory is 0700: only
// the store's owner reads staged or hotfixed content, and only it can swap a name.
// Publication: content is written to tmp/, made 0444, made durable (fsync, or one syncfs for
// a whole batch), and only then renamed into objects/ — so a name under objects/ always
// holds the whole content it is named after, whatever crashes or fails on the way.
#include "store/object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/log.h"
#include "store/tree.h"

namespace livefs::store {
namespace {

namespace fs = std::filesystem;

constexpr size_t kChunk = 1 << 20;
constexpr mode_t kObjectMode = 0444;
constexpr mode_t kDirMode = 0700;
// gc leaves younger temporary files alone: a writer of an older livefs, which takes no
// store lock, may still be writing them.
constexpr time_t kStaleTmpSeconds = 600;
constexpr const char* kSubdirs[] = {"objects", "tmp", "trees", "pins"};

std::shared_ptr<spdlog::logger> log() { return logger("store"); }

std::string fanout_dir(const ObjectId& id) { return "objects/" + id.hex().substr(0, 2); }

std::string unique_tmp_name() {
  static std::atomic<uint64_t> counter{0};
  return "tmp/obj." + std::to_string(getpid()) + "." + std::to_string(counter++);
}

std::string octal_mode(mode_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
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
  int fd = ::openat(root_fd, rel.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
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

// A directory of the store that anyone but its owner could write into could have had any
// object or root swapped: refused, never trusted.
Status check_owner(const std::string& what, const struct stat& st) {
  if (st.st_uid != ::geteuid())
    return fail(EPERM, "store " + what + ": owned by uid " + std::to_string(st.st_uid) +
                           ", not by uid " + std::to_string(::geteuid()));
  if ((st.st_mode & 022) != 0)
    return fail(EPERM, "store " + what + ": mode " + octal_mode(st.st_mode) +
                           " is writable by group or others");
  return {};
}

}  // namespace

// What every user of one store handle shares: the verdicts of verified opens and this
// process's pins. Behind a pointer so that the handle stays movable.
struct ObjectStore::Shared {
  struct Verdict {
    bool good = false;
    // Of the copy found corrupt: a new copy (another inode) is checked again.
    dev_t dev = 0;
    ino_t ino = 0;
    ObjectId actual;
  };

  std::mutex mutex;
  std::unordered_map<ObjectId, Verdict, ObjectIdHash> verdicts;  // guarded by mutex
  IdSet hashing;                   // guarded by mutex: ids some thread is hashing now
  std::condition_variable hashed;  // an id left `hashing`

  std::mutex pin_mutex;  // guards the three below; taken after the store lock
  UniqueFd pin_fd;       // pins/<pid>.<n>, flock'ed (exclusive) for this handle's life
  std::string pin_rel;
  std::map<ObjectId, int> pins;  // id -> how many times pinned

  UniqueFd root;  // the store directory (to remove the pin file at the end)

  ~Shared() {
    // A clean exit leaves no stale pin file behind (gc would remove it anyway).
    if (pin_fd && root) ::unlinkat(root.get(), pin_rel.c_str(), 0);
  }
};

Result<ObjectStore> ObjectStore::open(const fs::path& dir, Sys& sys) {
  fs::path path = dir.has_filename() ? dir : dir.parent_path();
  std::string name = dir.string();
  if (path.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(path.parent_path(), ec);
    if (ec) return fail(ec.value(), "create store directory(" + name + ")");
  }
  if (::mkdir(path.c_str(), kDirMode) < 0 && errno != EEXIST)
    return fail_errno("create store directory(" + name + ")");
  ObjectStore store;
  store.root_ = dir;
  store.sys_ = &sys;
  store.root_fd_.reset(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!store.root_fd_) return fail_errno("open store(" + name + ")");
  struct stat st;
  if (::fstat(store.root_fd(), &st) < 0) return fail_errno("fstat(store " + name + ")");
  if (auto ok = check_owner(name, st); !ok) return std::unexpected(ok.error());
  const bool loose = (st.st_mode & 077) != 0;
  for (const char* sub : kSubdirs) {
    if (sys.mkdirat(store.root_fd(), sub, kDirMode) < 0 && errno != EEXIST)
      return fail_errno("mkdir(" + name + "/" + sub + ")");
    struct stat sub_st;
    if (::fstatat(store.root_fd(), sub, &sub_st, AT_SYMLINK_NOFOLLOW) < 0)
      return fail_errno("stat(" + name + "/" + sub + ")");
    if (!S_ISDIR(sub_st.st_mode))
      return fail(ENOTDIR, "store " + name + ": " + sub + " is not a directory");
    if (auto ok = check_owner(name + "/" + sub, sub_st); !ok) return std::unexpected(ok.error());
  }
  if (loose) {
    if (auto ok = store.tighten(name, st); !ok) return std::unexpected(ok.error());
  }
  {
    UniqueFd lock(
        ::openat(store.root_fd(), "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!lock) return fail_errno("open(" + name + "/lock)");
  }
  store.shared_ = std::make_shared<Shared>();
  store.shared_->root.reset(::fcntl(store.root_fd(), F_DUPFD_CLOEXEC, 0));
  return store;
}

// A store made by an older livefs (0755 directories, so every user could read every staged
// and hotfixed file): ours, so made private rather than refused.
Status ObjectStore::tighten(const std::string& name, const struct stat& st) {
  log()->warn("store {}: mode {} let every user read its objects; tightened to 0700", name,
              octal_mode(st.st_mode));
  if (::fchmod(root_fd(), kDirMode) < 0) return fail_errno("chmod(store " + name + ")");
  auto chmod_dir = [&](const std::string& rel) -> Status {
    if (::fchmodat(root_fd(), rel.c_str(), kDirMode, 0) < 0 && errno != ENOENT)
      return fail_errno("chmod(" + name + "/" + rel + ")");
    return {};
  };
  for (const char* sub : kSubdirs) {
    if (auto ok = chmod_dir(sub); !ok) return ok;
  }
  return for_each_name(root_fd(), "objects", [&](const std::string& fan) -> Status {
    struct stat fst;
    std::string rel = "objects/" + fan;
    if (::fstatat(root_fd(), rel.c_str(), &fst, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(fst.st_mode))
      return {};
    return chmod_dir(rel);
  });
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

void ObjectStore::record_good(const ObjectId& id) const {
  std::lock_guard lock(shared_->mutex);
  shared_->verdicts[id] = Shared::Verdict{.good = true, .dev = 0, .ino = 0, .actual = {}};
}

Result<bool> ObjectStore::verified(const ObjectId& id, int fd, const struct stat& st,
                                   std::string_view served_as) const {
  Shared& sh = *shared_;
  std::string rel = relative_path(id);
  {
    std::unique_lock lock(sh.mutex);
    for (;;) {
      auto it = sh.verdicts.find(id);
      if (it != sh.verdicts.end() &&
          (it->second.good || (it->second.dev == st.st_dev && it->second.ino == st.st_ino)))
        return it->second.good;
      if (!sh.hashing.contains(id)) break;
      sh.hashed.wait(lock);
    }
    sh.hashing.insert(id);
  }
  struct Done {
    Shared& sh;
    const ObjectId& id;
    ~Done() {
      {
        std::lock_guard lock(sh.mutex);
        sh.hashing.erase(id);
      }
      sh.hashed.notify_all();
    }
  } done{sh, id};
  auto hashed = hash_fd(*sys_, fd, rel);
  if (!hashed) return std::unexpected(hashed.error());
  Shared::Verdict v{hashed->first == id, st.st_dev, st.st_ino, hashed->first};
  {
    std::lock_guard lock(sh.mutex);
    sh.verdicts[id] = v;
  }
  if (!v.good) {
    // Only the thread that hashed it says so: once per corrupt copy and process.
    log()->error("{}: corrupt object (content hashes to {}){}{}", rel, v.actual.hex(),
                 served_as.empty() ? "" : ", served as ", served_as);
  }
  return v.good;
}

Result<UniqueFd> ObjectStore::open_verified(const ObjectId& id, std::string_view served_as) const {
  auto fd = open_object(id);
  if (!fd) return fd;
  {
    std::lock_guard lock(shared_->mutex);
    auto it = shared_->verdicts.find(id);
    if (it != shared_->verdicts.end() && it->second.good) return fd;
  }
  std::string rel = relative_path(id);
  struct stat st;
  if (::fstat(fd->get(), &st) < 0) return fail_errno("fstat(" + rel + ")");
  auto good = verified(id, fd->get(), st, served_as);
  if (!good) return std::unexpected(good.error());
  if (*good) return fd;
  ObjectId actual;
  {
    std::lock_guard lock(shared_->mutex);
    actual = shared_->verdicts[id].actual;
  }
  return fail(EIO, rel + ": corrupt object (content hashes to " + actual.hex() + ")");
}

bool ObjectStore::sound(const ObjectId& id, std::optional<uint64_t> size) const {
  std::string rel = relative_path(id);
  UniqueFd fd(::openat(root_fd(), rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return false;  // absent (or not even openable: a new copy replaces it)
  struct stat st;
  if (::fstat(fd.get(), &st) < 0 || !S_ISREG(st.st_mode)) return false;
  {
    std::lock_guard lock(shared_->mutex);
    auto it = shared_->verdicts.find(id);
    if (it != shared_->verdicts.end() && it->second.good) return true;
  }
  // Deduplicating against a copy nobody checked would keep a corrupt object corrupt for
  // good: re-importing the very content is the natural repair. So an object is trusted
  // only once this process hashed it, and the verdict is kept. The cost: an import whose
  // files are all present already reads each object once more (a CLI `store import` of an
  // unchanged tree about doubles its reads; the daemon pays it once per object for its
  // whole life). The imports that must be fast touch only what changed — a hotfix change
  // set, a staged tree against the booted one, whose unchanged files are never put — so the
  // extra read grows with the change, not with the tree; serving a corrupt file forever
  // would be worse. A size mismatch needs no read at all.
  if (size && static_cast<uint64_t>(st.st_size) != *size) {
    log()->warn("{}: corrupt object ({} bytes instead of {}): replacing it", rel, st.st_size,
                *size);
    return false;
  }
  auto good = verified(id, fd.get(), st, "");
  if (!good) {
    log()->warn("{}: unreadable ({}): replacing it", rel, good.error().message());
    return false;
  }
  if (!*good) log()->warn("{}: replacing the corrupt object", rel);
  return *good;
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
  ObjectId actual = ObjectId::of(out);
  if (actual != id) {
    log()->error("read {}: corrupt object (content hashes to {})", rel, actual.hex());
    return fail(EIO, rel + ": corrupt object (content hashes to " + actual.hex() + ")");
  }
  record_good(id);
  return out;
}

// ---- the store lock and pins ---------------------------------------------------------------

namespace {

Result<UniqueFd> open_lock_file(int root_fd, const fs::path& root) {
  UniqueFd fd(::openat(root_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("open(" + (root / "lock").string() + ")");
  return fd;
}

int flock_retry(int fd, int op) {
  int r;
  do r = ::flock(fd, op);
  while (r < 0 && errno == EINTR);
  return r;
}

}  // namespace

Result<StoreLock> ObjectStore::lock_shared() const {
  auto fd = open_lock_file(root_fd(), root_);
  if (!fd) return std::unexpected(fd.error());
  if (flock_retry(fd->get(), LOCK_SH | LOCK_NB) == 0) return StoreLock(std::move(*fd));
  if (errno != EWOULDBLOCK) return fail_errno("flock(" + (root_ / "lock").string() + ")");
  log()->info("store {}: waiting for a gc to finish", root_.string());
  if (flock_retry(fd->get(), LOCK_SH) < 0)
    return fail_errno("flock(" + (root_ / "lock").string() + ")");
  return StoreLock(std::move(*fd));
}

Result<StoreLock> ObjectStore::lock_exclusive(std::chrono::milliseconds wait,
                                              const std::function<void()>& on_wait) const {
  auto fd = open_lock_file(root_fd(), root_);
  if (!fd) return std::unexpected(fd.error());
  auto deadline = std::chrono::steady_clock::now() + wait;
  auto pause = std::chrono::milliseconds(1);
  bool waited = false;
  // Polled rather than blocking: a bounded wait, and no queued request that a writer's
  // shared lock would have to get past.
  while (flock_retry(fd->get(), LOCK_EX | LOCK_NB) < 0) {
    if (errno != EWOULDBLOCK) return fail_errno("flock(" + (root_ / "lock").string() + ")");
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline)
      return fail(EBUSY, "store " + root_.string() +
                             ": still in use by a writer (an import, or a running daemon's "
                             "batch) after " +
                             std::to_string(wait.count()) + " ms");
    if (!waited && on_wait) on_wait();
    waited = true;
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
  return StoreLock(std::move(*fd));
}

Status ObjectStore::write_pins() {
  Shared& sh = *shared_;
  std::string text;
  for (const auto& [id, count] : sh.pins) text += id.hex() + "\n";
  if (::ftruncate(sh.pin_fd.get(), 0) < 0) return fail_errno("truncate(" + sh.pin_rel + ")");
  const char* p = text.data();
  size_t left = text.size();
  off_t off = 0;
  while (left > 0) {
    ssize_t n = ::pwrite(sh.pin_fd.get(), p, left, off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail_errno("write(" + sh.pin_rel + ")");
    p += n;
    off += n;
    left -= static_cast<size_t>(n);
  }
  return {};
}

Status ObjectStore::pin(const ObjectId& tree_id) {
  // Under the store lock: no gc runs while the pin file appears (unlocked for an instant)
  // or changes.
  auto lock = lock_shared();
  if (!lock) return std::unexpected(lock.error());
  Shared& sh = *shared_;
  std::lock_guard guard(sh.pin_mutex);
  if (!sh.pin_fd) {
    static std::atomic<uint64_t> counter{0};
    std::string rel = "pins/" + std::to_string(::getpid()) + "." + std::to_string(::time(nullptr)) +
                      "." + std::to_string(counter++);
    UniqueFd fd(
        ::openat(root_fd(), rel.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return fail_errno("create(" + rel + ")");
    if (flock_retry(fd.get(), LOCK_EX | LOCK_NB) < 0) {
      auto err = errno_error("flock(" + rel + ")");
      ::unlinkat(root_fd(), rel.c_str(), 0);
      return std::unexpected(err);
    }
    sh.pin_fd = std::move(fd);
    sh.pin_rel = rel;
  }
  ++sh.pins[tree_id];
  if (auto st = write_pins(); !st) {
    if (--sh.pins[tree_id] == 0) sh.pins.erase(tree_id);
    return st;
  }
  return {};
}

Status ObjectStore::unpin(const ObjectId& tree_id) {
  auto lock = lock_shared();
  if (!lock) return std::unexpected(lock.error());
  Shared& sh = *shared_;
  std::lock_guard guard(sh.pin_mutex);
  auto it = sh.pins.find(tree_id);
  if (it == sh.pins.end()) return fail(ENOENT, "unpin(" + tree_id.hex() + "): not pinned");
  if (--it->second == 0) sh.pins.erase(it);
  return write_pins();
}

// ---- Batch ----------------------------------------------------------------------------

ObjectStore::Batch::Batch(ObjectStore& store) : store_(&store), lock_(store.lock_shared()) {}

ObjectStore::Batch::~Batch() { abort(); }

void ObjectStore::Batch::abort() {
  for (const Pending& p : pending_) store_->sys_->unlinkat(store_->root_fd(), p.tmp.c_str(), 0);
  pending_.clear();
  pending_ids_.clear();
}

bool ObjectStore::Batch::present(const ObjectId& id, std::optional<uint64_t> size) {
  return pending_ids_.contains(id) || store_->sound(id, size);
}

Result<std::string> ObjectStore::Batch::create_tmp(UniqueFd& fd) {
  std::string tmp = unique_tmp_name();
  fd.reset(store_->sys_->openat(store_->root_fd(), tmp.c_str(),
                                O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0600));
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
  pending_.push_back(Pending{id, tmp, false, true});
  pending_ids_.insert(id);
  return {};
}

Result<ObjectId> ObjectStore::Batch::put_bytes(std::string_view data) {
  if (!lock_) return std::unexpected(lock_.error());
  ObjectId id = ObjectId::of(data);
  if (present(id, data.size())) return id;
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

// Links the inode open at `src` into tmp/ (through /proc, so that the very file that was
// hashed is linked, not whatever a name points to now). False: not possible here (another
// file system, a file already unlinked, protected hard links): copy instead.
Result<bool> ObjectStore::Batch::link_tmp(int src, const ObjectId& id, const std::string& what) {
  std::string tmp = unique_tmp_name();
  std::string proc = "/proc/self/fd/" + std::to_string(src);
  if (store_->sys_->linkat(AT_FDCWD, proc.c_str(), store_->root_fd(), tmp.c_str(),
                           AT_SYMLINK_FOLLOW) == 0) {
    pending_.push_back(Pending{id, tmp, true, false});
    pending_ids_.insert(id);
    return true;
  }
  if (errno == EXDEV || errno == EPERM || errno == ENOENT) return false;
  return fail_errno("linkat(" + what + " -> " + tmp + ")");
}

Result<ObjectId> ObjectStore::Batch::put_fd(int src, const ObjectId* known_id,
                                            const std::string& what, PutOptions options) {
  if (!lock_) return std::unexpected(lock_.error());
  Sys& sys = *store_->sys_;
  ObjectId id;
  std::optional<uint64_t> size;  // of the content hashed (not of the source as it is now)
  if (known_id != nullptr) {
    id = *known_id;
  } else {
    auto hashed = hash_fd(sys, src, what);
    if (!hashed) return std::unexpected(hashed.error());
    id = hashed->first;
    size = hashed->second;
  }
  if (present(id, size)) return id;
  if (options.link) {
    auto linked = link_tmp(src, id, what);
    if (!linked) return std::unexpected(linked.error());
    if (*linked) return id;
  }

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
  // The id was taken from the source, which its owner may be writing to meanwhile: the
  // copy (which only the store's owner can change) is what must match it. Just written, it
  // is read back from the page cache.
  auto copied = hash_fd(sys, fd.get(), *tmp);
  if (!copied) return cleanup_fail(copied.error());
  if (copied->first != id)
    return cleanup_fail(make_error(EAGAIN, "read(" + what + "): changed while being imported"));
  if (auto st = finish_tmp(std::move(fd), *tmp, id); !st) return std::unexpected(st.error());
  return id;
}

Result<ObjectId> ObjectStore::Batch::put_at(int dirfd, const char* name, PutOptions options,
                                            const ObjectId* known_id) {
  if (!lock_) return std::unexpected(lock_.error());
  std::string what = name;
  UniqueFd src(store_->sys_->openat(dirfd, name, O_RDONLY | O_NOFOLLOW, 0));
  if (!src) return fail_errno("openat(" + what + ")");
  return put_fd(src.get(), known_id, what, options);
}

Status ObjectStore::Batch::commit() {
  if (!lock_) return std::unexpected(lock_.error());
  Sys& sys = *store_->sys_;
  auto fail_all = [&](Error e) -> Status {
    abort();
    return std::unexpected(std::move(e));
  };
  // Durability first (a linked source's data as much as a copy's): one fsync for a single
  // object, one syncfs for many.
  if (pending_.size() == 1) {
    UniqueFd fd(sys.openat(store_->root_fd(), pending_[0].tmp.c_str(), O_RDONLY | O_NOFOLLOW, 0));
    if (!fd || sys.fsync(fd.get()) < 0)
      return fail_all(errno_error("fsync(" + pending_[0].tmp + ")"));
  } else if (!pending_.empty()) {
    if (sys.syncfs(store_->root_fd()) < 0) return fail_all(errno_error("syncfs(store)"));
  }
  // A rename replaces a corrupt copy of the same id in one step.
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
  if (!pending_.empty() && sys.syncfs(store_->root_fd()) < 0)
    return fail_all(errno_error("syncfs(store)"));
  {
    std::lock_guard lock(store_->shared_->mutex);
    for (const Pending& p : pending_) {
      // A copy was hashed as written; a linked source is its owner's and is checked when
      // first served.
      if (p.checked)
        store_->shared_->verdicts[p.id] =
            Shared::Verdict{.good = true, .dev = 0, .ino = 0, .actual = {}};
      else
        store_->shared_->verdicts.erase(p.id);
    }
  }
  pending_.clear();
  pending_ids_.clear();
  return {};
}

Status ObjectStore::ensure_fanout(const ObjectId& id) {
  std::string fan = fanout_dir(id);
  if (sys_->mkdirat(root_fd(), fan.c_str(), kDirMode) < 0 && errno != EEXIST)
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
  // Shared: a gc that already listed trees/ must not be deleting this tree's objects now.
  auto lock = lock_shared();
  if (!lock) return std::unexpected(lock.error());
  std::string rel = "trees/" + tree_id.hex();
  UniqueFd fd(sys_->openat(root_fd(), rel.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW, 0600));
  if (!fd) return fail_errno("openat(" + rel + ")");
  if (!sync) return {};
  UniqueFd dir(sys_->openat(root_fd(), "trees", O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0));
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

namespace {

// The trees a live process pins; removes the pin files of processes that are gone.
Status read_pins(int root_fd, std::vector<ObjectId>& out, GcReport& report) {
  return for_each_name(root_fd, "pins", [&](const std::string& name) -> Status {
    std::string rel = "pins/" + name;
    UniqueFd fd(::openat(root_fd, rel.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT) return {};
      return fail_errno("open(" + rel + ")");
    }
    if (flock_retry(fd.get(), LOCK_SH | LOCK_NB) == 0) {
      // Nobody holds it: its process is gone (or closed the store).
      ::unlinkat(root_fd, rel.c_str(), 0);
      ++report.stale_pins;
      return {};
    }
    if (errno != EWOULDBLOCK) return fail_errno("flock(" + rel + ")");
    std::string text;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail_errno("read(" + rel + ")");
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
    }
    for (size_t pos = 0; pos < text.size();) {
      size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      if (auto id = ObjectId::parse_hex(std::string_view(text).substr(pos, nl - pos)))
        out.push_back(*id);
      pos = nl + 1;
    }
    return {};
  });
}

}  // namespace

Result<GcReport> ObjectStore::gc(const GcOptions& options) {
  // Exclusive: no writer has objects out that no root or pin names yet, and none starts
  // until this gc is done.
  auto lock = lock_exclusive(options.lock_wait, options.on_wait);
  if (!lock) return std::unexpected(lock.error());
  GcReport report;
  auto roots = tree_roots();
  if (!roots) return std::unexpected(roots.error());
  std::vector<ObjectId> pinned;
  if (auto st = read_pins(root_fd(), pinned, report); !st) return std::unexpected(st.error());
  report.roots = roots->size();
  report.pinned = pinned.size();

  IdSet live;
  auto keep_tree = [&](const ObjectId& tree_id, bool is_pin) {
    if (!live.insert(tree_id).second) return;
    auto tree = Tree::load(*this, tree_id);
    if (!tree) {
      // What it referenced is unknown: nothing is kept on its behalf, everything else is.
      std::string reason = tree.error().code == ENOENT ? "missing" : tree.error().message();
      log()->info("gc: {} {} cannot be read ({}): its objects are not kept",
                  is_pin ? "pinned tree" : "tree root", tree_id.hex(), reason);
      report.dangling.push_back(DanglingRoot{tree_id, is_pin, reason});
      return;
    }
    for (size_t i = 0; i < tree->size(); ++i) {
      EntryRef e = tree->entry(i);
      if (e.type() == EntryType::file) live.insert(e.object());
    }
  };
  for (const ObjectId& id : *roots) keep_tree(id, false);
  for (const ObjectId& id : pinned) keep_tree(id, true);

  auto st = for_each_object(
      root_fd(),
      [&](const ObjectId& id, const std::string& rel) -> Status {
        if (live.contains(id)) {
          ++report.kept;
          return {};
        }
        struct stat sb;
        uint64_t size =
            ::fstatat(root_fd(), rel.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 ? sb.st_size : 0;
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
