// The content-addressed object cache on disk: objects/ab/cdef… named by XXH3-128,
// written once (temp file, fsync, link into place), read-only (0444) thereafter.
// Tree manifests are objects too; the ones to keep are listed under trees/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
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

struct GcReport {
  uint64_t kept = 0;
  uint64_t removed = 0;
  uint64_t bytes_freed = 0;
};

struct PutOptions {
  // Import by hard link when the source is on the store's file system (the source must be
  // immutable for as long as the store lives; its mode is left as it is). Falls back to a
  // copy across file systems.
  bool link = false;
};

class ObjectStore {
 public:
  // Opens (creating if missing) a store rooted at `dir`. `sys` is the syscall seam used on
  // the write path; it must outlive the store.
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
  // Opens an object read-only. ENOENT if absent.
  Result<UniqueFd> open_object(const ObjectId& id) const;
  // Reads a whole (small) object, checking its hash: EIO "corrupt object" on mismatch.
  Result<std::string> read_verified(const ObjectId& id) const;
  // "objects/ab/cdef…" relative to root().
  static std::string relative_path(const ObjectId& id);

  // Trees to keep: gc keeps these and every object they reference.
  // `sync`: fsync the trees/ directory; a caller that makes the store durable afterwards
  // anyway (a Batch's syncfs) passes false.
  Status add_tree_root(const ObjectId& tree_id, bool sync = true);
  Status remove_tree_root(const ObjectId& tree_id);
  Result<std::vector<ObjectId>> tree_roots() const;

  // Many puts with one flush: objects put through a Batch are written to tmp/ without an
  // fsync each, and commit() makes them all durable with one syncfs before renaming them
  // into objects/ — so nothing partial is ever published. A Batch destroyed or aborted
  // before commit() removes its temporary files; none of its objects appear.
  class Batch {
   public:
    explicit Batch(ObjectStore& store);
    const ObjectStore& store() const { return *store_; }
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    Result<ObjectId> put_bytes(std::string_view data);
    // `what` names the source in errors.
    Result<ObjectId> put_fd(int fd, const ObjectId* known_id, const std::string& what);
    Result<ObjectId> put_at(int dirfd, const char* name, PutOptions options = {},
                            const ObjectId* known_id = nullptr);
    Status commit();
    void abort();
    size_t pending() const { return pending_.size(); }

   private:
    struct Pending {
      ObjectId id;
      std::string tmp;  // relative to the store root
    };
    Result<std::string> create_tmp(UniqueFd& fd);
    Status finish_tmp(UniqueFd fd, const std::string& tmp, const ObjectId& id);

    ObjectStore* store_;
    std::vector<Pending> pending_;
    IdSet pending_ids_;
    std::vector<ObjectId> linked_;  // published by hard link; only need the final sync
  };

  Result<StoreStats> stats() const;
  // Rehashes every object; reports each mismatch and each object that is not 0444 (objects
  // imported with --link are exempt from the mode check; they keep their source's mode).
  Result<VerifyReport> verify() const;
  // Removes every object not in `live`, and stale temporary files.
  Result<GcReport> gc(const IdSet& live);

 private:
  ObjectStore() = default;
  Status ensure_fanout(const ObjectId& id);

  std::filesystem::path root_;
  UniqueFd root_fd_;
  Sys* sys_ = nullptr;
};

}  // namespace livefs::store
