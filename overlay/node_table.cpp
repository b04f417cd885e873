// The node table: ids handed to the kernel and their lookup counts.
#include "overlay/node_table.h"

#include <unistd.h>

namespace livefs::overlay {

namespace {
std::atomic<size_t> g_fd_limit{1024};
std::atomic<size_t> g_fds_cached{0};
}  // namespace

void set_backing_fd_limit(size_t limit) { g_fd_limit = limit; }
size_t backing_fds_cached() { return g_fds_cached.load(); }

Node::~Node() {
  int fd = backing_fd_.load();
  if (fd >= 0) {
    ::close(fd);
    g_fds_cached.fetch_sub(1);
  }
}

int Node::adopt_backing_fd(int fd) const {
  if (g_fds_cached.fetch_add(1) >= g_fd_limit.load()) {
    g_fds_cached.fetch_sub(1);
    return -1;
  }
  int expected = -1;
  if (backing_fd_.compare_exchange_strong(expected, fd, std::memory_order_acq_rel)) return fd;
  // Another reader cached one first: use that one.
  g_fds_cached.fetch_sub(1);
  ::close(fd);
  return expected;
}

NodeTable::NodeTable(Resolved root) {
  auto node = std::make_shared<Node>(FUSE_ROOT_ID, std::move(root));
  by_key_.emplace(key(node->snapshot.path, node->snapshot.identity), FUSE_ROOT_ID);
  by_id_.emplace(FUSE_ROOT_ID, std::move(node));
}

fuse_ino_t NodeTable::acquire(const Resolved& r) {
  std::lock_guard lock(mutex_);
  auto [it, inserted] = by_key_.try_emplace(key(r.path, r.identity), next_id_);
  if (inserted) {
    by_id_.emplace(next_id_, std::make_shared<Node>(next_id_, r));
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

std::shared_ptr<const Node> NodeTable::find(const Resolved& r) const {
  std::string k = key(r.path, r.identity);
  std::lock_guard lock(mutex_);
  auto it = by_key_.find(k);
  return it == by_key_.end() ? nullptr : by_id_.at(it->second);
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
