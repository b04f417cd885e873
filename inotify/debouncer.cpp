// Debouncer: quiet-period / max-delay folding of watcher events into change sets.
#include "inotify/debouncer.h"

#include <algorithm>
#include <utility>

namespace livefs::inotify {

Debouncer::Debouncer(Options options, Now now) : options_(options), now_(std::move(now)) {}

void Debouncer::add(const Event& event) {
  Clock::time_point t = now_();
  if (!pending_) {
    pending_.emplace();
    first_event_ = t;
  }
  last_event_ = t;
  ++pending_->events;
  switch (event.kind) {
    case EventKind::Overflow:
      pending_->full_rescan = true;
      break;
    case EventKind::RootGone:
      pending_->root_gone = true;
      break;
    case EventKind::Created:
    case EventKind::Modified:
    case EventKind::Removed:
      pending_->paths.insert(event.path);
      break;
  }
}

void Debouncer::add(std::span<const Event> events) {
  for (const Event& e : events) add(e);
}

std::optional<Debouncer::Clock::duration> Debouncer::time_until_due() const {
  if (!pending_) return std::nullopt;
  if (pending_->root_gone) return Clock::duration::zero();
  Clock::time_point due = std::min(last_event_ + options_.quiet, first_event_ + options_.max_delay);
  return std::max(due - now_(), Clock::duration::zero());
}

std::optional<ChangeSet> Debouncer::take_due() {
  auto left = time_until_due();
  if (!left || *left > Clock::duration::zero()) return std::nullopt;
  return take();
}

std::optional<ChangeSet> Debouncer::take() {
  if (pending_) pending_->last_event = last_event_;
  return std::exchange(pending_, std::nullopt);
}

}  // namespace livefs::inotify
