// Diff of two manifests: a merge-walk of both trees' children, descending only into
// directories whose digests differ, so equal subtrees cost nothing.
#include "store/diff.h"

namespace livefs::store {
namespace {

class Differ {
 public:
  Differ(const Tree& a, const Tree& b, size_t* visited) : a_(a), b_(b), visited_(visited) {}

  std::vector<Change> run() {
    compare(0, 0);
    return std::move(out_);
  }

 private:
  void count() {
    if (visited_ != nullptr) ++*visited_;
  }

  // Lists `index` of `tree` and every descendant with `kind`.
  void whole_subtree(const Tree& tree, size_t index, ChangeKind kind) {
    size_t end = tree.entry(index).subtree_end();
    for (size_t i = index; i < end; ++i) {
      count();
      Change c{std::string(tree.entry(i).path()), kind, std::nullopt, std::nullopt};
      (kind == ChangeKind::removed ? c.old_index : c.new_index) = i;
      out_.push_back(std::move(c));
    }
  }

  static bool same_metadata(const EntryRef& x, const EntryRef& y) {
    // A directory's link count follows from its subdirectories, which are compared
    // themselves; a file's is its hard-link group's size.
    return x.mode() == y.mode() && x.uid() == y.uid() && x.gid() == y.gid() &&
           x.xattrs() == y.xattrs() && x.opaque() == y.opaque() &&
           x.structural() == y.structural() && x.mtime_sec() == y.mtime_sec() &&
           x.mtime_nsec() == y.mtime_nsec() &&
           (x.type() == EntryType::dir || x.nlink() == y.nlink());
  }

  static bool same_content(const EntryRef& x, const EntryRef& y) {
    return x.object() == y.object() && x.target() == y.target() && x.rdev() == y.rdev() &&
           x.size() == y.size();
  }

  // Both trees have an entry at the same path.
  void compare(size_t ia, size_t ib) {
    count();
    EntryRef x = a_.entry(ia), y = b_.entry(ib);
    if (x.digest() == y.digest()) return;  // equal subtrees: skipped whole
    if (x.type() != y.type()) {
      out_.push_back({std::string(y.path()), ChangeKind::type_changed, ia, ib});
      // What was below the old entry is gone, what is below the new one is new.
      if (x.type() == EntryType::dir)
        for (size_t c = ia + 1; c < x.subtree_end(); c = a_.entry(c).subtree_end())
          whole_subtree(a_, c, ChangeKind::removed);
      if (y.type() == EntryType::dir)
        for (size_t c = ib + 1; c < y.subtree_end(); c = b_.entry(c).subtree_end())
          whole_subtree(b_, c, ChangeKind::added);
      return;
    }
    if (x.type() != EntryType::dir) {
      if (!same_content(x, y))
        out_.push_back({std::string(y.path()), ChangeKind::modified, ia, ib});
      else if (!same_metadata(x, y))
        out_.push_back({std::string(y.path()), ChangeKind::metadata, ia, ib});
      return;
    }
    if (!same_metadata(x, y)) out_.push_back({std::string(y.path()), ChangeKind::metadata, ia, ib});
    // Merge the two sorted child lists by name.
    size_t ca = ia + 1, cb = ib + 1;
    const size_t ea = x.subtree_end(), eb = y.subtree_end();
    while (ca < ea || cb < eb) {
      int c;
      if (ca >= ea)
        c = 1;
      else if (cb >= eb)
        c = -1;
      else
        c = path_compare(a_.entry(ca).name(), b_.entry(cb).name());
      if (c < 0) {
        whole_subtree(a_, ca, ChangeKind::removed);
        ca = a_.entry(ca).subtree_end();
      } else if (c > 0) {
        whole_subtree(b_, cb, ChangeKind::added);
        cb = b_.entry(cb).subtree_end();
      } else {
        compare(ca, cb);
        ca = a_.entry(ca).subtree_end();
        cb = b_.entry(cb).subtree_end();
      }
    }
  }

  const Tree& a_;
  const Tree& b_;
  size_t* visited_;
  std::vector<Change> out_;
};

}  // namespace

const char* change_name(ChangeKind kind) {
  switch (kind) {
    case ChangeKind::added:
      return "added";
    case ChangeKind::removed:
      return "removed";
    case ChangeKind::modified:
      return "modified";
    case ChangeKind::metadata:
      return "metadata";
    case ChangeKind::type_changed:
      return "type_changed";
  }
  return "unknown";
}

std::vector<Change> diff(const Tree& old_tree, const Tree& new_tree, size_t* visited) {
  return Differ(old_tree, new_tree, visited).run();
}

}  // namespace livefs::store
