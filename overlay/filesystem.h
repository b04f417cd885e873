// The FUSE file system serving the current View: mounting, the request loop, and switching
// to another View in one atomic step with exact kernel cache invalidation.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/error.h"
#include "overlay/node_table.h"
#include "overlay/prefetch.h"
#include "overlay/view.h"

struct fuse_session;

namespace livefs::overlay {

struct MountOptions {
  std::filesystem::path mountpoint;
  // Every user may enter the view (the kernel checks the served modes: default_permissions).
  // A system tree is for everyone; false restricts the mount to the daemon's user.
  bool allow_other = true;
  bool debug = false;
  unsigned threads = 4;
  // FUSE passthrough where the kernel and libfuse offer it: the kernel reads, splices and
  // maps each opened file straight from its backing file (booted file or store object), in
  // the backing file's page cache. Costs one OPEN round trip per open; false serves reads
  // through the daemon and lets the kernel skip opens (no-open support).
  bool passthrough = true;
  Prefetcher::Options prefetch{};  // read-ahead of listings and attributes (cold walks)
};

// How file contents are served: what was negotiated with the kernel, and what happened.
struct FileIo {
  std::string libfuse;         // the libfuse version livefs runs with, and where it came from
  bool passthrough = false;    // negotiated: the kernel reads opened files from backing files
  std::string why_not;         // when not: why (empty while not yet negotiated)
  bool no_open = false;        // the kernel sends no opens (reads go through the daemon)
  uint64_t backing_files = 0;  // backing ids registered so far
  uint64_t fallbacks = 0;      // opens served through the daemon although passthrough is on
};

struct SwitchStats {
  uint64_t from_generation = 0;
  uint64_t to_generation = 0;
  size_t changed_paths = 0;
  size_t invalidations = 0;
  double seconds = 0;  // publish + invalidation
};

// A file that processes may still execute, map or hold open although the view no longer
// serves it at its path (an old version), named by what /proc shows of it.
struct StaleFile {
  std::string path;  // as given to stale_files
  // false: a node of this mount the kernel still holds; its device is the mount's (as
  // mountinfo shows it). true: the booted file itself (programs started before the view was
  // mounted over the booted directory use it directly), on device `dev`.
  bool booted = false;
  dev_t dev = 0;  // booted files only: st_dev
  ino_t ino = 0;  // the inode number the kernel shows (served, or the booted file's)

  bool operator==(const StaleFile&) const = default;
};

// Mounted read-only, `suid,dev` (setuid programs, file capabilities and device nodes of the
// served tree work as they do in the booted tree), `default_permissions`.
class Filesystem {
 public:
  // Mounts at options.mountpoint (resolved to a canonical path first, as the kernel shows
  // it: see mountpoint()); `initial` is served from the first request on. The booted
  // directory must already be open in `initial`, so the mountpoint may be the booted
  // directory itself.
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

  // Serves requests on a pool of threads until the kernel releases the connection: the
  // mount was detached (stop(), or `umount -l` by anyone) and its last user let go, and the
  // next read of the device gives ENODEV. Also returns after abort().
  Status serve();
  // Detaches the mount point (umount2 MNT_DETACH) and returns at once: nobody is cut off.
  // Processes with a file open or mapped, or a working directory, in the view keep being
  // served; serve() returns when the last of them is gone. Count them first with
  // host::processes_using_mount (they can no longer be found by path afterwards).
  void stop();
  // Ends serving now, for teardown paths that cannot wait for users (tests, a failed start,
  // a second signal): detaches, then makes serve() return without waiting. Processes still
  // using the view block until this Filesystem is destroyed, then get ENOTCONN (SIGBUS on a
  // mapping) — except reads and mappings of files opened with passthrough, which the kernel
  // serves from the backing file without the daemon. Returns once serve() has returned (at
  // once when it is not running).
  void abort();

  // The old versions of `touched_paths` (relative paths some switch changed) that processes
  // may still use: (a) nodes the kernel holds for the path whose (path, identity) is not what
  // the current view resolves there: the booted version and every layer version a switch
  // replaced; (b) the booted file at the path, when the current view does not serve it.
  // Directories are left out. Nothing is stat'ed through the mount (booted files are stat'ed
  // beneath the booted directory's descriptor): safe to call from the serving process, on any
  // thread, concurrently with switches. Costs O(touched paths), not O(nodes).
  std::vector<StaleFile> stale_files(const std::vector<std::string>& touched_paths) const;

  size_t node_count() const { return nodes_.size(); }
  FileIo file_io() const;
  // The libfuse linked in: version, and whether it is the system's or built from source.
  static std::string libfuse_description();
  // The absolute, canonical path mounted on: as /proc/self/mountinfo shows it (see
  // host::find_mount). Never stat'ed by livefs once mounted.
  const std::filesystem::path& mountpoint() const { return options_.mountpoint; }

  // Used by the FUSE ops.
  NodeTable& nodes() { return nodes_; }
  bool no_opendir() const { return no_opendir_; }
  void set_no_opendir(bool on) { no_opendir_ = on; }
  bool no_open() const { return no_open_; }
  void set_no_open(bool on) { no_open_ = on; }
  const MountOptions& options() const { return options_; }
  // The connection's /dev/fuse descriptor (passthrough registers backing files on it).
  int device_fd() const;
  // Set at init when the kernel accepted FUSE passthrough.
  bool passthrough() const { return passthrough_; }
  void set_passthrough(bool on, std::string why_not);
  // A backing file lives on a stacked file system (overlayfs, FUSE): the kernel must allow
  // one more level below this mount.
  bool backing_stacked() const { return backing_stacked_; }
  void count_backing_file() { backing_files_.fetch_add(1, std::memory_order_relaxed); }
  void count_fallback() { fallbacks_.fetch_add(1, std::memory_order_relaxed); }
  Prefetcher& prefetcher() { return prefetch_; }
  // A switch is under way: the new view is published, the kernel's entries of what it
  // changed are not all invalidated yet (op_open sends a stale version back, see there).
  bool switching() const { return switching_.load(std::memory_order_acquire) > 0; }
  // Whether an open of `path` by thread `tid` during a switch, which reached a version the
  // new view replaced (`stale`), is sent back with ESTALE: once per opener and path (the VFS
  // retries an open once; a retry that meets a replaced version again, because a second
  // switch replaced it meanwhile, is served rather than failed).
  bool stale_open_once(pid_t tid, std::string_view path, bool stale);
  // Tests: called by switch_to after the new view is published, before the kernel is told.
  void set_switch_hook_for_tests(std::function<void()> hook) { switch_hook_ = std::move(hook); }

 private:
  Filesystem(const MountOptions& options, std::shared_ptr<const View> initial, Resolved root);

  MountOptions options_;
  std::atomic<std::shared_ptr<const View>> view_;
  NodeTable nodes_;
  fuse_session* session_ = nullptr;
  std::atomic<bool> mounted_{false};      // the mount point is still attached
  std::atomic<bool> connected_{false};    // serve() may still answer: notifications are sent
  std::atomic<bool> no_opendir_{false};   // negotiated at init
  std::atomic<bool> no_open_{false};      // negotiated at init
  std::atomic<bool> passthrough_{false};  // negotiated at init
  bool backing_stacked_ = false;          // set before mounting
  mutable std::mutex why_mutex_;
  std::string why_no_passthrough_;  // guarded by why_mutex_
  std::atomic<uint64_t> backing_files_{0};
  std::atomic<uint64_t> fallbacks_{0};
  std::mutex switch_mutex_;  // one switch at a time; never held by a FUSE op
  std::atomic<int> switching_{0};
  std::mutex stale_opens_mutex_;
  struct StaleOpen {
    std::string path;
    std::chrono::steady_clock::time_point when;
  };
  std::unordered_map<pid_t, StaleOpen> stale_opens_;  // by opener thread
  std::function<void()> switch_hook_;                 // guarded by switch_mutex_

  // For stale_files: the booted tree with an empty layer (resolves a path's booted version),
  // and the layer versions switches replaced, which nodes may still stand for. A switch only
  // queues its old View and changed paths (cheap); stale_files resolves them later.
  std::shared_ptr<const View> booted_only_;
  struct Retiring {
    std::shared_ptr<const View> old;
    std::vector<std::string> paths;  // non-directories of the old layer that changed
  };
  struct Retired {
    Resolved version;
    uint64_t resolved_in = 0;  // the stale_files call that resolved it
  };
  // A switch waits for this one only as long as a push (never for a stale_files call).
  mutable std::mutex retiring_mutex_;  // guards retiring_; taken after retired_mutex_
  mutable std::vector<Retiring> retiring_;
  mutable std::mutex retired_mutex_;  // guards the three below
  mutable std::unordered_map<std::string, std::vector<Retired>> retired_;
  mutable uint64_t stale_calls_ = 0;
  void retire_locked(Retiring r) const;
  // The node the kernel holds for `path`'s version in `old` when `next` serves another one
  // there (or none), marked retired (served with link count 0 from now on); 0 when there is
  // none, or it is a directory.
  fuse_ino_t retire(const View& old, const View& next, const std::string& path);
  // Retires the held versions below `path`, a directory of `old` (node `dir`), that `next`
  // does not serve, and tells the kernel; returns the notifications sent.
  size_t retire_below(const View& old, const View& next, const std::string& path, fuse_ino_t dir);

  // abort() wakes the thread in serve() with a signal (libfuse's loop waits on a semaphore
  // that only a finishing worker posts, so an exit flag alone is seen at the next request).
  std::mutex serve_mutex_;  // guards the two below
  bool serving_ = false;
  pthread_t serve_thread_{};
  std::condition_variable serve_done_;

  // Last: stopped (its threads joined) before anything else goes.
  Prefetcher prefetch_;
};

}  // namespace livefs::overlay
