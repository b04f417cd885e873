// Debouncer: folds a burst of watcher events into one settled ChangeSet, so that a rebuild
// touching a thousand files becomes one change set (one generation for the hotfix loop).
// Pure logic on an injectable clock; WatchLoop drives it from poll(2) timeouts.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>

#include "inotify/watcher.h"

namespace livefs::inotify {

// The settled result of a burst. `paths` are relative to the watched root ("" is the root
// itself) and hold every path created, modified or removed (directories included), in no
// particular order. What happened to each is not kept (a name may have been removed and
// made again): the consumer re-stats each path, as the tree is when it looks, and
//  - a path that is gone, or no longer a directory, takes whatever was below it along;
//  - a path that is a directory now is re-listed: it may have replaced a directory of the
//    same name, so children the consumer knew there may be gone (new children are
//    reported themselves, as the watcher lists every new directory).
// That rule is checked by tests/inotify/random_ops_test.cpp against random operations.
struct ChangeSet {
  std::set<std::string> paths;
  // The kernel queue overflowed: `paths` lists the whole tree as rescanned, but what was
  // removed meanwhile is not in it. Diff the whole tree against what is live.
  bool full_rescan = false;
  // The watched root was removed or moved away; no change set follows this one.
  bool root_gone = false;
  size_t events = 0;  // how many watcher events were folded into this set
  // When the burst's last event was folded in (steady clock): how long settling took.
  std::chrono::steady_clock::time_point last_event{};
};

// At namespace scope (not nested) so `= {}` works as a default argument.
struct DebounceOptions {
  // Emit once no event arrived for this long...
  std::chrono::milliseconds quiet{10};
  // ...or once this long has passed since the first event of the burst, whichever is
  // first, so a steady stream of events is still delivered.
  std::chrono::milliseconds max_delay{200};
};

class Debouncer {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  using Options = DebounceOptions;

  // `now` is the time source: the steady clock, or a fake one in unit tests.
  explicit Debouncer(Options options = {}, Now now = &Clock::now);

  void add(const Event& event);
  void add(std::span<const Event> events);

  bool pending() const { return pending_.has_value(); }
  // Time left until the pending set is due: nullopt when nothing is pending, zero when it
  // is due now. A root-gone set is due at once: nothing can follow it.
  std::optional<Clock::duration> time_until_due() const;
  // Hands over the pending set if it is due, else nullopt.
  std::optional<ChangeSet> take_due();
  // Hands over the pending set whether due or not (nullopt when none).
  std::optional<ChangeSet> take();

 private:
  Options options_;
  Now now_;
  std::optional<ChangeSet> pending_;
  Clock::time_point first_event_;  // of the pending burst
  Clock::time_point last_event_;
};

}  // namespace livefs::inotify
