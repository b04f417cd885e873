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

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "overlay/view.h"

namespace livefs::overlay {

struct Node {
  fuse_ino_t id;
  Resolved snapshot;  // immutable after creation
  uint64_t lookups;   // guarded by NodeTable::mutex_
};

class NodeTable {
 public:
  explicit NodeTable(Resolved root);

  // Finds or creates the node for `r` and adds one lookup; returns its id.
  fuse_ino_t acquire(const Resolved& r);
  // Subtracts `n` lookups; frees the node at zero (never the root).
  void forget(fuse_ino_t id, uint64_t n);
  // The node, or null when the id is unknown (a kernel bug or a stale id).
  std::shared_ptr<const Node> get(fuse_ino_t id) const;
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
