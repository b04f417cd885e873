// The holder scan kept off the critical path: a thread of its own finds the processes that
// still use files replaced by switches (find_holders), after each switch and on demand, and
// keeps the last result for readers. A switch only hands over its paths; `status` only reads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "host/holders.h"

namespace livefs::host {

// What to look for, given every path the switches changed so far (in path order). Runs on the
// monitor's thread, never under the caller's locks; for the daemon: the view's stale files
// (see livefs/view_holders.h).
using HolderQueryFn = std::function<Result<HolderQuery>(const std::vector<std::string>& touched)>;

struct HolderReport {
  // Of the last scan that succeeded (empty before the first).
  std::vector<Holder> holders;
  // The last scan failed (`holders` are then an older scan's); nullopt when it succeeded.
  std::optional<Error> error;
  // When the last scan finished (either way); the epoch before the first.
  std::chrono::system_clock::time_point finished{};
  std::chrono::steady_clock::time_point finished_steady{};
  double seconds = 0;  // how long the last scan took
  // Requests are numbered from 1; a scan covers every request made before it started.
  uint64_t covered = 0;
  uint64_t requested = 0;
  bool scanning = false;  // a scan is running or about to

  // Every request so far is reflected: no switch since the scan started.
  bool current() const { return covered == requested && !scanning; }
};

class HolderMonitor {
 public:
  // Starts the thread. `proc` is where processes are read (tests give a made-up one).
  explicit HolderMonitor(HolderQueryFn query, std::filesystem::path proc = "/proc");
  // Waits for a running scan to finish; the query is not called afterwards (whatever it
  // refers to, such as the Filesystem, must outlive the monitor).
  ~HolderMonitor();
  HolderMonitor(const HolderMonitor&) = delete;
  HolderMonitor& operator=(const HolderMonitor&) = delete;

  // Adds the paths a switch changed and asks for a scan; returns at once with the request's
  // number. Requests made while a scan runs are served together by the next one.
  uint64_t request(const std::vector<std::string>& switched_paths);
  // Asks for a scan with no new paths (processes exit and restart: a report ages).
  uint64_t refresh();
  // refresh() when the last scan finished longer than `age` ago and none is pending; the
  // report as it is now (a reader is answered at once and sees the fresh one next time).
  HolderReport latest_refreshing_after(std::chrono::milliseconds age);

  HolderReport latest() const;
  // Waits until a scan covering request `number` finished, at most `timeout`; the report then.
  HolderReport wait_for(uint64_t number, std::chrono::milliseconds timeout) const;

 private:
  void run();
  HolderReport report_locked() const;

  const HolderQueryFn query_;
  const std::filesystem::path proc_;

  mutable std::mutex mutex_;  // guards everything below; never held while scanning
  mutable std::condition_variable changed_;
  std::set<std::string> touched_;
  std::shared_ptr<const std::vector<std::string>> touched_list_;  // touched_, when unchanged
  uint64_t requested_ = 0;
  uint64_t covered_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  std::vector<Holder> holders_;
  std::optional<Error> error_;
  std::chrono::system_clock::time_point finished_{};
  std::chrono::steady_clock::time_point finished_steady_{};
  double seconds_ = 0;

  std::thread thread_;  // last: started once everything above is
};

}  // namespace livefs::host
