// The node table: ids handed to the kernel and their lookup counts.
#include "overlay/node_table.h"

#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <new>

namespace livefs::overlay {

namespace {
std::atomic<size_t> g_fd_limit{1024};
std::atomic<size_t> g_fds_cached{0};
}  // namespace

void set_backing_fd_limit(size_t limit) { g_fd_limit = limit; }
size_t backing_fds_cached() { return g_fds_cached.load(); }

PackedStat PackedStat::pack(const struct stat& st) {
  PackedStat p;
  p.ino = st.st_ino;
  p.size = static_cast<uint64_t>(st.st_size);
  p.blocks = static_cast<uint64_t>(st.st_blocks);
  p.rdev = st.st_rdev;
  p.atime = st.st_atim.tv_sec;
  p.mtime = st.st_mtim.tv_sec;
  p.ctime = st.st_ctim.tv_sec;
  p.atime_ns = static_cast<uint32_t>(st.st_atim.tv_nsec);
  p.mtime_ns = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  p.ctime_ns = static_cast<uint32_t>(st.st_ctim.tv_nsec);
  p.mode = st.st_mode;
  // FUSE carries 32 bits of link count.
  p.nlink = st.st_nlink > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(st.st_nlink);
  p.uid = st.st_uid;
  p.gid = st.st_gid;
  p.blksize = static_cast<uint32_t>(st.st_blksize);
  return p;
}

struct stat PackedStat::unpack() const {
  struct stat st {};
  st.st_ino = ino;
  st.st_size = static_cast<off_t>(size);
  st.st_blocks = static_cast<blkcnt_t>(blocks);
  st.st_rdev = rdev;
  st.st_atim = {atime, atime_ns};
  st.st_mtim = {mtime, mtime_ns};
  st.st_ctim = {ctime, ctime_ns};
  st.st_mode = mode;
  st.st_nlink = nlink;
  st.st_uid = uid;
  st.st_gid = gid;
  st.st_blksize = blksize;
  return st;
}

size_t NodeHashes::of_id(fuse_ino_t id) {
  // Ids are sequential: spread them over the table.
  uint64_t h = id * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h ^ (h >> 29));
}

size_t NodeHashes::of_key(std::string_view path, const Identity& identity) {
  uint64_t seed = XXH3_64bits(&identity, sizeof identity);
  return static_cast<uint32_t>(XXH3_64bits_withSeed(path.data(), path.size(), seed));
}

Node::Node(fuse_ino_t id, const Resolved& r, size_t key_hash)
    : id_(id),
      key_hash_(static_cast<uint32_t>(key_hash)),
      path_len_(static_cast<uint32_t>(r.path.size())),
      source_(r.source),
      identity_(r.identity),
      st_(PackedStat::pack(r.st)),
      entry_(r.entry) {
  std::memcpy(const_cast<char*>(path_data()), r.path.data(), r.path.size());
}

Node* Node::make(fuse_ino_t id, const Resolved& r, size_t key_hash) {
  static_assert(alignof(Node) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__);
  if (r.path.size() > UINT32_MAX) throw std::length_error("node path");
  void* mem = ::operator new(sizeof(Node) + r.path.size());
  try {
    return new (mem) Node(id, r, key_hash);
  } catch (...) {
    ::operator delete(mem);
    throw;
  }
}

Node::~Node() {
  int fd = backing_fd_.load();
  if (fd >= 0) {
    ::close(fd);
    g_fds_cached.fetch_sub(1);
  }
}

void Node::unref() const {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  Node* self = const_cast<Node*>(this);
  self->~Node();
  ::operator delete(static_cast<void*>(self));
}

Resolved Node::snapshot() const {
  Resolved r;
  r.source = source_;
  r.path.assign(path());
  r.st = st_.unpack();
  r.entry = entry_;
  r.identity = identity_;
  return r;
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
  Node* node = Node::make(FUSE_ROOT_ID, root, NodeHashes::of_key(root.path, root.identity));
  by_id_.insert(node);
  by_key_.insert(node);
}

NodeTable::~NodeTable() {
  by_id_.for_each([](Node* n) { n->unref(); });
}

Node* NodeTable::find_key(std::string_view path, const Identity& identity, size_t hash) const {
  auto key_hash = static_cast<uint32_t>(hash);
  return by_key_.find(hash, [&](const Node* n) {
    return n->key_hash_ == key_hash && n->identity_ == identity && n->path() == path;
  });
}

fuse_ino_t NodeTable::acquire(const Resolved& r) {
  size_t hash = NodeHashes::of_key(r.path, r.identity);
  std::lock_guard lock(mutex_);
  if (Node* node = find_key(r.path, r.identity, hash)) {
    ++node->lookups;
    return node->id_;
  }
  Node* node = Node::make(next_id_, r, hash);
  try {
    by_id_.insert(node);
    try {
      by_key_.insert(node);
    } catch (...) {
      by_id_.erase(node);
      throw;
    }
  } catch (...) {
    node->unref();
    throw;
  }
  return next_id_++;
}

int NodeTable::forget(fuse_ino_t id, uint64_t n) {
  Node* freed = nullptr;
  {
    std::lock_guard lock(mutex_);
    Node* node = by_id_.find(NodeHashes::of_id(id), [&](const Node* p) { return p->id_ == id; });
    if (node == nullptr) return 0;
    node->lookups = n >= node->lookups ? 0 : node->lookups - n;
    if (node->lookups == 0 && id != FUSE_ROOT_ID) {
      by_key_.erase(node);
      by_id_.erase(node);
      freed = node;
    }
  }
  if (freed == nullptr) return 0;
  // The kernel has dropped the inode, so no open of it can come; -1 also stops a (buggy)
  // late one from adopting an id nobody would release.
  int backing_id = freed->backing_id_.exchange(-1, std::memory_order_acq_rel);
  // Outside the lock: closing a backing descriptor may take a while.
  freed->unref();
  return backing_id > 0 ? backing_id : 0;
}

NodeRef NodeTable::get(fuse_ino_t id) const {
  std::lock_guard lock(mutex_);
  Node* node = by_id_.find(NodeHashes::of_id(id), [&](const Node* p) { return p->id_ == id; });
  return node == nullptr ? NodeRef() : NodeRef(node);
}

NodeRef NodeTable::find(const Resolved& r) const {
  size_t hash = NodeHashes::of_key(r.path, r.identity);
  std::lock_guard lock(mutex_);
  Node* node = find_key(r.path, r.identity, hash);
  return node == nullptr ? NodeRef() : NodeRef(node);
}

fuse_ino_t NodeTable::dir_at(std::string_view path) const {
  Identity dir = Identity::dir();
  size_t hash = NodeHashes::of_key(path, dir);
  std::lock_guard lock(mutex_);
  Node* node = find_key(path, dir, hash);
  return node == nullptr ? 0 : node->id_;
}

size_t NodeTable::size() const {
  std::lock_guard lock(mutex_);
  return by_id_.size();
}

}  // namespace livefs::overlay
