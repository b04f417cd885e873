// WatchLoop: poll(inotify fd, stop eventfd) -> watcher events -> debouncer -> callback.
#include "inotify/watch_loop.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <utility>

#include "common/log.h"

namespace livefs::inotify {

Result<std::unique_ptr<WatchLoop>> WatchLoop::open(const std::filesystem::path& root,
                                                   DebounceOptions options,
                                                   RecursiveWatcher::Depth depth) {
  auto watcher = RecursiveWatcher::open(root, depth);
  if (!watcher) return std::unexpected(watcher.error());
  UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_fd) return fail_errno("eventfd");
  return std::unique_ptr<WatchLoop>(
      new WatchLoop(std::move(*watcher), std::move(stop_fd), options));
}

WatchLoop::WatchLoop(RecursiveWatcher watcher, UniqueFd stop_fd, DebounceOptions options)
    : root_(watcher.root()),
      watcher_(std::move(watcher)),
      stop_fd_(std::move(stop_fd)),
      options_(options) {}

WatchLoop::~WatchLoop() { stop(); }

Status WatchLoop::start(ChangeCallback on_change, ErrorCallback on_error) {
  if (started_) return fail(EBUSY, "watch(" + root_.string() + "): already started");
  started_ = true;
  thread_ = std::thread([this, on_change = std::move(on_change), on_error = std::move(on_error)] {
    run(on_change, on_error);
  });
  return {};
}

void WatchLoop::stop() {
  uint64_t one = 1;
  // Cannot fail short of a closed fd: the counter would need 2^64-1 stops to saturate.
  (void)::write(stop_fd_.get(), &one, sizeof one);
  // From a callback: only signal (joining itself would deadlock). Compared through an
  // atomic the thread set itself: thread_ belongs to the owner's thread.
  if (loop_thread_.load() == std::this_thread::get_id()) return;
  if (thread_.joinable()) thread_.join();
}

void WatchLoop::run(const ChangeCallback& on_change, const ErrorCallback& on_error) {
  loop_thread_.store(std::this_thread::get_id());
  auto log = logger("inotify");
  Debouncer debouncer(options_);
  const std::string root = root_.string();
  log->debug("watch({}): loop started, {} directories watched", root, watcher_.watch_count());
  for (;;) {
    int timeout_ms = -1;
    if (auto left = debouncer.time_until_due()) {
      // Round up: waking a little late only delays the set; waking early spins.
      auto ms = std::chrono::ceil<std::chrono::milliseconds>(*left).count();
      timeout_ms = static_cast<int>(ms);
    }
    struct pollfd fds[2] = {{watcher_.fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) {
      Error e = errno_error("poll(inotify " + root + ")");
      log->error("watch({}): {}", root, e.message());
      if (on_error) on_error(e);
      return;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) break;
    if (n > 0 && (fds[0].revents & POLLIN)) {
      auto events = watcher_.read_events();
      if (!events) {
        log->error("watch({}): {} ({})", root, events.error().message(),
                   events.error().code_name());
        if (on_error) on_error(events.error());
        return;
      }
      for (const Event& e : *events) {
        log->trace("watch({}): {} {}", root, event_kind_name(e.kind), e.path);
      }
      debouncer.add(*events);
    }
    if (auto set = debouncer.take_due()) {
      bool last = set->root_gone;
      log->debug("watch({}): change set of {} paths from {} events{}{}", root, set->paths.size(),
                 set->events, set->full_rescan ? ", full rescan" : "",
                 set->root_gone ? ", root gone" : "");
      on_change(std::move(*set));
      if (last) return;
    }
  }
  log->debug("watch({}): loop stopped", root);
}

}  // namespace livefs::inotify
