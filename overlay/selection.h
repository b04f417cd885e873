// Selecting staged changes: which changes of booted → staged are not live yet (pending),
// and the next layer that makes a selection of them live, with the refusals an operator
// needs (kernel images, replacing booted files without consent, empty selections).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"
#include "store/diff.h"
#include "store/tree.h"

namespace livefs::overlay {

// The three trees a selection is computed from. `layer` is the live generation's layer.
struct SelectionInput {
  const store::Tree& booted;  // manifest of the booted tree
  const store::Tree& staged;
  const store::Tree& layer;
  // diff(booted, staged) when the caller keeps it (it changes only with a new stage);
  // computed here when null.
  const std::vector<store::Change>* staged_diff = nullptr;
};

// How the merged view (booted under `layer`) resolves `path`: the entry it shows, or
// nullopt when the path is absent. Follows the layer rules of overlay/view.h: a whiteout,
// a non-directory or an absent ancestor hides the path; an opaque directory hides the
// booted tree below it.
std::optional<store::Entry> resolve_merged(const store::Tree& booted, const store::Tree& layer,
                                           std::string_view path);

// Two entries show the same thing: type, permissions, owner, mtime (to the nanosecond),
// xattrs, content, target, device, and a file's link count.
bool same_entry(const store::Entry& a, const store::Entry& b);

// The changes of diff(booted, staged) that the merged view does not show yet, in path order.
// Each keeps its kind relative to the booted tree.
std::vector<store::Change> pending_changes(const SelectionInput& in);

struct SelectOptions {
  bool all = false;            // select every pending change (kernel images are skipped)
  bool allow_replace = false;  // allow modifying or removing what the booted tree has
  // Patterns are exact paths (a package's files): no globs, a directory selects only itself,
  // and paths with no pending change are passed over (only an empty result is refused).
  bool literal = false;
};

struct Selection {
  store::Tree layer;                        // the next generation's layer
  std::vector<store::Change> applied;       // the selected changes, in path order
  std::vector<std::string> skipped_kernel;  // --all only: kernel images left out
};

// Paths of kernel images and initramfs files (relative to the served root): applying them
// needs a reboot.
bool is_kernel_path(std::string_view path);

// Builds the next layer: current layer + the pending changes selected by `patterns` (fnmatch
// globs on paths relative to the served root, leading '/' optional; a match on a directory
// selects its whole subtree). Refusals are EINVAL / EPERM with the message the operator sees:
//   "selection matches no pending change: PATTERN"
//   "kernel update: needs a reboot: PATH..."
//   "replacing or removing booted files needs --allow-replace: PATH..."
Result<Selection> select_changes(const SelectionInput& in, const std::vector<std::string>& patterns,
                                 const SelectOptions& options);

}  // namespace livefs::overlay
