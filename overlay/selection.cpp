// Pending changes and the next layer built from a selection of them.
#include "overlay/selection.h"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <unordered_map>

namespace livefs::overlay {

namespace {

using store::Change;
using store::ChangeKind;
using store::Entry;
using store::EntryType;

// "a/b/c" → "", "a", "a/b" (the root first).
std::vector<std::string_view> ancestors(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty()) return out;
  out.push_back("");
  for (size_t pos = path.find('/'); pos != std::string_view::npos; pos = path.find('/', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  return out;
}

std::string normalize_pattern(std::string_view p) {
  while (!p.empty() && p.front() == '/') p.remove_prefix(1);
  while (!p.empty() && p.back() == '/') p.remove_suffix(1);
  return std::string(p);
}

// A pattern selects a path when it matches the path or one of its ancestors (a directory
// selects its subtree). The root is selected only by an empty pattern ("/").
bool pattern_selects(const std::string& pattern, std::string_view path) {
  std::string p(path);
  if (pattern.empty()) return true;
  if (fnmatch(pattern.c_str(), p.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0) return true;
  for (auto a : ancestors(path)) {
    if (a.empty()) continue;
    if (fnmatch(pattern.c_str(), std::string(a).c_str(), FNM_PATHNAME | FNM_PERIOD) == 0) {
      return true;
    }
  }
  return false;
}

std::string join_paths(const std::vector<std::string>& paths, size_t max = 20) {
  std::string out;
  for (size_t i = 0; i < paths.size() && i < max; ++i) {
    if (i != 0) out += ", ";
    out += paths[i].empty() ? "/" : paths[i];
  }
  if (paths.size() > max) out += ", ... (" + std::to_string(paths.size() - max) + " more)";
  return out;
}

// The modules directories of a kernel version, relative to a served root of / or /usr.
std::array<std::string, 2> modules_dirs(const std::string& version) {
  return {"lib/modules/" + version, "usr/lib/modules/" + version};
}

bool at_or_below(std::string_view path, std::string_view dir) {
  return path == dir ||
         (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
}

// Paths with a reason each, in path order, grouped by reason (in order of first appearance),
// a path below one already listed left out (the image in a removed modules directory).
class ReasonGroups {
 public:
  void add(const std::string& path, const std::string& reason) {
    for (auto a : ancestors(path)) {
      if (!a.empty() && listed_.contains(std::string(a))) return;
    }
    // A group only once a path is listed in it: no reason is said with nothing after it.
    auto it = std::find_if(groups_.begin(), groups_.end(),
                           [&](const auto& g) { return g.first == reason; });
    if (it == groups_.end()) it = groups_.insert(groups_.end(), {reason, {}});
    listed_.insert(path);
    it->second.push_back(path);
  }
  bool empty() const { return groups_.empty(); }
  bool listed(const std::string& path) const { return listed_.contains(path); }
  const std::vector<std::pair<std::string, std::vector<std::string>>>& groups() const {
    return groups_;
  }
  // "REASON: PATH, PATH; REASON: PATH", with a kernel image's reason worded as a refusal.
  std::string describe() const {
    std::string out;
    for (const auto& [reason, paths] : groups_) {
      if (!out.empty()) out += "; ";
      out += (reason == kKernelReason ? std::string("kernel update: needs a reboot") : reason) +
             ": " + join_paths(paths);
    }
    return out;
  }

  static constexpr std::string_view kKernelReason = "kernel: needs a reboot";

 private:
  std::vector<std::pair<std::string, std::vector<std::string>>> groups_;
  std::set<std::string> listed_;
};

}  // namespace

bool same_entry(const Entry& a, const Entry& b, bool link_counts) {
  if (a.type != b.type || a.mode != b.mode || a.uid != b.uid || a.gid != b.gid ||
      a.mtime_sec != b.mtime_sec || a.mtime_nsec != b.mtime_nsec || a.xattrs != b.xattrs) {
    return false;
  }
  switch (a.type) {
    case EntryType::file:
      return a.object == b.object && (!link_counts || a.nlink == b.nlink);
    case EntryType::symlink:
      return a.target == b.target;
    case EntryType::chardev:
    case EntryType::blockdev:
      return a.rdev == b.rdev;
    default:
      return true;
  }
}

std::optional<Entry> resolve_merged(const store::Tree& booted, const store::Tree& layer,
                                    std::string_view path) {
  bool booted_visible = !layer.root().opaque();
  for (auto a : ancestors(path)) {
    if (a.empty()) continue;  // the root is a directory in both trees
    if (auto l = layer.find(a)) {
      if (l->type() != EntryType::dir) return std::nullopt;  // whiteout or non-directory
      if (l->opaque()) booted_visible = false;
      continue;
    }
    if (!booted_visible) return std::nullopt;
    auto b = booted.find(a);
    if (!b || b->type() != EntryType::dir) return std::nullopt;
  }
  if (auto l = layer.find(path)) {
    if (l->type() == EntryType::whiteout) return std::nullopt;
    // As overlay/view.h serves it: a structural layer directory over a booted directory
    // shows the booted directory's attributes; any other shows its own.
    if (l->type() == EntryType::dir && l->structural() && !l->opaque() && booted_visible) {
      if (auto b = booted.find(path); b && b->type() == EntryType::dir) return b->to_entry();
    }
    return l->to_entry();
  }
  if (!booted_visible) return std::nullopt;
  if (auto b = booted.find(path)) return b->to_entry();
  return std::nullopt;
}

std::vector<Change> pending_changes(const SelectionInput& in) {
  std::vector<Change> out;
  std::vector<Change> computed;
  if (in.staged_diff == nullptr) computed = store::diff(in.booted, in.staged);
  for (const Change& c : in.staged_diff != nullptr ? *in.staged_diff : computed) {
    std::optional<Entry> staged;
    if (c.new_index) staged = in.staged.entry(*c.new_index).to_entry();
    auto live = resolve_merged(in.booted, in.layer, c.path);
    bool done = staged.has_value() == live.has_value() &&
                (!staged || same_entry(*staged, *live, in.link_counts));
    if (!done) out.push_back(c);
  }
  return out;
}

bool is_kernel_path(std::string_view path) {
  static const char* const kPatterns[] = {
      "lib/modules/*/vmlinuz*",
      "usr/lib/modules/*/vmlinuz*",
      "lib/modules/*/initramfs*",
      "usr/lib/modules/*/initramfs*",
      "boot/vmlinuz*",
      "boot/initrd*",
      "boot/initramfs*",
      "boot/*/vmlinuz*",
      "boot/*/initramfs*",
      // OSTree keeps the deployment's kernel and initramfs here too.
      "lib/ostree-boot/vmlinuz*",
      "lib/ostree-boot/initramfs*",
      "usr/lib/ostree-boot/vmlinuz*",
      "usr/lib/ostree-boot/initramfs*",
  };
  // Only these places: a name alone (usr/share/initramfs-tools, a man page) is no kernel.
  std::string p(path);
  for (const char* pattern : kPatterns) {
    if (fnmatch(pattern, p.c_str(), FNM_PATHNAME) == 0) return true;
  }
  return false;
}

std::vector<std::string> booted_kernel_versions(const store::Tree& booted) {
  std::vector<std::string> out;
  for (const char* modules : {"lib/modules", "usr/lib/modules"}) {
    auto dir = booted.find(modules);
    if (!dir || dir->type() != EntryType::dir) continue;
    for (const auto& version : booted.children(dir->index())) {
      if (version.type() != EntryType::dir) continue;
      auto image = booted.child(version.index(), "vmlinuz");
      if (!image || image->type() != EntryType::file) continue;
      std::string name(version.name());
      if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
    }
  }
  return out;
}

std::string reboot_reason(const store::Tree& booted, const Change& c,
                          const std::vector<std::string>& running_kernels) {
  if (is_kernel_path(c.path)) return std::string(ReasonGroups::kKernelReason);
  for (const std::string& version : running_kernels) {
    if (version.empty() || version.find('/') != std::string::npos) continue;
    for (const std::string& dir : modules_dirs(version)) {
      bool kept = at_or_below(c.path, dir);
      // Removing (or replacing) an ancestor takes the directory with it.
      if (!kept && (c.kind == ChangeKind::removed || c.kind == ChangeKind::type_changed) &&
          !c.path.empty() && at_or_below(dir, c.path)) {
        auto b = booted.find(dir);
        kept = b && b->type() == EntryType::dir;
      }
      if (kept) return "modules of the running kernel " + version + ": needs a reboot";
    }
  }
  return "";
}

bool is_selinux_policy_path(std::string_view path) {
  if (path.starts_with("usr/")) path.remove_prefix(4);
  constexpr std::string_view kSelinux = "etc/selinux/";
  if (!path.starts_with(kSelinux)) return false;
  path.remove_prefix(kSelinux.size());
  size_t slash = path.find('/');
  if (slash == 0 || slash == std::string_view::npos) return false;
  return at_or_below(path.substr(slash + 1), "policy");
}

std::vector<RebootNeed> reboot_needs(const store::Tree& booted,
                                     const std::vector<Change>& staged_diff,
                                     const std::vector<std::string>& running_kernels) {
  ReasonGroups kernel, policy;
  for (const Change& c : staged_diff) {
    if (std::string reason = reboot_reason(booted, c, running_kernels); !reason.empty()) {
      kernel.add(c.path, reason);
    } else if (is_selinux_policy_path(c.path)) {
      policy.add(c.path, "");
    }
  }
  std::vector<RebootNeed> out;
  // The kernel first, then the modules of each running kernel.
  for (const auto& [reason, paths] : kernel.groups()) {
    if (reason == ReasonGroups::kKernelReason)
      out.push_back({"kernel", "the staged kernel or initramfs boots only with a reboot", paths});
  }
  for (const auto& [reason, paths] : kernel.groups()) {
    if (reason == ReasonGroups::kKernelReason) continue;
    // "modules of the running kernel VER: needs a reboot" without its tail.
    std::string what = reason.substr(0, reason.rfind(": needs a reboot"));
    out.push_back({"kernel_modules", what + " stay as booted until the reboot", paths});
  }
  for (const auto& [reason, paths] : policy.groups()) {
    out.push_back({"selinux_policy", "the SELinux policy is loaded at boot", paths});
  }
  return out;
}

Result<Selection> select_changes(const SelectionInput& in, const std::vector<std::string>& patterns,
                                 const SelectOptions& options) {
  std::vector<Change> pending = pending_changes(in);
  std::unordered_map<std::string_view, size_t> by_path;
  for (size_t i = 0; i < pending.size(); ++i) by_path.emplace(pending[i].path, i);

  Selection result;
  std::set<size_t> chosen;
  if (!options.all && patterns.empty()) {
    return fail(EINVAL, "nothing selected: name paths or globs, or --all");
  }
  ReasonGroups kept_all;
  if (options.all) {
    for (size_t i = 0; i < pending.size(); ++i) {
      std::string reason = reboot_reason(in.booted, pending[i], options.running_kernels);
      if (reason.empty()) {
        chosen.insert(i);
        continue;
      }
      kept_all.add(pending[i].path, reason);
      if (kept_all.listed(pending[i].path)) {
        result.kept.push_back({pending[i].path, pending[i].kind, reason});
        result.skipped_kernel.push_back(pending[i].path);
      }
    }
  }
  for (const auto& raw : patterns) {
    if (options.literal) {
      if (auto it = by_path.find(raw); it != by_path.end()) chosen.insert(it->second);
      continue;
    }
    std::string pattern = normalize_pattern(raw);
    bool matched = false;
    for (size_t i = 0; i < pending.size(); ++i) {
      if (pattern_selects(pattern, pending[i].path)) {
        chosen.insert(i);
        matched = true;
      }
    }
    if (!matched) return fail(EINVAL, "selection matches no pending change: " + raw);
  }
  if (chosen.empty() && !kept_all.empty()) {
    return fail(EPERM, "every pending change needs a reboot: " + kept_all.describe());
  }
  if (chosen.empty()) return fail(EINVAL, "selection matches no pending change");

  // A change below a directory that is itself new (or replaced a non-directory) cannot
  // go live without that directory: it joins the selection.
  for (size_t i : std::vector<size_t>(chosen.begin(), chosen.end())) {
    for (auto a : ancestors(pending[i].path)) {
      auto it = by_path.find(a);
      if (it != by_path.end() && (pending[it->second].kind == ChangeKind::added ||
                                  pending[it->second].kind == ChangeKind::type_changed)) {
        chosen.insert(it->second);
      }
    }
  }

  // Hard links are one file: a change of one link of a staged group goes live with the
  // group's other pending links (they share the new content or the new link count).
  std::unordered_map<uint32_t, std::vector<size_t>> group_members;
  for (size_t i = 0; in.link_counts && i < pending.size(); ++i) {
    if (!pending[i].new_index) continue;
    auto e = in.staged.entry(*pending[i].new_index);
    if (e.type() == EntryType::file && e.link_group() != 0)
      group_members[e.link_group()].push_back(i);
  }
  if (!group_members.empty()) {
    for (size_t i : std::vector<size_t>(chosen.begin(), chosen.end())) {
      if (!pending[i].new_index) continue;
      auto e = in.staged.entry(*pending[i].new_index);
      if (e.type() != EntryType::file || e.link_group() == 0) continue;
      for (size_t j : group_members[e.link_group()]) chosen.insert(j);
    }
  }

  // With --all, what a new ancestor or a hard-link group brought back in that needs a
  // reboot is kept as the rest of it was, not a reason to refuse the whole apply.
  if (options.all) {
    for (size_t i : std::vector<size_t>(chosen.begin(), chosen.end())) {
      std::string reason = reboot_reason(in.booted, pending[i], options.running_kernels);
      if (reason.empty()) continue;
      chosen.erase(i);
      if (kept_all.listed(pending[i].path)) continue;
      kept_all.add(pending[i].path, reason);
      if (kept_all.listed(pending[i].path)) {
        result.kept.push_back({pending[i].path, pending[i].kind, reason});
        result.skipped_kernel.push_back(pending[i].path);
      }
    }
    if (chosen.empty())
      return fail(EPERM, "every pending change needs a reboot: " + kept_all.describe());
  }
  ReasonGroups kept;
  std::vector<std::string> replaced;
  for (size_t i : chosen) {
    std::string reason = reboot_reason(in.booted, pending[i], options.running_kernels);
    if (!reason.empty()) kept.add(pending[i].path, reason);
    // A directory's new mtime (it moves with every name added or removed) replaces nothing:
    // no consent needed, as for additions. Its mode, owner or xattrs do need it.
    bool dir_mtime_only = false;
    if (pending[i].kind == ChangeKind::metadata && pending[i].new_index) {
      Entry staged = in.staged.entry(*pending[i].new_index).to_entry();
      auto live = resolve_merged(in.booted, in.layer, pending[i].path);
      if (staged.type == EntryType::dir && live && live->type == EntryType::dir) {
        live->mtime_sec = staged.mtime_sec;
        live->mtime_nsec = staged.mtime_nsec;
        dir_mtime_only = same_entry(*live, staged);
      }
    }
    if (pending[i].kind != ChangeKind::added && !dir_mtime_only)
      replaced.push_back(pending[i].path);
  }
  if (!kept.empty()) return fail(EPERM, kept.describe());
  if (!replaced.empty() && !options.allow_replace) {
    return fail(
        EPERM, "replacing or removing booted files needs --allow-replace: " + join_paths(replaced));
  }

  // The next layer, keyed by path: the live layer's entries, then the selection on top.
  std::map<std::string, Entry, decltype([](const std::string& a, const std::string& b) {
             return store::path_less(a, b);
           })>
      next;
  for (size_t i = 0; i < in.layer.size(); ++i) {
    auto e = in.layer.entry(i).to_entry();
    next.emplace(e.path, std::move(e));
  }
  if (!next.contains("")) {
    Entry root = in.booted.root().to_entry();
    root.structural = true;  // the booted root's own attributes, unless its change is selected
    next.emplace("", std::move(root));
  }
  // Hard-link groups are numbered per tree, and the layer holds links of earlier selections,
  // maybe of another staged tree: a staged group takes the number its links already have in
  // the layer, or a new one, so that Tree::build counts each group's links alone.
  std::unordered_map<uint32_t, uint32_t> layer_group;  // staged group → layer group
  uint32_t last_group = 0;
  bool any_group = std::any_of(chosen.begin(), chosen.end(), [&](size_t i) {
    return pending[i].new_index && in.staged.entry(*pending[i].new_index).link_group() != 0;
  });
  if (any_group) {
    for (size_t i = 0; i < in.layer.size(); ++i) {
      auto l = in.layer.entry(i);
      if (l.type() != EntryType::file || l.link_group() == 0) continue;
      last_group = std::max(last_group, l.link_group());
      auto s = in.staged.find(l.path());
      if (s && s->type() == EntryType::file && s->link_group() != 0 && s->object() == l.object())
        layer_group.emplace(s->link_group(), l.link_group());
    }
  }
  auto group_in_layer = [&](uint32_t staged_group) {
    auto [it, added] = layer_group.emplace(staged_group, 0);
    if (added) it->second = ++last_group;
    return it->second;
  };

  std::vector<std::string> added;  // paths put into the layer below (their ancestors next)
  // The staged entry at `path` into the next layer.
  auto add_staged = [&](const std::string& path, size_t staged_index) -> Status {
    added.push_back(path);
    Entry e = in.staged.entry(staged_index).to_entry();
    auto b = in.booted.find(path);
    if (e.type == EntryType::dir) {
      // A directory where the booted tree has a non-directory must hide it entirely.
      e.opaque = b && b->type() != EntryType::dir;
    }
    // Content the booted file at this path has (a change of metadata only) is read from
    // there: the staged import did not copy it into the store.
    e.content_booted =
        e.type == EntryType::file && b && b->type() == EntryType::file && b->object() == e.object;
    e.structural = false;
    if (e.type == EntryType::file && e.link_group != 0) e.link_group = group_in_layer(e.link_group);
    next.insert_or_assign(path, std::move(e));
    return {};
  };
  for (size_t i : chosen) {
    const Change& c = pending[i];
    if (c.kind == ChangeKind::removed) {
      Entry e;
      e.path = c.path;
      e.type = EntryType::whiteout;
      e.mode = 0;
      next.insert_or_assign(c.path, std::move(e));
      added.push_back(c.path);
    } else {
      (void)add_staged(c.path, *c.new_index);
    }
    result.applied.push_back(c);
  }
  // A selected link whose group has links that are live as they are (a new link to a file
  // that did not change): those join the layer too, unchanged, so that all of the group is
  // one inode there. Only then is the staged tree walked (its links are few).
  if (in.link_counts) {
    std::set<uint32_t> incomplete;
    for (size_t i : chosen) {
      if (!pending[i].new_index) continue;
      auto e = in.staged.entry(*pending[i].new_index);
      if (e.type() != EntryType::file || e.link_group() == 0) continue;
      auto members = group_members.find(e.link_group());
      if (members != group_members.end() && e.nlink() > members->second.size())
        incomplete.insert(e.link_group());
    }
    for (size_t k = 0; !incomplete.empty() && k < in.staged.size(); ++k) {
      auto e = in.staged.entry(k);
      if (e.type() == EntryType::file && incomplete.contains(e.link_group()) &&
          !by_path.contains(e.path()))
        (void)add_staged(std::string(e.path()), k);
    }
  }
  // Ancestors that the layer does not have yet are carried as structure (non-opaque,
  // structural), so they merge with the booted directory and show its own attributes: a
  // change of a directory's attributes is a change of its own, selected or not.
  for (const std::string& path : added) {
    for (auto a : ancestors(path)) {
      if (next.contains(std::string(a))) continue;
      Entry d;
      if (auto b = in.booted.find(a); b && b->type() == EntryType::dir) {
        d = b->to_entry();
      } else if (auto st = in.staged.find(a); st && st->type() == EntryType::dir) {
        d = st->to_entry();
      } else {
        return fail(EINVAL, "select: no directory for ancestor " + std::string(a) + " of " + path);
      }
      d.opaque = false;
      d.structural = true;
      next.emplace(d.path, std::move(d));
    }
  }

  // Entries below a whiteout or a non-directory of the layer are hidden by it: drop them
  // (a removed directory's descendants, the old children of a directory replaced by a file).
  std::vector<Entry> entries;
  entries.reserve(next.size());
  for (auto& [path, e] : next) {
    bool hidden = false;
    for (auto a : ancestors(path)) {
      auto it = next.find(std::string(a));
      if (it != next.end() && it->second.type != EntryType::dir) {
        hidden = true;
        break;
      }
    }
    if (!hidden) entries.push_back(std::move(e));
  }
  auto tree = store::Tree::build(std::move(entries));
  if (!tree) return std::unexpected(with_context(tree.error(), "build layer"));
  result.layer = std::move(*tree);
  std::sort(result.applied.begin(), result.applied.end(),
            [](const Change& a, const Change& b) { return store::path_less(a.path, b.path); });
  return result;
}

}  // namespace livefs::overlay
