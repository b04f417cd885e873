// Debouncer logic on a fake clock: bursts fold into one set, the quiet period and the max
// delay decide when it is due, overflow and root-gone flags carry through.
#include "inotify/debouncer.h"

#include <gtest/gtest.h>

namespace livefs::inotify {
namespace {

using namespace std::chrono_literals;
using Clock = Debouncer::Clock;

class FakeClock {
 public:
  Clock::time_point now() const { return now_; }
  void advance(Clock::duration d) { now_ += d; }
  Debouncer::Now source() {
    return [this] { return now_; };
  }

 private:
  Clock::time_point now_{std::chrono::seconds(1000)};
};

Event created(std::string path) { return {EventKind::Created, std::move(path), false}; }

TEST(Debouncer, NothingPendingIsNeverDue) {
  FakeClock clock;
  Debouncer d({.quiet = 10ms, .max_delay = 200ms}, clock.source());
  EXPECT_FALSE(d.pending());
  EXPECT_FALSE(d.time_until_due().has_value());
  clock.advance(1s);
  EXPECT_FALSE(d.take_due().has_value());
}

TEST(Debouncer, BurstBecomesOneChangeSet) {
  FakeClock clock;
  Debouncer d({.quiet = 10ms, .max_delay = 200ms}, clock.source());
  for (int i = 0; i < 1000; ++i) {
    d.add(created("bin/f" + std::to_string(i)));
    d.add(Event{EventKind::Modified, "bin/f" + std::to_string(i), false});
    clock.advance(100us);  // 1,000 files in 100 ms: never 10 ms quiet, under max delay
    ASSERT_FALSE(d.take_due().has_value()) << i;
  }
  clock.advance(10ms);
  auto set = d.take_due();
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->paths.size(), 1000u);
  EXPECT_EQ(set->events, 2000u);
  EXPECT_FALSE(set->full_rescan);
  EXPECT_FALSE(set->root_gone);
  EXPECT_FALSE(d.pending());
  EXPECT_FALSE(d.take_due().has_value());
}

TEST(Debouncer, QuietPeriodRestartsWithEachEvent) {
  FakeClock clock;
  Debouncer d({.quiet = 10ms, .max_delay = 200ms}, clock.source());
  d.add(created("a"));
  EXPECT_EQ(*d.time_until_due(), Clock::duration(10ms));
  clock.advance(9ms);
  EXPECT_FALSE(d.take_due().has_value());
  d.add(created("b"));  // restarts the quiet period
  EXPECT_EQ(*d.time_until_due(), Clock::duration(10ms));
  clock.advance(9ms);
  EXPECT_FALSE(d.take_due().has_value());
  clock.advance(1ms);
  EXPECT_EQ(*d.time_until_due(), Clock::duration::zero());
  auto set = d.take_due();
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->paths, (std::set<std::string>{"a", "b"}));
}

TEST(Debouncer, MaxDelayBoundsASteadyStream) {
  FakeClock clock;
  Debouncer d({.quiet = 10ms, .max_delay = 200ms}, clock.source());
  int added = 0;
  // An event every 5 ms never leaves a quiet period; the set is due 200 ms after the first.
  while (!d.take_due().has_value()) {
    ASSERT_LE(added, 40) << "not due by the max delay";
    d.add(created("f" + std::to_string(added++)));
    clock.advance(5ms);
  }
  EXPECT_EQ(added, 40);  // events at 0, 5, ..., 195 ms; due at 200 ms
  // The next event starts a new burst with its own max delay.
  d.add(created("next"));
  EXPECT_EQ(*d.time_until_due(), Clock::duration(10ms));
}

TEST(Debouncer, DuplicatePathsFoldAndKindsMix) {
  FakeClock clock;
  Debouncer d({}, clock.source());
  d.add(created("x"));
  d.add(Event{EventKind::Modified, "x", false});
  d.add(Event{EventKind::Removed, "x", false});
  d.add(Event{EventKind::Removed, "dir", true});
  clock.advance(10ms);  // the default quiet period
  auto set = d.take_due();
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->paths, (std::set<std::string>{"dir", "x"}));
  EXPECT_EQ(set->events, 4u);
}

TEST(Debouncer, OverflowMarksFullRescan) {
  FakeClock clock;
  Debouncer d({}, clock.source());
  d.add(Event{EventKind::Overflow, "", true});
  d.add(created("a"));
  clock.advance(10ms);
  auto set = d.take_due();
  ASSERT_TRUE(set.has_value());
  EXPECT_TRUE(set->full_rescan);
  EXPECT_EQ(set->paths, (std::set<std::string>{"a"}));
}

TEST(Debouncer, RootGoneIsDueAtOnce) {
  FakeClock clock;
  Debouncer d({}, clock.source());
  d.add(created("a"));
  EXPECT_FALSE(d.take_due().has_value());
  d.add(Event{EventKind::RootGone, "", true});
  auto set = d.take_due();  // no time passed
  ASSERT_TRUE(set.has_value());
  EXPECT_TRUE(set->root_gone);
  EXPECT_TRUE(set->paths.contains("a"));
}

TEST(Debouncer, TakeHandsOverEarly) {
  FakeClock clock;
  Debouncer d({}, clock.source());
  EXPECT_FALSE(d.take().has_value());
  d.add(created("a"));
  auto set = d.take();
  ASSERT_TRUE(set.has_value());
  EXPECT_EQ(set->paths.size(), 1u);
  EXPECT_FALSE(d.pending());
}

}  // namespace
}  // namespace livefs::inotify
