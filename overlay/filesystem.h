// The FUSE file system serving the current View: mounting, the request loop, and switching
// to another View in one atomic step with exact kernel cache invalidation.
#pragma once

#include <atomic>
#include <filesystem>
#include <memory>
#include <mutex>

#include "common/error.h"
#include "overlay/node_table.h"
#include "overlay/view.h"

struct fuse_session;

namespace livefs::overlay {

struct MountOptions {
  std::filesystem::path mountpoint;
  bool allow_other = false;
  bool debug = false;
  unsigned threads = 4;
};

struct SwitchStats {
  uint64_t from_generation = 0;
  uint64_t to_generation = 0;
  size_t changed_paths = 0;
  size_t invalidations = 0;
  double seconds = 0;  // publish + invalidation
};

class Filesystem {
 public:
  // Mounts at options.mountpoint (read-only, default_permissions); `initial` is served from
  // the first request on. The booted directory must already be open in `initial`, so the
  // mountpoint may be the booted directory itself.
  static Result<std::unique_ptr<Filesystem>> mount(const MountOptions& options,
                                                   std::shared_ptr<const View> initial);
  ~Filesystem();  // unmounts if still mounted; serve() must have returned
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  std::shared_ptr<const View> current() const { return view_.load(); }

  // Publishes `next` in one atomic swap, then invalidates in the kernel the names and
  // directory inodes whose resolution differs between the two layers (the diff of the two
  // layer Trees: the cost grows with the change). Serialized with other switches.
  Result<SwitchStats> switch_to(std::shared_ptr<const View> next);

  // Serves requests on a pool of threads until unmounted or stop() is called.
  Status serve();
  // Unmounts (lazily: files still open keep being served until closed) so serve() returns.
  void stop();

  size_t node_count() const { return nodes_.size(); }
  const std::filesystem::path& mountpoint() const { return options_.mountpoint; }

  // Used by the FUSE ops.
  NodeTable& nodes() { return nodes_; }
  bool no_opendir() const { return no_opendir_; }
  void set_no_opendir(bool on) { no_opendir_ = on; }
  bool no_open() const { return no_open_; }
  void set_no_open(bool on) { no_open_ = on; }

 private:
  Filesystem(const MountOptions& options, std::shared_ptr<const View> initial, Resolved root);

  MountOptions options_;
  std::atomic<std::shared_ptr<const View>> view_;
  NodeTable nodes_;
  fuse_session* session_ = nullptr;
  std::atomic<bool> mounted_{false};
  std::atomic<bool> no_opendir_{false};  // negotiated at init
  std::atomic<bool> no_open_{false};     // negotiated at init
  std::mutex switch_mutex_;              // one switch at a time; never held by a FUSE op
};

}  // namespace livefs::overlay
