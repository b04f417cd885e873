// WatchLoop: runs a RecursiveWatcher and a Debouncer on a thread of its own and hands each
// settled ChangeSet to a callback. This is what the daemon's hotfix loop holds.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <thread>

#include "common/error.h"
#include "common/unique_fd.h"
#include "inotify/debouncer.h"
#include "inotify/watcher.h"

namespace livefs::inotify {

// Threading: start() spawns one thread that owns the watcher and the debouncer; nothing
// else touches them afterwards. It waits in poll(2) on the inotify fd and an eventfd (the
// stop signal), with the debouncer's time-until-due as the timeout. Both callbacks run on
// that thread, one call at a time, and may block (events queue in the kernel meanwhile; a
// long block can overflow the queue, which is then recovered by a rescan) but must not
// throw (it would end the process) nor destroy the WatchLoop. stop() may be
// called from any thread, including from a callback (then it only signals; the thread
// ends after the callback returns and the destructor joins it).
//
// The thread ends by itself after delivering a root_gone change set, or after reporting an
// error (a read error, or the watch limit reached for a new directory) to on_error: the
// watcher cannot be trusted to see everything any more, so the consumer decides what next.
class WatchLoop {
 public:
  using ChangeCallback = std::function<void(ChangeSet)>;
  using ErrorCallback = std::function<void(const Error&)>;

  // Watches `root` (see RecursiveWatcher::open for the errors). Nothing runs yet.
  static Result<std::unique_ptr<WatchLoop>> open(
      const std::filesystem::path& root, DebounceOptions options = {},
      RecursiveWatcher::Depth depth = RecursiveWatcher::Depth::recursive);

  WatchLoop(const WatchLoop&) = delete;
  WatchLoop& operator=(const WatchLoop&) = delete;
  ~WatchLoop();  // stop()

  // The watched root (immutable, so safe from any thread): change set paths are below it.
  const std::filesystem::path& root() const { return root_; }

  // Starts the thread. Fails with EBUSY when already started.
  Status start(ChangeCallback on_change, ErrorCallback on_error = {});
  // Signals the thread to end and joins it (unless called from it). Events not yet settled
  // are dropped. Idempotent.
  void stop();

 private:
  WatchLoop(RecursiveWatcher watcher, UniqueFd stop_fd, DebounceOptions options);
  void run(const ChangeCallback& on_change, const ErrorCallback& on_error);

  const std::filesystem::path root_;
  RecursiveWatcher watcher_;  // owned by the thread once started
  UniqueFd stop_fd_;          // eventfd: written by stop(), polled by the thread
  DebounceOptions options_;
  std::thread thread_;                          // owner's thread only (start/stop/~)
  std::atomic<std::thread::id> loop_thread_{};  // set by the loop thread when it runs
  bool started_ = false;                        // owner's thread only
};

}  // namespace livefs::inotify
