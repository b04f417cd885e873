// The kernel limits, lowered for a moment through their sysctls (always restored): a queue
// overflow is recovered by a full rescan, and the watch limit is a clear error naming the
// sysctl. These tests hold the suite's sysctl lock exclusively (see SysctlLock).
#include <gtest/gtest.h>

#include <filesystem>

#include "inotify/inotify_test_util.h"
#include "inotify/watch_loop.h"
#include "inotify/watcher.h"
#include "support/temp_dir.h"

namespace livefs::inotify {
namespace {

namespace fs = std::filesystem;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using namespace livefs::inotify::testing;

constexpr long kSmallQueue = 64;
constexpr int kStormFiles = 3000;

class LimitsTest : public ::testing::Test {
 protected:
  LimitsTest() : lock_(true), tmp_("livefs-inotify-limits"), src_(tmp_ / "src") {
    // Watched from the start, so that the storm's events queue up in them.
    for (int d = 0; d < 5; ++d) fs::create_directories(src_ / ("d" + std::to_string(d)));
  }

  // An inotify instance takes the queue limit when it is created, so the sysctl is
  // lowered only around open().
  template <class Open>
  auto open_with_small_queue(Open open) {
    SysctlOverride queue("max_queued_events", kSmallQueue);
    EXPECT_TRUE(queue.ok()) << "cannot set fs.inotify.max_queued_events (not root?)";
    auto opened = open();
    queue.restore();
    EXPECT_EQ(queue.read(), queue.old_value());
    return opened;
  }

  void storm() {
    for (int i = 0; i < kStormFiles; ++i) {
      write_file(src_ / ("d" + std::to_string(i % 5)) / ("f" + std::to_string(i)), "x");
    }
  }

  SysctlLock lock_;
  TempDir tmp_;
  fs::path src_;
};

TEST_F(LimitsTest, QueueOverflowRescansTheWholeTree) {
  write_file(src_ / "before/stale", "x");
  auto w = open_with_small_queue([&] { return RecursiveWatcher::open(src_); });
  ASSERT_TRUE(w) << w.error().message();
  ASSERT_EQ(w->watch_count(), 7u);
  fs::remove_all(src_ / "before");  // lost in the overflow: the consumer's diff finds it
  storm();                          // nothing read meanwhile: far more than 64 events

  Seen seen;
  EXPECT_TRUE(read_until(*w, seen, [](const Seen& s) { return s.overflow; }));
  // The rescan reported the tree as it is now, and re-watched it.
  for (int i = 0; i < kStormFiles; ++i) {
    std::string rel = "d" + std::to_string(i % 5) + "/f" + std::to_string(i);
    ASSERT_TRUE(seen.created.contains(rel)) << rel;
  }
  EXPECT_EQ(w->watch_count(), 6u);  // root, d0..d4; "before" is dropped
  EXPECT_FALSE(seen.created.contains("before/stale"));
  EXPECT_EQ(kernel_watch_count(w->fd()), 6u);

  // Still watching, and new directories get watches again.
  write_file(src_ / "d3/f3", "edited");
  fs::create_directories(src_ / "d3/sub");
  Seen after;
  EXPECT_TRUE(read_until(*w, after, [](const Seen& s) {
    return s.modified.contains("d3/f3") && s.created.contains("d3/sub");
  }));
  EXPECT_EQ(w->watch_count(), 7u);
}

TEST_F(LimitsTest, QueueOverflowBecomesAFullRescanChangeSet) {
  auto loop = open_with_small_queue([&] { return WatchLoop::open(src_); });
  ASSERT_TRUE(loop) << loop.error().message();
  storm();  // queued before the loop starts reading
  ChangeSetSink sink;
  ASSERT_TRUE((*loop)->start([&](ChangeSet set) { sink.deliver(std::move(set)); },
                             [&](const Error& e) { sink.fail(e); }));
  EXPECT_TRUE(sink.wait_for_paths({"d0", "d4", "d0/f0", "d4/f2999"}));
  (*loop)->stop();
  bool full_rescan = false;
  for (const ChangeSet& set : sink.sets()) full_rescan = full_rescan || set.full_rescan;
  EXPECT_TRUE(full_rescan);
  EXPECT_TRUE(sink.errors().empty());
}

TEST_F(LimitsTest, WatchLimitOnOpenNamesTheSysctl) {
  for (int i = 0; i < 20; ++i) fs::create_directories(src_ / ("dir" + std::to_string(i)));
  Result<RecursiveWatcher> w = fail(0, "not run");
  {
    SysctlOverride limit("max_user_watches", 8);
    ASSERT_TRUE(limit.ok()) << "cannot set fs.inotify.max_user_watches (not root?)";
    w = RecursiveWatcher::open(src_);
  }  // restored here, also when an assertion above returned early
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, ENOSPC);
  EXPECT_NE(w.error().message().find("fs.inotify.max_user_watches (now 8)"), std::string::npos)
      << w.error().message();
  EXPECT_NE(w.error().message().find(src_.string()), std::string::npos) << w.error().message();
}

TEST_F(LimitsTest, WatchLimitForANewDirectoryIsAnError) {
  auto w = RecursiveWatcher::open(src_);
  ASSERT_TRUE(w) << w.error().message();
  Error error;
  Seen seen;
  {
    // This process alone holds a watch already, so no new watch fits under 1.
    SysctlOverride limit("max_user_watches", 1);
    ASSERT_TRUE(limit.ok());
    fs::create_directories(src_ / "new");
    EXPECT_FALSE(read_until(
        *w, seen, [](const Seen&) { return false; }, &error));
  }
  EXPECT_EQ(error.code, ENOSPC);
  EXPECT_NE(error.message().find("fs.inotify.max_user_watches (now 1)"), std::string::npos)
      << error.message();
}

}  // namespace
}  // namespace livefs::inotify
