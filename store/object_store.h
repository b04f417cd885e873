// The content-addressed object cache on disk: objects/ab/cdef… named by XXH3-128,
// written once (temp file, fsync, link into place), read-only (0444) thereafter, in
// directories only the store's owner can enter (0700).
// Tree manifests are objects too; the ones to keep are listed under trees/ (durable roots)
// and in pins/ (trees a running process still serves).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/error.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "store/object_id.h"

namespace livefs::store {

using IdSet = std::unordered_set<ObjectId, ObjectIdHash>;

struct StoreStats {
  uint64_t objects = 0;
  uint64_t bytes = 0;  // sum of object sizes
  uint64_t trees = 0;  // entries under trees/
};

struct VerifyProblem {
  std::string path;    // relative to the store, e.g. objects/ab/cdef…
  std::string reason;  // "content hashes to <hex>", "not read-only", "unreadable: EIO", ...
};

struct VerifyReport {
  uint64_t checked = 0;
  std::vector<VerifyProblem> problems;
  bool ok() const { return problems.empty(); }
};

// A tree gc was told to keep but could not read: its objects are not known, so they are
// not kept on its behalf (the tree object itself is, if it exists).
struct DanglingRoot {
  ObjectId tree;
  bool pinned = false;  // named by a pin (else by trees/)
  std::string reason;   // "missing", "corrupt object (content hashes to …)", ...
};

struct GcReport {
  uint64_t kept = 0;
  uint64_t removed = 0;
  uint64_t bytes_freed = 0;
  uint64_t roots = 0;       // trees kept for trees/
  uint64_t pinned = 0;      // trees kept for a live process's pin
  uint64_t stale_pins = 0;  // pin files of processes that are gone, removed
  std::vector<DanglingRoot> dangling;
};

struct GcOptions {
  // How long gc waits for writers (an import, a daemon's batch) to let go of the store
  // lock before it gives up with EBUSY.
  std::chrono::milliseconds lock_wait{std::chrono::seconds(30)};
  // Called once when gc has to wait for the lock (to say so on a terminal).
  std::function<void()> on_wait;
};

// A flock on the store's lock file, released when destroyed (move-only). Shared: a writer
// that has published objects no root or pin references yet. Exclusive: gc.
class StoreLock {
 public:
  StoreLock() = default;
  bool held() const { return fd_.valid(); }

 private:
  friend class ObjectStore;
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

struct PutOptions {
  // Import by hard link when the source is on the store's file system (the source must be
  // immutable for as long as the store lives; its mode is left as it is). Falls back to a
  // copy across file systems. Like a copy, the link is made durable before its name
  // appears under objects/.
  bool link = false;
};

class ObjectStore {
 public:
  // Opens (creating if missing, 0700) a store rooted at `dir`. `sys` is the syscall seam
  // used on the write path; it must outlive the store. EPERM when `dir` is owned by another
  // user than the effective one or writable by group or others (anyone who can write
  // there can swap objects under the daemon); a store of ours that others can read (an
  // older livefs made it 0755) is tightened to 0700, with a log line.
  static Result<ObjectStore> open(const std::filesystem::path& dir, Sys& sys = Sys::real());

  ObjectStore(ObjectStore&&) noexcept = default;
  ObjectStore& operator=(ObjectStore&&) noexcept = default;

  const std::filesystem::path& root() const { return root_; }
  int root_fd() const { return root_fd_.get(); }

  // Stores content; returns its id. Deduplicated: content already present is not written.
  Result<ObjectId> put_bytes(std::span<const std::byte> data);
  Result<ObjectId> put_bytes(std::string_view data);
  // Reads `fd` (a regular file, from offset 0) to its end.
  Result<ObjectId> put_fd(int fd);
  Result<ObjectId> put_path(const std::filesystem::path& path, PutOptions options = {});
  // As put_path for a file named relative to `dirfd` (the importer's fast path). When the
  // caller already knows the id (it hashed the file), pass it to skip the second hash.
  Result<ObjectId> put_at(int dirfd, const char* name, PutOptions options = {},
                          const ObjectId* known_id = nullptr);

  bool has(const ObjectId& id) const;
  // Opens an object read-only, unchecked. ENOENT if absent.
  Result<UniqueFd> open_object(const ObjectId& id) const;
  // Opens an object to serve it: the first open in this process hashes it, and the verdict
  // is kept (one hash per object, not per open; concurrent first opens wait for one hash).
  // A mismatch is EIO "objects/ab/…: corrupt object (content hashes to …)", logged once,
  // with `served_as` (the path it is served at) in the log line. Thread-safe.
  Result<UniqueFd> open_verified(const ObjectId& id, std::string_view served_as = {}) const;
  // Reads a whole (small) object, checking its hash: EIO "corrupt object" on mismatch.
  Result<std::string> read_verified(const ObjectId& id) const;
  // "objects/ab/cdef…" relative to root().
  static std::string relative_path(const ObjectId& id);

  // Trees to keep: gc keeps these and every object they reference.
  // `sync`: fsync the trees/ directory; a caller that makes the store durable afterwards
  // anyway (a Batch's syncfs) passes false. Takes the store lock shared while it writes.
  Status add_tree_root(const ObjectId& tree_id, bool sync = true);
  Status remove_tree_root(const ObjectId& tree_id);
  Result<std::vector<ObjectId>> tree_roots() const;

  // Keeps a tree (and what it references) from gc for as long as this process holds this
  // store open, durable root or not: a daemon pins a layer it no longer roots while the
  // kernel may still read its files. The pins live in a file under pins/ that this process
  // holds a lock on; gc honours the pins of processes that still hold theirs and removes
  // the files of processes that are gone. Pins are counted: unpin undoes one pin.
  Status pin(const ObjectId& tree_id);
  Status unpin(const ObjectId& tree_id);

  // The store lock (a flock on STORE/lock). Shared: writers, from their first put until
  // what they published is referenced by a tree root or a pin (a Batch holds it for its
  // whole life; add_tree_root and pin while they write); waits while gc runs. Exclusive:
  // gc; EBUSY after `wait` (`on_wait` is called once if it has to wait at all).
  Result<StoreLock> lock_shared() const;
  Result<StoreLock> lock_exclusive(std::chrono::milliseconds wait,
                                   const std::function<void()>& on_wait = {}) const;

  // Many puts with one flush: objects put through a Batch are written to tmp/ without an
  // fsync each, and commit() makes them all durable with one syncfs before renaming them
  // into objects/ — so nothing partial is ever published. A Batch destroyed or aborted
  // before commit() removes its temporary files; none of its objects appear.
  // A Batch holds the store lock shared for its whole life (waiting, when it is made, for
  // a running gc): root or pin what it published before it is destroyed, and gc cannot
  // remove those objects in between. An object already present is only deduplicated
  // against after it was checked (see sound()); a corrupt copy is replaced.
  class Batch {
   public:
    explicit Batch(ObjectStore& store);
    const ObjectStore& store() const { return *store_; }
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    Result<ObjectId> put_bytes(std::string_view data);
    // Stores the regular file open at `fd` (read from offset 0, whatever its position).
    // `what` names the source in errors. With `known_id` (the caller hashed `fd`), the copy
    // is checked against it: EAGAIN "changed while being imported" if the source changed
    // in between. options.link links `fd`'s own inode (not a name that could be swapped).
    Result<ObjectId> put_fd(int fd, const ObjectId* known_id, const std::string& what,
                            PutOptions options = {});
    // As put_fd for `name` in `dirfd`, opened without following a symlink.
    Result<ObjectId> put_at(int dirfd, const char* name, PutOptions options = {},
                            const ObjectId* known_id = nullptr);
    Status commit();
    void abort();
    size_t pending() const { return pending_.size(); }

   private:
    struct Pending {
      ObjectId id;
      std::string tmp;       // relative to the store root
      bool linked = false;   // the source's own inode (its mode is kept)
      bool checked = false;  // its content was hashed from the temporary file itself
    };
    Result<std::string> create_tmp(UniqueFd& fd);
    Status finish_tmp(UniqueFd fd, const std::string& tmp, const ObjectId& id);
    Result<bool> link_tmp(int src, const ObjectId& id, const std::string& what);
    // Whether a put of `id` (of `size` bytes) can be skipped: pending here, or present and
    // sound in the store.
    bool present(const ObjectId& id, std::optional<uint64_t> size);

    ObjectStore* store_;
    Result<StoreLock> lock_;
    std::vector<Pending> pending_;
    IdSet pending_ids_;
  };

  Result<StoreStats> stats() const;
  // Rehashes every object; reports each mismatch and each object that is not 0444 (objects
  // imported with --link are exempt from the mode check; they keep their source's mode).
  Result<VerifyReport> verify() const;
  // Under the exclusive store lock: keeps every tree rooted under trees/ or pinned by a
  // live process, and every object they reference; removes every other object, the pin
  // files of processes that are gone, and stale temporary files. A root or pin whose tree
  // is missing or unreadable is reported in `dangling` and does not stop the rest.
  Result<GcReport> gc(const GcOptions& options = {});

  // Whether `id` is present and intact, for deduplicating against it: a present object
  // this process has not verified yet is checked (its size when the caller knows the
  // content's, then its hash) and the verdict kept. False for a corrupt copy (logged),
  // which the caller then replaces.
  bool sound(const ObjectId& id, std::optional<uint64_t> size) const;

 private:
  struct Shared;
  ObjectStore() = default;
  Status ensure_fanout(const ObjectId& id);
  Status tighten(const std::string& name, const struct stat& st);
  // Hashes (once per process) the object open at `fd`; true when it matches `id`.
  // Unreadable: the read error.
  Result<bool> verified(const ObjectId& id, int fd, const struct stat& st,
                        std::string_view served_as) const;
  void record_good(const ObjectId& id) const;
  Status write_pins();

  std::filesystem::path root_;
  UniqueFd root_fd_;
  Sys* sys_ = nullptr;
  // Verdicts and pins: shared by copies of the handle's users (a View holds the store by
  // a shared_ptr to const), and kept apart so that the store stays movable.
  std::shared_ptr<Shared> shared_;
};

}  // namespace livefs::store
