// RecursiveWatcher: one inotify instance watching every directory of a source tree, turning
// the kernel's per-directory events into events on paths relative to the watched root.
// Knows nothing of FUSE or the store: its consumer re-stats or re-imports what it reports.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"

namespace livefs::inotify {

// What happened to one path. Paths are relative to the watched root, "" being the root.
//
// Contract for the consumer (the hotfix loop):
//  - Created/Modified/Removed are hints; the consumer re-stats the path to learn its state
//    (a path may be reported more than once, or under a name it held only briefly; an
//    extra path costs a re-stat, a missing one would be a bug). ChangeSet (debouncer.h)
//    states the full rule, which a randomized test checks.
//  - A Removed directory means its whole subtree is gone (descendant directories the
//    watcher knew of are reported too, files inside it may not be: a directory moved out
//    of the tree reports only itself and its watched subdirectories).
//  - A Created directory (mkdir, or moved in from outside the tree or from elsewhere in it)
//    is scanned after its watch is added, and every entry found inside is reported as
//    Created as well, so a directory made and filled before its watch existed is complete.
//  - Overflow: the kernel queue overflowed and events were lost; the tree was rescanned
//    (every directory re-watched) and every path in it is reported as Created after this
//    event. The consumer should diff the whole tree against what it has live.
//  - RootGone: the watched root was removed, moved away, replaced by another directory of
//    the same name, or unmounted; or a parent was renamed so its path names nothing now.
//    The watcher is dead from then on (read_events returns nothing more). An *empty* root
//    removed while some process still holds it open (cwd, fd) is only noticed once that
//    reference goes: the kernel sends nothing before.
enum class EventKind : uint8_t { Created, Modified, Removed, Overflow, RootGone };

const char* event_kind_name(EventKind kind);

struct Event {
  EventKind kind;
  std::string path;  // relative to the root; empty for Overflow and RootGone
  bool is_dir = false;

  friend bool operator==(const Event&, const Event&) = default;
};

// Not thread-safe: one thread owns a watcher (WatchLoop runs it on its own thread). All
// calls are non-blocking except read_events' short wait to pair a rename (see there).
class RecursiveWatcher {
 public:
  // Watches `root` and every directory below it (symlinks are not followed). Fails with
  // ENOSPC and a message naming the sysctl fs.inotify.max_user_watches (and its current
  // value) when the per-user watch limit is reached; ENOTDIR/ENOENT when `root` is not a
  // directory.
  //
  // With Depth::top_only, only `root` itself is watched (its entries are reported, its
  // subdirectories are not watched): for a directory whose children are whole trees, such
  // as a sysroot's deployments.
  enum class Depth { recursive, top_only };
  static Result<RecursiveWatcher> open(const std::filesystem::path& root,
                                       Depth depth = Depth::recursive);

  RecursiveWatcher(RecursiveWatcher&&) noexcept = default;
  RecursiveWatcher& operator=(RecursiveWatcher&&) noexcept = default;
  ~RecursiveWatcher() = default;  // closing the inotify fd drops every watch

  // The inotify fd, readable when events are queued: poll it, then call read_events().
  int fd() const { return fd_.get(); }
  const std::filesystem::path& root() const { return root_; }

  // Reads and translates everything queued now; returns an empty vector when nothing was
  // (EAGAIN). A rename whose IN_MOVED_FROM is the last queued event waits up to a few
  // milliseconds for its IN_MOVED_TO (the kernel queues the two one after the other);
  // an unpaired IN_MOVED_FROM is a move out of the tree. Fails only on a read error or
  // when a new directory cannot be watched because the watch limit was reached (ENOSPC,
  // as in open()); other per-directory errors (a directory gone again before its watch
  // was added, EACCES) are logged and skipped.
  Result<std::vector<Event>> read_events();

  // Number of directories watched now (the kernel holds exactly this many watches).
  size_t watch_count() const { return watches_.size(); }
  bool root_gone() const { return root_gone_; }

 private:
  struct PendingMove {
    uint32_t cookie;
    std::string path;
    bool is_dir;
  };
  // One watched directory. The path is where the directory was last seen; the identity
  // (dev, ino) is what the kernel watches, and says whether the path still names it.
  struct Watch {
    std::string path;
    dev_t dev;
    ino_t ino;
  };

  RecursiveWatcher(std::filesystem::path root, UniqueFd fd);

  // Adds (or refreshes) the watch on directory `rel`, then lists it: each entry is
  // reported as Created into `out` (when given) and each subdirectory is watched and
  // listed in turn. Watch first, list second: whatever is created meanwhile is either
  // seen by the listing or raises an event.
  Status watch_tree(const std::string& rel, std::vector<Event>* out);
  // Watches the directory at `rel` now and records it there (a directory already watched
  // elsewhere is re-recorded here: the kernel gives one wd per inode). Returns the wd, or
  // -1 when `rel` is gone or not a directory (symlinks are not followed below the root).
  Result<int> add_watch(const std::string& rel);
  void record(int wd, const std::string& rel, const struct stat& st);
  void forget(int wd);
  // The watches recorded at `rel` and below (all of them for the root), by path.
  std::vector<std::pair<std::string, int>> subtree(const std::string& rel) const;
  // After `rel` was renamed away or moved out: every watch still recorded at or below it
  // whose directory is no longer there (by identity) is removed and, below `rel`,
  // reported as Removed. A directory that went elsewhere in the tree is re-watched when
  // its own IN_MOVED_TO is read; one already re-recorded elsewhere is not under `rel`.
  void drop_departed(const std::string& rel, std::vector<Event>& out);
  // After IN_Q_OVERFLOW: re-watch the whole tree, report everything, drop stale watches.
  Status rescan(std::vector<Event>& out);

  // Reads what is queued now into `buf`; returns false on EAGAIN.
  Result<bool> read_queue(std::vector<char>& buf, size_t& len);
  // Translates the events in buf[0, len) into `out`. Sets `overflowed` on IN_Q_OVERFLOW.
  Status translate(const char* buf, size_t len, std::vector<Event>& out, bool& overflowed);
  void resolve_unpaired_moves(std::vector<Event>& out);
  // IN_DELETE_SELF on the root comes only once the last reference to it is gone, so a
  // process with its cwd or an fd in the root would delay it indefinitely: after each
  // batch of events, check that the root's path still names the watched directory.
  void check_root(std::vector<Event>& out);
  void mark_root_gone(std::vector<Event>& out, const char* why);
  std::filesystem::path absolute(const std::string& rel) const {
    return rel.empty() ? root_ : root_ / rel;
  }

  // Why paths are not enough: a new directory is listed as it is *now*, ahead of the
  // events still queued, so a queued rename may describe a directory whose path the map
  // already moved on. Paths translate events (a stale one only adds a harmless extra path
  // to re-stat); anything destructive is decided by identity.
  std::filesystem::path root_;
  UniqueFd fd_;
  int root_wd_ = -1;
  Depth depth_ = Depth::recursive;
  std::unordered_map<int, Watch> watches_;  // every watch this instance holds, by wd
  // (path, wd) of every watch, ordered so that a subtree is one range. Two wds may claim
  // one path for a while (a directory replaced before the old one's IN_IGNORED is read).
  std::set<std::pair<std::string, int>> by_path_;
  std::vector<PendingMove> pending_moves_;  // IN_MOVED_FROM awaiting its IN_MOVED_TO
  dev_t root_dev_ = 0;                      // identity of the watched root, for check_root()
  ino_t root_ino_ = 0;
  bool root_gone_ = false;
  std::vector<char> buf_;  // read(2) buffer, kept between calls
};

// The value of /proc/sys/fs/inotify/max_user_watches, or -1 when it cannot be read.
long max_user_watches();

}  // namespace livefs::inotify
