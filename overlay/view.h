// The merged view: an immutable snapshot of the booted tree (served from its directory by
// file descriptor) with one live layer on top (a Tree of what the live generation changed).
//
// How a path resolves, layer first:
//  - a whiteout at the path or at an ancestor: absent (ENOENT);
//  - a layer non-directory at an ancestor: absent (the booted subtree below it is hidden);
//  - an opaque layer directory at an ancestor: the booted tree below it is hidden;
//  - a layer entry at the path itself: served from the layer (files from store objects);
//  - otherwise: the booted tree, beneath the booted directory's descriptor, following no
//    symbolic link on the way: a booted path whose ancestor is a symlink (or not a
//    directory) is absent. A layer directory over a booted `lnk -> /etc` must not make
//    `lnk/shadow` the host's /etc/shadow.
// A non-opaque layer directory over a booted directory is merged with it (one listing) and
// keeps the booted directory's inode number. Its attributes (mode, owner, mtime, xattrs) are
// the layer entry's, so a metadata-only change of a directory goes live — unless the entry
// is structural (store/tree.h: a hotfix directory, a parent Tree::build added): then the
// booted directory's own are served. Where the booted tree has none, the layer entry's
// attributes are served either way.
// A layer file marked content_booted is read from the booted file at its path (a change of
// its metadata only), with the layer entry's attributes and a layer inode.
#pragma once

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::overlay {

// The booted directory, opened before mounting (so the mount may hide it) and shared by
// every View.
struct BootedDir {
  UniqueFd fd;  // O_PATH | O_DIRECTORY
};

enum class Source : uint8_t { booted, layer };

// Identity of what a path serves, for the node table: equal identity = same served object.
// Fixed-size (no allocation per resolve): every directory is one identity (its node
// outlives generations), a booted entry is its (st_dev, st_ino), a layer entry its digest.
struct Identity {
  enum class Kind : uint8_t { none, dir, booted, layer };
  Kind kind = Kind::none;
  std::array<uint8_t, 16> bytes{};
  static Identity dir() { return Identity{Kind::dir, {}}; }
  bool operator==(const Identity&) const = default;
};

// What a path is in one View.
struct Resolved {
  Source source = Source::booted;
  std::string path;   // relative; "" is the root
  struct stat st {};  // attributes as served (st_ino already the served inode number)
  // The layer entry, for layer sources (shared: snapshots are copied per request).
  std::shared_ptr<const store::Entry> entry;
  Identity identity;
  bool is_dir() const { return S_ISDIR(st.st_mode); }
};

struct DirEntry {
  std::string name;
  mode_t type;  // S_IFDIR etc.
  ino_t ino;    // as served
  // A name served from the booted tree (one the layer neither replaces nor hides):
  // readdirplus stats it relative to its cached parent directory, with no layer lookups.
  // Attributes are not kept here: listings are cached, and a stat per name would be most
  // of their size (readdirplus stats each name once either way).
  bool booted = false;
  // The readdir offset that resumes after this name: derived from the name alone (see
  // dir_cookie), so a resume point means the same in every generation's listing.
  uint64_t cookie = 0;
};

// A name's readdir cookie: 63 bits of its hash, never 0, 1 or 2 (the offsets of the start,
// "." and ".."). Listings are ordered by (cookie, name), so "the names after cookie C" is one
// set whatever else was added or removed between two readdir calls.
uint64_t dir_cookie(std::string_view name);

class View {
 public:
  static std::shared_ptr<const View> create(UniqueFd booted_dir,
                                            std::shared_ptr<const store::ObjectStore> store,
                                            store::Tree layer, uint64_t generation);
  // The same booted tree and store with another layer.
  std::shared_ptr<const View> with_layer(store::Tree layer, uint64_t generation) const;

  uint64_t generation() const { return generation_; }
  const store::Tree& layer() const { return layer_; }
  const std::shared_ptr<const store::ObjectStore>& store() const { return store_; }
  int booted_fd() const { return booted_->fd.get(); }

  Result<Resolved> resolve(std::string_view path) const;
  // resolve() of an entry of `dir_path`'s listing, from what the listing kept where it can.
  Result<Resolved> resolve_listed(std::string_view dir_path, const DirEntry& entry) const;
  // The merged listing of a directory (without "." and ".."), in cookie order.
  Result<std::vector<DirEntry>> list(const Resolved& dir) const;
  // The same, computed once per View and directory: a View never changes, so its listings
  // do not either (they are dropped with the View after a switch). The cache is bounded
  // (kListingCacheEntries names in all, so it does not grow with the tree): a listing read
  // chunk by chunk stays while it is read, the others are computed again when needed (the
  // kernel caches them meanwhile).
  Result<std::shared_ptr<const std::vector<DirEntry>>> cached_list(const Resolved& dir) const;
  static constexpr size_t kListingCacheEntries = 1 << 15;
  // The cached listing of the directory at `path`, or null: never reads the disk, and does
  // not count as a use (read-ahead asks before it reads a directory).
  std::shared_ptr<const std::vector<DirEntry>> cached_listing(std::string_view path) const;
  // Names held by the listing cache, and its bound (tests use a small one).
  size_t cached_listing_entries() const;
  void set_listing_cache_limit(size_t names) const;

  // Content and metadata of a resolved non-directory.
  Result<UniqueFd> open(const Resolved& r) const;
  Result<std::string> readlink(const Resolved& r) const;
  Result<std::vector<std::string>> xattr_names(const Resolved& r) const;
  Result<std::string> xattr(const Resolved& r, const std::string& name) const;

 private:
  View() = default;
  Result<Resolved> resolve_booted(std::string_view path) const;
  // Opens `path` (relative; "" is the booted directory) beneath the booted directory with
  // openat2, following no symlink in any component (a trailing one is opened itself with
  // O_PATH | O_NOFOLLOW). A symlink met on the way is ELOOP.
  Result<UniqueFd> open_booted(std::string_view path, int flags) const;
  // The booted directory at `path` as an O_PATH descriptor opened by open_booted, kept for
  // the next lookups in it (a lookup is then one fstatat relative to its parent).
  Result<std::shared_ptr<const UniqueFd>> booted_dir(std::string_view path) const;
  // Opens the booted entry at `path` itself with `flags` | O_NOFOLLOW (O_PATH: a symlink
  // too), relative to its parent from booted_dir: nothing on the way is a followed symlink.
  Result<UniqueFd> open_booted_entry(std::string_view path, int flags) const;
  static Resolved from_layer(const store::EntryRef& e);

  std::shared_ptr<const BootedDir> booted_;
  std::shared_ptr<const store::ObjectStore> store_;
  store::Tree layer_;
  uint64_t generation_ = 0;
  struct CachedListing {
    std::shared_ptr<const std::vector<DirEntry>> entries;
    bool used = true;  // since the last sweep
  };
  mutable std::mutex listings_mutex_;  // guards the two below
  mutable std::unordered_map<std::string, CachedListing> listings_;
  mutable size_t listed_entries_ = 0;  // names in listings_
  mutable size_t listing_cache_limit_ = kListingCacheEntries;
  // Like the listings, valid for the View's life (the booted tree does not change under it).
  // Bounded, so the descriptors stay few: when full, the entries not used since the last
  // sweep go (a tree walk keeps the ancestors it keeps coming back to).
  struct BootedDirFd {
    std::shared_ptr<const UniqueFd> fd;
    mutable std::atomic<bool> used{true};
  };
  struct PathHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::shared_mutex booted_dirs_mutex_;  // guards booted_dirs_ (not `used`: atomic)
  mutable std::unordered_map<std::string, BootedDirFd, PathHash, std::equal_to<>> booted_dirs_;
};

// "a/b" + "c" → "a/b/c"; "" + "c" → "c".
std::string join_path(std::string_view dir, std::string_view name);

}  // namespace livefs::overlay
