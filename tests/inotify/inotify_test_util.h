// Helpers for the inotify suite: bounded waits for events and change sets, the kernel's
// own count of an inotify fd's watches, and temporary sysctl overrides.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "inotify/debouncer.h"
#include "inotify/watcher.h"

namespace livefs::inotify::testing {

// Upper bound on any wait for the kernel: generous, never asserted as a duration.
inline constexpr std::chrono::seconds kWait{5};

// What a bare watcher reported so far, by kind.
struct Seen {
  std::set<std::string> created, modified, removed;
  bool overflow = false;
  bool root_gone = false;
  std::vector<Event> all;

  void add(const Event& e) {
    all.push_back(e);
    switch (e.kind) {
      case EventKind::Created:
        created.insert(e.path);
        break;
      case EventKind::Modified:
        modified.insert(e.path);
        break;
      case EventKind::Removed:
        removed.insert(e.path);
        break;
      case EventKind::Overflow:
        overflow = true;
        break;
      case EventKind::RootGone:
        root_gone = true;
        break;
    }
  }
};

// Polls and reads `w` until `done(seen)` holds or kWait passed; returns done(seen).
// Read errors fail the calling test through the returned Error in `error`.
inline bool read_until(RecursiveWatcher& w, Seen& seen,
                       const std::function<bool(const Seen&)>& done, Error* error = nullptr) {
  auto deadline = std::chrono::steady_clock::now() + kWait;
  while (!done(seen) && std::chrono::steady_clock::now() < deadline) {
    struct pollfd pfd {
      w.fd(), POLLIN, 0
    };
    if (::poll(&pfd, 1, 50) <= 0) continue;
    auto events = w.read_events();
    if (!events) {
      if (error != nullptr) *error = events.error();
      return false;
    }
    for (const Event& e : *events) seen.add(e);
  }
  return done(seen);
}

// Reads whatever arrives within a short settle time (for "nothing else happened" checks
// that cannot fail spuriously: they only look at what did arrive).
inline void read_for_a_while(RecursiveWatcher& w, Seen& seen, int rounds = 4) {
  for (int i = 0; i < rounds; ++i) {
    struct pollfd pfd {
      w.fd(), POLLIN, 0
    };
    if (::poll(&pfd, 1, 50) <= 0) continue;
    if (auto events = w.read_events()) {
      for (const Event& e : *events) seen.add(e);
    }
  }
}

// How many watches the kernel holds on inotify fd `fd` of this process.
inline size_t kernel_watch_count(int fd) {
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("inotify wd:")) ++n;
  }
  return n;
}

// Collects the change sets a WatchLoop delivers (on its thread) for the test thread.
class ChangeSetSink {
 public:
  void deliver(ChangeSet set) {
    std::lock_guard lock(mutex_);
    for (const auto& p : set.paths) paths_.insert(p);
    full_rescan_ = full_rescan_ || set.full_rescan;
    root_gone_ = root_gone_ || set.root_gone;
    sets_.push_back(std::move(set));
    cv_.notify_all();
  }
  void fail(const Error& e) {
    std::lock_guard lock(mutex_);
    errors_.push_back(e.message());
    cv_.notify_all();
  }
  // Waits until every path of `expected` was delivered (in any number of sets).
  bool wait_for_paths(const std::set<std::string>& expected) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kWait, [&] {
      for (const auto& p : expected) {
        if (!paths_.contains(p)) return false;
      }
      return true;
    });
  }
  bool wait_for_root_gone() {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, kWait, [&] { return root_gone_; });
  }
  std::set<std::string> paths() const {
    std::lock_guard lock(mutex_);
    return paths_;
  }
  std::vector<ChangeSet> sets() const {
    std::lock_guard lock(mutex_);
    return sets_;
  }
  std::vector<std::string> errors() const {
    std::lock_guard lock(mutex_);
    return errors_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    paths_.clear();
    sets_.clear();
  }

 private:
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable cv_;
  std::set<std::string> paths_;
  std::vector<ChangeSet> sets_;
  std::vector<std::string> errors_;
  bool full_rescan_ = false;
  bool root_gone_ = false;
};

// The inotify sysctls are machine-wide, and ctest may run tests in parallel processes: tests
// that lower a limit hold this lock exclusively, all others that use inotify (also through
// a daemon they start) shared, so none sees a lowered limit. (The windows are kept short.)
class SysctlLock {
 public:
  explicit SysctlLock(bool exclusive)
      : fd_(::open("/tmp/livefs-inotify-sysctl.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (fd_) ::flock(fd_.get(), exclusive ? LOCK_EX : LOCK_SH);
  }
  // Converts the lock (not atomically: another holder may get in between).
  void relock(bool exclusive) {
    if (fd_) ::flock(fd_.get(), exclusive ? LOCK_EX : LOCK_SH);
  }

 private:
  UniqueFd fd_;  // closing it releases the lock
};

// Sets /proc/sys/fs/inotify/<name> and restores the old value when destroyed (or earlier
// with restore()), also when the test fails.
class SysctlOverride {
 public:
  SysctlOverride(const std::string& name, long value)
      : path_("/proc/sys/fs/inotify/" + name), old_(read()) {
    ok_ = old_ >= 0 && write(value);
  }
  ~SysctlOverride() { restore(); }
  SysctlOverride(const SysctlOverride&) = delete;
  SysctlOverride& operator=(const SysctlOverride&) = delete;

  bool ok() const { return ok_; }
  long old_value() const { return old_; }
  void restore() {
    if (ok_) write(old_);
    ok_ = false;
  }
  long read() const {
    std::ifstream in(path_);
    long v = -1;
    if (!(in >> v)) return -1;
    return v;
  }

 private:
  bool write(long value) const {
    std::ofstream out(path_);
    out << value << "\n";
    out.flush();
    return static_cast<bool>(out);
  }
  std::string path_;
  long old_;
  bool ok_ = false;
};

}  // namespace livefs::inotify::testing
