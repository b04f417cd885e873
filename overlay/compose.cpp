// compose_layers: one merge pass over two layers in path order (see overlay/compose.h).
#include "overlay/compose.h"

#include <algorithm>
#include <vector>

namespace livefs::overlay {

using store::Entry;
using store::EntryRef;
using store::EntryType;
using store::Tree;

Result<Tree> compose_layers(const Tree& /*booted*/, const Tree& lower, const Tree& upper) {
  // Upper's hard-link groups are renumbered past lower's: Tree::build counts links per
  // group number, and the two layers numbered theirs independently.
  uint32_t group_offset = 0;
  for (size_t i = 0; i < lower.size(); ++i) {
    group_offset = std::max(group_offset, lower.entry(i).link_group());
  }
  auto from_upper = [&](const EntryRef& u) {
    Entry e = u.to_entry();
    if (e.link_group != 0) e.link_group += group_offset;
    return e;
  };

  std::vector<Entry> out;
  out.reserve(lower.size() + upper.size());
  out.push_back(lower.root().to_entry());
  // Both trees are sorted by path_less, so a directory is followed by its subtree and
  // skipping to subtree_end() drops exactly the entries below a path.
  size_t i = 1;  // lower
  size_t j = 1;  // upper (its root is ignored)
  while (i < lower.size() || j < upper.size()) {
    int order = i == lower.size() ? 1
                : j == upper.size()
                    ? -1
                    : store::path_compare(lower.entry(i).path(), upper.entry(j).path());
    if (j < upper.size() && order >= 0) {
      EntryRef u = upper.entry(j);
      if (u.type() == EntryType::whiteout) {
        return fail(EINVAL,
                    "compose layers: whiteout in the upper layer: " + std::string(u.path()));
      }
      if (u.opaque()) {
        return fail(EINVAL, "compose layers: opaque directory in the upper layer: " +
                                std::string(u.path()));
      }
    }
    if (order < 0) {
      // Only lower has this path. Entries below a lower non-directory are hidden by it in
      // any view: drop them, so that an upper directory replacing it later cannot expose them.
      EntryRef l = lower.entry(i);
      out.push_back(l.to_entry());
      i = l.type() == EntryType::dir ? i + 1 : l.subtree_end();
    } else if (order > 0) {
      // Only upper has this path, so lower has nothing below it either (a lower entry below
      // would come with its parent directories).
      // An upper directory here only carries its children: where the booted tree has a
      // directory, its attributes stay what the view showed.
      EntryRef u = upper.entry(j);
      Entry e = from_upper(u);
      if (e.type == EntryType::dir) e.structural = true;
      out.push_back(std::move(e));
      j = u.type() == EntryType::dir ? j + 1 : u.subtree_end();
    } else {
      EntryRef l = lower.entry(i);
      EntryRef u = upper.entry(j);
      if (u.type() != EntryType::dir) {
        out.push_back(from_upper(u));
        i = l.subtree_end();
        j = u.subtree_end();
      } else if (l.type() == EntryType::dir) {
        out.push_back(l.to_entry());
        ++i;
        ++j;
      } else {
        // A lower whiteout or non-directory hides the booted tree at this path: the upper
        // directory that replaces it must keep hiding it.
        Entry e = from_upper(u);
        e.opaque = true;
        e.structural = false;
        out.push_back(std::move(e));
        i = l.subtree_end();
        ++j;
      }
    }
  }
  auto tree = Tree::build(std::move(out));
  if (!tree) return std::unexpected(with_context(tree.error(), "compose layers"));
  return std::move(*tree);
}

}  // namespace livefs::overlay
