// Tree manifests: the sorted list of every entry of a directory tree (path, type, mode,
// owner, size, mtime, rdev, symlink target, xattrs, object id), in a versioned binary
// format with a checksummed payload and per-directory digests. A loaded Tree is immutable
// and memory-mapped; entries are fixed-size records reached by index, strings are read in
// place, so loading costs one checksum pass and no parsing.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/object_id.h"

namespace livefs::store {

class ObjectStore;

enum class EntryType : uint8_t {
  file = 1,
  dir = 2,
  symlink = 3,
  chardev = 4,
  blockdev = 5,
  fifo = 6,
  socket = 7,
  // Only in a layer on top of another tree: the path is absent in the merged view.
  whiteout = 8,
};

const char* type_name(EntryType type);
// S_IFREG etc. for a type (0 for whiteout).
mode_t type_bits(EntryType type);

struct Xattr {
  std::string name;
  std::string value;
  auto operator<=>(const Xattr&) const = default;
};

// An entry as built by an importer or a layer builder (owned strings).
struct Entry {
  std::string path;  // relative, no leading or trailing '/', "" for the root
  EntryType type = EntryType::file;
  uint32_t mode = 0;  // permission and set-id/sticky bits only (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;  // files: content size; symlinks: target length
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t rdev = 0;
  uint32_t nlink = 1;       // hard links of a file within this tree
  uint32_t link_group = 0;  // files hard-linked together share a non-zero group
  // Layers: a directory that hides everything of the same path below it (a directory that
  // replaced a non-directory, or was removed and re-created).
  bool opaque = false;
  // Layers: a directory that only carries its children. Where the booted tree has a
  // directory at its path, the view shows that directory's own attributes, not this
  // entry's (a hotfix directory, the provisional root while the booted tree is read).
  bool structural = false;
  // Layers: a file whose content is the booted tree's file at the same path (a change of
  // its metadata only): the view reads the booted file, so the store never copies it.
  bool content_booted = false;
  std::string target;         // symlinks
  std::vector<Xattr> xattrs;  // sorted by name
  ObjectId object;            // files: content id; others: zero
};

// Component-wise path order: a directory is followed directly by all its descendants.
// ("a" < "a/b" < "a.b", unlike plain byte order where "a.b" < "a/b".)
bool path_less(std::string_view a, std::string_view b);
int path_compare(std::string_view a, std::string_view b);

class Tree;

// Read-only view of one record of a loaded Tree. Cheap to copy; valid while the Tree is.
class EntryRef {
 public:
  std::string_view path() const;
  std::string_view name() const;  // last component ("" for the root)
  EntryType type() const;
  uint32_t mode() const;
  uint32_t uid() const;
  uint32_t gid() const;
  uint64_t size() const;
  int64_t mtime_sec() const;
  uint32_t mtime_nsec() const;
  uint64_t rdev() const;
  uint32_t nlink() const;
  uint32_t link_group() const;
  bool opaque() const;
  bool structural() const;  // a version 1 tree: every non-opaque directory
  bool content_booted() const;
  std::string_view target() const;
  std::vector<Xattr> xattrs() const;
  std::optional<std::string> xattr(std::string_view name) const;
  const ObjectId& object() const;
  // Hash of this entry's metadata and content id; for a directory it also covers the
  // whole subtree (the directory digest), so equal digests mean equal subtrees.
  const ObjectId& digest() const;
  size_t index() const { return index_; }
  // Index of the parent directory's record (0 for the root's children; root: none).
  std::optional<size_t> parent() const;
  // One past the last descendant: [index()+1, subtree_end()) is the subtree.
  size_t subtree_end() const;
  Entry to_entry() const;

 private:
  friend class Tree;
  EntryRef(const Tree* tree, size_t index) : tree_(tree), index_(index) {}
  const Tree* tree_;
  size_t index_;
};

class Tree {
 public:
  // Parses a serialized manifest (bytes are kept alive by the Tree). Checks magic,
  // version, sizes and the payload checksum: EBADMSG with a clear context on any mismatch.
  static Result<Tree> parse(std::shared_ptr<const std::string> bytes);
  // mmaps a manifest file (checked in full, then its pages left to the page cache: a
  // loaded manifest costs the process memory only for what is queried). The file must not
  // be modified in place while loaded (write_file replaces it by a rename).
  static Result<Tree> load(const std::filesystem::path& path);
  // Reads a manifest stored as an object (and checks it hashes to `id`).
  static Result<Tree> load(const ObjectStore& store, const ObjectId& id);

  size_t size() const;  // number of entries, root included (a Tree always has a root)
  EntryRef entry(size_t index) const { return EntryRef(this, index); }
  EntryRef root() const { return entry(0); }
  std::optional<EntryRef> find(std::string_view path) const;  // O(log n)
  // Direct children of a directory entry, in path order.
  std::vector<EntryRef> children(size_t dir_index) const;
  std::optional<EntryRef> child(size_t dir_index, std::string_view name) const;

  // The format version it was written in. Version 1 left a directory's own mtime out of
  // its digest; a version 1 tree still loads and diffs right, only without skipping
  // directories whose digests were computed the other way.
  uint32_t version() const;
  // The root's digest as version 1 computed it (no directory's own mtime, no structural
  // flag), whatever version this tree is: what an earlier livefs named this tree by. O(n).
  ObjectId root_digest_v1() const;
  // The serialized form (what is stored; its ObjectId is the tree's id).
  std::string_view bytes() const;
  ObjectId id() const { return ObjectId::of(bytes()); }

  // Builds a Tree from entries in any order. Adds missing parent directories (0755,
  // root-owned, structural), computes parents, subtree ends, link counts and digests. EINVAL if two
  // entries have the same path or a path is malformed.
  static Result<Tree> build(std::vector<Entry> entries);
  // Stores the manifest in `store` and returns its id.
  Result<ObjectId> save(ObjectStore& store) const;
  // Stores the manifest and makes it a (durable) tree root under one hold of the store
  // lock, so that no gc falls between the two. The objects it references must be held by
  // the caller until then (an ImportResult's lock, a live Batch).
  Result<ObjectId> save_rooted(ObjectStore& store) const;
  // Writes the manifest to a file atomically (a new temp file beside it, 0600, fsync,
  // rename, fsync of the directory).
  Status write_file(const std::filesystem::path& path) const;

 private:
  friend class EntryRef;
  struct Impl;
  static Result<Tree> parse_bytes(std::shared_ptr<const void> keeper, std::string_view bytes);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace livefs::store
