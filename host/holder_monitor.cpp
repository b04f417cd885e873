// The monitor's thread: waits for a request, takes the touched paths as they are, runs the
// query and the /proc scan without the lock, publishes the result.
#include "host/holder_monitor.h"

#include <exception>

#include "common/log.h"

namespace livefs::host {

HolderMonitor::HolderMonitor(HolderQueryFn query, std::filesystem::path proc)
    : query_(std::move(query)), proc_(std::move(proc)) {
  thread_ = std::thread([this] { run(); });
}

HolderMonitor::~HolderMonitor() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

uint64_t HolderMonitor::request(const std::vector<std::string>& switched_paths) {
  uint64_t number;
  {
    std::lock_guard lock(mutex_);
    for (const std::string& p : switched_paths) {
      if (touched_.insert(p).second) touched_list_.reset();
    }
    number = ++requested_;
  }
  changed_.notify_all();
  return number;
}

uint64_t HolderMonitor::refresh() { return request({}); }

HolderReport HolderMonitor::latest_refreshing_after(std::chrono::milliseconds age) {
  HolderReport report = latest();
  bool pending = report.scanning || report.covered != report.requested;
  if (!pending && std::chrono::steady_clock::now() - report.finished_steady > age) {
    report.requested = refresh();
    report.scanning = true;
  }
  return report;
}

HolderReport HolderMonitor::latest() const {
  std::lock_guard lock(mutex_);
  return report_locked();
}

HolderReport HolderMonitor::wait_for(uint64_t number, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return covered_ >= number || stopping_; });
  return report_locked();
}

HolderReport HolderMonitor::report_locked() const {
  return HolderReport{.holders = holders_,
                      .error = error_,
                      .finished = finished_,
                      .finished_steady = finished_steady_,
                      .seconds = seconds_,
                      .covered = covered_,
                      .requested = requested_,
                      .scanning = running_ || covered_ < requested_};
}

void HolderMonitor::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stopping_ || covered_ < requested_; });
    if (stopping_) return;
    uint64_t covers = requested_;
    if (!touched_list_) {
      touched_list_ =
          std::make_shared<const std::vector<std::string>>(touched_.begin(), touched_.end());
    }
    std::shared_ptr<const std::vector<std::string>> touched = touched_list_;
    running_ = true;
    lock.unlock();

    auto start = std::chrono::steady_clock::now();
    Result<std::vector<Holder>> found = std::vector<Holder>{};
    try {
      if (!touched->empty()) {
        auto query = query_(*touched);
        if (!query) {
          found = std::unexpected(query.error());
        } else if (!query->files.empty()) {
          found = find_holders(*query, proc_);
        }
      }
    } catch (const std::exception& ex) {  // out of memory: this scan fails, the thread lives
      found = fail(ENOMEM, std::string("holder scan: ") + ex.what());
    }
    auto end = std::chrono::steady_clock::now();
    if (!found) logger("host")->warn("holder scan: {}", found.error().message());

    lock.lock();
    running_ = false;
    covered_ = covers;
    if (found) {
      holders_ = std::move(*found);
      error_.reset();
    } else {
      error_ = found.error();
    }
    finished_ = std::chrono::system_clock::now();
    finished_steady_ = end;
    seconds_ = std::chrono::duration<double>(end - start).count();
    changed_.notify_all();
  }
}

}  // namespace livefs::host
