// The two sides of the view and how they are kept: where the booted and staged trees come
// from (directories or an OSTree sysroot), the booted manifest (read once and cached in the
// state directory), the staged tree (imported into the store: at start, by `livefs stage`,
// or in the background when the sysroot deploys a new commit), their package databases,
// and config.json.
//
// Thread safety: every member function may be called from any thread. Readers get a
// Sides snapshot (trees are reference-counted) under a short lock; a stage imports without
// that lock (so `status` and `diff` are answered meanwhile) and stagings run one at a time.
#pragma once

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "inotify/watch_loop.h"
#include "livefs/daemon.h"
#include "livefs/outcome.h"
#include "livefs/sources.h"
#include "livefs/state_files.h"
#include "packages/package_db.h"
#include "store/diff.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::cli {

struct Sides {
  Origin booted, staged;
  store::Tree booted_tree;
  store::Tree staged_tree;
  uint64_t staged_version = 0;  // which staging this is (package databases follow it)
  // diff(booted_tree, staged_tree), computed once per staging (what every diff and apply
  // starts from).
  std::shared_ptr<const std::vector<store::Change>> staged_diff;
};

class Staging {
 public:
  Staging(const MountArgs& args, DaemonConfig config, std::shared_ptr<store::ObjectStore> store);
  ~Staging();  // stop()

  // Where the sides come from (reads the sysroot's deployments; never the trees). Called
  // before the view is mounted: when the view covers the booted directory (over-mounting
  // /usr), the booted tree is read through the descriptor opened here.
  Status resolve_origins();
  const Origin& booted_origin() const { return booted_origin_; }
  // What is staged (known before its tree is read).
  Origin staged_origin() const;

  // The booted manifest when the cached one is known to describe this booted tree (a map of
  // a file: instant); nullopt when it has to be built (load()).
  std::optional<store::Tree> cached_booted_manifest();
  // The identity generations belong to, from the booted manifest.
  std::string booted_identity(const store::Tree& booted) const;
  // Whether `identity` is this booted tree's as an earlier livefs named it (a directory's
  // manifest digest of version 1): its journal is this tree's, kept across the upgrade.
  bool is_earlier_identity(const store::Tree& booted, std::string_view identity) const;
  // Whether the journal found may be adopted when it names no booted tree.
  bool same_booted_as_config() const;

  // Builds the booted manifest (unless cached), imports the staged tree and writes
  // config.json. Long (a scan of the whole booted tree the first time): the daemon runs it
  // on a thread of its own after the view serves. A failure to read the booted tree is
  // returned (and then kept: ready() reports it); a staged tree that cannot be imported
  // leaves nothing staged and is reported in status.
  Status load(std::optional<store::Tree> booted);
  // Waits until load() has ended; its failure, or the sides.
  Outcome<Sides> ready() const;
  // Without waiting: the sides when loaded.
  std::optional<Sides> sides() const;

  // How far load() is, for `status`: "" once loaded.
  struct Progress {
    std::string phase;  // "scanning the booted tree", "importing the staged tree", ""
    uint64_t entries = 0;
    std::string error;  // load() failed
    // A stage running now (`livefs stage`, or a new deployment staged in the background):
    // what, and how many files of it are read; "" when none.
    std::string staging;
    uint64_t staging_files = 0;
    // What each count is expected to reach, 0 when unknown: estimates (the tree before),
    // for a percentage.
    uint64_t entries_expected = 0;
    uint64_t staging_expected = 0;
  };
  Progress progress() const;
  // The last staging failure (background or at start), "" when none.
  std::string stage_error() const;

  // `livefs stage`: a commit (`commit`, or pulled from `remote`/`ref`) or the sysroot's
  // pending deployment. Runs without blocking readers.
  struct Staged {
    Origin origin;
    size_t pending = 0;  // changes pending after staging
    ostree::OstreeImportStats stats;
    double pull_seconds = 0;
  };
  Outcome<Staged> stage(const std::string& commit, const std::string& remote,
                        const std::string& ref,
                        const std::function<size_t(const Sides&)>& count_pending);

  // inotify on the sysroot: a new deployment (ostree admin deploy) is staged in the
  // background, so that apply only has to switch.
  void start_deployment_watch();
  void stop();

  // Runs `fn(booted, staged)` with the sides' package databases (opened on first use;
  // nullptr when the tree has none; the staged side falls back to the booted one when it
  // has none), one caller at a time. `error` is why a database could not be opened.
  using PackagesFn = std::function<void(packages::PackageDb* booted, packages::PackageDb* staged,
                                        const std::string& error)>;
  void with_packages(const Sides& sides, const PackagesFn& fn);
  // What the packages own in the staged tree and in the booted one (so files an upgrade
  // dropped are removed with it).
  Result<std::vector<std::string>> package_files(const Sides& sides,
                                                 const std::vector<std::string>& names);

  // The kernel arguments of the booted deployment and of the next boot's (read at start and
  // at each change of the sysroot); nullopt outside a sysroot.
  struct KernelArgs {
    std::string booted, next;
  };
  std::optional<KernelArgs> kernel_args() const;

  // /etc of the two sides, when the view serves a part of the system (usr).
  std::vector<store::Change> etc_changes() const;
  std::string config_note() const;

 private:
  bool sysroot_mode() const { return args_.sysroot.has_value(); }
  std::filesystem::path repo() const { return *args_.sysroot / "ostree/repo"; }
  std::string booted_key() const { return booted_key_; }
  std::string compute_booted_key() const;
  Origin commit_origin(const std::string& checksum) const;
  std::string commit_version(const std::string& checksum) const;
  Result<store::Tree> build_booted_manifest();
  uint64_t estimate_booted_entries() const;
  Status load_staged(const store::Tree& booted);
  Status set_staged_locked(store::Tree tree);
  Status write_config_locked() const;
  Sides sides_locked() const;
  Outcome<Staged> finish_stage(Origin origin, ostree::OstreeImportResult staged,
                               const std::string& pending_at_stage, double pull_seconds,
                               const std::function<size_t(const Sides&)>& count_pending);
  void on_sysroot_change();
  // One side's database; reopened when the side's tree changed (a new stage).
  struct PackagesSlot {
    std::optional<uint64_t> version;  // staged_version_ of the tree it was opened for
    std::unique_ptr<packages::PackageDb> db;
    std::string error;  // why `db` could not be opened ("staged: ..."), "" when it was
  };
  packages::PackageDb* packages_of(PackagesSlot& slot, uint64_t version, const Origin& origin,
                                   const store::Tree& tree, const char* side);

  const MountArgs args_;
  const DaemonConfig config_;  // as found at start
  const std::shared_ptr<store::ObjectStore> store_;
  // Set by resolve_origins(), then constant.
  Origin booted_origin_;
  std::string booted_key_;
  UniqueFd booted_fd_;  // the booted directory (O_PATH), in directory mode

  std::mutex stage_mutex_;  // one staging at a time (held across the import)

  mutable std::mutex mutex_;  // guards everything below
  mutable std::condition_variable loaded_cv_;
  bool loaded_ = false;
  std::optional<Error> load_error_;
  std::string phase_ = "starting";
  std::atomic<uint64_t> entries_done_{0};
  std::string staging_now_;  // Progress::staging
  std::atomic<uint64_t> staging_files_{0};
  std::atomic<uint64_t> entries_expected_{0}, staging_expected_{0};  // Progress
  // Sets staging_now_ for the life of one stage.
  class StagingNow;
  Origin staged_origin_;
  std::optional<store::Tree> booted_tree_, staged_tree_;
  std::string pending_at_stage_;
  std::string stage_error_;
  std::optional<KernelArgs> kernel_args_;
  uint64_t staged_version_ = 0;  // counts set_staged_locked()
  // diff(booted, staged) of staged_version_; null until asked for.
  mutable std::shared_ptr<const std::vector<store::Change>> staged_diff_;

  std::mutex packages_mutex_;  // guards the slots: a PackageDb is used by one caller at a time
  PackagesSlot booted_pkgs_, staged_pkgs_;
  std::vector<std::unique_ptr<inotify::WatchLoop>> deployment_watches_;
};

}  // namespace livefs::cli
