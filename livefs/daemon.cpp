// The livefs daemon: the composition of its parts. Staging (livefs/staging.h) holds the two
// sides, Generations (overlay/generations.h) the journal and the live layers, the hotfix
// service (livefs/hotfix_service.h) the developer's watches, the control server
// (livefs/control_server.h) the socket; the FUSE loop serves the view on its own threads; a
// loader thread reads what start-up does not wait for; a signal thread turns SIGTERM/SIGINT
// into a clean unmount.
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
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/service_notify.h"
#include "common/text.h"
#include "host/holder_monitor.h"
#include "host/holders.h"
#include "host/mount_users.h"
#include "host/proc_files.h"
#include "host/restart_plan.h"
#include "inotify/watch_loop.h"
#include "livefs/control.h"
#include "livefs/control_server.h"
#include "livefs/etc_live.h"
#include "livefs/etc_merge.h"
#include "livefs/hotfix.h"
#include "livefs/hotfix_service.h"
#include "livefs/outcome.h"
#include "livefs/protocol.h"
#include "livefs/sources.h"
#include "livefs/staging.h"
#include "livefs/state_files.h"
#include "livefs/view_holders.h"
#include "overlay/compose.h"
#include "overlay/filesystem.h"
#include "overlay/generations.h"
#include "overlay/journal.h"
#include "overlay/selection.h"
#include "overlay/view.h"
#include "packages/deps.h"
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

json reply_error(const Failure& f) {
  return f.refused ? refusal(f.error) : error_response(f.error);
}

// The empty layer (generation 0) while the booted manifest is not read yet: the booted root
// as a structural directory of the layer, so the view serves the booted root's own
// attributes (xattrs included), exactly what the manifest's root would.
Result<store::Tree> provisional_empty_layer(int booted_fd) {
  struct stat st {};
  if (::fstat(booted_fd, &st) != 0) return fail_errno("fstat(booted root)");
  store::Entry root;
  root.type = store::EntryType::dir;
  root.mode = st.st_mode & 07777;
  root.uid = st.st_uid;
  root.gid = st.st_gid;
  root.mtime_sec = st.st_mtim.tv_sec;
  root.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  root.structural = true;
  return store::Tree::build({root});
}

// The daemon: composes the sides (Staging), the generations, the hotfix service, the view
// and the control server, and answers each command from them.
class Daemon {
 public:
  // `state_lock` is the flock'ed state lock (prepare()): held while this daemon may change
  // the state directory.
  Daemon(MountArgs args, UniqueFd state_lock)
      : args_(std::move(args)), state_lock_(std::move(state_lock)) {}

  ~Daemon() {
    if (loader_.joinable()) loader_.join();
    if (hotfix_) hotfix_->stop();
    if (staging_) staging_->stop();
  }

  // Everything up to a mounted view and a listening socket. The booted manifest, when it is
  // not cached, is read afterwards (load()): until then the view serves generation 0.
  Status start() {
    const fs::path& state = args_.state;
    // Damaged state files are refused here, before anything is mounted.
    if (auto st = load_state_files(); !st) return st;
    fs::path store_dir = args_.store.value_or(state / "store");
    auto store = store::ObjectStore::open(store_dir);
    if (!store) return std::unexpected(with_context(store.error(), "store"));
    store_ = std::make_shared<store::ObjectStore>(std::move(*store));
    staging_ = std::make_unique<Staging>(args_, config_, store_);
    if (auto st = staging_->resolve_origins(); !st) return st;

    const Origin& booted = staging_->booted_origin();
    UniqueFd booted_fd(::open(booted.dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!booted_fd) return fail_errno("open(" + booted.dir.string() + ")");

    std::optional<store::Tree> cached = staging_->cached_booted_manifest();
    store::Tree served;
    uint64_t generation = 0;
    if (cached) {
      if (auto st = open_generations(*cached); !st) return st;
      auto layer = generations_->served_layer();
      if (!layer) return std::unexpected(layer.error());
      served = std::move(*layer);
      generation = generations_->live_generation();
    } else {
      auto empty = provisional_empty_layer(booted_fd.get());
      if (!empty) return std::unexpected(with_context(empty.error(), "empty layer"));
      served = std::move(*empty);
    }
    base_view_ = overlay::View::create(std::move(booted_fd), store_, served, generation);

    overlay::MountOptions options;
    options.mountpoint = args_.mountpoint;
    options.allow_other = args_.allow_other;
    options.debug = args_.debug;
    options.passthrough = args_.passthrough;
    auto mounted = overlay::Filesystem::mount(options, base_view_);
    if (!mounted) return std::unexpected(with_context(mounted.error(), "mount"));
    fs_ = std::move(*mounted);
    holders_ = std::make_unique<host::HolderMonitor>(view_holder_query(*fs_));
    if (generations_) {
      connect_generations();
      mark_ready(std::nullopt);
    }

    auto listener = listen_control(control_socket_path(state));
    if (!listener) return std::unexpected(listener.error());
    control_ =
        std::make_unique<ControlServer>(std::move(*listener), routes(), [this] { request_stop(); });
    if (auto st = write_file_atomic(state / "daemon.pid", std::to_string(::getpid()) + "\n"); !st) {
      return st;
    }
    register_mountpoint();
    log()->info("serving {} (booted {}) at generation {}", args_.mountpoint.string(),
                booted.describe(), generation);
    // Type=notify: ready once the view serves (the rest loads in the background).
    tell_service_manager("READY=1\nMAINPID=" + std::to_string(::getpid()) + "\n" +
                         service_status(generation));
    // Serving already: the rest (the booted manifest when not cached, the staged tree, the
    // hotfix watches catching up with their sources) in the background.
    loader_ = std::thread([this, c = std::move(cached)]() mutable { load(std::move(c)); });
    return {};
  }

  // Serves until stopped; then tears down the socket. Returns the exit status.
  //
  // Stopping (umount, SIGTERM) detaches the mount at once and gives up the state directory,
  // but the loop serves on until the kernel lets go of the connection: processes that
  // still have a file of the view open or mapped (over /usr: every running program) keep
  // working. A new daemon may start meanwhile.
  int run() {
    std::thread control([this] {
      control_->serve();
      release_state();
    });
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
    if (!stopping_) tell_service_manager("STOPPING=1");
    stopping_ = true;
    if (fs_) fs_->stop();
    if (control_) control_->shutdown();
  }

 private:
  static constexpr int kExitStatusError = 1;

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

  // Generations belong to one booted tree: after a reboot into another deployment (or with
  // another booted directory) the journal starts again at generation 0, the old one kept
  // aside. A journal from before identities were recorded is adopted when the cached
  // configuration says it was made over this same booted tree.
  Status open_generations(const store::Tree& booted) {
    // Structural: the booted root's own attributes (an OSTree manifest's directory times
    // are 0, not the deployment's).
    std::vector<store::Entry> root{booted.root().to_entry()};
    root[0].structural = true;
    auto empty = store::Tree::build(std::move(root));
    if (!empty) return std::unexpected(with_context(empty.error(), "empty layer"));
    overlay::Generations::Options options;
    options.journal = args_.state / "journal";
    options.booted_identity = staging_->booted_identity(booted);
    options.unidentified = staging_->same_booted_as_config()
                               ? overlay::UnidentifiedJournal::adopt
                               : overlay::UnidentifiedJournal::set_aside;
    options.earlier_identity = [&](std::string_view old) {
      return staging_->is_earlier_identity(booted, old);
    };
    auto g = overlay::Generations::open(store_, std::move(*empty), options);
    if (!g) return std::unexpected(g.error());
    generations_ = std::move(*g);
    recover_etc(booted);
    hotfix_ = std::make_unique<HotfixService>(
        store_, *generations_, args_.state,
        [this](const std::string& given) { return view_path(given); });
    return {};
  }

  // The service manager's STATUS= line (systemctl status shows it).
  std::string service_status(uint64_t generation) const {
    return "STATUS=serving " + args_.mountpoint.string() + " at generation " +
           std::to_string(generation);
  }
  static void tell_service_manager(const std::string& state) {
    if (auto st = notify_service_manager(state); !st)
      log()->warn("service manager: {}", st.error().message());
  }

  void connect_generations() {
    generations_->set_switch([this](store::Tree served, uint64_t generation) {
      auto switched = fs_->switch_to(base_view_->with_layer(std::move(served), generation));
      if (switched) tell_service_manager(service_status(generation));
      return switched;
    });
    // The holder scan follows every switch on its own thread; apply does not wait for it.
    generations_->set_on_changed(
        [this](const std::vector<std::string>& paths) { holders_->request(paths); });
    // After a restart: what the journalled generations replaced may still be held by
    // programs started before (from the booted tree).
    std::vector<std::string> live_paths;
    for (const auto& g : generations_->report(0).stack)
      live_paths.insert(live_paths.end(), g.paths.begin(), g.paths.end());
    if (!live_paths.empty()) holders_->request(live_paths);
  }

  // On the loader thread, after the view serves.
  void load(std::optional<store::Tree> cached) {
    bool was_cached = cached.has_value();
    auto loaded = staging_->load(std::move(cached));
    if (!loaded) {
      log()->error("{}: generation 0 is served, and changes are refused", loaded.error().message());
      if (!was_cached) mark_ready(loaded.error());
      return;
    }
    if (!was_cached) {
      auto sides = staging_->sides();
      if (auto st = open_generations(sides->booted_tree); !st) {
        log()->error("{}: generation 0 is served, and changes are refused", st.error().message());
        mark_ready(st.error());
        return;
      }
      connect_generations();
      if (generations_->live_generation() != 0 || generations_->hotfix_layer()) {
        if (auto st = generations_->publish_live(); !st)
          log()->error("serving the journalled generation: {}", st.error().message());
      }
      mark_ready(std::nullopt);
    }
    if (stopping_) return;
    // The watches catch up with their sources (the journalled hotfix layer is what is served
    // meanwhile).
    if (!hotfix_config_.watches.empty() || !hotfix_config_.adds.empty())
      hotfix_->restore(hotfix_config_);
    staging_->start_deployment_watch();
  }

  // An /etc merge whose generation is not on the stack (the daemon died before its journal
  // record, or after a rollback's record but before its undo) is undone now. Not while the
  // journal is refused: what is live is then unknown, and /etc is left as it is.
  void recover_etc(const store::Tree& booted) {
    if (generations_->refusal()) return;
    auto root = etc_undo_root(args_.state);
    if (!root) {
      log()->error("etc undo: {}", root.error().message());
      return;
    }
    auto numbers = generations_->stack_numbers();
    auto undone = etc::recover(*root, std::set<uint64_t>(numbers.begin(), numbers.end()),
                               staging_->booted_identity(booted));
    if (!undone)
      log()->error("etc undo at start: {}", undone.error().message());
    else if (!undone->empty())
      log()->warn("etc: undid the /etc merge of {} generation(s) no longer live", undone->size());
  }

  void mark_ready(std::optional<Error> error) {
    std::lock_guard lock(ready_mutex_);
    ready_ = true;
    ready_error_ = std::move(error);
    ready_cv_.notify_all();
  }

  // Waits until the generations are open (at start when the booted manifest is cached, else
  // once the loader has read it); the failure when they cannot be. The sides are waited for
  // separately (Staging::ready()).
  std::optional<Failure> wait_ready() {
    std::unique_lock lock(ready_mutex_);
    ready_cv_.wait(lock, [this] { return ready_; });
    if (ready_error_)
      return Failure{with_context(*ready_error_, "the booted tree could not be read"), false};
    return std::nullopt;
  }

  bool is_ready() {
    std::lock_guard lock(ready_mutex_);
    return ready_ && !ready_error_;
  }

  // After the last change this daemon makes: no watch may commit again, and the state
  // directory (socket, pid file, lock) is left to whichever daemon mounts next. Called on
  // the control thread when it ends, and by run() (a no-op by then).
  void release_state() {
    if (released_.exchange(true)) return;
    if (loader_.joinable()) loader_.join();
    if (hotfix_) hotfix_->stop();
    staging_->stop();
    unregister_mountpoint();
    ::unlink(control_socket_path(args_.state).c_str());
    ::unlink((args_.state / "daemon.pid").c_str());
    state_lock_.reset();
    log()->info("detached {}; the state directory is released", args_.mountpoint.string());
  }

  // RUNTIME/NAME.sock -> STATEDIR/control.sock, so that commands find this daemon by its
  // mount point, or as the only one (control.h). Replaces a dead daemon's link. Without it the
  // daemon still serves; --state reaches it.
  void register_mountpoint() {
    std::error_code ec;
    fs::path link = registration_path(args_.mountpoint);
    fs::path target = fs::absolute(control_socket_path(args_.state), ec).lexically_normal();
    fs::create_directories(link.parent_path(), ec);
    fs::path tmp = link;
    tmp += ".new." + std::to_string(::getpid());
    ::unlink(tmp.c_str());
    if (ec || ::symlink(target.c_str(), tmp.c_str()) != 0 ||
        ::rename(tmp.c_str(), link.c_str()) != 0) {
      log()->warn("not registered in {} ({}): commands need --state {}",
                  link.parent_path().string(), ec ? ec.message() : std::strerror(errno),
                  args_.state.string());
      ::unlink(tmp.c_str());
      return;
    }
    registered_link_ = link;
    registered_target_ = target;
  }

  // Only this daemon's own link: a new daemon of the mount point may have replaced it.
  void unregister_mountpoint() {
    if (registered_link_.empty()) return;
    std::error_code ec;
    if (fs::read_symlink(registered_link_, ec) == registered_target_)
      ::unlink(registered_link_.c_str());
    registered_link_.clear();
  }

  std::map<std::string, ControlServer::Route> routes() {
    using R = ControlServer::Route;
    auto shared = [](auto f) { return R{false, f}; };
    auto exclusive = [](auto f) { return R{true, f}; };
    return {
        {"status", shared([this](const json&, bool&) { return status(); })},
        {"diff",
         shared([this](const json& r, bool&) { return diff(r.value("by_package", false)); })},
        {"hotfix_list", shared([this](const json&, bool&) { return hotfix_list(); })},
        {"apply", exclusive([this](const json& r, bool&) { return apply(r); })},
        {"rollback", exclusive([this](const json& r, bool&) {
           auto to = r.find("to");
           if (to == r.end() || to->is_null()) return go_back(overlay::JournalOp::rollback);
           if (!to->is_number_unsigned())
             return refusal(make_error(EINVAL, "rollback --to: a generation number expected"));
           return go_back(overlay::JournalOp::rollback, to->get<uint64_t>());
         })},
        {"reset",
         exclusive([this](const json&, bool&) { return go_back(overlay::JournalOp::reset); })},
        {"stage", exclusive([this](const json& r, bool&) { return stage(r); })},
        {"hotfix_watch", exclusive([this](const json& r, bool&) { return hotfix_watch(r); })},
        {"hotfix_add", exclusive([this](const json& r, bool&) { return hotfix_add(r); })},
        {"hotfix_reset", exclusive([this](const json& r, bool&) { return hotfix_reset(r); })},
        {"umount", shared([this](const json&, bool& stop_after) { return unmount(stop_after); })},
        {"restart_plan", shared([this](const json&, bool&) { return restart_plan(); })},
    };
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
    return {{"ok", true},
            {"pid", ::getpid()},  // what `umount --wait` waits for
            {"users", users},
            {"mountpoint", args_.mountpoint.string()},
            {"detached", true}};
  }

  static json generations_json(const std::vector<overlay::Generation>& stack) {
    json generations = json::array();
    for (const auto& g : stack) {
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
    auto sides = staging_->sides();
    const Origin& booted = staging_->booted_origin();
    auto progress = staging_->progress();
    std::string stage_error = staging_->stage_error();
    json out = {{"ok", true},
                {"pid", ::getpid()},
                {"booted", booted.describe()},
                {"booted_origin", booted.to_json()},
                {"store", fs::absolute(store_->root()).string()},
                {"mountpoint", fs::absolute(args_.mountpoint).string()},
                {"live_generation", 0},
                {"generations", json::array()},
                {"history", json::array()},
                {"history_records", 0},
                {"warnings", json::array()},
                {"journal_error", nullptr},
                {"last_switch", nullptr},
                {"stage_error", stage_error.empty() ? json(nullptr) : json(stage_error)},
                {"journal_note", ""},
                {"journal_set_aside", ""},
                {"config_note", staging_->config_note()},
                {"loading", nullptr},
                {"holders", json::array()}};
    overlay::FileIo io = fs_->file_io();
    out["file_io"] = protocol::to_json(protocol::FileIo{.libfuse = io.libfuse,
                                                        .passthrough = io.passthrough,
                                                        .why_not = io.why_not,
                                                        .backing_files = io.backing_files,
                                                        .fallbacks = io.fallbacks});
    Origin staged = staging_->staged_origin();
    out["staged"] = staged.describe();
    out["staged_origin"] = staged.to_json();
    if (!progress.error.empty()) out["journal_error"] = progress.error;
    // A percentage where the count's end can be estimated (below 100 until it is done: an
    // estimate may be short).
    auto with_percent = [](json j, uint64_t done, uint64_t expected) {
      if (expected > 0) {
        j["expected"] = expected;
        j["percent"] = std::min<uint64_t>(99, done * 100 / expected);
      }
      return j;
    };
    out["staging"] =
        progress.staging.empty()
            ? json(nullptr)
            : with_percent({{"what", progress.staging}, {"files", progress.staging_files}},
                           progress.staging_files, progress.staging_expected);
    bool ready = is_ready();
    // What start-up has not finished yet: the booted manifest, the staged tree, the journal.
    if (!progress.phase.empty())
      out["loading"] = with_percent({{"phase", progress.phase}, {"entries", progress.entries}},
                                    progress.entries, progress.entries_expected);
    else if (!ready && progress.error.empty())
      out["loading"] = {{"phase", "opening the journal"}, {"entries", 0}};
    if (!ready) {
      out["hotfix"] = {{"watches", json::array()}, {"adds", json::array()}, {"layer_entries", 0}};
      return out;
    }
    auto r = generations_->report(50);
    json history = json::array();
    for (const auto& h : r.history) {
      history.push_back({{"seq", h.seq},
                         {"op", overlay::op_name(h.op)},
                         {"generation", h.generation},
                         {"path_count", h.paths.size()},
                         {"time", iso_time(h.time_ns)}});
    }
    out["live_generation"] = r.live_generation;
    out["generations"] = generations_json(r.stack);
    out["history"] = history;
    out["history_records"] = r.history_records;
    out["warnings"] = r.warnings;
    out["journal_note"] = r.note;
    out["journal_set_aside"] = r.set_aside.string();
    if (r.journal_error) out["journal_error"] = *r.journal_error;
    if (r.last_switch) out["last_switch"] = switch_json(*r.last_switch);
    out["hotfix"] = hotfix_json(hotfix_->list(false));
    // The last scan's result, never waited for: a scan older than a second is started again
    // for the next status.
    host::HolderReport holders = holders_->latest_refreshing_after(std::chrono::seconds(1));
    json list = json::array();
    for (const auto& h : holders.holders) list.push_back(protocol::to_json(h));
    out["holders"] = list;
    out["holders_scan"] = holders_scan_json(holders);
    if (sides) out["reboot_needed_for"] = reboot_needed_for(*sides, holders);
    return out;
  }

  // restart_plan: the processes still using replaced files, grouped by what restarts them,
  // from a scan made for this request (waited for, up to a limit): the plan is asked for right
  // after an apply, and again right after `systemctl try-restart`, when the last scan is
  // about processes that no longer run. The daemon plans; `livefs restart` runs systemctl
  // (see there why).
  json restart_plan() {
    if (auto f = wait_ready()) return reply_error(*f);
    constexpr auto kScanWait = std::chrono::seconds(30);
    host::HolderReport report = holders_->wait_for(holders_->refresh(), kScanWait);
    host::RestartPlanOptions options{.own_unit = own_unit(),
                                     .mountpoint = args_.mountpoint.string()};
    json out = protocol::to_json(protocol::RestartPlanReply{
        .plan = host::plan_restart(report.holders, options), .holders_scan = {}});
    out["holders_scan"] = holders_scan_json(report);
    out["ok"] = true;
    return out;
  }

  // The daemon's own systemd unit ("" when it runs in none), from its cgroup: never restarted
  // by a plan of its own (stopping it would stop the view under every process).
  static std::string own_unit() {
    int err = 0;
    auto cgroup = host::read_all_at(AT_FDCWD, "/proc/self/cgroup", &err);
    return cgroup ? host::unit_from_cgroup(*cgroup) : std::string();
  }

  static json holders_scan_json(const host::HolderReport& r) {
    bool never = r.finished == std::chrono::system_clock::time_point{};
    return {{"current", r.current()},
            {"scanning", r.scanning},
            {"finished", never ? ""
                               : iso_time(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                              r.finished.time_since_epoch())
                                              .count())},
            {"seconds", r.seconds},
            {"error", r.error ? json(r.error->message()) : json(nullptr)}};
  }

  // `reboot`: overlay::reboot_reason of the change, "" when it can go live.
  static json change_json(const store::Change& c, const std::string& reboot) {
    json j = {{"path", c.path}, {"kind", store::change_name(c.kind)}, {"kernel", !reboot.empty()}};
    if (!reboot.empty()) j["reboot"] = reboot;
    return j;
  }

  // Whether the trees record the file system's hard links (overlay::SelectionInput): a
  // commit's manifest groups files by checksum instead.
  bool link_counts() const { return !args_.sysroot.has_value(); }

  // The kernel versions whose modules stay as booted: this machine's (`uname -r`) and the
  // booted tree's (an OSTree deployment's kernel; in tests, the booted tree is not this
  // machine's).
  static std::vector<std::string> running_kernels(const store::Tree& booted) {
    std::vector<std::string> out = overlay::booted_kernel_versions(booted);
    struct utsname u;
    if (::uname(&u) == 0 && std::find(out.begin(), out.end(), u.release) == out.end())
      out.emplace_back(u.release);
    return out;
  }

  // status: what a reboot into the staged deployment brings that the live view cannot.
  json reboot_needed_for(const Sides& sides, const host::HolderReport& holders) const {
    json out = json::array();
    std::vector<overlay::RebootNeed> needs;
    if (sides.staged_diff) {
      needs = overlay::reboot_needs(sides.booted_tree, *sides.staged_diff,
                                    running_kernels(sides.booted_tree));
    }
    for (const auto& n : needs) {
      out.push_back(
          {{"what", n.what}, {"reason", n.reason}, {"items", n.paths}, {"restart", false}});
    }
    if (auto args = staging_->kernel_args(); args && args->booted != args->next) {
      out.push_back(
          {{"what", "kernel_arguments"},
           {"reason", "the next boot's kernel arguments (second) differ from the booted ones"},
           {"items", json::array({args->booted, args->next})},
           {"restart", false}});
    }
    std::vector<std::string> processes;
    std::set<pid_t> seen;
    for (const auto& h : holders.holders) {
      if (!seen.insert(h.pid).second) continue;
      processes.push_back(std::to_string(h.pid) + " " + h.command +
                          (h.unit.empty() ? "" : " (" + h.unit + ")"));
    }
    if (!processes.empty()) {
      out.push_back({{"what", "processes"},
                     {"reason", "they still use replaced files: restart them (no reboot needed)"},
                     {"items", processes},
                     {"restart", true}});
    }
    return out;
  }

  json diff(bool by_package) {
    if (auto f = wait_ready()) return reply_error(*f);
    auto sides = staging_->ready();
    if (!sides) return reply_error(sides.error());
    store::Tree applied = generations_->applied_layer();
    auto pending = overlay::pending_changes(
        {sides->booted_tree, sides->staged_tree, applied, sides->staged_diff.get(), link_counts()});
    json changes = json::array();
    std::vector<std::string> kernels = running_kernels(sides->booted_tree);
    for (const auto& c : pending)
      changes.push_back(change_json(c, overlay::reboot_reason(sides->booted_tree, c, kernels)));
    json config_changes = json::array();
    for (const auto& c : staging_->etc_changes())
      config_changes.push_back({{"path", "etc/" + c.path}, {"kind", store::change_name(c.kind)}});
    json out = {{"ok", true},
                {"live_generation", generations_->live_generation()},
                {"staged", sides->staged.describe()},
                {"changes", changes},
                {"config_changes", config_changes},
                {"config_note", staging_->config_note()}};
    if (by_package) {
      std::vector<std::string> paths;
      for (const auto& c : pending) paths.push_back(c.path);
      std::optional<json> refused_reply;
      json groups = json::array();
      staging_->with_packages(*sides, [&](packages::PackageDb* before, packages::PackageDb* after,
                                          const std::string& error) {
        if (after == nullptr && before == nullptr) {
          refused_reply =
              refusal(make_error(ENOENT, "no package database in the booted or staged tree" +
                                             (error.empty() ? "" : " (" + error + ")")));
          return;
        }
        auto grouped = packages::group_by_package(paths, before, after);
        // Which pending packages must go live together: a problem in the databases'
        // dependency fields leaves the groups without it (and says so in the log).
        std::map<std::string, std::vector<std::string>> goes_with;
        auto resolver = packages::DependencyResolver::create(before, after, pending_names(grouped));
        if (resolver) {
          for (auto& [package, partners] : (*resolver)->must_go_together())
            goes_with[package] = std::move(partners);
        } else {
          log()->warn("diff --by-package: dependencies: {}", resolver.error().message());
        }
        for (const auto& g : grouped) {
          json group = {{"package", g.package},
                        {"old_version", g.old_version},
                        {"new_version", g.new_version},
                        {"paths", g.paths}};
          if (auto it = goes_with.find(g.package); it != goes_with.end())
            group["goes_with"] = it->second;
          groups.push_back(std::move(group));
        }
      });
      if (refused_reply) return *refused_reply;
      out["packages"] = groups;
    }
    return out;
  }

  json apply(const json& request) {
    std::vector<std::string> patterns = request.value("patterns", std::vector<std::string>{});
    std::vector<std::string> package_names = request.value("packages", std::vector<std::string>{});
    overlay::SelectOptions options;
    options.all = request.value("all", false);
    options.allow_replace = request.value("allow_replace", false);
    bool dry_run = request.value("dry_run", false);
    bool merge_etc = request.value("etc", false);
    if (auto f = wait_ready()) return reply_error(*f);
    auto sides = staging_->ready();
    if (!sides) return reply_error(sides.error());
    std::optional<EtcTrees> etc_sides;
    std::optional<etc::Plan> etc_plan;
    if (merge_etc) {
      auto trees = etc_trees(sides->booted, sides->staged, args_.state,
                             args_.sysroot ? *args_.sysroot / "ostree/repo" : fs::path());
      if (!trees) return refusal(trees.error());
      etc_sides = *trees;
      auto planned = etc::plan(trees->booted_default, trees->staged_default, trees->live);
      if (!planned) return refusal(with_context(planned.error(), "apply --etc"));
      etc_plan = std::move(*planned);
    }
    // --etc alone: a generation whose layer is the live one, with the /etc merge.
    bool etc_only = merge_etc && patterns.empty() && package_names.empty() && !options.all;
    bool with_deps = request.value("with_deps", false);
    bool ignore_deps = request.value("ignore_deps", false);
    std::optional<packages::SelectionPlan> package_plan;
    if (!package_names.empty()) {
      if (!patterns.empty() || options.all)
        return refusal(make_error(EINVAL, "--package cannot be combined with paths or --all"));
      auto planned = plan_packages(*sides, package_names, with_deps);
      if (!planned && !ignore_deps) {
        Error e = planned.error();
        e.context += " (--ignore-deps applies without the check)";
        return refusal(e);
      }
      if (planned && *planned) {
        package_plan = std::move(**planned);
        if (!package_plan->problems.empty() && !ignore_deps)
          return refusal(dependency_refusal(*package_plan, with_deps));
        package_names = package_plan->ids;
      }
      auto files = staging_->package_files(*sides, package_names);
      if (!files) return refusal(files.error());
      patterns = std::move(*files);
      options.literal = true;
    }
    options.running_kernels = running_kernels(sides->booted_tree);
    using Clock = std::chrono::steady_clock;
    auto t0 = Clock::now();
    store::Tree applied_layer = generations_->applied_layer();
    auto selection =
        etc_only ? Result<overlay::Selection>(nothing_selected(applied_layer))
                 : overlay::select_changes({sides->booted_tree, sides->staged_tree, applied_layer,
                                            sides->staged_diff.get(), link_counts()},
                                           patterns, options);
    // `--all --etc` with nothing in the tree to apply (or only what needs a reboot): the
    // /etc merge is still made, as `--etc` alone would, and the reply says why no tree
    // change came with it.
    std::optional<std::string> no_tree_change;
    if (!selection && merge_etc && options.all && patterns.empty() && package_names.empty() &&
        (selection.error().code == EINVAL || selection.error().code == EPERM)) {
      no_tree_change = "no tree change was pending (" + selection.error().context + ")";
      etc_only = true;
      selection = nothing_selected(applied_layer);
    }
    if (!selection) {
      Error e = selection.error();
      if (!package_names.empty() && e.code == EINVAL)
        e.context = "package " + join_words(package_names) + ": no pending change";
      return refusal(e);
    }
    json applied = json::array();
    std::vector<std::string> paths;
    for (const auto& c : selection->applied) {
      applied.push_back(change_json(c, ""));
      paths.push_back(c.path);
    }
    json kept = json::array();
    for (const auto& k : selection->kept) {
      kept.push_back(
          {{"path", k.path}, {"kind", store::change_name(k.kind)}, {"reason", k.reason}});
    }
    json out = {{"ok", true},
                {"dry_run", dry_run},
                {"applied", applied},
                {"skipped_kernel", selection->skipped_kernel},
                {"kept", kept}};
    if (etc_plan) out["etc"] = protocol::to_json(etc_merge_reply(*etc_plan));
    if (no_tree_change) out["note"] = *no_tree_change;
    if (package_plan && !package_plan->added.empty()) {
      json added = json::array();
      for (const auto& a : package_plan->added)
        added.push_back({{"package", a.package}, {"because", a.because}});
      out["added_packages"] = added;
    }
    if (package_plan && !package_plan->problems.empty()) {
      json problems = json::array();
      for (const auto& p : package_plan->problems) problems.push_back(p.text());
      out["dependency_problems"] = problems;
    }
    if (dry_run) return out;
    if (etc_only && !etc_plan->changes()) return out;  // nothing to merge: no generation
    auto t1 = Clock::now();
    overlay::Generations::BeforeCommit merge_before;
    fs::path merged_undo;
    if (merge_etc) {
      // The plan again, under the generations' lock: /etc as it is now.
      merge_before = [&](uint64_t generation) -> Status {
        auto root = etc_undo_root(args_.state);
        if (!root) return std::unexpected(root.error());
        auto planned =
            etc::plan(etc_sides->booted_default, etc_sides->staged_default, etc_sides->live);
        if (!planned) return std::unexpected(planned.error());
        etc_plan = std::move(*planned);
        auto merged = etc::merge(*etc_plan, etc_sides->staged_default, etc_sides->live,
                                 *root / std::to_string(generation),
                                 staging_->booted_identity(sides->booted_tree));
        if (merged) merged_undo = *root / std::to_string(generation);
        return merged;
      };
    }
    auto changed = generations_->apply(selection->layer, paths, merge_before);
    if (!changed) {
      // Merged, but its generation was not journalled: /etc goes back now (else at the
      // next start).
      auto numbers = generations_->stack_numbers();
      if (!merged_undo.empty() &&
          std::find(numbers.begin(), numbers.end(),
                    std::strtoull(merged_undo.filename().c_str(), nullptr, 10)) == numbers.end()) {
        if (auto st = etc::undo(merged_undo); !st)
          log()->error("etc undo after a failed apply: {}", st.error().message());
      }
      return error_response(changed.error());
    }
    if (etc_plan) out["etc"] = protocol::to_json(etc_merge_reply(*etc_plan));
    auto ms = [](Clock::time_point a, Clock::time_point b) {
      return std::chrono::duration<double, std::milli>(b - a).count();
    };
    log()->info("apply: {} paths: select {:.1f} ms, durable and switched {:.1f} ms (switch {:.1f})",
                paths.size(), ms(t0, t1), ms(t1, Clock::now()), changed->stats.seconds * 1000);
    out["generation"] = changed->generation;
    out["switch"] = switch_json(changed->stats);
    // The processes still using replaced files are found after the switch, off this
    // request: `status` lists them.
    out["holders_scan"] = holders_scan_json(holders_->latest());
    return out;
  }

  // The names of the packages that own pending paths.
  static std::set<std::string> pending_names(const std::vector<packages::PackageChanges>& groups) {
    std::set<std::string> names;
    for (const auto& g : groups) {
      if (!g.package.empty()) names.insert(g.package);
    }
    return names;
  }

  // What `apply --package NAMES` does to dependencies, against what is live now. nullopt
  // (no check) when a name is unknown: selecting its files then says so, with close names.
  Result<std::optional<packages::SelectionPlan>> plan_packages(
      const Sides& sides, const std::vector<std::string>& names, bool with_deps) {
    auto pending = overlay::pending_changes({sides.booted_tree, sides.staged_tree,
                                             generations_->applied_layer(), sides.staged_diff.get(),
                                             link_counts()});
    std::vector<std::string> paths;
    paths.reserve(pending.size());
    for (const auto& c : pending) paths.push_back(c.path);
    Result<std::optional<packages::SelectionPlan>> out = std::nullopt;
    staging_->with_packages(sides, [&](packages::PackageDb* before, packages::PackageDb* after,
                                       const std::string& error) {
      if (before == nullptr && after == nullptr) return;  // package_files says why
      // One side's database stood in for the other's, which cannot be read: the check
      // would compare a tree with itself and pass.
      if (!error.empty()) {
        out = fail(EIO, "the package database cannot be read (" + error +
                            "): dependencies cannot be checked");
        return;
      }
      auto resolver = packages::DependencyResolver::create(
          before, after, pending_names(packages::group_by_package(paths, before, after)));
      if (!resolver) {
        out = std::unexpected(with_context(resolver.error(), "dependencies"));
        return;
      }
      auto plan = (*resolver)->plan(names, with_deps);
      if (!plan) {
        if (plan.error().code != ENOENT) out = std::unexpected(plan.error());
        return;
      }
      out = std::move(*plan);
    });
    return out;
  }

  // "apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2); live has 2.6.1", and what would fix it.
  static Error dependency_refusal(const packages::SelectionPlan& plan, bool with_deps) {
    std::string message;
    std::vector<std::string> fixes;
    for (const auto& p : plan.problems) {
      message += (message.empty() ? "" : "; ") + p.text();
      if (p.fixes.empty()) {
        message += " (no pending package meets it)";
      } else if (std::find(fixes.begin(), fixes.end(), p.fixes.front()) == fixes.end()) {
        fixes.push_back(p.fixes.front());
      }
    }
    std::string hint;
    if (!with_deps && !fixes.empty()) {
      hint = ": add";
      for (const auto& f : fixes) hint += " --package " + f;
      hint += ", or use --with-deps";
    } else {
      hint = ": --ignore-deps applies it anyway";
    }
    return make_error(EPERM,
                      "apply --package " + join_words(plan.requested) + ": " + message + hint);
  }

  // `apply --etc` alone: no change selected, the live layer again. (Whatever else a
  // Selection says is empty.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
  static overlay::Selection nothing_selected(const store::Tree& layer) {
    return overlay::Selection{layer};
  }
#pragma GCC diagnostic pop

  static std::string join_words(const std::vector<std::string>& words) {
    std::string s;
    for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
    return s;
  }

  json go_back(overlay::JournalOp op, std::optional<uint64_t> to = std::nullopt) {
    if (auto f = wait_ready()) return reply_error(*f);
    auto changed = generations_->go_back(op, to);
    if (!changed) {
      if (to && changed.error().code == EINVAL) return refusal(changed.error());
      return error_response(changed.error());
    }
    json out = {{"ok", true},
                {"op", overlay::op_name(op)},
                {"generation", changed->generation},
                {"switch", switch_json(changed->stats)}};
    // The /etc merges of the generations popped, the highest first (each undo assumes the
    // ones above it are undone). One that fails stops the rest: the next start retries them
    // all, in the same order.
    std::vector<uint64_t> restored;
    std::vector<std::string> kept;
    auto root = etc_undo_root(args_.state);
    for (uint64_t g : changed->popped) {
      if (!root) {
        out["etc_error"] = root.error().message();
        break;
      }
      fs::path dir = *root / std::to_string(g);
      if (::access(dir.c_str(), F_OK) != 0) continue;
      if (auto st = etc::undo(dir, &kept); !st) {
        log()->error("etc undo of generation {}: {}", g, st.error().message());
        out["etc_error"] = "generation " + std::to_string(g) + ": " + st.error().message() +
                           " (retried at the next start)";
        break;
      }
      restored.push_back(g);
    }
    if (!restored.empty()) out["etc_restored"] = restored;
    if (!kept.empty()) {
      for (auto& k : kept) k = "etc/" + k;  // as the apply reply names /etc's entries
      out["etc_kept"] = kept;
    }
    if (generations_->hotfix_layer())
      out["note"] = "the hotfix layer stays on top (livefs hotfix reset drops it)";
    return out;
  }

  json stage(const json& request) {
    if (auto f = wait_ready()) return reply_error(*f);
    auto staged =
        staging_->stage(request.value("commit", ""), request.value("remote", ""),
                        request.value("ref", ""), [this](const Sides& s) {
                          store::Tree applied = generations_->applied_layer();
                          return overlay::pending_changes({s.booted_tree, s.staged_tree, applied,
                                                           s.staged_diff.get(), link_counts()})
                              .size();
                        });
    if (!staged) return reply_error(staged.error());
    const auto& s = staged->stats;
    return {{"ok", true},
            {"staged", staged->origin.describe()},
            {"staged_origin", staged->origin.to_json()},
            {"pending", staged->pending},
            {"files", s.files},
            {"files_as_booted", s.files_given},
            {"files_reused", s.files_reused},
            {"files_read", s.files_read},
            {"bytes_read", s.bytes_read},
            {"pull_seconds", staged->pull_seconds},
            {"seconds", s.seconds}};
  }

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

  static json hotfix_json(const HotfixService::Listing& l) {
    json watches = json::array();
    for (const auto& w : l.watches) {
      watches.push_back({{"source", w.source.string()},
                         {"at", w.at},
                         {"entries", w.entries},
                         {"changes", w.changes},
                         {"last_change", iso_time(w.last_change_ns)},
                         {"error", w.error}});
    }
    json adds = json::array();
    for (const auto& a : l.adds) adds.push_back({{"source", a.source.string()}, {"at", a.at}});
    return {{"watches", watches}, {"adds", adds}, {"layer_entries", l.layer_entries}};
  }

  json hotfix_list() {
    if (auto f = wait_ready()) return reply_error(*f);
    auto listing = hotfix_->list(true);
    json out = hotfix_json(listing);
    out["ok"] = true;
    out["files"] = listing.files;
    return out;
  }

  json hotfix_watch(const json& request) {
    if (auto f = wait_ready()) return reply_error(*f);
    auto done = hotfix_->watch(request.at("source").get<std::string>(), request.value("at", ""));
    if (!done) return reply_error(done.error());
    return {{"ok", true},
            {"source", done->source.string()},
            {"at", done->at},
            {"entries", done->entries},
            {"switch", switch_json(done->stats)}};
  }

  json hotfix_add(const json& request) {
    if (auto f = wait_ready()) return reply_error(*f);
    auto done = hotfix_->add(request.at("source").get<std::string>(), request.value("at", ""));
    if (!done) return reply_error(done.error());
    return {{"ok", true},
            {"source", done->source.string()},
            {"at", done->at},
            {"switch", switch_json(done->stats)}};
  }

  json hotfix_reset(const json& request) {
    if (auto f = wait_ready()) return reply_error(*f);
    std::optional<std::string> prefix;
    if (request.contains("prefix") && !request.at("prefix").is_null())
      prefix = request.at("prefix").get<std::string>();
    auto done = hotfix_->reset(prefix);
    if (!done) return reply_error(done.error());
    hotfix_->reap();
    return {{"ok", true},
            {"removed_paths", done->removed_paths},
            {"removed_watches", done->removed_watches},
            {"generation", done->generation},
            {"switch", switch_json(done->stats)}};
  }

  MountArgs args_;
  UniqueFd state_lock_;
  DaemonConfig config_;         // as found at start
  HotfixConfig hotfix_config_;  // as found at start: what the loader restores
  std::shared_ptr<store::ObjectStore> store_;
  std::unique_ptr<Staging> staging_;
  // Set once: at start when the booted manifest is cached, else by the loader (before
  // ready_); read by requests only after wait_ready()/is_ready().
  std::unique_ptr<overlay::Generations> generations_;
  std::unique_ptr<HotfixService> hotfix_;
  std::shared_ptr<const overlay::View> base_view_;
  std::unique_ptr<overlay::Filesystem> fs_;
  // Declared after fs_ (its query reads the Filesystem): destroyed before it.
  std::unique_ptr<host::HolderMonitor> holders_;
  std::unique_ptr<ControlServer> control_;
  fs::path registered_link_, registered_target_;  // register_mountpoint()
  std::thread loader_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> released_{false};

  std::mutex ready_mutex_;
  std::condition_variable ready_cv_;
  bool ready_ = false;
  std::optional<Error> ready_error_;
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
  // One daemon per mount point: a second one over a served view would hide it.
  if (auto other = registered_daemon(args.mountpoint)) {
    return fail(EBUSY, args.mountpoint.string() + " is served already, by the livefs daemon of " +
                           other->string() + " (`livefs umount --mount " +
                           normal_mountpoint(args.mountpoint).string() + "` first)");
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
  // What the process would otherwise load lazily from /usr must be loaded before the view
  // is mounted there: until the FUSE loop runs, the kernel holds every access to the mount
  // (the connection is not initialized), and the daemon's own first log line (local time:
  // /etc/localtime is a link into /usr/share/zoneinfo) hung it for good over /usr.
  ::tzset();
  log()->info("mounting {} on {}", args.booted.empty() ? args.subdir : args.booted.string(),
              args.mountpoint.string());

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
