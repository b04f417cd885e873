// The difference between two Trees. Walks both in path order and skips every directory
// whose digest is equal on both sides, so its cost grows with the change, not the tree.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "store/tree.h"

namespace livefs::store {

enum class ChangeKind : uint8_t {
  added,
  removed,
  modified,  // same type, different content (file object id, symlink target, device rdev)
  metadata,  // same type and content; mode, owner, mtime, xattrs or (files) link count
             // differ
  type_changed,
};

const char* change_name(ChangeKind kind);

struct Change {
  std::string path;
  ChangeKind kind;
  std::optional<size_t> old_index;  // into the old tree, when the path exists there
  std::optional<size_t> new_index;  // into the new tree
};

// In path order. An added or removed directory is listed, and so is each of its
// descendants. `visited`, when given, counts the entries the walk looked at (for tests of
// the subtree skipping).
std::vector<Change> diff(const Tree& old_tree, const Tree& new_tree, size_t* visited = nullptr);

}  // namespace livefs::store
