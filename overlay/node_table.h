// FUSE node ids and what each stands for: (path, identity) with an exact lookup count.
// Directories keep one node per path across generations (identity "dir"); any other entry
// gets a new node when its content identity changes, and a node keeps the Resolved
// snapshot it was made from, so a file looked up or opened before a switch keeps serving
// the content it had.
//
// Lookup counting (the libfuse contract): every reply that hands the kernel a node —
// lookup's fuse_reply_entry, each readdirplus entry with a non-zero ino — adds one; forget
// and forget_multi subtract what the kernel says; a node is freed at zero. The root is never
// freed.
//
// Memory: the kernel may hold a node for every entry of the tree (a `find` over a 157k-entry
// /usr), so a node is one allocation of about 170 bytes plus its path: the snapshot is kept
// packed (the attributes FUSE serves, the identity, the layer entry only for layer nodes)
// and unpacked per request, and the two indexes (by id, by path and identity) are
// open-addressing tables of pointers (see node_index.h), about 24 bytes per node together.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "overlay/node_index.h"
#include "overlay/view.h"

namespace livefs::overlay {

class NodeRef;

// The attributes a FUSE reply carries (fuse_reply_attr sends no st_dev), packed: 88 bytes
// instead of struct stat's 144.
struct PackedStat {
  uint64_t ino = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;
  uint64_t rdev = 0;
  int64_t atime = 0, mtime = 0, ctime = 0;
  uint32_t atime_ns = 0, mtime_ns = 0, ctime_ns = 0;
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t blksize = 0;

  static PackedStat pack(const struct stat& st);
  struct stat unpack() const;
};

class Node {
 public:
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  fuse_ino_t id() const { return id_; }
  std::string_view path() const { return {path_data(), path_len_}; }
  bool is_dir() const { return S_ISDIR(st_.mode); }
  Source source() const { return source_; }
  const Identity& identity() const { return identity_; }
  // The attributes this node was made with (served as they are for non-directories).
  struct stat stat() const {
    return st_.unpack();
  }
  // The Resolved this node was made from (st_dev aside: FUSE does not serve it).
  Resolved snapshot() const;

  // The descriptor reads of this node are spliced from, opened on the first read and kept
  // until the node is freed (with no-open support the kernel sends no open/release, so a
  // warm `cat` of a cached file is one in-kernel operation). -1 until opened; when too many
  // are cached (see set_backing_fd_limit), reads use a descriptor of their own instead.
  // Returns the cached descriptor, or -1 when `fd` was not adopted (the caller keeps it).
  int adopt_backing_fd(int fd) const;
  int backing_fd() const { return backing_fd_.load(std::memory_order_acquire); }

  // FUSE passthrough: the backing id registered for this node's content (the kernel then
  // reads, splices and maps the backing file itself; see Filesystem). One per node, kept
  // until the kernel forgets the node: the kernel allows one backing file per inode, and a
  // node's content never changes. 0 until registered.
  int backing_id() const { return backing_id_.load(std::memory_order_acquire); }
  // Keeps `id` unless the node has one already or was forgotten; false: the caller closes
  // `id` and uses backing_id() (when positive).
  bool adopt_backing_id(int id) const {
    int expected = 0;
    return backing_id_.compare_exchange_strong(expected, id, std::memory_order_acq_rel);
  }

  // A switch replaced or removed this version at its path, and the kernel was told it is
  // deleted (link count 0). A later switch may serve it there again (a rollback): the flag
  // only says "check the current view before serving the link count", it is never cleared.
  bool maybe_retired() const { return retired_.load(std::memory_order_acquire); }
  void mark_retired() const { retired_.store(true, std::memory_order_release); }

  uint64_t lookups = 1;  // guarded by NodeTable::mutex_

 private:
  friend class NodeTable;
  friend class NodeRef;
  friend struct NodeHashes;
  Node(fuse_ino_t id, const Resolved& r, size_t key_hash);
  ~Node();
  // One allocation: the node, then its path's bytes.
  static Node* make(fuse_ino_t id, const Resolved& r, size_t key_hash);
  void ref() const { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() const;
  const char* path_data() const { return reinterpret_cast<const char*>(this + 1); }

  mutable std::atomic<uint32_t> refs_{1};
  mutable std::atomic<int> backing_fd_{-1};
  // -1: none will be adopted (forgotten, or the kernel refused passthrough for it).
  mutable std::atomic<int> backing_id_{0};
  mutable std::atomic<bool> retired_{false};  // in the padding before id_
  const fuse_ino_t id_;
  const uint32_t key_hash_;  // of (path, identity): the by-key index's hash
  const uint32_t path_len_;
  const Source source_;
  const Identity identity_;
  const PackedStat st_;
  const std::shared_ptr<const store::Entry> entry_;  // layer nodes only
};

// A counted reference to a node: the node stays valid while a request holds one, even when
// forgotten meanwhile (a read holds it until its spliced reply is sent).
class NodeRef {
 public:
  NodeRef() = default;
  NodeRef(const NodeRef& o) : node_(o.node_) {
    if (node_ != nullptr) node_->ref();
  }
  NodeRef(NodeRef&& o) noexcept : node_(std::exchange(o.node_, nullptr)) {}
  NodeRef& operator=(NodeRef o) noexcept {
    std::swap(node_, o.node_);
    return *this;
  }
  ~NodeRef() {
    if (node_ != nullptr) node_->unref();
  }
  const Node* get() const { return node_; }
  const Node* operator->() const { return node_; }
  const Node& operator*() const { return *node_; }
  explicit operator bool() const { return node_ != nullptr; }
  bool operator==(std::nullptr_t) const { return node_ == nullptr; }

 private:
  friend class NodeTable;
  explicit NodeRef(const Node* node) : node_(node) { node_->ref(); }
  const Node* node_ = nullptr;
};

// How many backing descriptors nodes may keep open in all (the rest of the process's
// descriptor limit is left for everything else).
void set_backing_fd_limit(size_t limit);
size_t backing_fds_cached();

struct NodeHashes {
  static size_t of_id(fuse_ino_t id);
  static size_t of_key(std::string_view path, const Identity& identity);
  struct ById {
    size_t operator()(const Node* n) const { return of_id(n->id_); }
  };
  struct ByKey {
    size_t operator()(const Node* n) const { return n->key_hash_; }
  };
};

class NodeTable {
 public:
  explicit NodeTable(Resolved root);
  ~NodeTable();
  NodeTable(const NodeTable&) = delete;
  NodeTable& operator=(const NodeTable&) = delete;

  // Finds or creates the node for `r` and adds one lookup; returns its id.
  fuse_ino_t acquire(const Resolved& r);
  // Subtracts `n` lookups; frees the node at zero (never the root). Returns the passthrough
  // backing id the freed node had (the caller releases it), else 0.
  [[nodiscard]] int forget(fuse_ino_t id, uint64_t n);
  // The node, or null when the id is unknown (a kernel bug or a stale id).
  NodeRef get(fuse_ino_t id) const;
  // The node standing for `r`'s (path, identity), if the kernel holds one; counts no lookup.
  NodeRef find(const Resolved& r) const;
  // The directory node at `path`, if the kernel holds one (0 otherwise).
  fuse_ino_t dir_at(std::string_view path) const;
  size_t size() const;

 private:
  Node* find_key(std::string_view path, const Identity& identity, size_t hash) const;

  mutable std::mutex mutex_;  // guards everything below; never held across a FUSE reply
  PtrIndex<Node, NodeHashes::ById> by_id_;    // every node (the table holds one reference)
  PtrIndex<Node, NodeHashes::ByKey> by_key_;  // the same nodes by (path, identity)
  fuse_ino_t next_id_ = FUSE_ROOT_ID + 1;
};

}  // namespace livefs::overlay
