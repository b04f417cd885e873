// The hotfix set: imports sources into the store and keeps their manifests current.
#include "livefs/hotfix.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <chrono>
#include <cstring>
#include <set>

#include "common/log.h"
#include "overlay/selection.h"
#include "overlay/view.h"
#include "store/import.h"

namespace livefs::cli {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("hotfix"); }

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Setuid/setgid bits are only honoured from a source root owns: a developer's build output
// must not become a privileged program in the live tree.
void drop_set_id_bits(store::Entry& e, const fs::path& source) {
  if (e.uid == 0 || (e.mode & 06000) == 0) return;
  log()->warn("{}: dropped the setuid/setgid bits (mode {:o} -> {:o}): owned by uid {}, not root",
              source.string(), e.mode, e.mode & ~06000u, e.uid);
  e.mode &= ~06000u;
}

// The range [first, last) of entries strictly below `path`.
std::pair<EntryMap::iterator, EntryMap::iterator> subtree(EntryMap& map, const std::string& path) {
  auto first = map.upper_bound(path);
  auto last = first;
  while (last != map.end() && under_prefix(last->first, path) && last->first != path) ++last;
  return {first, last};
}

// Erases `path` and its subtree; records the erased paths.
void erase_with_subtree(EntryMap& map, const std::string& path, std::set<std::string>& changed) {
  auto [first, last] = subtree(map, path);
  for (auto it = first; it != last; ++it) changed.insert(it->first);
  map.erase(first, last);
  if (map.erase(path) != 0) changed.insert(path);
}

// A source path's place in the view: the source directory itself ("") is `at`.
std::string view_path(const std::string& at, const std::string& rel) {
  return rel.empty() ? at : overlay::join_path(at, rel);
}

// A source file's link count is not the layer's (which counts links within the layer).
bool same_entry(const store::Entry& a, store::Entry b) {
  b.nlink = a.nlink;
  return overlay::same_entry(a, b) && a.size == b.size;
}

}  // namespace

bool under_prefix(std::string_view path, std::string_view prefix) {
  if (prefix.empty()) return true;
  return path == prefix ||
         (path.size() > prefix.size() && path.starts_with(prefix) && path[prefix.size()] == '/');
}

Result<std::string> clean_view_path(std::string_view raw) {
  std::string out;
  size_t pos = 0;
  while (pos <= raw.size()) {
    size_t slash = raw.find('/', pos);
    if (slash == std::string_view::npos) slash = raw.size();
    std::string_view part = raw.substr(pos, slash - pos);
    pos = slash + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return fail(EINVAL, "path " + std::string(raw) + ": '..' is not allowed");
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

Result<UniqueFd> HotfixSet::open_source(const HotfixWatch& w) {
  UniqueFd root(::open(w.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("hotfix watch: open(" + w.source.string() + ")");
  struct stat st;
  if (::fstat(root.get(), &st) < 0)
    return fail_errno("hotfix watch: fstat(" + w.source.string() + ")");
  if (st.st_dev != w.dev || st.st_ino != w.ino)
    return fail(ESTALE, "hotfix watch: " + w.source.string() +
                            " names another directory than the one watched: not followed");
  return root;
}

Result<store::Entry> HotfixSet::import_one(const HotfixWatch& w, int root, const std::string& rel,
                                           store::ObjectStore::Batch& batch) {
  fs::path path = rel.empty() ? w.source : w.source / rel;
  auto e = store::import_entry_at(root, rel, rel, &batch, path.string());
  if (!e) return e;
  drop_set_id_bits(*e, path);
  return e;
}

Result<EntryMap> HotfixSet::import_tree(int root, const fs::path& source,
                                        store::ObjectStore::Batch* batch) {
  auto imported = store::import_directory_at(root, source.string(), &store_, {.batch = batch});
  if (!imported) return std::unexpected(imported.error());
  EntryMap map;
  const store::Tree& tree = imported->tree;
  for (size_t i = 0; i < tree.size(); ++i) {
    store::Entry e = tree.entry(i).to_entry();
    drop_set_id_bits(e, e.path.empty() ? source : source / e.path);
    std::string key = e.path;
    map.emplace(std::move(key), std::move(e));
  }
  return map;
}

HotfixWatch* HotfixSet::find(uint64_t id) {
  for (auto& w : watches_)
    if (w.id == id) return &w;
  return nullptr;
}

Result<uint64_t> HotfixSet::add_watch(const fs::path& source, const std::string& at,
                                      store::ObjectStore::Batch* batch) {
  UniqueFd root(::open(source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return fail_errno("hotfix watch: open(" + source.string() + ")");
  struct stat st;
  if (::fstat(root.get(), &st) < 0)
    return fail_errno("hotfix watch: fstat(" + source.string() + ")");
  auto entries = import_tree(root.get(), source, batch);
  if (!entries) return std::unexpected(with_context(entries.error(), "hotfix watch"));
  HotfixWatch w;
  w.id = next_id_++;
  w.source = source;
  w.dev = st.st_dev;
  w.ino = st.st_ino;
  w.at = at;
  w.entries = std::move(*entries);
  w.last_change_ns = now_ns();
  watches_.push_back(std::move(w));
  return watches_.back().id;
}

Status HotfixSet::add_file(const fs::path& source, const std::string& at,
                           store::ObjectStore::Batch& batch) {
  if (at.empty()) return fail(EINVAL, "hotfix add: --at names the root");
  auto e = store::import_entry(source, at, &batch);
  if (!e) return std::unexpected(with_context(e.error(), "hotfix add " + source.string()));
  drop_set_id_bits(*e, source);
  if (e->type == store::EntryType::dir)
    return fail(EISDIR, "hotfix add " + source.string() + ": a directory (use hotfix watch)");
  if (e->type != store::EntryType::file && e->type != store::EntryType::symlink)
    return fail(EINVAL, "hotfix add " + source.string() + ": not a regular file or a symlink");
  std::erase_if(adds_, [&](const HotfixAdd& a) { return a.at == at; });
  adds_.push_back(HotfixAdd{source, at, std::move(*e)});
  return {};
}

Result<std::vector<std::string>> HotfixSet::apply(uint64_t id, const inotify::ChangeSet& changes,
                                                  store::ObjectStore::Batch& batch) {
  HotfixWatch* w = find(id);
  if (w == nullptr) return fail(ENOENT, "hotfix watch " + std::to_string(id) + ": not watched");
  std::set<std::string> changed;
  auto root = open_source(*w);
  if (!root && (root.error().code == ENOENT || root.error().code == ENOTDIR)) {
    // The source itself is gone (its watch ends with the root_gone set that follows):
    // so is everything this set names.
    for (const std::string& rel : changes.paths) erase_with_subtree(w->entries, rel, changed);
    std::vector<std::string> out;
    for (const auto& rel : changed) out.push_back(view_path(w->at, rel));
    return out;
  }
  if (!root) return std::unexpected(root.error());
  if (changes.full_rescan) {
    // What was removed while the queue overflowed is not in the change set: compare the
    // whole source with what is live.
    // The source may still be changing: an entry removed between the directory listing and
    // its stat fails the whole import, and this change set is the only rescan there will
    // be, so try again (later removals are events of their own).
    auto fresh = import_tree(root->get(), w->source, &batch);
    for (int attempt = 1;
         attempt < 20 && !fresh && (fresh.error().code == ENOENT || fresh.error().code == ENOTDIR);
         ++attempt) {
      log()->debug("rescan of {} raced with a removal, again: {}", w->source.string(),
                   fresh.error().message());
      fresh = import_tree(root->get(), w->source, &batch);
    }
    if (!fresh) return std::unexpected(fresh.error());
    for (const auto& [path, e] : w->entries) {
      auto it = fresh->find(path);
      if (it == fresh->end() || !same_entry(it->second, e)) changed.insert(path);
    }
    for (const auto& [path, e] : *fresh)
      if (!w->entries.contains(path)) changed.insert(path);
    w->entries = std::move(*fresh);
  } else {
    std::vector<std::string> paths(changes.paths.begin(), changes.paths.end());
    std::sort(paths.begin(), paths.end(), store::path_less);
    for (const std::string& rel : paths) {
      fs::path full = rel.empty() ? w->source : w->source / rel;
      auto e = import_one(*w, root->get(), rel, batch);
      if (!e) {
        const int code = e.error().code;
        if (code == ENOENT || code == ENOTDIR || code == ELOOP || code == EXDEV) {
          // Gone, or no longer beneath the source without a symlink on the way (a directory
          // swapped for a symlink): what was there is not there any more.
          if (code == ELOOP || code == EXDEV) log()->info("{}", e.error().message());
          erase_with_subtree(w->entries, rel, changed);
        } else if (e.error().code == EAGAIN) {
          // Still being written: its close (or rename) is a later event.
          log()->debug("{}", e.error().message());
        } else {
          log()->warn("{}: {}", full.string(), e.error().message());
        }
        continue;
      }
      auto old = w->entries.find(rel);
      const bool was_dir = old != w->entries.end() && old->second.type == store::EntryType::dir;
      if (e->type == store::EntryType::dir) {
        if (old != w->entries.end() && !was_dir) erase_with_subtree(w->entries, rel, changed);
        if (was_dir) {
          // It may have been replaced: children that are no longer there go.
          std::set<std::string> names;
          if (auto dir =
                  store::open_beneath(root->get(), rel, O_RDONLY | O_DIRECTORY, full.string())) {
            if (DIR* d = ::fdopendir(dir->release())) {
              while (dirent* de = ::readdir(d)) names.insert(de->d_name);
              ::closedir(d);
            }
          }
          std::vector<std::string> gone;
          auto [first, last] = subtree(w->entries, rel);
          for (auto it = first; it != last; ++it) {
            std::string_view rest =
                std::string_view(it->first).substr(rel.empty() ? 0 : rel.size() + 1);
            if (rest.find('/') != std::string_view::npos) continue;  // a grandchild
            if (!names.contains(std::string(rest))) gone.push_back(it->first);
          }
          for (const auto& g : gone) erase_with_subtree(w->entries, g, changed);
        }
      } else if (was_dir) {
        erase_with_subtree(w->entries, rel, changed);
      }
      auto cur = w->entries.find(rel);
      if (cur == w->entries.end() || !same_entry(cur->second, *e)) {
        changed.insert(rel);
        w->entries[rel] = std::move(*e);
      }
    }
  }
  std::vector<std::string> out;
  for (const auto& rel : changed) out.push_back(view_path(w->at, rel));
  if (!out.empty()) {
    w->last_change_ns = now_ns();
    ++w->changes;
  }
  return out;
}

void HotfixSet::fail_watch(uint64_t id, const std::string& why) {
  HotfixWatch* w = find(id);
  if (w == nullptr) return;
  w->entries.clear();
  w->error = why;
}

std::vector<uint64_t> HotfixSet::remove(const std::optional<std::string>& prefix) {
  std::vector<uint64_t> removed;
  std::string p = prefix.value_or("");
  std::erase_if(watches_, [&](const HotfixWatch& w) {
    if (!under_prefix(w.at, p)) return false;
    removed.push_back(w.id);
    return true;
  });
  std::erase_if(adds_, [&](const HotfixAdd& a) { return under_prefix(a.at, p); });
  return removed;
}

Result<std::optional<store::Tree>> HotfixSet::build() const {
  if (empty()) return std::optional<store::Tree>();
  EntryMap all;
  std::set<std::string> ignored;
  // Later sources win: a non-directory replaces a subtree, and an entry below what is a
  // non-directory so far replaces that non-directory with the directories it needs.
  auto put = [&](store::Entry e) {
    for (size_t slash = e.path.find('/'); slash != std::string::npos;
         slash = e.path.find('/', slash + 1)) {
      auto it = all.find(e.path.substr(0, slash));
      if (it != all.end() && it->second.type != store::EntryType::dir) all.erase(it);
    }
    if (e.type != store::EntryType::dir) erase_with_subtree(all, e.path, ignored);
    e.link_group = 0;  // hard links are per import; sources are not linked to each other
    e.nlink = 1;
    std::string key = e.path;
    all[key] = std::move(e);
  };
  for (const auto& w : watches_) {
    for (const auto& [rel, e] : w.entries) {
      store::Entry x = e;
      x.path = view_path(w.at, rel);
      put(std::move(x));
    }
  }
  for (const auto& a : adds_) put(a.entry);
  std::vector<store::Entry> entries;
  entries.reserve(all.size() + 1);
  if (!all.contains("")) {
    store::Entry root;
    root.path = "";
    root.type = store::EntryType::dir;
    root.mode = 0755;
    entries.push_back(std::move(root));
  }
  for (auto& [path, e] : all) entries.push_back(std::move(e));
  auto tree = store::Tree::build(std::move(entries));
  if (!tree) return std::unexpected(with_context(tree.error(), "hotfix layer"));
  return std::optional<store::Tree>(std::move(*tree));
}

}  // namespace livefs::cli
