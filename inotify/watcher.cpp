// RecursiveWatcher: the wd <-> relative path map, kept right across renames, moves in and
// out of the tree, deletions and queue overflows.
#include "inotify/watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <utility>

#include "common/log.h"

namespace livefs::inotify {
namespace {

// Every directory gets the same watch. IN_ONLYDIR|IN_DONT_FOLLOW: a name that was replaced
// by a file or a symlink between the event and the watch is refused, not followed.
// IN_EXCL_UNLINK: no events for files unlinked while still open (build tools do this).
constexpr uint32_t kDirMask = IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
                              IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR |
                              IN_DONT_FOLLOW | IN_EXCL_UNLINK;

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

Result<RecursiveWatcher> RecursiveWatcher::open(const std::filesystem::path& root) {
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
  std::filesystem::path abs = rel.empty() ? root_ : root_ / rel;
  // The root itself may be given as a symlink to a directory (as `open` accepted it).
  uint32_t mask = rel.empty() ? kDirMask & ~IN_DONT_FOLLOW : kDirMask;
  int wd = ::inotify_add_watch(fd_.get(), abs.c_str(), mask);
  if (wd < 0) {
    // Gone again, or replaced by a file or symlink: its parent's events report that.
    if (errno == ENOENT || errno == ENOTDIR) return -1;
    if (errno == ENOSPC) return std::unexpected(watch_limit_error(abs));
    return fail_errno("inotify_add_watch(" + abs.string() + ")");
  }
  // The kernel returns the existing wd for an inode already watched: a directory we knew
  // under another path (a rename we could not pair) now lives here.
  auto [it, inserted] = path_by_wd_.try_emplace(wd, rel);
  if (!inserted && it->second != rel) {
    if (auto old = wd_by_path_.find(it->second); old != wd_by_path_.end() && old->second == wd) {
      wd_by_path_.erase(old);
    }
    it->second = rel;
  }
  // A different directory watched under this path before (replaced): forget its watch.
  if (auto old = wd_by_path_.find(rel); old != wd_by_path_.end() && old->second != wd) {
    ::inotify_rm_watch(fd_.get(), old->second);
    path_by_wd_.erase(old->second);
  }
  wd_by_path_[rel] = wd;
  return wd;
}

Status RecursiveWatcher::watch_tree(const std::string& top, std::vector<Event>* out) {
  std::vector<std::string> todo{top};
  while (!todo.empty()) {
    std::string rel = std::move(todo.back());
    todo.pop_back();
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
    // List after the watch exists: an entry made in between is listed, raises an event, or
    // both (the consumer sees it twice, which is harmless).
    std::filesystem::path abs = rel.empty() ? root_ : root_ / rel;
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
  if (rel.empty()) return {wd_by_path_.begin(), wd_by_path_.end()};
  std::vector<std::pair<std::string, int>> found;
  if (auto it = wd_by_path_.find(rel); it != wd_by_path_.end()) found.emplace_back(*it);
  // Paths below `rel` all start with "rel/", so they are one contiguous range of the map.
  const std::string prefix = rel + "/";
  for (auto it = wd_by_path_.lower_bound(prefix);
       it != wd_by_path_.end() && it->first.starts_with(prefix); ++it) {
    found.emplace_back(*it);
  }
  return found;
}

void RecursiveWatcher::drop_subtree(const std::string& rel, std::vector<Event>* out) {
  for (const auto& [path, wd] : subtree(rel)) {
    // EINVAL when the kernel already dropped it (directory deleted): nothing to do.
    ::inotify_rm_watch(fd_.get(), wd);
    path_by_wd_.erase(wd);
    wd_by_path_.erase(path);
    if (out != nullptr && path != rel) out->push_back({EventKind::Removed, path, true});
  }
}

void RecursiveWatcher::rename_subtree(const std::string& from, const std::string& to) {
  auto moved = subtree(from);
  for (const auto& [path, wd] : moved) wd_by_path_.erase(path);
  for (const auto& [path, wd] : moved) {
    std::string renamed = to + path.substr(from.size());
    path_by_wd_[wd] = renamed;
    wd_by_path_[renamed] = wd;
  }
}

Status RecursiveWatcher::rescan(std::vector<Event>& out) {
  logger("inotify")->warn("watch({}): event queue overflowed, rescanning the whole tree",
                          root_.string());
  // Re-watch in place rather than dropping every watch first: inotify_add_watch returns the
  // same wd for a directory still there, and removing thousands of watches would queue as
  // many IN_IGNORED events and could overflow the queue again.
  const size_t reported_before = out.size();
  auto before = std::move(path_by_wd_);
  path_by_wd_.clear();
  wd_by_path_.clear();
  auto st = watch_tree("", &out);
  if (!st) {
    if (st.error().code == ENOENT || st.error().code == ENOTDIR) {
      mark_root_gone(out, "gone during rescan");
      return {};
    }
    return st;
  }
  size_t dropped = 0;
  for (const auto& [wd, path] : before) {
    if (!path_by_wd_.contains(wd)) {
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
  for (const auto& [wd, path] : path_by_wd_) ::inotify_rm_watch(fd_.get(), wd);
  path_by_wd_.clear();
  wd_by_path_.clear();
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
    auto it = path_by_wd_.find(ev.wd);
    if (it == path_by_wd_.end()) continue;   // a watch already dropped; its IN_IGNORED
    const std::string dir = it->second;      // copy: the maps change below
    const bool is_root_watch = dir.empty();  // only the root's watch has the empty path

    if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED)) {
      if (is_root_watch) {
        mark_root_gone(out, (ev.mask & IN_MOVE_SELF) ? "moved away" : "removed");
      } else if (ev.mask & (IN_IGNORED | IN_UNMOUNT)) {
        // The kernel dropped this watch (directory deleted or unmounted): forget it. Its
        // parent reported the deletion by name.
        path_by_wd_.erase(ev.wd);
        if (auto p = wd_by_path_.find(dir); p != wd_by_path_.end() && p->second == ev.wd) {
          wd_by_path_.erase(p);
        }
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
      out.push_back({EventKind::Removed, path, is_dir});
      if (is_dir) drop_subtree(path, &out);
    }
    if (ev.mask & IN_MOVED_FROM) {
      pending_moves_.push_back({ev.cookie, path, is_dir});
    }
    if (ev.mask & IN_MOVED_TO) {
      auto from = std::find_if(pending_moves_.begin(), pending_moves_.end(),
                               [&](const PendingMove& m) { return m.cookie == ev.cookie; });
      if (is_dir && wd_by_path_.contains(path) &&
          (from == pending_moves_.end() || from->path != path)) {
        // Renamed over an (empty) directory: that one is gone, without an IN_DELETE.
        drop_subtree(path, nullptr);
      }
      if (from != pending_moves_.end()) {
        PendingMove move = std::move(*from);
        pending_moves_.erase(from);
        out.push_back({EventKind::Removed, move.path, move.is_dir});
        out.push_back({EventKind::Created, path, is_dir});
        if (is_dir) {
          // Renamed inside the tree: its watches follow it. Report its content under both
          // names so a consumer working path by path drops the old and imports the new.
          rename_subtree(move.path, path);
          std::vector<Event> content;
          if (auto st = watch_tree(path, &content); !st) return st;
          for (const Event& e : content) {
            out.push_back({EventKind::Removed, move.path + e.path.substr(path.size()), e.is_dir});
            out.push_back(e);
          }
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
    if (move.is_dir) drop_subtree(move.path, &out);
  }
  pending_moves_.clear();
}

Result<std::vector<Event>> RecursiveWatcher::read_events() {
  std::vector<Event> out;
  // Big enough for many events per read(2); sized in events of the longest name.
  std::vector<char> buf(64 * (sizeof(inotify_event) + NAME_MAX + 1));
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
