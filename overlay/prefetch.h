// Read-ahead of cold metadata: when the kernel lists a directory, the listings of its
// subdirectories and the attributes of their entries are read on a few background threads,
// so the disk works while the kernel and the daemon exchange requests for the directory
// being walked. A cold `find` or `tar` otherwise waits for one disk read after another.
//
// It only warms caches that cannot be stale: the listing cache of the View it was asked for
// (a View never changes; a switch publishes another View with a cache of its own) and the
// kernel's caches of the booted file system (which does not change under the daemon). A job
// holds its View weakly, so queued work keeps no replaced View alive.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_set>
#include <vector>

#include "overlay/view.h"

namespace livefs::overlay {

class Prefetcher {
 public:
  struct Options {
    // Threads reading ahead (mostly asleep in the disk's queue: more than the cores).
    // 0 disables read-ahead.
    unsigned threads = 4;
    // Directories waiting at most; past it, the ones queued longest ago go (a walk is
    // depth-first: the newest are needed soonest). Bounds memory and wasted reads, not the
    // tree.
    size_t max_queued = 512;
    // Levels read ahead below a directory the kernel lists: 1 = its subdirectories; 2 = also
    // theirs (read ahead by the workers themselves), and so on.
    unsigned depth = 2;
    // Tests: runs on a worker before each directory it reads ahead.
    std::function<void(const std::string& path)> before_job{};
  };
  struct Stats {
    uint64_t queued = 0;      // directories accepted
    uint64_t dropped = 0;     // accepted, then pushed out by newer ones or by stop()
    uint64_t prefetched = 0;  // listed and their entries stat'ed by a worker
  };

  explicit Prefetcher(Options options);
  ~Prefetcher();  // stop()
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // `listing` of `dir_path` was just read from `view` for the kernel: queue its
  // subdirectories, first name first. Never waits for the disk (one short lock); a
  // directory already queued is not queued twice.
  void listed(const std::shared_ptr<const View>& view, std::string_view dir_path,
              const std::vector<DirEntry>& listing);

  // Drops what is queued, lets a running job stop at its next entry, joins the threads.
  // Idempotent; listed() does nothing afterwards.
  void stop();

  Stats stats() const;
  // Tests: waits until nothing is queued or running (or stop()).
  void wait_idle() const;

 private:
  struct Job {
    std::weak_ptr<const View> view;
    std::string path;
    unsigned depth = 1;  // levels still to read ahead, this one included
  };
  void queue_locked(const std::shared_ptr<const View>& view, std::string_view dir_path,
                    const std::vector<DirEntry>& listing, unsigned depth);
  void work();
  void run(const Job& job);

  Options options_;
  mutable std::mutex mutex_;              // guards everything below but threads_
  mutable std::condition_variable wake_;  // a job was queued, or stop
  mutable std::condition_variable idle_;  // the queue drained and no job runs
  std::deque<Job> queue_;                 // front: needed soonest
  std::unordered_set<std::string> queued_paths_;
  unsigned running_ = 0;
  bool stopping_ = false;
  std::atomic<bool> stop_flag_{false};  // stopping_, read by a running job without the lock
  Stats stats_;
  std::vector<std::thread> threads_;  // started by the constructor, joined by stop()
};

}  // namespace livefs::overlay
