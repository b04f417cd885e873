// The sides of the view: origins, the booted manifest, the staged tree, packages, config.json.
#include "livefs/staging.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <chrono>

#include "common/atomic_file.h"
#include "common/log.h"
#include "livefs/control.h"
#include "store/import.h"

namespace livefs::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("staging"); }

void log_stage(const Origin& origin, const ostree::OstreeImportStats& s) {
  log()->info("staged {}: {} files ({} as booted, {} from the index, {} read: {} bytes) in {:.3f}s",
              origin.describe(), s.files, s.files_given, s.files_reused, s.files_read, s.bytes_read,
              s.seconds);
}

}  // namespace

// The regular files of a tree: how many files a stage of a similar tree reads entries of.
static uint64_t file_count(const store::Tree& tree) {
  uint64_t files = 0;
  for (size_t i = 0; i < tree.size(); ++i) files += tree.entry(i).type() == store::EntryType::file;
  return files;
}

class Staging::StagingNow {
 public:
  // `expected`: the number of files the stage is expected to count (the booted tree's).
  StagingNow(Staging& s, std::string what, uint64_t expected) : s_(s) {
    std::lock_guard lock(s_.mutex_);
    s_.staging_now_ = std::move(what);
    s_.staging_files_ = 0;
    s_.staging_expected_ = expected;
  }
  ~StagingNow() {
    std::lock_guard lock(s_.mutex_);
    s_.staging_now_.clear();
  }
  StagingNow(const StagingNow&) = delete;
  StagingNow& operator=(const StagingNow&) = delete;

 private:
  Staging& s_;
};

Staging::Staging(const MountArgs& args, DaemonConfig config,
                 std::shared_ptr<store::ObjectStore> store)
    : args_(args), config_(std::move(config)), store_(std::move(store)) {}

Staging::~Staging() { stop(); }

Status Staging::resolve_origins() {
  std::lock_guard lock(mutex_);
  if (!sysroot_mode()) {
    booted_origin_ = directory_origin(args_.booted);
    staged_origin_ = directory_origin(args_.staged);
    booted_fd_.reset(::open(args_.booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!booted_fd_) return fail_errno("open(" + args_.booted.string() + ")");
    booted_key_ = compute_booted_key();
    return {};
  }
  auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
  if (!found) return std::unexpected(with_context(found.error(), "sysroot"));
  kernel_args_ = KernelArgs{found->booted_kernel_args, found->next_kernel_args};
  booted_origin_ = deployment_origin(found->booted, args_.subdir);
  if (auto st = require_dir(booted_origin_.dir, "booted deployment"); !st) return st;
  staged_origin_ = Origin{};
  staged_origin_.kind = "none";
  // A commit staged by `livefs stage` stays staged across restarts, unless the sysroot
  // has deployed another one since.
  const std::string& staged_commit = config_.staged_commit;
  if (found->pending) {
    staged_origin_ = deployment_origin(*found->pending, args_.subdir);
    if (!staged_commit.empty() && config_.staged_pending == found->pending->checksum) {
      staged_origin_ = commit_origin(staged_commit);
      pending_at_stage_ = config_.staged_pending;
    }
  } else if (!staged_commit.empty()) {
    staged_origin_ = commit_origin(staged_commit);
  }
  booted_key_ = compute_booted_key();
  return {};
}

Origin Staging::staged_origin() const {
  std::lock_guard lock(mutex_);
  return staged_origin_;
}

Origin Staging::commit_origin(const std::string& checksum) const {
  Origin o;
  o.kind = "commit";
  o.subdir = args_.subdir;
  o.checksum = checksum;
  o.osname = booted_origin_.osname;
  o.version = commit_version(checksum);
  return o;
}

std::string Staging::commit_version(const std::string& checksum) const {
  auto list = ostree::list_deployments(*args_.sysroot, args_.os);
  if (list) {
    for (const auto& d : *list)
      if (d.checksum == checksum) return d.version;
  }
  return "";
}

// What the cached booted manifest (booted.tree) was made from. A directory is known by its
// path and its root's device and inode: a new image mounted or deployed there is another
// directory. (A tree changed in place under the same root directory is not noticed: booted
// trees are immutable by contract, as OSTree deployments are.)
std::string Staging::compute_booted_key() const {
  if (sysroot_mode()) return "ostree:" + booted_origin_.checksum + ":" + args_.subdir;
  struct stat st {};
  if (::fstat(booted_fd_.get(), &st) != 0) return args_.booted.string();
  return args_.booted.string() + "@" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

std::string Staging::booted_identity(const store::Tree& booted) const {
  if (sysroot_mode()) return "ostree:" + booted_origin_.checksum + ":" + args_.subdir;
  return "dir:" + booted.root().digest().hex();
}

bool Staging::is_earlier_identity(const store::Tree& booted, std::string_view identity) const {
  if (sysroot_mode() || !identity.starts_with("dir:")) return false;
  return identity == "dir:" + booted.root_digest_v1().hex();
}

bool Staging::same_booted_as_config() const {
  return config_.booted_key == booted_key() ||
         (!sysroot_mode() && config_.booted_key == args_.booted.string());
}

std::optional<store::Tree> Staging::cached_booted_manifest() {
  if (config_.booted_key != booted_key()) return std::nullopt;
  auto tree = store::Tree::load(args_.state / "booted.tree");
  if (!tree) return std::nullopt;
  return std::move(*tree);
}

// The booted scan's expected entry count: the last booted tree's manifest (a system booted
// into a new image had one of the old image, of nearly the same size), else, when the booted
// directory is a file system's root, the inodes that file system uses; 0 (unknown) otherwise.
// A commit's manifest is read without a count: no estimate.
uint64_t Staging::estimate_booted_entries() const {
  if (sysroot_mode()) return 0;
  if (auto previous = store::Tree::load(args_.state / "booted.tree")) return previous->size();
  struct stat dir {
  }, parent{};
  struct statfs fs {};
  fs::path above = args_.booted / "..";
  if (::fstat(booted_fd_.get(), &dir) != 0 || ::stat(above.c_str(), &parent) != 0 ||
      ::fstatfs(booted_fd_.get(), &fs) != 0)
    return 0;
  bool fs_root = dir.st_dev != parent.st_dev || dir.st_ino == parent.st_ino;
  if (!fs_root || fs.f_files < fs.f_ffree) return 0;
  return fs.f_files - fs.f_ffree;
}

Result<store::Tree> Staging::build_booted_manifest() {
  Result<store::Tree> tree = fail(EINVAL, "no booted tree");
  if (sysroot_mode()) {
    log()->info("reading the booted commit {}", booted_origin_.checksum);
    tree = ostree::booted_commit_manifest(repo(), booted_origin_.checksum, args_.subdir, *store_);
  } else {
    log()->info("scanning the booted tree {}", args_.booted.string());
    store::ImportOptions options;
    options.store_objects = false;
    options.entries_done = &entries_done_;
    // By descriptor: the path may be covered by the view by now.
    auto scanned =
        store::import_directory_at(booted_fd_.get(), args_.booted.string(), nullptr, options);
    if (!scanned) return std::unexpected(with_context(scanned.error(), "scan booted tree"));
    log()->info("booted tree {}: {} entries in {:.3f}s", args_.booted.string(),
                scanned->tree.size(), scanned->stats.seconds);
    tree = std::move(scanned->tree);
  }
  if (!tree) return std::unexpected(tree.error());
  fs::path cached = args_.state / "booted.tree";
  if (auto st = tree->write_file(cached); !st) return std::unexpected(st.error());
  // Served from the file from now on: a mapped manifest keeps only the pages in use, the
  // built one is a heap copy of it (about 200 bytes per entry of /usr).
  if (auto mapped = store::Tree::load(cached)) return std::move(*mapped);
  return tree;
}

Status Staging::load(std::optional<store::Tree> booted) {
  Status result;
  // A cached manifest of an older format served the start (the generations open from it at
  // once); its directory digests never equal a staged tree's, so every diff would walk the
  // whole tree: it is built again, once, here.
  if (booted && booted->version() < 2) booted.reset();
  if (!booted) {
    {
      std::lock_guard lock(mutex_);
      phase_ = "scanning the booted tree";
    }
    entries_expected_ = estimate_booted_entries();
    auto built = build_booted_manifest();
    if (built)
      booted = std::move(*built);
    else
      result = std::unexpected(built.error());
  }
  if (booted) {
    {
      std::lock_guard lock(mutex_);
      booted_tree_ = *booted;
      phase_ = "importing the staged tree";
      entries_done_ = 0;
      // A directory import counts every entry, a commit's its files: the booted tree's
      // numbers are what a staged tree of the same system comes near.
      entries_expected_ = staged_origin_.kind == "directory" ? booted->size() : file_count(*booted);
    }
    std::lock_guard stage_lock(stage_mutex_);
    result = load_staged(*booted);
  }
  // The scan and import freed most of what they allocated; glibc keeps it unless asked.
  ::malloc_trim(0);
  std::lock_guard lock(mutex_);
  loaded_ = true;
  phase_.clear();
  if (!result) load_error_ = result.error();
  loaded_cv_.notify_all();
  return result;
}

Status Staging::load_staged(const store::Tree& booted) {
  Origin origin;
  {
    std::lock_guard lock(mutex_);
    origin = staged_origin_;
  }
  if (origin.kind == "none") {
    std::lock_guard lock(mutex_);
    staged_tree_ = booted;
    staged_diff_.reset();
    return write_config_locked();
  }
  Result<store::Tree> tree = fail(EINVAL, "no staged tree");
  // A staged tree that cannot be read leaves nothing staged: the booted tree is still
  // served, the failure is in `status`, and `livefs stage` can try again.
  auto nothing_staged = [&](const Error& error) -> Status {
    std::lock_guard lock(mutex_);
    stage_error_ = with_context(error, "stage " + origin.describe()).message();
    log()->error("{}; nothing is staged", stage_error_);
    staged_origin_ = Origin{};
    staged_origin_.kind = "none";
    staged_tree_ = booted;
    staged_diff_.reset();
    return write_config_locked();
  };
  // Held until the tree is rooted: gc must not take its new objects first.
  store::StoreLock unrooted;
  if (origin.kind == "directory") {
    store::ImportOptions options;
    options.unchanged_from = &booted;
    options.entries_done = &entries_done_;
    auto imported = store::import_directory(args_.staged, store_.get(), options);
    if (!imported) return nothing_staged(with_context(imported.error(), "import staged tree"));
    log()->info("staged tree {}: {} files, {} unchanged, {} bytes stored in {:.3f}s",
                args_.staged.string(), imported->stats.files, imported->stats.files_unchanged,
                imported->stats.bytes_stored, imported->stats.seconds);
    tree = std::move(imported->tree);
    unrooted = std::move(imported->lock);
  } else {
    auto staged = ostree::stage_commit(repo(), origin.checksum, args_.subdir, booted, *store_,
                                       false, &entries_done_);
    if (!staged) return nothing_staged(staged.error());  // as in background staging
    log_stage(origin, staged->stats);
    tree = std::move(staged->tree);
    unrooted = std::move(staged->lock);
  }
  std::lock_guard lock(mutex_);
  if (auto st = set_staged_locked(std::move(*tree)); !st) return st;
  return write_config_locked();
}

Status Staging::set_staged_locked(store::Tree tree) {
  auto id = tree.save_rooted(*store_);
  if (!id) return std::unexpected(with_context(id.error(), "save staged tree"));
  fs::path file = args_.state / "staged.tree";
  if (auto st = tree.write_file(file); !st) return st;
  auto mapped = store::Tree::load(file);  // as the booted manifest: mapped, not a heap copy
  staged_tree_ = mapped ? std::move(*mapped) : std::move(tree);
  staged_diff_.reset();
  ++staged_version_;
  return {};
}

Status Staging::write_config_locked() const {
  json config = {{"booted_key", booted_key()},
                 {"booted", booted_origin_.to_json()},
                 {"staged", staged_origin_.to_json()},
                 {"store", fs::absolute(store_->root()).string()},
                 {"mountpoint", fs::absolute(args_.mountpoint).string()}};
  if (staged_origin_.kind == "commit") {
    config["staged_commit"] = staged_origin_.checksum;
    config["staged_pending"] = pending_at_stage_;
  }
  return write_file_atomic(args_.state / "config.json", encode_wire(config).dump(2) + "\n");
}

Sides Staging::sides_locked() const {
  if (!staged_diff_) {
    staged_diff_ = std::make_shared<const std::vector<store::Change>>(
        store::diff(*booted_tree_, *staged_tree_));
  }
  return Sides{booted_origin_, staged_origin_,  *booted_tree_,
               *staged_tree_,  staged_version_, staged_diff_};
}

std::optional<Staging::KernelArgs> Staging::kernel_args() const {
  std::lock_guard lock(mutex_);
  return kernel_args_;
}

Outcome<Sides> Staging::ready() const {
  std::unique_lock lock(mutex_);
  loaded_cv_.wait(lock, [this] { return loaded_; });
  if (load_error_) return failed(*load_error_);
  return sides_locked();
}

std::optional<Sides> Staging::sides() const {
  std::lock_guard lock(mutex_);
  if (!loaded_ || load_error_) return std::nullopt;
  return sides_locked();
}

Staging::Progress Staging::progress() const {
  std::lock_guard lock(mutex_);
  Progress p;
  p.phase = phase_;
  p.entries = loaded_ ? 0 : entries_done_.load(std::memory_order_relaxed);
  if (load_error_) p.error = load_error_->message();
  p.staging = staging_now_;
  if (!p.staging.empty()) {
    p.staging_files = staging_files_.load(std::memory_order_relaxed);
    p.staging_expected = staging_expected_.load(std::memory_order_relaxed);
  }
  if (!loaded_) p.entries_expected = entries_expected_.load(std::memory_order_relaxed);
  return p;
}

std::string Staging::stage_error() const {
  std::lock_guard lock(mutex_);
  return stage_error_;
}

Outcome<Staging::Staged> Staging::stage(const std::string& commit, const std::string& remote,
                                        const std::string& ref,
                                        const std::function<size_t(const Sides&)>& count_pending) {
  if (!sysroot_mode())
    return refused(make_error(EINVAL, "stage needs a daemon started with --sysroot"));
  auto sides = ready();
  if (!sides) return std::unexpected(sides.error());
  std::lock_guard stage_lock(stage_mutex_);
  std::string rev = commit;
  double pull_seconds = 0;
  if (!remote.empty()) {
    auto t0 = std::chrono::steady_clock::now();
    // Objects fetched of those requested so far (the count of requests grows as the commit's
    // metadata arrives).
    StagingNow now(*this, "pull " + remote + " " + ref, 0);
    auto pulled = ostree::pull(repo(), remote, ref, {&staging_files_, &staging_expected_});
    if (!pulled) return refused(with_context(pulled.error(), "pull " + remote + " " + ref));
    rev = *pulled;
    pull_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (rev.empty()) {
    // The deployment the next boot would use.
    auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
    if (!found) return refused(found.error());
    if (!found->pending) return refused(make_error(ENOENT, "no staged deployment in the sysroot"));
    StagingNow now(*this, "deployment " + found->pending->checksum, file_count(sides->booted_tree));
    auto staged = ostree::stage_commit(repo(), found->pending->checksum, args_.subdir,
                                       sides->booted_tree, *store_, false, &staging_files_);
    if (!staged) return refused(with_context(staged.error(), "stage " + found->pending->checksum));
    return finish_stage(deployment_origin(*found->pending, args_.subdir), std::move(*staged), "", 0,
                        count_pending);
  }
  auto checksum = ostree::resolve_rev(repo(), rev);
  if (!checksum) return refused(checksum.error());
  StagingNow now(*this, "commit " + *checksum, file_count(sides->booted_tree));
  auto staged = ostree::stage_commit(repo(), *checksum, args_.subdir, sides->booted_tree, *store_,
                                     false, &staging_files_);
  if (!staged) return refused(with_context(staged.error(), "stage " + rev));
  auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
  std::string pending = found && found->pending ? found->pending->checksum : "";
  return finish_stage(commit_origin(*checksum), std::move(*staged), pending, pull_seconds,
                      count_pending);
}

Outcome<Staging::Staged> Staging::finish_stage(
    Origin origin, ostree::OstreeImportResult staged, const std::string& pending_at_stage,
    double pull_seconds, const std::function<size_t(const Sides&)>& count_pending) {
  Sides sides;
  {
    std::lock_guard lock(mutex_);
    Origin old = staged_origin_;
    staged_origin_ = origin;
    if (auto st = set_staged_locked(std::move(staged.tree)); !st) {
      staged_origin_ = old;
      return failed(st.error());
    }
    pending_at_stage_ = pending_at_stage;
    if (auto st = write_config_locked(); !st) return failed(st.error());
    stage_error_.clear();
    sides = sides_locked();
  }
  log_stage(origin, staged.stats);
  return Staged{origin, count_pending ? count_pending(sides) : 0, staged.stats, pull_seconds};
}

void Staging::start_deployment_watch() {
  if (!sysroot_mode()) return;
  // Settle for half a second after the last event: a deployment is many writes.
  const inotify::DebounceOptions settle{std::chrono::milliseconds(500),
                                        std::chrono::milliseconds(5000)};
  std::lock_guard lock(mutex_);
  for (const fs::path& p : {*args_.sysroot / "ostree/deploy" / booted_origin_.osname / "deploy",
                            *args_.sysroot / "ostree", *args_.sysroot / "boot"}) {
    auto loop = inotify::WatchLoop::open(p, settle, inotify::RecursiveWatcher::Depth::top_only);
    if (!loop) {
      log()->warn("inotify on {}: {}", p.string(), loop.error().message());
      continue;
    }
    auto st = (*loop)->start(
        [this](const inotify::ChangeSet&) { on_sysroot_change(); },
        [p](const Error& e) { log()->warn("inotify on {}: {}", p.string(), e.message()); });
    if (!st) {
      log()->warn("inotify on {}: {}", p.string(), st.error().message());
      continue;
    }
    deployment_watches_.push_back(std::move(*loop));
  }
}

// On a watch loop's thread.
void Staging::on_sysroot_change() {
  auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
  if (found) {
    // The next boot's arguments, even when nothing new is staged (a deployment of the same
    // commit with other arguments). The booted ones stay as read at start: a booted spec that
    // is an index may name another deployment by now.
    std::lock_guard lock(mutex_);
    if (kernel_args_) kernel_args_->next = found->next_kernel_args;
  }
  if (!found || !found->pending) return;
  auto sides = ready();
  if (!sides) return;
  std::lock_guard stage_lock(stage_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (found->pending->checksum == staged_origin_.checksum) return;
  }
  log()->info("new deployment {}: staging it", found->pending->checksum);
  StagingNow now(*this, "deployment " + found->pending->checksum, file_count(sides->booted_tree));
  auto staged = ostree::stage_commit(repo(), found->pending->checksum, args_.subdir,
                                     sides->booted_tree, *store_, false, &staging_files_);
  if (!staged) {
    std::lock_guard lock(mutex_);
    stage_error_ = with_context(staged.error(), "stage " + found->pending->checksum).message();
    log()->error("background stage: {}", stage_error_);
    return;
  }
  auto done =
      finish_stage(deployment_origin(*found->pending, args_.subdir), std::move(*staged), "", 0, {});
  if (!done) {
    std::lock_guard lock(mutex_);
    stage_error_ = done.error().error.message();
    log()->error("background stage: {}", stage_error_);
  }
}

void Staging::stop() {
  std::vector<std::unique_ptr<inotify::WatchLoop>> loops;
  {
    std::lock_guard lock(mutex_);
    loops.swap(deployment_watches_);
  }
  loops.clear();
}

packages::PackageDb* Staging::packages_of(PackagesSlot& slot, uint64_t version,
                                          const Origin& origin, const store::Tree& tree,
                                          const char* side) {
  if (slot.version != version) {
    slot.version = version;
    slot.db.reset();
    slot.error.clear();
    auto db = open_packages(origin, tree, store_);
    if (!db) {
      slot.error = std::string(side) + ": " + db.error().message();
      log()->warn("{} package database: {}", side, db.error().message());
    } else {
      slot.db = std::move(*db);
    }
  }
  return slot.db.get();
}

void Staging::with_packages(const Sides& sides, const PackagesFn& fn) {
  std::lock_guard lock(packages_mutex_);
  packages::PackageDb* booted =
      packages_of(booted_pkgs_, 0, sides.booted, sides.booted_tree, "booted");
  packages::PackageDb* staged =
      packages_of(staged_pkgs_, sides.staged_version, sides.staged, sides.staged_tree, "staged");
  std::string error = booted_pkgs_.error;
  if (!staged_pkgs_.error.empty()) error += (error.empty() ? "" : "; ") + staged_pkgs_.error;
  fn(booted, staged != nullptr ? staged : booted, error);
}

Result<std::vector<std::string>> Staging::package_files(const Sides& sides,
                                                        const std::vector<std::string>& names) {
  Result<std::vector<std::string>> result = std::vector<std::string>{};
  with_packages(sides, [&](packages::PackageDb* booted, packages::PackageDb* staged,
                           const std::string& error) {
    if (staged == nullptr && booted == nullptr) {
      result = fail(ENOENT, "no package database in the staged or booted tree" +
                                (error.empty() ? "" : " (" + error + ")"));
      return;
    }
    std::vector<std::string> out;
    for (const auto& name : names) {
      bool known = false;
      for (packages::PackageDb* db : {staged, booted}) {
        if (db == nullptr) continue;
        auto files = db->files(name);
        if (!files) {
          if (files.error().code == ENOENT && db == staged && booted != nullptr) continue;
          if (files.error().code == ENOENT && known) continue;
          result = std::unexpected(files.error());
          return;
        }
        known = true;
        out.insert(out.end(), files->begin(), files->end());
        if (db == booted) break;
      }
      if (!known) {
        result = fail(ENOENT, "unknown package " + name);
        return;
      }
    }
    result = std::move(out);
  });
  return result;
}

std::vector<store::Change> Staging::etc_changes() const {
  Origin booted, staged;
  {
    std::lock_guard lock(mutex_);
    booted = booted_origin_;
    staged = staged_origin_;
  }
  if (booted.subdir.empty() || staged.system_root.empty()) return {};
  fs::path a = booted.system_root / "etc", b = staged.system_root / "etc";
  struct stat st {};
  if (::stat(a.c_str(), &st) != 0 || ::stat(b.c_str(), &st) != 0) return {};
  store::ImportOptions options;
  options.store_objects = false;
  auto old_etc = store::import_directory(a, nullptr, options);
  auto new_etc = store::import_directory(b, nullptr, options);
  if (!old_etc || !new_etc) {
    log()->warn("etc diff: {}", (!old_etc ? old_etc.error() : new_etc.error()).message());
    return {};
  }
  return store::diff(old_etc->tree, new_etc->tree);
}

std::string Staging::config_note() const {
  if (booted_origin_.subdir.empty()) return "";
  return "the view serves /" + booted_origin_.subdir +
         " only: configuration (/etc) differences are shown by diff and merged by `apply --etc`";
}

}  // namespace livefs::cli
