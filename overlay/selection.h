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
  // Whether the trees' hard-link groups are the file system's (trees imported from
  // directories). An OSTree commit records no hard links: its manifests group the files of
  // one checksum (as a deployment's links into the repository do), so a file's link count
  // says nothing of the tree. Without, link counts are not compared and a selection does
  // not take a file's whole group.
  bool link_counts = true;
};

// How the merged view (booted under `layer`) resolves `path`: the entry it shows, or
// nullopt when the path is absent. Follows the layer rules of overlay/view.h: a whiteout,
// a non-directory or an absent ancestor hides the path; an opaque directory hides the
// booted tree below it.
std::optional<store::Entry> resolve_merged(const store::Tree& booted, const store::Tree& layer,
                                           std::string_view path);

// Two entries show the same thing: type, permissions, owner, mtime (to the nanosecond),
// xattrs, content, target, device, and (with `link_counts`) a file's link count.
bool same_entry(const store::Entry& a, const store::Entry& b, bool link_counts = true);

// The changes of diff(booted, staged) that the merged view does not show yet, in path order.
// Each keeps its kind relative to the booted tree.
std::vector<store::Change> pending_changes(const SelectionInput& in);

struct SelectOptions {
  bool all = false;            // select every pending change (what needs a reboot is skipped)
  bool allow_replace = false;  // allow modifying or removing what the booted tree has
  // Patterns are exact paths (a package's files): no globs, a directory selects only itself,
  // and paths with no pending change are passed over (only an empty result is refused).
  bool literal = false;
  // Versions of the running kernel (`uname -r`, the booted tree's: booted_kernel_versions):
  // their modules directories are never changed live (see reboot_reason).
  std::vector<std::string> running_kernels = {};
};

// A pending change left out because it needs a reboot.
struct KeptChange {
  std::string path;
  store::ChangeKind kind = store::ChangeKind::modified;
  std::string reason;  // reboot_reason()
};

struct Selection {
  store::Tree layer;                   // the next generation's layer
  std::vector<store::Change> applied;  // the selected changes, in path order
  // --all only: what needs a reboot, left out, in path order; a path below one listed is not
  // listed (a removed modules directory is one line, not thousands).
  std::vector<KeptChange> kept;
  std::vector<std::string> skipped_kernel;  // the paths of `kept`
};

// Paths of kernel images and initramfs files (relative to the served root): applying them
// needs a reboot.
bool is_kernel_path(std::string_view path);

// The kernel versions of a booted tree: the names of its lib/modules/VER and
// usr/lib/modules/VER directories that hold a vmlinuz (an OSTree deployment's kernel). Looks
// at those two directories' children only.
std::vector<std::string> booted_kernel_versions(const store::Tree& booted);

// Why change `c` (of booted -> staged) cannot go live, "" when it can:
//   "kernel: needs a reboot"  a kernel image or initramfs (is_kernel_path)
//   "modules of the running kernel VER: needs a reboot"
//       at or below lib/modules/VER or usr/lib/modules/VER (the served root may be / or /usr)
//       for VER in `running_kernels`, or the removal or type change of an ancestor of such a
//       directory that `booted` has: the running kernel loads its modules from there until
//       the reboot. Another version's modules directory (the new kernel's) goes live: adding
//       modules harms nothing, and removing an old kernel's is what the reboot does too.
std::string reboot_reason(const store::Tree& booted, const store::Change& c,
                          const std::vector<std::string>& running_kernels);

// At or below usr/etc/selinux/NAME/policy or etc/selinux/NAME/policy (a view of /usr): the
// SELinux policy, which the kernel loaded at boot.
bool is_selinux_policy_path(std::string_view path);

// Something a reboot into the staged tree brings that the live view cannot.
struct RebootNeed {
  std::string what;                // "kernel", "kernel_modules", "selinux_policy"
  std::string reason;              // for people
  std::vector<std::string> paths;  // in path order; below a listed directory, not repeated
};

// What of diff(booted, staged) still needs a reboot, whatever is live: the kernel images and
// initramfs files, the running kernel's modules (reboot_reason), the SELinux policy. Cost
// grows with the diff, not with the trees.
std::vector<RebootNeed> reboot_needs(const store::Tree& booted,
                                     const std::vector<store::Change>& staged_diff,
                                     const std::vector<std::string>& running_kernels);

// Builds the next layer: current layer + the pending changes selected by `patterns` (fnmatch
// globs on paths relative to the served root, leading '/' optional; a match on a directory
// selects its whole subtree). With `all`, what needs a reboot (reboot_reason) is left out and
// listed in `kept`. Refusals are EINVAL / EPERM with the message the operator sees:
//   "selection matches no pending change: PATTERN"
//   "kernel update: needs a reboot: PATH..."
//   "modules of the running kernel VER: needs a reboot: PATH..."
//   "every pending change needs a reboot: kernel: PATH...; ..." (--all, nothing else pending)
//   "replacing or removing booted files needs --allow-replace: PATH..."
Result<Selection> select_changes(const SelectionInput& in, const std::vector<std::string>& patterns,
                                 const SelectOptions& options);

}  // namespace livefs::overlay
