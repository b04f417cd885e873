// The node table: ids handed to the kernel and their lookup counts.
#include "overlay/node_table.h"

namespace livefs::overlay {

NodeTable::NodeTable(Resolved root) {
  auto node = std::make_shared<Node>(Node{FUSE_ROOT_ID, std::move(root), 1});
  by_key_.emplace(key(node->snapshot.path, node->snapshot.identity), FUSE_ROOT_ID);
  by_id_.emplace(FUSE_ROOT_ID, std::move(node));
}

fuse_ino_t NodeTable::acquire(const Resolved& r) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = by_key_.try_emplace(key(r.path, r.identity), next_id_);
  if (inserted) {
    by_id_.emplace(next_id_, std::make_shared<Node>(Node{next_id_, r, 1}));
    return next_id_++;
  }
  ++by_id_.at(it->second)->lookups;
  return it->second;
}

void NodeTable::forget(fuse_ino_t id, uint64_t n) {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  Node& node = *it->second;
  node.lookups = n >= node.lookups ? 0 : node.lookups - n;
  if (node.lookups == 0 && id != FUSE_ROOT_ID) {
    by_key_.erase(key(node.snapshot.path, node.snapshot.identity));
    by_id_.erase(it);
  }
}

std::shared_ptr<const Node> NodeTable::get(fuse_ino_t id) const {
  std::lock_guard lock(mutex_);
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

fuse_ino_t NodeTable::dir_at(const std::string& path) const {
  std::lock_guard lock(mutex_);
  auto it = by_key_.find(key(path, "d"));
  return it == by_key_.end() ? 0 : it->second;
}

size_t NodeTable::size() const {
  std::lock_guard lock(mutex_);
  return by_id_.size();
}

}  // namespace livefs::overlay
