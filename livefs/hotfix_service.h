// The hotfix service: the developer's watched directories and added files (a HotfixSet), the
// inotify loop of each watch, hotfix.json (what a restart restores), and each change turned
// into a new hotfix layer through Generations::set_hotfix.
//
// Thread safety: requests (watch, add, reset, list) come from control threads; change sets
// come from each watch's own loop thread. One mutex orders them; it is never held while a
// loop is stopped (a loop's callback takes it).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "inotify/watch_loop.h"
#include "livefs/hotfix.h"
#include "livefs/outcome.h"
#include "livefs/state_files.h"
#include "overlay/generations.h"
#include "store/object_store.h"

namespace livefs::cli {

class HotfixService {
 public:
  // `view_path` maps a path as the operator gives it to a path in the view (EINVAL when it
  // is not under the mount point). hotfix.json lives in `state`.
  HotfixService(std::shared_ptr<store::ObjectStore> store, overlay::Generations& generations,
                std::filesystem::path state,
                std::function<Result<std::string>(const std::string&)> view_path);
  ~HotfixService();  // stop()

  struct Watched {
    std::filesystem::path source;
    std::string at;
    size_t entries = 0;
    overlay::SwitchStats stats;
  };
  Outcome<Watched> watch(const std::string& source, const std::string& at);

  struct Added {
    std::filesystem::path source;
    std::string at;
    overlay::SwitchStats stats;
  };
  Outcome<Added> add(const std::string& source, const std::string& at);

  struct Reset {
    size_t removed_paths = 0;
    size_t removed_watches = 0;
    uint64_t generation = 0;
    overlay::SwitchStats stats;
  };
  Outcome<Reset> reset(const std::optional<std::string>& prefix);

  struct WatchInfo {
    std::filesystem::path source;
    std::string at;
    size_t entries = 0;
    uint64_t changes = 0;
    int64_t last_change_ns = 0;
    std::string error;
  };
  struct Listing {
    std::vector<WatchInfo> watches;
    std::vector<HotfixPlace> adds;
    size_t layer_entries = 0;
    std::vector<std::string> files;  // the layer's non-directories (list only)
  };
  Listing list(bool with_files) const;

  // After a restart (on a thread of the daemon's, while the view already serves the
  // journalled layer): the adds as journalled, the watches set up again and brought up to
  // date with their sources.
  void restore(const HotfixConfig& config);
  // Ends every loop (joined); nothing commits afterwards. Idempotent.
  void stop();
  // Joins loops that ended (their source went away, or an error); call outside any lock.
  void reap();

 private:
  struct Steps {
    std::chrono::steady_clock::time_point built, stored, journalled;
  };
  Result<overlay::SwitchStats> commit_locked(const std::vector<std::string>& changed,
                                             store::ObjectStore::Batch& batch,
                                             Steps* steps = nullptr);
  Status save_config_locked() const;
  Status start_loop_locked(uint64_t id, std::unique_ptr<inotify::WatchLoop> loop);
  void retire_locked(uint64_t id);
  void on_change(uint64_t id, const inotify::ChangeSet& changes);
  void on_error(uint64_t id, const Error& e);

  const std::shared_ptr<store::ObjectStore> store_;
  overlay::Generations& generations_;
  const std::filesystem::path state_;
  const std::function<Result<std::string>(const std::string&)> view_path_;

  mutable std::mutex mutex_;  // guards everything below
  bool stopped_ = false;
  std::unique_ptr<HotfixSet> set_;
  std::map<uint64_t, std::unique_ptr<inotify::WatchLoop>> loops_;
  std::vector<std::unique_ptr<inotify::WatchLoop>> retired_;
};

}  // namespace livefs::cli
