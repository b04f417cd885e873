// The read-ahead threads and their bounded queue.
#include "overlay/prefetch.h"

#include <pthread.h>
#include <signal.h>

#include <system_error>

#include "common/log.h"

namespace livefs::overlay {

Prefetcher::Prefetcher(Options options) : options_(std::move(options)) {
  // The workers take no signal: the daemon blocks its termination signals in the threads
  // that wait for them, and a worker started before that must not take one (and end the
  // process with the default action).
  sigset_t all, saved;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  try {
    for (unsigned i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { work(); });
  } catch (const std::system_error& e) {
    // Fewer threads (or none) only means less read-ahead.
    logger("overlay")->warn("prefetch: started {} of {} threads: {}", threads_.size(),
                            options_.threads, e.what());
  }
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

Prefetcher::~Prefetcher() { stop(); }

void Prefetcher::listed(const std::shared_ptr<const View>& view, std::string_view dir_path,
                        const std::vector<DirEntry>& listing) {
  if (threads_.empty() || options_.depth == 0) return;
  try {
    std::lock_guard lock(mutex_);
    queue_locked(view, dir_path, listing, options_.depth);
  } catch (...) {
    // Out of memory: the listing is served all the same, without read-ahead.
  }
}

void Prefetcher::queue_locked(const std::shared_ptr<const View>& view, std::string_view dir_path,
                              const std::vector<DirEntry>& listing, unsigned depth) {
  if (stopping_) return;
  // Pushed to the front last name first, so that the first name ends up in front: a walk
  // visits them in listing order, after whatever it found below the previous ones. Only the
  // first max_queued subdirectories: the others would be pushed out at once (a directory of
  // many thousands costs no more here than one of max_queued).
  auto end = listing.begin();
  for (size_t dirs = 0; end != listing.end() && dirs < options_.max_queued; ++end)
    if (end->type == S_IFDIR) ++dirs;
  bool added = false;
  for (auto it = std::make_reverse_iterator(end); it != listing.rend(); ++it) {
    if (it->type != S_IFDIR) continue;
    std::string path = join_path(dir_path, it->name);
    if (!queued_paths_.insert(path).second) continue;
    queue_.push_front(Job{view, std::move(path), depth});
    ++stats_.queued;
    added = true;
  }
  if (!added) return;
  while (queue_.size() > options_.max_queued) {
    queued_paths_.erase(queue_.back().path);
    queue_.pop_back();
    ++stats_.dropped;
  }
  wake_.notify_all();
}

void Prefetcher::stop() {
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      stopping_ = true;
      stop_flag_.store(true, std::memory_order_relaxed);
      stats_.dropped += queue_.size();
      queue_.clear();
      queued_paths_.clear();
    }
  }
  wake_.notify_all();
  idle_.notify_all();
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

Prefetcher::Stats Prefetcher::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Prefetcher::wait_idle() const {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return stopping_ || (queue_.empty() && running_ == 0); });
}

void Prefetcher::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    // Out of the set now: listed again while it runs, it is queued again and then found in
    // the View's listing cache (cheap), rather than missed.
    queued_paths_.erase(job.path);
    ++running_;
    lock.unlock();
    try {
      if (options_.before_job) options_.before_job(job.path);
      run(job);
    } catch (...) {
      // Read-ahead is an optimisation: out of memory here costs nothing but its speed.
    }
    lock.lock();
    --running_;
    if (queue_.empty() && running_ == 0) idle_.notify_all();
  }
}

void Prefetcher::run(const Job& job) {
  std::shared_ptr<const View> view = job.view.lock();
  if (!view || stop_flag_.load(std::memory_order_relaxed)) return;
  // Listed already (by the kernel, or read ahead): its entries were stat'ed then.
  if (view->cached_listing(job.path)) return;
  // Errors are left to the request that needs the directory: it reports them.
  auto dir = view->resolve(job.path);
  if (!dir || !dir->is_dir()) return;
  auto listing = view->cached_list(*dir);
  if (!listing) return;
  // What readdirplus of this directory will ask for: the attributes of each booted name,
  // by the same fstatat relative to the directory that list() opened and kept.
  for (const DirEntry& entry : **listing) {
    if (stop_flag_.load(std::memory_order_relaxed)) return;
    if (entry.booted) (void)view->resolve_listed(job.path, entry);
  }
  std::lock_guard lock(mutex_);
  ++stats_.prefetched;
  if (job.depth > 1) queue_locked(view, job.path, **listing, job.depth - 1);
}

}  // namespace livefs::overlay
