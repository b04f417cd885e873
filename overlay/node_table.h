// FUSE node ids and what each stands for: (path, identity) with an exact lookup count.
// Directories keep one node per path across generations (identity "d"); any other entry
// gets a new node when its content identity changes, and a node keeps the Resolved
// snapshot it was made from, so a file looked up or opened before a switch keeps serving
// the content it had.
//
// Lookup counting (the libfuse contract): every reply that hands the kernel a node —
// lookup's fuse_reply_entry, each readdirplus entry with a non-zero ino — adds one; forget
// and forget_multi subtract what the kernel says; a node is freed at zero. The root is never
// freed.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "overlay/view.h"

namespace livefs::overlay {

struct Node {
  Node(fuse_ino_t node_id, Resolved r) : id(node_id), snapshot(std::move(r)) {}
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The descriptor reads of this node are spliced from, opened on the first read and kept
  // until the node is freed (with no-open support the kernel sends no open/release, so a
  // warm `cat` of a cached file is one in-kernel operation). -1 until opened; when too many
  // are cached (see set_backing_fd_limit), reads use a descriptor of their own instead.
  // Returns the cached descriptor, or -1 when `fd` was not adopted (the caller keeps it).
  int adopt_backing_fd(int fd) const;
  int backing_fd() const { return backing_fd_.load(std::memory_order_acquire); }

  const fuse_ino_t id;
  const Resolved snapshot;
  uint64_t lookups = 1;  // guarded by NodeTable::mutex_

 private:
  mutable std::atomic<int> backing_fd_{-1};
};

// How many backing descriptors nodes may keep open in all (the rest of the process's
// descriptor limit is left for everything else).
void set_backing_fd_limit(size_t limit);
size_t backing_fds_cached();

class NodeTable {
 public:
  explicit NodeTable(Resolved root);

  // Finds or creates the node for `r` and adds one lookup; returns its id.
  fuse_ino_t acquire(const Resolved& r);
  // Subtracts `n` lookups; frees the node at zero (never the root).
  void forget(fuse_ino_t id, uint64_t n);
  // The node, or null when the id is unknown (a kernel bug or a stale id).
  std::shared_ptr<const Node> get(fuse_ino_t id) const;
  // The node standing for `r`'s (path, identity), if the kernel holds one; counts no lookup.
  std::shared_ptr<const Node> find(const Resolved& r) const;
  // The directory node at `path`, if the kernel holds one (0 otherwise).
  fuse_ino_t dir_at(const std::string& path) const;
  size_t size() const;

 private:
  static std::string key(const std::string& path, const std::string& identity) {
    return path + '\0' + identity;
  }

  mutable std::mutex mutex_;  // guards everything below; never held across a FUSE reply
  std::unordered_map<fuse_ino_t, std::shared_ptr<Node>> by_id_;
  std::unordered_map<std::string, fuse_ino_t> by_key_;
  fuse_ino_t next_id_ = FUSE_ROOT_ID + 1;
};

}  // namespace livefs::overlay
