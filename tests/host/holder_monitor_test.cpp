// HolderMonitor: scans run on its own thread after a request returned, requests made during a
// scan are served by one more scan with every path, failures are reported beside the last
// good result, and a real process holding a file is found.
#include "host/holder_monitor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/temp_dir.h"

namespace livefs::host {
namespace {

using namespace std::chrono_literals;
using livefs::testing::TempDir;
using livefs::testing::write_file;

// A query the test controls: it records what it was given and, while `held`, waits.
class FakeQuery {
 public:
  HolderQueryFn fn() {
    return [this](const std::vector<std::string>& touched) -> Result<HolderQuery> {
      std::unique_lock lock(mutex_);
      calls_.push_back(touched);
      cv_.notify_all();
      cv_.wait(lock, [this] { return !held_; });
      if (fail_) return fail(EIO, "made-up failure");
      return answer_;
    };
  }
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    std::lock_guard lock(mutex_);
    held_ = false;
    cv_.notify_all();
  }
  void set_failing(bool on) {
    std::lock_guard lock(mutex_);
    fail_ = on;
  }
  void set_answer(HolderQuery q) {
    std::lock_guard lock(mutex_);
    answer_ = std::move(q);
  }
  // Waits (bounded, for a failing test) until the query was called `n` times.
  bool wait_calls(size_t n) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 60s, [&] { return calls_.size() >= n; });
  }
  std::vector<std::vector<std::string>> calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool held_ = false;
  bool fail_ = false;
  HolderQuery answer_;
  std::vector<std::vector<std::string>> calls_;
};

TEST(HolderMonitorTest, RequestsDuringAScanAreServedByOneMoreScan) {
  FakeQuery query;
  query.hold();
  HolderMonitor monitor(query.fn());
  EXPECT_EQ(monitor.request({"b", "a"}), 1u);
  ASSERT_TRUE(query.wait_calls(1));
  HolderReport during = monitor.latest();
  EXPECT_TRUE(during.scanning);
  EXPECT_FALSE(during.current());
  EXPECT_EQ(during.covered, 0u);

  EXPECT_EQ(monitor.request({"c"}), 2u);
  EXPECT_EQ(monitor.request({"a", "d"}), 3u);
  query.release();
  HolderReport after = monitor.wait_for(3, 60s);
  EXPECT_EQ(after.covered, 3u);
  EXPECT_TRUE(after.current());
  EXPECT_FALSE(after.error);
  EXPECT_NE(after.finished, std::chrono::system_clock::time_point{});
  auto calls = query.calls();
  ASSERT_EQ(calls.size(), 2u) << "the second and third requests share one scan";
  EXPECT_EQ(calls[0], (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(calls[1], (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(HolderMonitorTest, NothingTouchedNeedsNoQuery) {
  FakeQuery query;
  HolderMonitor monitor(query.fn());
  HolderReport r = monitor.wait_for(monitor.refresh(), 60s);
  EXPECT_EQ(r.covered, 1u);
  EXPECT_TRUE(r.holders.empty());
  EXPECT_TRUE(query.calls().empty());
}

TEST(HolderMonitorTest, AFailureIsReportedBesideTheLastResult) {
  TempDir tmp("livefs-monitor");
  write_file(tmp / "held", "x\n");
  // A child holding the file open as descriptor 3.
  int fd = ::open((tmp / "held").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (fd == 3 ? ::fcntl(3, F_SETFD, 0) != 0 : ::dup2(fd, 3) != 3) ::_exit(127);
    ::execl("/bin/sleep", "sleep", "60", nullptr);
    ::_exit(127);
  }
  ::close(fd);
  ::close(ready[1]);
  char c;
  while (::read(ready[0], &c, 1) < 0 && errno == EINTR) {
  }
  ::close(ready[0]);  // end-of-file: the child has exec'ed, holding fd 3
  struct stat st;
  ASSERT_EQ(::stat((tmp / "held").c_str(), &st), 0);

  FakeQuery query;
  query.set_answer(
      HolderQuery{.files = {{.dev = st.st_dev, .ino = st.st_ino, .path = "usr/held"}}});
  HolderMonitor monitor(query.fn());
  HolderReport r = monitor.wait_for(monitor.request({"usr/held"}), 60s);
  ASSERT_FALSE(r.error) << r.error->message();
  ASSERT_EQ(r.holders.size(), 1u);
  EXPECT_EQ(r.holders[0].pid, child);
  EXPECT_EQ(r.holders[0].how, "fd 3");
  EXPECT_EQ(r.holders[0].path, "usr/held");

  query.set_failing(true);
  r = monitor.wait_for(monitor.refresh(), 60s);
  ASSERT_TRUE(r.error);
  EXPECT_EQ(r.error->code, EIO);
  EXPECT_EQ(r.holders.size(), 1u) << "the last good result stays";

  query.set_failing(false);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  r = monitor.wait_for(monitor.refresh(), 60s);
  EXPECT_FALSE(r.error);
  EXPECT_TRUE(r.holders.empty()) << "the holder is gone";
}

TEST(HolderMonitorTest, AnOldReportIsRefreshedInTheBackground) {
  FakeQuery query;
  HolderMonitor monitor(query.fn());
  HolderReport r = monitor.wait_for(monitor.request({"a"}), 60s);
  ASSERT_EQ(r.covered, 1u);
  r = monitor.latest_refreshing_after(std::chrono::hours(1));
  EXPECT_EQ(r.requested, 1u) << "young enough";
  r = monitor.latest_refreshing_after(0ms);
  EXPECT_EQ(r.requested, 2u);
  EXPECT_EQ(r.covered, 1u) << "answered at once with what there is";
  EXPECT_EQ(monitor.wait_for(2, 60s).covered, 2u);
  EXPECT_EQ(query.calls().size(), 2u);
}

TEST(HolderMonitorTest, DestroyedWhileAScanRuns) {
  FakeQuery query;
  query.hold();
  auto monitor = std::make_unique<HolderMonitor>(query.fn());
  monitor->request({"a"});
  ASSERT_TRUE(query.wait_calls(1));
  std::thread releaser([&] { query.release(); });
  monitor.reset();  // waits for the scan
  releaser.join();
  EXPECT_EQ(query.calls().size(), 1u);
}

}  // namespace
}  // namespace livefs::host
