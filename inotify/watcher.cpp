// RecursiveWatcher: the wd <-> relative path map, kept right across renames, moves in and
// out of the tree, deletions and queue overflows.
#include "inotify/watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <utility>

#include "common/log.h"

namespace livefs::inotify {
namespace {

// Every directory gets the same watch. IN_ONLYDIR: refuse a name that is no directory.
// Symlinks are not followed: the directory is opened O_PATH|O_NOFOLLOW first and watched
// through /proc/self/fd (IN_DONT_FOLLOW would watch that magic link itself).
// IN_EXCL_UNLINK: no events for files unlinked while still open (build tools do this).
constexpr uint32_t kDirMask = IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
                              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
                              IN_EXCL_UNLINK;

// How long an IN_MOVED_FROM at the end of the queue waits for its IN_MOVED_TO. The kernel
// queues both from the same rename(2) call, so the gap is only another thread's timing;
// if it is missed, the rename is handled as a move out plus a move in, still correct.
constexpr int kMovePairWaitMs = 2;

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

Error watch_limit_error(const std::filesystem::path& path) {
  long limit = max_user_watches();
  return make_error(ENOSPC, "inotify_add_watch(" + path.string() +
                                "): the inotify watch limit is reached; raise the sysctl "
                                "fs.inotify.max_user_watches (now " +
                                (limit < 0 ? std::string("unknown") : std::to_string(limit)) + ")");
}

}  // namespace

const char* event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::Created:
      return "created";
    case EventKind::Modified:
      return "modified";
    case EventKind::Removed:
      return "removed";
    case EventKind::Overflow:
      return "overflow";
    case EventKind::RootGone:
      return "root-gone";
  }
  return "?";
}

long max_user_watches() {
  std::ifstream in("/proc/sys/fs/inotify/max_user_watches");
  long value = -1;
  if (!(in >> value)) return -1;
  return value;
}

RecursiveWatcher::RecursiveWatcher(std::filesystem::path root, UniqueFd fd)
    : root_(std::move(root)), fd_(std::move(fd)) {}

Result<RecursiveWatcher> RecursiveWatcher::open(const std::filesystem::path& root, Depth depth) {
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return fail_errno("stat(" + root.string() + ")");
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, "watch(" + root.string() + ")");
  UniqueFd fd(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!fd) {
    if (errno == EMFILE) {
      return fail(EMFILE,
                  "inotify_init1: the inotify instance limit is reached; raise the sysctl "
                  "fs.inotify.max_user_instances");
    }
    return fail_errno("inotify_init1");
  }
  RecursiveWatcher watcher(root, std::move(fd));
  watcher.depth_ = depth;
  watcher.root_dev_ = st.st_dev;
  watcher.root_ino_ = st.st_ino;
  if (auto st2 = watcher.watch_tree("", nullptr); !st2) {
    return std::unexpected(with_context(st2.error(), "watch(" + root.string() + ")"));
  }
  logger("inotify")->debug("watch({}): {} directories watched", root.string(),
                           watcher.watch_count());
  return watcher;
}

Result<int> RecursiveWatcher::add_watch(const std::string& rel) {
  std::filesystem::path abs = absolute(rel);
  // The root itself may be given as a symlink to a directory (as open() accepted it).
  int flags = O_PATH | O_DIRECTORY | O_CLOEXEC | (rel.empty() ? 0 : O_NOFOLLOW);
  // Held only for the next three calls: an open reference would delay IN_DELETE_SELF.
  UniqueFd dir(::open(abs.c_str(), flags));
  if (!dir) {
    // Gone again, or replaced by a file or symlink: its parent's events report that.
    if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return -1;
    return fail_errno("open(" + abs.string() + ")");
  }
  struct stat st;
  if (::fstat(dir.get(), &st) != 0) return fail_errno("fstat(" + abs.string() + ")");
  std::string via = "/proc/self/fd/" + std::to_string(dir.get());
  int wd = ::inotify_add_watch(fd_.get(), via.c_str(), kDirMask);
  if (wd < 0) {
    if (errno == ENOSPC) return std::unexpected(watch_limit_error(abs));
    return fail_errno("inotify_add_watch(" + abs.string() + ")");
  }
  record(wd, rel, st);
  return wd;
}

void RecursiveWatcher::record(int wd, const std::string& rel, const struct stat& st) {
  auto [it, inserted] = watches_.try_emplace(wd, Watch{rel, st.st_dev, st.st_ino});
  if (!inserted) {
    if (it->second.path == rel) return;
    // The kernel returned the wd of an inode already watched: it moved here.
    by_path_.erase({it->second.path, wd});
    it->second.path = rel;
  }
  by_path_.insert({rel, wd});
}

void RecursiveWatcher::forget(int wd) {
  if (auto it = watches_.find(wd); it != watches_.end()) {
    by_path_.erase({it->second.path, wd});
    watches_.erase(it);
  }
}

Status RecursiveWatcher::watch_tree(const std::string& top, std::vector<Event>* out) {
  std::vector<std::string> todo{top};
  while (!todo.empty()) {
    std::string rel = std::move(todo.back());
    todo.pop_back();
    if (depth_ == Depth::top_only && !rel.empty()) continue;
    auto wd = add_watch(rel);
    if (!wd) {
      // The root and the watch limit are fatal; an unreadable subdirectory is skipped.
      if (rel.empty() || wd.error().code == ENOSPC) return std::unexpected(wd.error());
      logger("inotify")->warn("watch({}): {} ({}), not watched", rel, wd.error().message(),
                              wd.error().code_name());
      continue;
    }
    if (*wd < 0) {
      if (rel.empty()) return fail(ENOENT, "inotify_add_watch(" + root_.string() + ")");
      continue;
    }
    if (rel.empty()) root_wd_ = *wd;
    // List after the watch exists: an entry made in between is listed, raises an event, or
    // both (the consumer sees it twice, which is harmless).
    std::filesystem::path abs = absolute(rel);
    DIR* dir = ::opendir(abs.c_str());
    if (dir == nullptr) {
      if (errno != ENOENT && errno != ENOTDIR) {
        logger("inotify")->warn("opendir({}): {}", abs.string(), std::strerror(errno));
      }
      continue;
    }
    while (struct dirent* de = ::readdir(dir)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      bool is_dir = de->d_type == DT_DIR;
      if (de->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::fstatat(::dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      std::string child = join(rel, de->d_name);
      if (out != nullptr) out->push_back({EventKind::Created, child, is_dir});
      if (is_dir) todo.push_back(std::move(child));
    }
    ::closedir(dir);
  }
  return {};
}

std::vector<std::pair<std::string, int>> RecursiveWatcher::subtree(const std::string& rel) const {
  if (rel.empty()) return {by_path_.begin(), by_path_.end()};
  std::vector<std::pair<std::string, int>> found;
  for (auto it = by_path_.lower_bound({rel, INT_MIN}); it != by_path_.end() && it->first == rel;
       ++it) {
    found.push_back(*it);
  }
  // Paths below `rel` all start with "rel/", so they are one contiguous range of the set.
  const std::string prefix = rel + "/";
  for (auto it = by_path_.lower_bound({prefix, INT_MIN});
       it != by_path_.end() && it->first.starts_with(prefix); ++it) {
    found.push_back(*it);
  }
  return found;
}

void RecursiveWatcher::drop_departed(const std::string& rel, std::vector<Event>& out) {
  for (const auto& [path, wd] : subtree(rel)) {
    if (wd == root_wd_) continue;
    const Watch& w = watches_.at(wd);
    struct stat st;
    if (::lstat(absolute(path).c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_dev == w.dev &&
        st.st_ino == w.ino) {
      continue;  // this directory is still (or again) there
    }
    // EINVAL when the kernel dropped it already (directory deleted): nothing to do.
    ::inotify_rm_watch(fd_.get(), wd);
    forget(wd);
    if (path != rel) out.push_back({EventKind::Removed, path, true});
  }
}

Status RecursiveWatcher::rescan(std::vector<Event>& out) {
  logger("inotify")->warn("watch({}): event queue overflowed, rescanning the whole tree",
                          root_.string());
  // Re-watch in place rather than dropping every watch first: inotify_add_watch returns the
  // same wd for a directory still there, and removing thousands of watches would queue as
  // many IN_IGNORED events and could overflow the queue again.
  const size_t reported_before = out.size();
  auto before = std::move(watches_);
  watches_.clear();
  by_path_.clear();
  auto st = watch_tree("", &out);
  if (!st) {
    if (st.error().code == ENOENT || st.error().code == ENOTDIR) {
      mark_root_gone(out, "gone during rescan");
      return {};
    }
    return st;
  }
  size_t dropped = 0;
  for (const auto& [wd, w] : before) {
    if (!watches_.contains(wd)) {
      ::inotify_rm_watch(fd_.get(), wd);
      ++dropped;
    }
  }
  logger("inotify")->info("watch({}): rescan found {} entries, {} directories watched, {} stale",
                          root_.string(), out.size() - reported_before, watch_count(), dropped);
  return {};
}

void RecursiveWatcher::mark_root_gone(std::vector<Event>& out, const char* why) {
  if (root_gone_) return;
  root_gone_ = true;
  logger("inotify")->warn("watch({}): the watched root is {}; no more events", root_.string(), why);
  for (const auto& [wd, w] : watches_) ::inotify_rm_watch(fd_.get(), wd);
  watches_.clear();
  by_path_.clear();
  pending_moves_.clear();
  out.push_back({EventKind::RootGone, "", true});
}

void RecursiveWatcher::check_root(std::vector<Event>& out) {
  struct stat st;
  if (::stat(root_.c_str(), &st) != 0 || st.st_dev != root_dev_ || st.st_ino != root_ino_) {
    mark_root_gone(out, "removed, replaced or moved away (its path names another file now)");
  }
}

Result<bool> RecursiveWatcher::read_queue(std::vector<char>& buf, size_t& len) {
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
    if (n >= 0) {
      len = static_cast<size_t>(n);
      return n > 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return false;
    return fail_errno("read(inotify " + root_.string() + ")");
  }
}

Status RecursiveWatcher::translate(const char* buf, size_t len, std::vector<Event>& out,
                                   bool& overflowed) {
  size_t off = 0;
  while (off + sizeof(inotify_event) <= len && !root_gone_) {
    inotify_event ev;
    std::memcpy(&ev, buf + off, sizeof ev);
    // The name is NUL-padded to ev.len bytes.
    std::string name = ev.len > 0 ? std::string(buf + off + sizeof ev) : std::string();
    off += sizeof ev + ev.len;

    if (ev.mask & IN_Q_OVERFLOW) {
      overflowed = true;
      continue;
    }
    auto it = watches_.find(ev.wd);
    if (it == watches_.end()) continue;       // a watch already dropped; its IN_IGNORED
    const std::string dir = it->second.path;  // copy: the maps change below

    if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
      if (ev.wd == root_wd_) {
        mark_root_gone(out, (ev.mask & IN_MOVE_SELF) ? "moved away" : "removed");
      } else if (ev.mask & (IN_IGNORED | IN_UNMOUNT)) {
        // The kernel dropped this watch (directory deleted or unmounted): forget it. Its
        // parent reported the deletion by name.
        forget(ev.wd);
      }
      // IN_MOVE_SELF of a subdirectory: its parent's IN_MOVED_FROM/TO carry the news.
      continue;
    }

    const bool is_dir = ev.mask & IN_ISDIR;
    const std::string path = join(dir, name);
    if (ev.mask & IN_CREATE) {
      out.push_back({EventKind::Created, path, is_dir});
      if (is_dir) {
        if (auto st = watch_tree(path, &out); !st) return st;
      }
    }
    if (ev.mask & (IN_CLOSE_WRITE | IN_ATTRIB)) {
      out.push_back({EventKind::Modified, name.empty() ? dir : path, is_dir || name.empty()});
    }
    if (ev.mask & IN_DELETE) {
      // The directory's own watch goes with an IN_IGNORED from the kernel.
      out.push_back({EventKind::Removed, path, is_dir});
    }
    if (ev.mask & IN_MOVED_FROM) {
      pending_moves_.push_back({ev.cookie, path, is_dir});
    }
    if (ev.mask & IN_MOVED_TO) {
      auto from = std::find_if(pending_moves_.begin(), pending_moves_.end(),
                               [&](const PendingMove& m) { return m.cookie == ev.cookie; });
      if (from != pending_moves_.end()) {
        PendingMove move = std::move(*from);
        pending_moves_.erase(from);
        out.push_back({EventKind::Removed, move.path, move.is_dir});
        out.push_back({EventKind::Created, path, is_dir});
        if (is_dir) {
          // Renamed inside the tree. Re-watching what is at the new path now re-records
          // the watches that moved (same inodes, same wds). Its content is reported under
          // both names so a consumer working path by path drops the old, imports the new.
          std::vector<Event> content;
          if (auto st = watch_tree(path, &content); !st) return st;
          for (const Event& e : content) {
            out.push_back({EventKind::Removed, move.path + e.path.substr(path.size()), e.is_dir});
            out.push_back(e);
          }
          drop_departed(move.path, out);
        }
      } else {
        // Moved in from outside the tree: a new subtree, possibly full already.
        out.push_back({EventKind::Created, path, is_dir});
        if (is_dir) {
          if (auto st = watch_tree(path, &out); !st) return st;
        }
      }
    }
  }
  return {};
}

void RecursiveWatcher::resolve_unpaired_moves(std::vector<Event>& out) {
  for (PendingMove& move : pending_moves_) {
    // Moved out of the tree (or the pairing was missed): gone from here.
    out.push_back({EventKind::Removed, move.path, move.is_dir});
    if (move.is_dir) drop_departed(move.path, out);
  }
  pending_moves_.clear();
}

Result<std::vector<Event>> RecursiveWatcher::read_events() {
  std::vector<Event> out;
  // Big enough for many events per read(2); sized in events of the longest name.
  if (buf_.empty()) buf_.resize(64 * (sizeof(inotify_event) + NAME_MAX + 1));
  std::vector<char>& buf = buf_;
  bool overflowed = false;
  bool waited_for_pair = false;
  for (;;) {
    size_t len = 0;
    auto got = read_queue(buf, len);
    if (!got) return std::unexpected(got.error());
    if (!*got) {
      if (pending_moves_.empty() || waited_for_pair || overflowed || root_gone_) break;
      waited_for_pair = true;
      struct pollfd pfd {
        fd_.get(), POLLIN, 0
      };
      if (::poll(&pfd, 1, kMovePairWaitMs) <= 0) break;
      continue;
    }
    if (root_gone_) continue;  // drain and discard: nothing more is reported
    if (auto st = translate(buf.data(), len, out, overflowed); !st) {
      return std::unexpected(st.error());
    }
  }
  if (!root_gone_ && !out.empty()) check_root(out);
  if (root_gone_) return out;
  if (overflowed) {
    // Everything pending is unreliable now; the rescan reports the tree as it is.
    pending_moves_.clear();
    out.push_back({EventKind::Overflow, "", true});
    if (auto st = rescan(out); !st) return std::unexpected(st.error());
    return out;
  }
  resolve_unpaired_moves(out);
  return out;
}

}  // namespace livefs::inotify
