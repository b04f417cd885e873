// The livefs daemon. One control thread answers requests one at a time (so
// generations change in a single order, the journal's); the FUSE loop serves
// the view on its own threads; a signal thread turns SIGTERM/SIGINT into a
// clean unmount.
//
// State directory: lock (flock held by the live daemon), control.sock,
// config.json, journal, booted.tree (manifest of the booted tree: scanned once,
// booted is immutable), staged.tree, daemon.pid, daemon.log, store/ (unless
// --store).
#include "livefs/daemon.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/text.h"
#include "host/holders.h"
#include "host/mount_users.h"
#include "inotify/watch_loop.h"
#include "livefs/control.h"
#include "livefs/holders_scan.h"
#include "livefs/hotfix.h"
#include "livefs/sources.h"
#include "livefs/state_files.h"
#include "overlay/compose.h"
#include "overlay/filesystem.h"
#include "overlay/journal.h"
#include "overlay/selection.h"
#include "overlay/view.h"
#include "packages/package_db.h"
#include "store/diff.h"
#include "store/import.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("daemon"); }

std::string iso_time(int64_t ns) {
  time_t secs = static_cast<time_t>(ns / 1000000000);
  tm t{};
  gmtime_r(&secs, &t);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &t);
  return buf;
}

// Mount points of this mount namespace whose file system is a livefs view.
bool has_livefs_mount(const fs::path& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // "id parent major:minor root mountpoint options ... - fstype source
    // superoptions"
    std::vector<std::string_view> f = split_words(line);
    if (f.size() < 5) continue;
    std::string mp;  // octal escapes: \040 for a space
    for (size_t i = 0; i < f[4].size(); ++i) {
      if (f[4][i] == '\\' && i + 3 < f[4].size()) {
        mp += static_cast<char>(std::stoi(std::string(f[4].substr(i + 1, 3)), nullptr, 8));
        i += 3;
      } else {
        mp += f[4][i];
      }
    }
    if (mp != mountpoint.string()) continue;
    for (size_t i = 5; i + 2 < f.size(); ++i) {
      if (f[i] == "-") {
        if (f[i + 1] == "fuse.livefs" || f[i + 2] == "livefs") return true;
        break;
      }
    }
  }
  return false;
}

// A FUSE mount whose daemon died answers every request with ENOTCONN: detach it
// so the mount point (or, when over-mounted, the booted directory) is reachable
// again.
Status clean_stale_mount(const fs::path& mountpoint) {
  struct stat st {};
  bool stale = ::stat(mountpoint.c_str(), &st) != 0 && errno == ENOTCONN;
  if (!stale && has_livefs_mount(mountpoint)) {
    // The mount root's attributes may be cached for a day, so a stat can succeed on a dead
    // mount; a lookup of a name never asked before always reaches the daemon, and a dead
    // one's connection answers ENOTCONN.
    fs::path probe =
        mountpoint / (".livefs-liveness-probe-" + std::to_string(::getpid()) + "-" +
                      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    stale = ::lstat(probe.c_str(), &st) != 0 && (errno == ENOTCONN || errno == ECONNABORTED);
  }
  if (!stale) return {};
  log()->warn("mount point {} is a stale FUSE mount (ENOTCONN): detaching it", mountpoint.string());
  // The daemon runs as root: umount2 needs no helper program (and no shell ever sees the
  // path).
  if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) != 0)
    return fail_errno("umount2(" + mountpoint.string() + ")");
  if (::stat(mountpoint.c_str(), &st) != 0) {
    return fail_errno("stat(" + mountpoint.string() + ") after detaching a stale mount");
  }
  return {};
}

Status require_dir(const fs::path& path, const char* what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return fail_errno(std::string(what) + " " + path.string() + ": stat");
  }
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, std::string(what) + " " + path.string());
  return {};
}

json switch_json(const overlay::SwitchStats& s) {
  return {{"from_generation", s.from_generation},
          {"to_generation", s.to_generation},
          {"changed_paths", s.changed_paths},
          {"invalidations", s.invalidations},
          {"seconds", s.seconds}};
}

// A refusal is a sentence for the operator, not a failed system call.
json refusal(const Error& e) {
  json r = error_response(e);
  r["error"] = e.context;
  return r;
}

// A holder scan walks /proc; one that takes longer than this is given up (and logged).
constexpr std::chrono::milliseconds kHolderScanTimeout{30000};

// A rebuild writing files for a second is still one change set (one generation): a change
// set goes live once events pause for 10 ms, or after 2 s of a steady stream.
const inotify::DebounceOptions kHotfixDebounce{std::chrono::milliseconds(10),
                                               std::chrono::milliseconds(2000)};

// A side's package database, opened on first use (nullopt: not yet; a null pointer: the
// tree has none).
using PackagesSlot = std::optional<std::unique_ptr<packages::PackageDb>>;

class Daemon {
 public:
  // `state_lock` is the flock'ed state lock (prepare()): held while this daemon may change
  // the state directory.
  Daemon(MountArgs args, UniqueFd state_lock)
      : args_(std::move(args)), state_lock_(std::move(state_lock)) {}

  ~Daemon() {
    if (restore_.joinable()) restore_.join();
    stop_watches();
  }

  // Everything up to a mounted view and a listening socket.
  Status start() {
    const fs::path& state = args_.state;
    // Damaged state files are refused here, before anything is mounted.
    if (auto st = load_state_files(); !st) return st;
    fs::path store_dir = args_.store.value_or(state / "store");
    auto store = store::ObjectStore::open(store_dir);
    if (!store) return std::unexpected(with_context(store.error(), "store"));
    store_ = std::make_shared<store::ObjectStore>(std::move(*store));
    hotfix_ = std::make_unique<HotfixSet>(*store_);

    if (auto st = resolve_origins(); !st) return st;
    if (auto st = load_booted_manifest(); !st) return st;
    if (auto st = load_staged(); !st) return st;
    if (auto st = write_config(); !st) return st;

    std::vector<store::Entry> root{booted_tree_->root().to_entry()};
    auto empty = store::Tree::build(std::move(root));
    if (!empty) return std::unexpected(with_context(empty.error(), "empty layer"));
    empty_layer_ = std::move(*empty);

    // The journal decides the generation served; if it cannot be trusted, generation 0 is
    // served and status reports why (never a refusal to mount: the booted tree is safe).
    store::Tree initial = *empty_layer_;
    uint64_t generation = 0;
    // Generations belong to one booted tree: after a reboot into another deployment (or
    // with another booted directory) the journal starts again at generation 0, the old one
    // kept aside. A journal from before identities were recorded is adopted when the
    // cached configuration says it was made over this same booted tree.
    bool same_booted = config_.booted_key == booted_key() ||
                       (!sysroot_mode() && config_.booted_key == args_.booted.string());
    auto journal = overlay::Journal::open(state / "journal", booted_identity(),
                                          same_booted ? overlay::UnidentifiedJournal::adopt
                                                      : overlay::UnidentifiedJournal::set_aside);
    if (!journal) return std::unexpected(with_context(journal.error(), "journal"));
    journal_ = std::move(*journal);
    if (!journal_->state().note.empty()) log()->warn("{}", journal_->state().note);
    for (const auto& w : journal_->state().warnings) log()->warn("{}", w);
    if (journal_->state().error) {
      log()->error("{}: serving generation 0", journal_->state().error->message());
    } else {
      if (journal_->live().number != 0) {
        auto layer = store::Tree::load(*store_, journal_->live().layer);
        if (!layer) {
          layer_error_ = with_context(
              layer.error(), "layer of generation " + std::to_string(journal_->live().number));
          log()->error("{}: serving generation 0", layer_error_->message());
        } else {
          initial = std::move(*layer);
          generation = journal_->live().number;
        }
      }
      if (!layer_error_ && !journal_->state().hotfix_layer.is_zero()) {
        auto hot = store::Tree::load(*store_, journal_->state().hotfix_layer);
        if (!hot) {
          log()->error("{}: the hotfix layer is not served",
                       with_context(hot.error(), "hotfix layer").message());
        } else {
          hotfix_tree_ = std::move(*hot);
        }
      }
    }
    applied_layer_ = std::move(initial);
    live_generation_ = generation;
    auto served = served_layer();
    if (!served) return std::unexpected(served.error());

    UniqueFd booted_fd(::open(booted_origin_.dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!booted_fd) return fail_errno("open(" + booted_origin_.dir.string() + ")");
    base_view_ = overlay::View::create(std::move(booted_fd), store_, *served, generation);

    overlay::MountOptions options;
    options.mountpoint = args_.mountpoint;
    options.allow_other = args_.allow_other;
    options.debug = args_.debug;
    auto mounted = overlay::Filesystem::mount(options, base_view_);
    if (!mounted) return std::unexpected(with_context(mounted.error(), "mount"));
    fs_ = std::move(*mounted);

    auto listener = listen_control(control_socket_path(state));
    if (!listener) return std::unexpected(listener.error());
    listen_fd_ = std::move(*listener);
    if (auto st = write_file_atomic(state / "daemon.pid", std::to_string(::getpid()) + "\n"); !st) {
      return st;
    }
    log()->info("serving {} (booted {}, staged {}) at generation {}", args_.mountpoint.string(),
                booted_origin_.describe(), staged_origin_.describe(), generation);
    // Serving already: the watches catch up with their sources in the background (the
    // journalled hotfix layer is what is served meanwhile).
    if (!hotfix_config_.watches.empty() || !hotfix_config_.adds.empty())
      restore_ = std::thread([this] { restore_hotfixes(); });
    start_deployment_watch();
    return {};
  }

  // Serves until stopped; then tears down the socket. Returns the exit status.
  //
  // Stopping (umount, SIGTERM) detaches the mount at once and gives up the state directory,
  // but the loop serves on until the kernel lets go of the connection: processes that
  // still have a file of the view open or mapped (over /usr: every running program) keep
  // working. A new daemon may start meanwhile.
  int run() {
    std::thread control([this] { control_loop(); });
    auto served = fs_->serve();
    request_stop();
    control.join();
    release_state();
    // fs_ lives on until the Daemon is destroyed: a signal may still call request_stop()
    // until daemon_main has joined the signal thread.
    if (!served) {
      log()->error("serve: {}", served.error().message());
      return kExitStatusError;
    }
    log()->info("the kernel released {}: exiting", args_.mountpoint.string());
    return 0;
  }

  // Detaches the mount and ends the control loop; safe from any thread, more than once.
  void request_stop() {
    stopping_ = true;
    if (fs_) fs_->stop();
    ::shutdown(listen_fd_.get(), SHUT_RDWR);
  }

 private:
  static constexpr int kExitStatusError = 1;

  bool sysroot_mode() const { return args_.sysroot.has_value(); }

  // config.json and hotfix.json, parsed (a missing file is an empty one).
  Status load_state_files() {
    auto read = [&](const char* name) -> Result<std::string> {
      auto text = read_file_limited(args_.state / name, 64u << 20);
      if (!text && text.error().code == ENOENT) return std::string();
      return text;
    };
    // A crash between write_file_atomic's link and rename leaves a ".NAME.tmp-XXXX": ours
    // (the state lock is held), never read, so removed.
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(args_.state, ec)) {
      std::string name = e.path().filename().string();
      if (name.starts_with(".") && name.find(".tmp-") != std::string::npos)
        ::unlink(e.path().c_str());
    }
    auto config_text = read("config.json");
    if (!config_text) return std::unexpected(config_text.error());
    if (!config_text->empty()) {
      auto config = parse_daemon_config(*config_text, (args_.state / "config.json").string());
      if (!config) return std::unexpected(config.error());
      config_ = std::move(*config);
    }
    auto hotfix_text = read("hotfix.json");
    if (!hotfix_text) return std::unexpected(hotfix_text.error());
    if (!hotfix_text->empty()) {
      auto hotfix = parse_hotfix_config(*hotfix_text, (args_.state / "hotfix.json").string());
      if (!hotfix) return std::unexpected(hotfix.error());
      hotfix_config_ = std::move(*hotfix);
    }
    return {};
  }
  fs::path repo() const { return *args_.sysroot / "ostree/repo"; }

  // ---- sources ------------------------------------------------------------------------

  Status resolve_origins() {
    if (!sysroot_mode()) {
      booted_origin_ = directory_origin(args_.booted);
      staged_origin_ = directory_origin(args_.staged);
      return {};
    }
    auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
    if (!found) return std::unexpected(with_context(found.error(), "sysroot"));
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
      }
    } else if (!staged_commit.empty()) {
      staged_origin_ = commit_origin(staged_commit);
    }
    return {};
  }

  Origin commit_origin(const std::string& checksum) const {
    Origin o;
    o.kind = "commit";
    o.subdir = args_.subdir;
    o.checksum = checksum;
    o.osname = booted_origin_.osname;
    o.version = commit_version(checksum);
    return o;
  }

  std::string commit_version(const std::string& checksum) const {
    auto list = ostree::list_deployments(*args_.sysroot, args_.os);
    if (list) {
      for (const auto& d : *list)
        if (d.checksum == checksum) return d.version;
    }
    return "";
  }

  // What the cached booted manifest (booted.tree) was made from. A directory is known by
  // its path and its root's device and inode: a new image mounted or deployed there is
  // another directory. (A tree changed in place under the same root directory is not
  // noticed: booted trees are immutable by contract, as OSTree deployments are.)
  std::string booted_key() const {
    if (sysroot_mode()) return "ostree:" + booted_origin_.checksum + ":" + args_.subdir;
    struct stat st {};
    if (::stat(args_.booted.c_str(), &st) != 0) return args_.booted.string();
    return args_.booted.string() + "@" + std::to_string(st.st_dev) + ":" +
           std::to_string(st.st_ino);
  }

  // The identity the journal's generations belong to.
  std::string booted_identity() const {
    if (sysroot_mode()) return "ostree:" + booted_origin_.checksum + ":" + args_.subdir;
    return "dir:" + booted_tree_->root().digest().hex();
  }

  // The booted manifest: scanned once (booted is immutable) and cached in the state dir.
  Status load_booted_manifest() {
    fs::path cached = args_.state / "booted.tree";
    if (config_.booted_key == booted_key()) {
      if (auto tree = store::Tree::load(cached)) {
        booted_tree_ = std::move(*tree);
        return {};
      }
    }
    Result<store::Tree> tree = fail(EINVAL, "no booted tree");
    if (sysroot_mode()) {
      log()->info("reading the booted commit {}", booted_origin_.checksum);
      tree = ostree::booted_commit_manifest(repo(), booted_origin_.checksum, args_.subdir, *store_);
    } else {
      log()->info("scanning the booted tree {}", args_.booted.string());
      store::ImportOptions options;
      options.store_objects = false;
      auto scanned = store::import_directory(args_.booted, nullptr, options);
      if (!scanned) return std::unexpected(with_context(scanned.error(), "scan booted tree"));
      tree = std::move(scanned->tree);
    }
    if (!tree) return std::unexpected(tree.error());
    if (auto st = tree->write_file(cached); !st) return st;
    booted_tree_ = std::move(*tree);
    return {};
  }

  Status load_staged() {
    if (staged_origin_.kind == "none") {
      staged_tree_ = *booted_tree_;
      return {};
    }
    Result<store::Tree> tree = fail(EINVAL, "no staged tree");
    // Held until set_staged() has rooted the tree: gc must not take its new objects first.
    store::StoreLock unrooted;
    if (staged_origin_.kind == "directory") {
      store::ImportOptions options;
      options.unchanged_from = &*booted_tree_;
      auto imported = store::import_directory(args_.staged, store_.get(), options);
      if (!imported) return std::unexpected(with_context(imported.error(), "import staged tree"));
      log()->info("staged tree {}: {} files, {} unchanged, {} bytes stored in {:.3f}s",
                  args_.staged.string(), imported->stats.files, imported->stats.files_unchanged,
                  imported->stats.bytes_stored, imported->stats.seconds);
      tree = std::move(imported->tree);
      unrooted = std::move(imported->lock);
    } else {
      auto staged = ostree::stage_commit(repo(), staged_origin_.checksum, args_.subdir,
                                         *booted_tree_, *store_, false);
      if (!staged) {
        // As in background staging: the booted tree is still served and the failure is in
        // `status`; `livefs stage` can try again.
        stage_error_ = with_context(staged.error(), "stage " + staged_origin_.describe()).message();
        log()->error("{}; nothing is staged", stage_error_.get<std::string>());
        staged_origin_ = Origin{};
        staged_origin_.kind = "none";
        staged_tree_ = *booted_tree_;
        return {};
      }
      log_stage(staged->stats);
      tree = std::move(staged->tree);
      unrooted = std::move(staged->lock);
    }
    return set_staged(std::move(*tree));
  }

  void log_stage(const ostree::OstreeImportStats& s) {
    log()->info(
        "staged {}: {} files ({} as booted, {} from the index, {} read: {} bytes) in {:.3f}s",
        staged_origin_.describe(), s.files, s.files_given, s.files_reused, s.files_read,
        s.bytes_read, s.seconds);
  }

  Status set_staged(store::Tree tree) {
    auto id = tree.save_rooted(*store_);
    if (!id) return std::unexpected(with_context(id.error(), "save staged tree"));
    if (auto st = tree.write_file(args_.state / "staged.tree"); !st) return st;
    staged_tree_ = std::move(tree);
    staged_pkgs_.reset();
    return {};
  }

  Status write_config() {
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

  // ---- control ------------------------------------------------------------------------

  void control_loop() {
    while (!stopping_) {
      int raw = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (raw < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (!stopping_) log()->error("accept(control): {}", std::strerror(errno));
        return;
      }
      UniqueFd conn(raw);
      timeval tv{5, 0};
      ::setsockopt(conn.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      bool stop_after = false;
      json response = answer(conn.get(), stop_after);
      if (auto st = write_line(conn.get(), wire_line(response)); !st) {
        log()->warn("control: {}", st.error().message());
      }
      conn.reset();
      reap_retired_watches();
      if (stop_after) request_stop();
    }
    release_state();
  }

  // After the last change this daemon makes: no watch may commit again, and the state
  // directory (socket, pid file, lock) is left to whichever daemon mounts next. Called on
  // the control thread when it ends, and by run() (a no-op by then).
  void release_state() {
    if (released_.exchange(true)) return;
    if (restore_.joinable()) restore_.join();
    stop_watches();
    ::unlink(control_socket_path(args_.state).c_str());
    ::unlink((args_.state / "daemon.pid").c_str());
    state_lock_.reset();
    log()->info("detached {}; the state directory is released", args_.mountpoint.string());
  }

  // One connection's request and its answer. Nothing a peer sends, and no path or name in
  // the trees, can make this throw: the daemon serves /usr and must not exit.
  json answer(int conn, bool& stop_after) noexcept {
    try {
      auto peer = peer_credentials(conn);
      if (!peer) return error_response(peer.error());
      if (!peer_allowed(*peer)) {
        log()->warn("control: refused pid {} uid {}", peer->pid, peer->uid);
        // The request is read (never acted on) so that closing with it unread does not
        // reset the connection before the refusal reaches the peer.
        (void)read_line(conn, 4096);
        json r = error_response(make_error(EACCES, refusal_message(*peer)));
        r["error"] = refusal_message(*peer);
        return r;
      }
      auto line = read_line(conn);
      if (!line) return error_response(line.error());
      auto request = parse_wire_line(*line);
      if (!request) return error_response(request.error());
      std::unique_lock lock(mutex_);
      return handle(*request, stop_after);
    } catch (const std::exception& e) {
      // A malformed request (wrong JSON types) or an allocation failure.
      try {
        return error_response(make_error(EINVAL, std::string("bad request: ") + e.what()));
      } catch (...) {
      }
    } catch (...) {
    }
    return json();
  }

  json handle(const json& request, bool& stop_after) {
    if (!request.is_object() || !request.contains("cmd")) {
      return error_response(make_error(EINVAL, "bad request"));
    }
    std::string cmd = request.at("cmd").get<std::string>();
    log()->debug("control: {}", cmd);
    if (cmd == "status") return status();
    if (cmd == "diff") return diff(request.value("by_package", false));
    if (cmd == "apply") return apply(request);
    if (cmd == "rollback") return go_back(overlay::JournalOp::rollback);
    if (cmd == "reset") return go_back(overlay::JournalOp::reset);
    if (cmd == "stage") return stage(request);
    if (cmd == "hotfix_watch") return hotfix_watch(request);
    if (cmd == "hotfix_add") return hotfix_add(request);
    if (cmd == "hotfix_list") return hotfix_list();
    if (cmd == "hotfix_reset") return hotfix_reset(request);
    if (cmd == "umount") return unmount(stop_after);
    return error_response(make_error(EINVAL, "unknown command " + cmd));
  }

  // Detaches now; says how many processes still use the view (they keep it until they
  // exit, served by this daemon).
  json unmount(bool& stop_after) {
    stop_after = true;
    // Found by mount id and device: after detaching, the view has no path to look at.
    auto mount = host::find_mount(fs_->mountpoint());
    fs_->stop();
    json users = json::array();
    if (!mount) {
      log()->warn("umount: {}", mount.error().message());
    } else if (auto pids = host::processes_using_mount(mount->id, mount->dev); !pids) {
      log()->warn("umount: {}", pids.error().message());
    } else {
      for (pid_t pid : *pids)
        if (pid != ::getpid()) users.push_back(pid);
    }
    log()->info("detached {}: {} processes still use it", args_.mountpoint.string(), users.size());
    json out = {{"ok", true},
                {"users", users},
                {"mountpoint", args_.mountpoint.string()},
                {"detached", true}};
    return out;
  }

  overlay::SelectionInput selection_input() const {
    return {*booted_tree_, *staged_tree_, *applied_layer_};
  }

  json generations_json() const {
    json generations = json::array();
    for (const auto& g : journal_->state().stack) {
      generations.push_back({{"number", g.number},
                             {"op", g.number == 0 ? "booted" : "apply"},
                             {"paths", g.paths},
                             {"path_count", g.paths.size()},
                             {"layer", g.number == 0 ? "" : g.layer.hex()},
                             {"time_ns", g.time_ns},
                             {"time", g.number == 0 ? "" : iso_time(g.time_ns)}});
    }
    return generations;
  }

  json status() {
    const auto& st = journal_->state();
    json history = json::array();
    // The last records only: a hotfix loop writes one per edit.
    size_t first = st.history.size() > 50 ? st.history.size() - 50 : 0;
    for (size_t i = first; i < st.history.size(); ++i) {
      const auto& r = st.history[i];
      history.push_back({{"seq", r.seq},
                         {"op", overlay::op_name(r.op)},
                         {"generation", r.generation},
                         {"path_count", r.paths.size()},
                         {"time", iso_time(r.time_ns)}});
    }
    json out = {{"ok", true},
                {"pid", ::getpid()},
                {"booted", booted_origin_.describe()},
                {"staged", staged_origin_.describe()},
                {"booted_origin", booted_origin_.to_json()},
                {"staged_origin", staged_origin_.to_json()},
                {"store", fs::absolute(store_->root()).string()},
                {"mountpoint", fs::absolute(args_.mountpoint).string()},
                {"live_generation", live_generation_},
                {"generations", generations_json()},
                {"history", history},
                {"history_records", st.history_records},
                {"hotfix", hotfix_json()},
                {"warnings", st.warnings},
                {"journal_error", nullptr},
                {"last_switch", nullptr},
                {"stage_error", stage_error_},
                {"journal_note", st.note},
                {"journal_set_aside", st.set_aside.string()},
                {"config_note", config_note()},
                {"holders", holders_json(touched_)}};
    if (st.error) out["journal_error"] = st.error->message();
    if (layer_error_) out["journal_error"] = layer_error_->message();
    if (last_switch_) out["last_switch"] = switch_json(*last_switch_);
    return out;
  }

  std::string config_note() const {
    if (booted_origin_.subdir.empty()) return "";
    return "the view serves /" + booted_origin_.subdir +
           " only: configuration (/etc) differences are shown by diff and never applied";
  }

  // Processes that still run, map or hold open an old version of a file the view changed.
  json holders_json(const std::set<std::string>& paths) const {
    json out = json::array();
    std::vector<std::string> files;
    for (const auto& p : paths) {
      auto s = staged_tree_->find(p);
      auto b = booted_tree_->find(p);
      if ((s && s->type() == store::EntryType::dir) || (b && b->type() == store::EntryType::dir))
        continue;
      files.push_back(p);
    }
    if (files.empty()) return out;
    auto holders = scan_holders_isolated(args_.mountpoint, files, kHolderScanTimeout);
    if (!holders) {
      log()->warn("holders: {}", holders.error().message());
      return out;
    }
    for (const auto& h : *holders) out.push_back(holder_json(h));
    return out;
  }

  json change_json(const store::Change& c) const {
    return {{"path", c.path},
            {"kind", store::change_name(c.kind)},
            {"kernel", overlay::is_kernel_path(c.path)}};
  }

  // A side's package database, opened on first use; nullptr when it has none (the reason
  // is kept for messages).
  packages::PackageDb* packages_of(PackagesSlot& slot, const Origin& origin,
                                   const store::Tree& tree, const char* side) {
    if (!slot) {
      auto db = open_packages(origin, tree, store_);
      if (!db) {
        packages_error_ = db.error().message();
        log()->warn("{} package database: {}", side, db.error().message());
        slot.emplace();
      } else {
        slot.emplace(std::move(*db));
      }
    }
    return slot->get();
  }

  packages::PackageDb* booted_packages() {
    return packages_of(booted_pkgs_, booted_origin_, *booted_tree_, "booted");
  }

  packages::PackageDb* staged_packages() {
    packages::PackageDb* db = packages_of(staged_pkgs_, staged_origin_, *staged_tree_, "staged");
    return db != nullptr ? db : booted_packages();
  }

  // /etc of the two sides, when the view serves a part of the system (usr).
  json etc_changes() const {
    json out = json::array();
    if (booted_origin_.subdir.empty() || staged_origin_.system_root.empty()) return out;
    fs::path a = booted_origin_.system_root / "etc", b = staged_origin_.system_root / "etc";
    struct stat st {};
    if (::stat(a.c_str(), &st) != 0 || ::stat(b.c_str(), &st) != 0) return out;
    store::ImportOptions options;
    options.store_objects = false;
    auto old_etc = store::import_directory(a, nullptr, options);
    auto new_etc = store::import_directory(b, nullptr, options);
    if (!old_etc || !new_etc) {
      log()->warn("etc diff: {}", (!old_etc ? old_etc.error() : new_etc.error()).message());
      return out;
    }
    for (const auto& c : store::diff(old_etc->tree, new_etc->tree)) {
      out.push_back({{"path", "etc/" + c.path}, {"kind", store::change_name(c.kind)}});
    }
    return out;
  }

  json diff(bool by_package) {
    auto pending = overlay::pending_changes(selection_input());
    json changes = json::array();
    for (const auto& c : pending) changes.push_back(change_json(c));
    json out = {{"ok", true},
                {"live_generation", live_generation_},
                {"staged", staged_origin_.describe()},
                {"changes", changes},
                {"config_changes", etc_changes()},
                {"config_note", config_note()}};
    if (by_package) {
      std::vector<std::string> paths;
      for (const auto& c : pending) paths.push_back(c.path);
      packages::PackageDb* after = staged_packages();
      packages::PackageDb* before = booted_packages();
      if (after == nullptr && before == nullptr) {
        return refusal(
            make_error(ENOENT, "no package database in the booted or staged tree" +
                                   (packages_error_.empty() ? "" : " (" + packages_error_ + ")")));
      }
      json groups = json::array();
      for (const auto& g : packages::group_by_package(paths, before, after)) {
        groups.push_back({{"package", g.package},
                          {"old_version", g.old_version},
                          {"new_version", g.new_version},
                          {"paths", g.paths}});
      }
      out["packages"] = groups;
    }
    return out;
  }

  // Publishes the layers as the live generation (already journalled).
  Result<store::Tree> served_layer() const {
    if (!hotfix_tree_) return *applied_layer_;
    return overlay::compose_layers(*booted_tree_, *applied_layer_, *hotfix_tree_);
  }

  Result<overlay::SwitchStats> publish(store::Tree applied, uint64_t generation,
                                       std::optional<store::Tree> hotfix) {
    std::optional<store::Tree> old_applied = std::move(applied_layer_);
    std::optional<store::Tree> old_hotfix = std::move(hotfix_tree_);
    applied_layer_ = std::move(applied);
    hotfix_tree_ = std::move(hotfix);
    auto served = served_layer();
    Result<overlay::SwitchStats> stats =
        served ? fs_->switch_to(base_view_->with_layer(std::move(*served), generation))
               : Result<overlay::SwitchStats>(std::unexpected(served.error()));
    if (!stats) {
      applied_layer_ = std::move(old_applied);
      hotfix_tree_ = std::move(old_hotfix);
      return stats;
    }
    live_generation_ = generation;
    last_switch_ = *stats;
    log()->info("switched generation {} -> {}: {} paths, {} invalidations, {:.6f}s",
                stats->from_generation, stats->to_generation, stats->changed_paths,
                stats->invalidations, stats->seconds);
    return stats;
  }

  json refuse_if_untrusted() const {
    if (journal_->state().error) {
      return error_response(
          make_error(EBADMSG, "journal is corrupt, serving generation 0 and refusing changes: " +
                                  journal_->state().error->context));
    }
    if (layer_error_) return error_response(with_context(*layer_error_, "refusing changes"));
    return nullptr;
  }

  json apply(const json& request) {
    std::vector<std::string> patterns = request.value("patterns", std::vector<std::string>{});
    std::vector<std::string> package_names = request.value("packages", std::vector<std::string>{});
    overlay::SelectOptions options;
    options.all = request.value("all", false);
    options.allow_replace = request.value("allow_replace", false);
    bool dry_run = request.value("dry_run", false);
    if (!package_names.empty()) {
      if (!patterns.empty() || options.all)
        return refusal(make_error(EINVAL, "--package cannot be combined with paths or --all"));
      auto files = package_files(package_names);
      if (!files) return refusal(files.error());
      patterns = std::move(*files);
      options.literal = true;
    }
    auto selection = overlay::select_changes(selection_input(), patterns, options);
    if (!selection) {
      Error e = selection.error();
      if (!package_names.empty() && e.code == EINVAL)
        e.context = "package " + join_words(package_names) + ": no pending change";
      return refusal(e);
    }
    json applied = json::array();
    std::vector<std::string> paths;
    for (const auto& c : selection->applied) {
      applied.push_back(change_json(c));
      paths.push_back(c.path);
    }
    json out = {{"ok", true},
                {"dry_run", dry_run},
                {"applied", applied},
                {"skipped_kernel", selection->skipped_kernel}};
    if (dry_run) return out;
    if (json r = refuse_if_untrusted(); !r.is_null()) return r;

    // Durable before visible: the layer object, then the journal record, then the switch.
    auto id = selection->layer.save_rooted(*store_);
    if (!id) return error_response(with_context(id.error(), "save layer"));
    auto record = journal_->commit(overlay::JournalOp::apply, *id, paths);
    if (!record) return error_response(record.error());
    auto stats = publish(std::move(selection->layer), record->generation, hotfix_tree_);
    if (!stats) {
      return error_response(
          with_context(stats.error(), "generation " + std::to_string(record->generation) +
                                          " is journalled but the switch failed"));
    }
    touched_.insert(paths.begin(), paths.end());
    out["generation"] = record->generation;
    out["switch"] = switch_json(*stats);
    out["holders"] = holders_json(std::set<std::string>(paths.begin(), paths.end()));
    return out;
  }

  static std::string join_words(const std::vector<std::string>& words) {
    std::string s;
    for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
    return s;
  }

  // What the packages own in the staged tree and in the booted one (so files an upgrade
  // dropped are removed with it).
  Result<std::vector<std::string>> package_files(const std::vector<std::string>& names) {
    packages::PackageDb* staged = staged_packages();
    packages::PackageDb* booted = booted_packages();
    if (staged == nullptr && booted == nullptr) {
      return fail(ENOENT, "no package database in the staged or booted tree" +
                              (packages_error_.empty() ? "" : " (" + packages_error_ + ")"));
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
          return std::unexpected(files.error());
        }
        known = true;
        out.insert(out.end(), files->begin(), files->end());
        if (db == booted) break;
      }
      if (!known) return fail(ENOENT, "unknown package " + name);
    }
    return out;
  }

  json go_back(overlay::JournalOp op) {
    if (json r = refuse_if_untrusted(); !r.is_null()) return r;
    auto planned = journal_->prepare(op, {}, {});
    if (!planned) return error_response(planned.error());
    store::Tree layer = *empty_layer_;
    if (planned->generation != 0) {
      auto loaded = store::Tree::load(*store_, planned->layer);
      if (!loaded) {
        return error_response(with_context(
            loaded.error(), "layer of generation " + std::to_string(planned->generation)));
      }
      layer = std::move(*loaded);
    }
    // What leaves the view: the generations popped.
    const auto& stack = journal_->state().stack;
    for (const auto& g : stack)
      if (g.number > planned->generation) touched_.insert(g.paths.begin(), g.paths.end());
    auto record = journal_->commit(op, {}, {});
    if (!record) return error_response(record.error());
    auto stats = publish(std::move(layer), record->generation, hotfix_tree_);
    if (!stats) return error_response(stats.error());
    json out = {{"ok", true},
                {"op", overlay::op_name(op)},
                {"generation", record->generation},
                {"switch", switch_json(*stats)}};
    if (hotfix_tree_) out["note"] = "the hotfix layer stays on top (livefs hotfix reset drops it)";
    return out;
  }

  // ---- staging (OSTree) ---------------------------------------------------------------

  json stage(const json& request) {
    if (!sysroot_mode())
      return refusal(make_error(EINVAL, "stage needs a daemon started with --sysroot"));
    std::string rev = request.value("commit", "");
    std::string remote = request.value("remote", "");
    std::string ref = request.value("ref", "");
    double pull_seconds = 0;
    if (!remote.empty()) {
      auto t0 = std::chrono::steady_clock::now();
      auto pulled = ostree::pull(repo(), remote, ref);
      if (!pulled) return refusal(with_context(pulled.error(), "pull " + remote + " " + ref));
      rev = *pulled;
      pull_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (rev.empty()) {
      // The deployment the next boot would use.
      auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
      if (!found) return refusal(found.error());
      if (!found->pending)
        return refusal(make_error(ENOENT, "no staged deployment in the sysroot"));
      return stage_deployment(*found->pending);
    }
    auto checksum = ostree::resolve_rev(repo(), rev);
    if (!checksum) return refusal(checksum.error());
    auto staged =
        ostree::stage_commit(repo(), *checksum, args_.subdir, *booted_tree_, *store_, false);
    if (!staged) return refusal(with_context(staged.error(), "stage " + rev));
    Origin origin = commit_origin(*checksum);
    auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
    pending_at_stage_ = found && found->pending ? found->pending->checksum : "";
    return finish_stage(origin, std::move(*staged), pull_seconds);
  }

  json stage_deployment(const ostree::Deployment& d) {
    auto staged =
        ostree::stage_commit(repo(), d.checksum, args_.subdir, *booted_tree_, *store_, false);
    if (!staged) return refusal(with_context(staged.error(), "stage " + d.checksum));
    return finish_stage(deployment_origin(d, args_.subdir), std::move(*staged), 0);
  }

  json finish_stage(Origin origin, ostree::OstreeImportResult staged, double pull_seconds) {
    Origin old = staged_origin_;
    staged_origin_ = std::move(origin);
    if (auto st = set_staged(std::move(staged.tree)); !st) {
      staged_origin_ = old;
      return error_response(st.error());
    }
    if (auto st = write_config(); !st) return error_response(st.error());
    log_stage(staged.stats);
    stage_error_ = nullptr;
    const auto& s = staged.stats;
    return {{"ok", true},
            {"staged", staged_origin_.describe()},
            {"staged_origin", staged_origin_.to_json()},
            {"pending", overlay::pending_changes(selection_input()).size()},
            {"files", s.files},
            {"files_as_booted", s.files_given},
            {"files_reused", s.files_reused},
            {"files_read", s.files_read},
            {"bytes_read", s.bytes_read},
            {"pull_seconds", pull_seconds},
            {"seconds", s.seconds}};
  }

  // inotify on the sysroot: a new deployment (ostree admin deploy) is staged in the
  // background, so that apply only has to switch.
  void start_deployment_watch() {
    if (!sysroot_mode()) return;
    UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!in) {
      log()->warn("inotify on the sysroot: {}", std::strerror(errno));
      return;
    }
    const uint32_t mask = IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_CLOSE_WRITE;
    for (const fs::path& p : {*args_.sysroot / "ostree/deploy" / booted_origin_.osname / "deploy",
                              *args_.sysroot / "ostree", *args_.sysroot / "boot"}) {
      if (::inotify_add_watch(in.get(), p.c_str(), mask) < 0)
        log()->warn("inotify on {}: {}", p.string(), std::strerror(errno));
    }
    deploy_stop_.reset(::eventfd(0, EFD_CLOEXEC));
    deploy_watch_ = std::thread([this, fd = std::move(in)] { deployment_watch_loop(fd.get()); });
  }

  void deployment_watch_loop(int fd) {
    char buf[16384];
    bool dirty = false;
    for (;;) {
      pollfd pfds[2] = {{fd, POLLIN, 0}, {deploy_stop_.get(), POLLIN, 0}};
      // Settle for half a second after the last event: a deployment is many writes.
      int n = ::poll(pfds, 2, dirty ? 500 : -1);
      if (n < 0 && errno != EINTR) return;
      if (pfds[1].revents != 0) return;
      if (n > 0 && (pfds[0].revents & POLLIN)) {
        while (::read(fd, buf, sizeof buf) > 0) {
        }
        dirty = true;
        continue;
      }
      if (!dirty) continue;
      dirty = false;
      auto found = ostree::find_deployments(*args_.sysroot, args_.os, args_.booted_spec);
      if (!found || !found->pending) continue;
      std::unique_lock lock(mutex_);
      if (found->pending->checksum == staged_origin_.checksum) continue;
      log()->info("new deployment {}: staging it", found->pending->checksum);
      json r = stage_deployment(*found->pending);
      if (!r.value("ok", false)) {
        stage_error_ = r.value("error", "staging failed");
        log()->error("background stage: {}", stage_error_.get<std::string>());
      }
    }
  }

  // ---- hotfix -------------------------------------------------------------------------

  // A path in the view as the operator gives it: relative to the view ("bin/tool"), or
  // absolute under the mount point ("/usr/bin/tool" on a /usr view, which is "bin/tool").
  // Another absolute path is refused: on a /usr view, "/bin/tool" would otherwise land at
  // /usr/bin/tool and "/usr/bin/tool" at /usr/usr/bin/tool.
  Result<std::string> view_path(const std::string& given) const {
    if (given.empty() || given[0] != '/') return clean_view_path(given);
    const std::string& mp = args_.mountpoint.string();  // absolute, normal, no trailing '/'
    if (mp == "/") return clean_view_path(given);
    if (given == mp || given.starts_with(mp + "/")) return clean_view_path(given.substr(mp.size()));
    return fail(EINVAL, given + " is not under the mount point " + mp +
                            ": give a path in the view (e.g. bin/tool) or one under " + mp);
  }

  json hotfix_json() const {
    json watches = json::array();
    for (const auto& w : hotfix_->watches()) {
      watches.push_back({{"source", w.source.string()},
                         {"at", w.at},
                         {"entries", w.entries.size()},
                         {"changes", w.changes},
                         {"last_change", iso_time(w.last_change_ns)},
                         {"error", w.error}});
    }
    json adds = json::array();
    for (const auto& a : hotfix_->adds())
      adds.push_back({{"source", a.source.string()}, {"at", a.at}});
    return {{"watches", watches},
            {"adds", adds},
            {"layer_entries", hotfix_tree_ ? hotfix_tree_->size() : 0}};
  }

  Status save_hotfix_config() const {
    HotfixConfig config;
    for (const auto& w : hotfix_->watches())
      if (w.error.empty()) config.watches.push_back({w.source, w.at});
    for (const auto& a : hotfix_->adds()) config.adds.push_back({a.source, a.at});
    return write_file_atomic(args_.state / "hotfix.json", hotfix_config_text(config));
  }

  // When each step of a hotfix commit ended, for the log line of a change set.
  struct HotfixSteps {
    std::chrono::steady_clock::time_point built, stored, journalled;
  };

  // Journals the hotfix layer as it is now and switches to it. The layer manifest joins
  // `batch` (the new contents), so one syncfs makes both durable before the journal record.

  Result<overlay::SwitchStats> commit_hotfix(const std::vector<std::string>& changed,
                                             store::ObjectStore::Batch& batch,
                                             HotfixSteps* steps = nullptr) {
    HotfixSteps ignored;
    if (steps == nullptr) steps = &ignored;
    if (json r = refuse_if_untrusted(); !r.is_null())
      return fail(EBADMSG, r.value("error", "journal cannot be trusted"));
    auto tree = hotfix_->build();
    if (!tree) return std::unexpected(tree.error());
    store::ObjectId id;
    if (*tree) {
      auto saved = batch.put_bytes((*tree)->bytes());
      if (!saved) return std::unexpected(saved.error());
      // Made durable by the batch's sync below, or now when the batch has nothing to sync
      // (the same layer as once before, nothing new stored).
      if (auto st = store_->add_tree_root(*saved, batch.pending() == 0); !st)
        return std::unexpected(st.error());
      id = *saved;
    }
    steps->built = std::chrono::steady_clock::now();
    if (auto st = batch.commit(); !st) return std::unexpected(st.error());
    steps->stored = std::chrono::steady_clock::now();
    auto record = journal_->commit(overlay::JournalOp::hotfix, id, changed);
    if (!record) return std::unexpected(record.error());
    steps->journalled = std::chrono::steady_clock::now();
    touched_.insert(changed.begin(), changed.end());
    // Only the live hotfix layer is a durable gc root: an edit loop must not keep every
    // version across restarts. The layer it replaces stays pinned for this daemon's life: a
    // process may still have one of its files open (an open file keeps its old content),
    // and the kernel then reads its objects.
    if (hotfix_tree_ && hotfix_tree_->id() != id) {
      if (auto st = store_->pin(hotfix_tree_->id()); !st)
        log()->warn("hotfix: {}", st.error().message());
      else if (auto rm = store_->remove_tree_root(hotfix_tree_->id()); !rm)
        log()->warn("hotfix: {}", rm.error().message());
    }
    return publish(*applied_layer_, live_generation_, std::move(*tree));
  }

  Result<overlay::SwitchStats> commit_hotfix(const std::vector<std::string>& changed) {
    store::ObjectStore::Batch batch(*store_);
    return commit_hotfix(changed, batch);
  }

  json hotfix_watch(const json& request) {
    fs::path source = fs::absolute(request.at("source").get<std::string>()).lexically_normal();
    auto at = view_path(request.value("at", ""));
    if (!at) return refusal(at.error());
    if (auto st = require_dir(source, "hotfix source"); !st) return refusal(st.error());
    std::optional<uint64_t> replaced;  // a failed watch of the same source and place
    for (const auto& w : hotfix_->watches()) {
      if (w.source != source || w.at != *at) continue;
      if (w.error.empty() || loops_.contains(w.id))
        return refusal(make_error(EEXIST, source.string() + " is already watched at /" + *at));
      replaced = w.id;
    }
    // A watch that does not go live leaves no trace (nothing to restore, no loop running).
    auto before = std::make_unique<HotfixSet>(*hotfix_);
    // Watch first, then import: nothing written in between is missed.
    auto loop = inotify::WatchLoop::open(source, kHotfixDebounce);
    if (!loop) return refusal(with_context(loop.error(), "hotfix watch " + source.string()));
    // The import's objects and the layer naming them are made durable and rooted together.
    store::ObjectStore::Batch batch(*store_);
    auto id = hotfix_->add_watch(source, *at, &batch);
    // A file written while it is imported: again (the loop already follows the source).
    for (int attempt = 0; !id && id.error().code == EAGAIN && attempt < 50; ++attempt)
      id = hotfix_->add_watch(source, *at, &batch);
    if (!id) return refusal(id.error());
    if (replaced) hotfix_->drop_watch(*replaced);
    if (auto st = start_loop(*id, std::move(*loop)); !st) {
      hotfix_ = std::move(before);
      return refusal(st.error());
    }
    std::vector<std::string> changed = {*at};
    auto stats = commit_hotfix(changed, batch);
    if (!stats) {
      retire_loop(*id);
      hotfix_ = std::move(before);
      return error_response(stats.error());
    }
    if (auto st = save_hotfix_config(); !st) return error_response(st.error());
    const auto& w = hotfix_->watches().back();
    return {{"ok", true},
            {"source", source.string()},
            {"at", *at},
            {"entries", w.entries.size()},
            {"switch", switch_json(*stats)}};
  }

  Status start_loop(uint64_t id, std::unique_ptr<inotify::WatchLoop> loop) {
    auto st = loop->start([this, id](inotify::ChangeSet changes) { on_watch_change(id, changes); },
                          [this, id](const Error& e) { on_watch_error(id, e); });
    if (!st) return st;
    loops_[id] = std::move(loop);
    return {};
  }

  // On a watch's own thread.
  void on_watch_change(uint64_t id, const inotify::ChangeSet& changes) {
    std::unique_lock lock(mutex_);
    if (!loops_.contains(id)) return;  // reset meanwhile
    if (changes.root_gone) {
      log()->warn("hotfix source of watch {} is gone: its layer is dropped", id);
      hotfix_->fail_watch(id, "the source directory was removed or moved away");
      retire_loop(id);
      if (auto st = commit_hotfix({}); !st) log()->error("hotfix: {}", st.error().message());
      (void)save_hotfix_config();
      return;
    }
    using std::chrono::steady_clock;
    auto locked = steady_clock::now();
    store::ObjectStore::Batch batch(*store_);
    auto changed = hotfix_->apply(id, changes, batch);
    if (!changed) {
      log()->error("hotfix watch {}: {}", id, changed.error().message());
      return;
    }
    if (changed->empty()) return;
    auto imported = steady_clock::now();
    HotfixSteps steps;
    auto stats = commit_hotfix(*changed, batch, &steps);
    if (!stats) {
      log()->error("hotfix: {}", stats.error().message());
      return;
    }
    auto ms = [](steady_clock::time_point a, steady_clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    log()->info(
        "hotfix watch {}: {} events, {} paths; {:.1f} ms from the last event: settle {:.1f}, "
        "import {:.1f}, layer {:.1f}, store {:.1f}, journal {:.1f}, switch {:.1f}",
        id, changes.events, changed->size(), ms(changes.last_event, steady_clock::now()),
        ms(changes.last_event, locked), ms(locked, imported), ms(imported, steps.built),
        ms(steps.built, steps.stored), ms(steps.stored, steps.journalled),
        ms(steps.journalled, steady_clock::now()));
  }

  void on_watch_error(uint64_t id, const Error& e) {
    std::unique_lock lock(mutex_);
    log()->error("hotfix watch {}: {}; it no longer follows its source", id, e.message());
    hotfix_->set_error(id, e.message());
    retire_loop(id);
  }

  void retire_loop(uint64_t id) {
    auto it = loops_.find(id);
    if (it == loops_.end()) return;
    retired_.push_back(std::move(it->second));
    loops_.erase(it);
  }

  // Loops are stopped (joined) outside the lock: their callbacks take it.
  void reap_retired_watches() {
    std::vector<std::unique_ptr<inotify::WatchLoop>> done;
    {
      std::unique_lock lock(mutex_);
      done.swap(retired_);
    }
    done.clear();
  }

  void stop_watches() {
    std::vector<std::unique_ptr<inotify::WatchLoop>> done;
    {
      std::unique_lock lock(mutex_);
      for (auto& [id, loop] : loops_) done.push_back(std::move(loop));
      loops_.clear();
      for (auto& l : retired_) done.push_back(std::move(l));
      retired_.clear();
    }
    done.clear();
    if (deploy_watch_.joinable()) {
      uint64_t one = 1;
      (void)!::write(deploy_stop_.get(), &one, sizeof one);
      deploy_watch_.join();
    }
  }

  json hotfix_add(const json& request) {
    fs::path source = fs::absolute(request.at("source").get<std::string>()).lexically_normal();
    auto at = view_path(request.value("at", ""));
    if (!at) return refusal(at.error());
    // An add that does not go live must not go live with a later change either.
    auto before = std::make_unique<HotfixSet>(*hotfix_);
    store::ObjectStore::Batch batch(*store_);
    if (auto st = hotfix_->add_file(source, *at, batch); !st) return refusal(st.error());
    auto stats = commit_hotfix({*at}, batch);
    if (!stats) {
      hotfix_ = std::move(before);
      return error_response(stats.error());
    }
    if (auto st = save_hotfix_config(); !st) return error_response(st.error());
    return {
        {"ok", true}, {"source", source.string()}, {"at", *at}, {"switch", switch_json(*stats)}};
  }

  json hotfix_list() const {
    json out = hotfix_json();
    out["ok"] = true;
    json files = json::array();
    if (hotfix_tree_) {
      for (size_t i = 1; i < hotfix_tree_->size(); ++i) {
        auto e = hotfix_tree_->entry(i);
        if (e.type() == store::EntryType::dir) continue;
        files.push_back(std::string(e.path()));
      }
    }
    out["files"] = files;
    return out;
  }

  json hotfix_reset(const json& request) {
    std::optional<std::string> prefix;
    if (request.contains("prefix") && !request.at("prefix").is_null()) {
      auto p = view_path(request.at("prefix").get<std::string>());
      if (!p) return refusal(p.error());
      prefix = *p;
    }
    if (hotfix_->empty() && !hotfix_tree_) return refusal(make_error(ENOENT, "no hotfix to reset"));
    std::vector<std::string> changed;
    if (hotfix_tree_) {
      for (size_t i = 1; i < hotfix_tree_->size(); ++i) {
        std::string p(hotfix_tree_->entry(i).path());
        if (!prefix || under_prefix(p, *prefix)) changed.push_back(p);
      }
    }
    auto removed = hotfix_->remove(prefix);
    for (uint64_t id : removed) retire_loop(id);
    if (changed.empty() && removed.empty())
      return refusal(make_error(ENOENT, "no hotfix under /" + prefix.value_or("")));
    auto stats = commit_hotfix(changed);
    if (!stats) return error_response(stats.error());
    if (auto st = save_hotfix_config(); !st) return error_response(st.error());
    return {{"ok", true},
            {"removed_paths", changed.size()},
            {"removed_watches", removed.size()},
            {"generation", live_generation_},
            {"switch", switch_json(*stats)}};
  }

  // After a restart: the journalled hotfix layer is served from the first request; the
  // watches are then set up again and brought up to date with their sources.
  void restore_hotfixes() {
    std::unique_lock lock(mutex_);
    if (stopping_) return;
    for (const auto& a : hotfix_config_.adds) {
      const std::string& at = a.at;
      // The content added then, not the file as it is now.
      if (hotfix_tree_) {
        if (auto e = hotfix_tree_->find(at); e) {
          hotfix_->restore_add(a.source, at, e->to_entry());
          continue;
        }
      }
      log()->warn("hotfix add at /{} is not in the journalled layer: dropped", at);
    }
    std::vector<std::string> changed;
    store::ObjectStore::Batch batch(*store_);  // every watch's import, rooted with the layer
    for (const auto& w : hotfix_config_.watches) {
      const fs::path& source = w.source;
      const std::string& at = w.at;
      auto loop = inotify::WatchLoop::open(source, kHotfixDebounce);
      auto id = loop ? hotfix_->add_watch(source, at, &batch)
                     : Result<uint64_t>(std::unexpected(loop.error()));
      // A source being written while it is imported (EAGAIN: a file changed under the
      // import) is imported again: the loop already follows it, so nothing is missed.
      for (int attempt = 0; loop && !id && id.error().code == EAGAIN && attempt < 50; ++attempt)
        id = hotfix_->add_watch(source, at, &batch);
      if (!id || !start_loop(*id, std::move(*loop))) {
        log()->error("hotfix watch {} at /{} not restored: {}", source.string(), at,
                     id ? "watch failed" : id.error().message());
        continue;
      }
      changed.push_back(at);
    }
    auto tree = hotfix_->build();
    bool same = tree && ((!*tree && !hotfix_tree_) ||
                         (*tree && hotfix_tree_ && (*tree)->id() == hotfix_tree_->id()));
    if (!same) {
      if (auto st = commit_hotfix(changed, batch); !st)
        log()->error("hotfix: {}", st.error().message());
    } else if (auto st = batch.commit(); !st) {
      log()->error("hotfix: {}", st.error().message());
    }
  }

  MountArgs args_;
  UniqueFd state_lock_;
  DaemonConfig config_;         // as found at start
  HotfixConfig hotfix_config_;  // as found at start: what restore_ brings back
  std::thread restore_;
  std::shared_ptr<store::ObjectStore> store_;
  Origin booted_origin_, staged_origin_;
  std::optional<store::Tree> booted_tree_;
  std::optional<store::Tree> empty_layer_;
  std::optional<overlay::Journal> journal_;
  std::optional<Error> layer_error_;  // the live generation's layer could not be loaded
  std::shared_ptr<const overlay::View> base_view_;
  std::unique_ptr<overlay::Filesystem> fs_;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> released_{false};
  std::thread deploy_watch_;
  UniqueFd deploy_stop_;

  // Guards everything below: control requests, hotfix change sets and background staging
  // run one at a time (so generations change in one order, the journal's).
  std::mutex mutex_;
  std::optional<store::Tree> staged_tree_;
  std::string pending_at_stage_;
  std::optional<store::Tree> applied_layer_;
  std::optional<store::Tree> hotfix_tree_;
  uint64_t live_generation_ = 0;
  std::optional<overlay::SwitchStats> last_switch_;
  std::set<std::string> touched_;  // paths switches changed: what old holders may hold
  std::unique_ptr<HotfixSet> hotfix_;
  std::map<uint64_t, std::unique_ptr<inotify::WatchLoop>> loops_;
  std::vector<std::unique_ptr<inotify::WatchLoop>> retired_;
  PackagesSlot booted_pkgs_, staged_pkgs_;
  std::string packages_error_;
  json stage_error_ = nullptr;
};

// Validates, locks the state directory and cleans a stale mount: what can be
// refused before anything is started.
// The state directory holds the journal, staged trees and the control socket of a root
// daemon: it is created 0700, and one that someone else owns or may write is refused.
Status prepare_state_dir(const fs::path& state) {
  std::error_code ec;
  fs::create_directories(state.parent_path(), ec);
  if (ec) return fail(ec.value(), "mkdir(" + state.parent_path().string() + ")");
  if (::mkdir(state.c_str(), 0700) != 0 && errno != EEXIST)
    return fail_errno("mkdir(" + state.string() + ")");
  UniqueFd dir(::open(state.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return fail_errno("state directory " + state.string());
  struct stat st {};
  if (::fstat(dir.get(), &st) != 0) return fail_errno("fstat(" + state.string() + ")");
  if (st.st_uid != ::geteuid()) {
    return fail(EPERM, "state directory " + state.string() + " is owned by uid " +
                           std::to_string(st.st_uid) + ", not uid " + std::to_string(::geteuid()));
  }
  if ((st.st_mode & 022) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return fail(EPERM, "state directory " + state.string() + " has mode " + mode +
                           ": writable by group or others (chmod 0700 it)");
  }
  if ((st.st_mode & 077) != 0) {
    // Made by an older livefs (0755): ours, so tighten it rather than refuse.
    log()->warn("state directory {}: mode {:04o} tightened to 0700", state.string(),
                st.st_mode & 07777);
    if (::fchmod(dir.get(), 0700) != 0) return fail_errno("chmod(" + state.string() + ")");
  }
  return {};
}

// Whether `pid` is a process that has not begun to exit. A daemon killed with SIGKILL keeps
// its state lock until its last thread is gone: its leader is a zombie, or flagged as
// exiting, meanwhile.
bool running_process(pid_t pid) {
  if (pid <= 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return false;
  size_t close = line.rfind(')');
  if (close == std::string::npos) return false;
  std::vector<std::string_view> f = split_words(std::string_view(line).substr(close + 2));
  // f[0] is the state, f[6] the flags (fields 3 and 9 of proc_pid_stat(5)).
  if (f.size() < 7 || f[0] == "Z" || f[0] == "X" || f[0] == "x") return false;
  constexpr unsigned long kPfExiting = 0x4;
  unsigned long flags = std::strtoul(std::string(f[6]).c_str(), nullptr, 10);
  return (flags & kPfExiting) == 0;
}

// Takes the state lock. A daemon that died (or is dying) may hold it for a moment while its
// threads exit: then wait for it, a few seconds at most, so that a restart right after a
// crash (systemd's Restart=, an operator's `mount` again) is not refused.
Result<UniqueFd> lock_state(const fs::path& state) {
  fs::path lock_path = state / "lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!lock) return fail_errno("open(" + lock_path.string() + ")");
  constexpr auto kDyingDaemonWait = std::chrono::seconds(10);
  auto deadline = std::chrono::steady_clock::now() + kDyingDaemonWait;
  bool said = false;
  for (;;) {
    if (::flock(lock.get(), LOCK_EX | LOCK_NB) == 0) return lock;
    if (errno != EWOULDBLOCK) return fail_errno("flock(" + lock_path.string() + ")");
    pid_t pid = 0;
    std::ifstream in(state / "daemon.pid");
    in >> pid;
    // No pid yet: a daemon that is starting.
    if (pid <= 0 || running_process(pid) || std::chrono::steady_clock::now() > deadline) {
      return fail(EBUSY, "a livefs daemon is already running for " + state.string() +
                             (pid > 0 ? " (pid " + std::to_string(pid) + ")" : ""));
    }
    if (!said) {
      // prepare() runs in the process of `livefs mount`: the operator sees this.
      std::fprintf(stderr, "livefs: the previous daemon (pid %d) is exiting: waiting for it\n",
                   static_cast<int>(pid));
      std::fflush(stderr);
      said = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

Result<UniqueFd> prepare(const MountArgs& args) {
  if (auto st = prepare_state_dir(args.state); !st) return std::unexpected(st.error());
  auto lock = lock_state(args.state);
  if (!lock) return std::unexpected(lock.error());
  // Before looking at the booted tree: when it is over-mounted, a dead daemon's
  // mount hides it.
  if (auto st = clean_stale_mount(args.mountpoint); !st) return std::unexpected(st.error());
  if (args.sysroot) {
    if (auto st = require_dir(*args.sysroot / "ostree/repo", "OSTree sysroot"); !st)
      return std::unexpected(st.error());
  } else {
    if (auto st = require_dir(args.booted, "booted tree"); !st) return std::unexpected(st.error());
    if (auto st = require_dir(args.staged, "staged tree"); !st) return std::unexpected(st.error());
  }
  if (auto st = require_dir(args.mountpoint, "mount point"); !st) {
    return std::unexpected(st.error());
  }
  if (has_livefs_mount(args.mountpoint)) {
    return fail(EBUSY, "mount point " + args.mountpoint.string() + " already has a livefs mount");
  }
  return lock;
}

// Runs in the daemon process: start, report readiness on `ready_fd` (-1:
// foreground), serve. Signals are blocked in every thread and taken by one
// sigwait thread, which ends (SIGUSR2 from here) before the Daemon is destroyed.
int daemon_main(MountArgs args, UniqueFd state_lock, int ready_fd) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // Nothing of the daemon's may keep a directory of the caller's busy (or the view itself,
  // when the caller's working directory is under the mount point): every path is absolute.
  if (::chdir("/") != 0) log()->warn("chdir(/): {}", std::strerror(errno));

  Daemon daemon(args, std::move(state_lock));
  auto started = daemon.start();
  if (!started) {
    log()->error("{}", started.error().message());
    std::string msg = started.error().message();
    if (ready_fd >= 0) {
      (void)!::write(ready_fd, msg.data(), msg.size());
      ::close(ready_fd);
    } else {
      std::fprintf(stderr, "livefs: %s\n", msg.c_str());
    }
    return 1;
  }
  std::thread signal_thread([&daemon, signals] {
    for (;;) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0 || sig == SIGUSR2) return;
      log()->info("signal {}: unmounting", sig);
      daemon.request_stop();
    }
  });
  if (ready_fd >= 0) {
    (void)!::write(ready_fd, "ok", 2);
    ::close(ready_fd);
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::close(null);
    }
  }
  int status = daemon.run();
  ::pthread_kill(signal_thread.native_handle(), SIGUSR2);
  signal_thread.join();
  return status;
}

}  // namespace

int run_mount(const MountArgs& raw) {
  MountArgs args = raw;
  if (args.sysroot) {
    args.sysroot = fs::absolute(*args.sysroot).lexically_normal();
  } else {
    args.booted = fs::absolute(args.booted).lexically_normal();
    args.staged = fs::absolute(args.staged).lexically_normal();
  }
  args.state = fs::absolute(args.state).lexically_normal();
  args.mountpoint = fs::absolute(args.mountpoint).lexically_normal();
  if (args.store) args.store = fs::absolute(*args.store).lexically_normal();
  auto strip = [](fs::path& p) {
    std::string s = p.string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    p = s;
  };
  strip(args.booted);
  strip(args.staged);
  if (args.sysroot) strip(*args.sysroot);
  strip(args.state);
  strip(args.mountpoint);

  auto lock = prepare(args);
  if (!lock) {
    std::fprintf(stderr, "livefs: %s\n", lock.error().message().c_str());
    return 1;
  }
  if (args.foreground) return daemon_main(args, std::move(*lock), -1);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    std::perror("livefs: pipe");
    return 1;
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("livefs: fork");
    return 1;
  }
  if (pid == 0) {
    ::close(pipefd[0]);
    ::setsid();
    livefs::log_to_file((args.state / "daemon.log").string());
    // The lock stays held through this process's copy of the descriptor.
    int status = daemon_main(args, std::move(*lock), pipefd[1]);
    std::fflush(nullptr);
    ::_exit(status);
  }
  ::close(pipefd[1]);
  lock->reset();  // the child holds the lock now
  std::string answer;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    answer.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  if (answer == "ok") return 0;
  if (answer.empty()) {
    answer = "the daemon exited before the mount was ready (see " +
             (args.state / "daemon.log").string() + ")";
  }
  std::fprintf(stderr, "livefs: %s\n", answer.c_str());
  return 1;
}

}  // namespace livefs::cli
