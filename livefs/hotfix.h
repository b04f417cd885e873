// The developer's hotfix layer: watched source directories mirrored onto prefixes of the view
// and single files added at a path, kept as manifests of their current content (every file
// stored in the object store), from which the hotfix layer Tree is built. The daemon holds
// one HotfixSet and calls it under its own lock; the inotify loops feeding it are the
// daemon's.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "inotify/debouncer.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::cli {

struct PathLess {
  bool operator()(const std::string& a, const std::string& b) const {
    return store::path_less(a, b);
  }
};

// Entries keyed by path, in component-wise path order (a directory is followed by its
// subtree, so a subtree is one contiguous range).
using EntryMap = std::map<std::string, store::Entry, PathLess>;

struct HotfixWatch {
  uint64_t id = 0;
  std::filesystem::path source;  // absolute
  // The source directory the watch began with. Each import opens `source` once, checks it
  // is still this directory, and resolves everything beneath that descriptor with no
  // symlink followed: the owner of a watched directory must not be able to point the root
  // daemon at files it cannot read. (Not held open: that would delay the inotify event
  // that says the source was removed.)
  dev_t dev = 0;
  ino_t ino = 0;
  std::string at;     // view path it is mirrored onto ("" = the root)
  EntryMap entries;   // relative to `source`; "" is the source directory itself
  std::string error;  // why it stopped following the source, "" while it does
  int64_t last_change_ns = 0;
  uint64_t changes = 0;  // change sets applied
};

struct HotfixAdd {
  std::filesystem::path source;
  std::string at;
  store::Entry entry;  // path == at
};

class HotfixSet {
 public:
  explicit HotfixSet(store::ObjectStore& store) : store_(store) {}

  // Imports `source` (a directory) as a new watch onto `at`; returns its id. Contents go
  // through `batch` when given: pass the batch that then commits and roots the layer, so
  // that the store lock it holds keeps gc off the new objects until they are referenced
  // (without one, the import publishes on its own, unprotected until the layer is rooted).
  Result<uint64_t> add_watch(const std::filesystem::path& source, const std::string& at,
                             store::ObjectStore::Batch* batch = nullptr);
  // Imports the file (or symlink) `source` onto `at`, its content through `batch` (which
  // the caller commits, with the layer manifest, in one syncfs). Its directory is resolved
  // as given, the file itself is opened without following a symlink; anything but a regular
  // file or a symlink is refused, and so is a hard link to a file that the directory's owner
  // cannot read.
  Status add_file(const std::filesystem::path& source, const std::string& at,
                  store::ObjectStore::Batch& batch);
  // An add as journalled (after a restart): its entry as it was added.
  void restore_add(const std::filesystem::path& source, const std::string& at, store::Entry e) {
    e.path = at;
    adds_.push_back(HotfixAdd{source, at, std::move(e)});
  }
  // Brings a watch up to date with a settled change set (full_rescan: reimports the whole
  // source). Returns the view paths that changed. ENOENT when the id is not watched.
  // Contents go through `batch`. A path that now leads through a symlink (a directory
  // swapped for one) is gone from the watch, and nothing is read through it; a source
  // path that names another directory by now (swapped for a symlink) is ESTALE.
  Result<std::vector<std::string>> apply(uint64_t id, const inotify::ChangeSet& changes,
                                         store::ObjectStore::Batch& batch);
  // Drops the watch's entries (its source is gone or cannot be followed); keeps it listed
  // with `why`.
  void fail_watch(uint64_t id, const std::string& why);
  // Marks a watch as no longer following its source (its entries stay served).
  void set_error(uint64_t id, const std::string& why) {
    if (HotfixWatch* w = find(id)) w->error = why;
  }
  // Forgets one watch (its entries leave the layer at the next build).
  void drop_watch(uint64_t id) {
    std::erase_if(watches_, [id](const HotfixWatch& w) { return w.id == id; });
  }
  // Removes watches and adds whose `at` is `prefix` or below it ("" or nullopt: all).
  // Returns the ids of the watches removed.
  std::vector<uint64_t> remove(const std::optional<std::string>& prefix);

  // The hotfix layer: every watch's and add's entries at their view paths (later ones win);
  // nullopt when there are none.
  Result<std::optional<store::Tree>> build() const;

  const std::vector<HotfixWatch>& watches() const { return watches_; }
  const std::vector<HotfixAdd>& adds() const { return adds_; }
  bool empty() const { return watches_.empty() && adds_.empty(); }

 private:
  // The watch's source directory, opened; ESTALE when its path names another one by now.
  static Result<UniqueFd> open_source(const HotfixWatch& w);
  // Reads one entry of a watch beneath `root`, its source directory (setuid/setgid bits
  // dropped from a source not owned by root).
  Result<store::Entry> import_one(const HotfixWatch& w, int root, const std::string& rel,
                                  store::ObjectStore::Batch& batch);
  Result<EntryMap> import_tree(int root, const std::filesystem::path& source,
                               store::ObjectStore::Batch* batch);
  HotfixWatch* find(uint64_t id);

  store::ObjectStore& store_;
  std::vector<HotfixWatch> watches_;
  std::vector<HotfixAdd> adds_;
  uint64_t next_id_ = 1;
};

// "a/b" under prefix "a" (or equal to it); every path is under "".
bool under_prefix(std::string_view path, std::string_view prefix);

// A view path as the operator writes it ("/usr/bin/", "bin") made relative and clean
// ("bin"); EINVAL for ".." components.
Result<std::string> clean_view_path(std::string_view path);

}  // namespace livefs::cli
