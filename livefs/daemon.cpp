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
#include <signal.h>
#include <sys/file.h>
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
#include <thread>

#include "common/log.h"
#include "common/text.h"
#include "livefs/control.h"
#include "overlay/filesystem.h"
#include "overlay/journal.h"
#include "overlay/selection.h"
#include "overlay/view.h"
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

Status write_file_atomic(const fs::path& path, const std::string& data) {
  fs::path tmp = path;
  tmp += ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("open(" + tmp.string() + ")");
  if (::write(fd.get(), data.data(), data.size()) != static_cast<ssize_t>(data.size()) ||
      ::fsync(fd.get()) != 0) {
    return fail_errno("write(" + tmp.string() + ")");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail_errno("rename(" + path.string() + ")");
  return {};
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
  if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
    std::string cmd = "fusermount3 -uz '" + mountpoint.string() + "' 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) return fail_errno("umount2(" + mountpoint.string() + ")");
  }
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

json change_json(const store::Change& c) {
  return {{"path", c.path},
          {"kind", store::change_name(c.kind)},
          {"kernel", overlay::is_kernel_path(c.path)}};
}

class Daemon {
 public:
  explicit Daemon(MountArgs args) : args_(std::move(args)) {}

  // Everything up to a mounted view and a listening socket.
  Status start() {
    const fs::path& state = args_.state;
    fs::path store_dir = args_.store.value_or(state / "store");
    auto store = store::ObjectStore::open(store_dir);
    if (!store) return std::unexpected(with_context(store.error(), "store"));
    store_ = std::make_shared<store::ObjectStore>(std::move(*store));

    if (auto st = load_booted_manifest(); !st) return st;
    if (auto st = import_staged(); !st) return st;
    if (auto st = write_config(); !st) return st;

    std::vector<store::Entry> root{booted_tree_->root().to_entry()};
    auto empty = store::Tree::build(std::move(root));
    if (!empty) return std::unexpected(with_context(empty.error(), "empty layer"));
    empty_layer_ = std::move(*empty);

    // The journal decides the generation served; if it cannot be trusted,
    // generation 0 is served and status reports why (never a refusal to mount:
    // the booted tree is safe).
    store::Tree initial = *empty_layer_;
    uint64_t generation = 0;
    auto journal = overlay::Journal::open(state / "journal");
    if (!journal) return std::unexpected(with_context(journal.error(), "journal"));
    journal_ = std::move(*journal);
    for (const auto& w : journal_->state().warnings) log()->warn("{}", w);
    if (journal_->state().error) {
      log()->error("{}: serving generation 0", journal_->state().error->message());
    } else if (journal_->live().number != 0) {
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

    UniqueFd booted_fd(::open(args_.booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!booted_fd) return fail_errno("open(" + args_.booted.string() + ")");
    base_view_ = overlay::View::create(std::move(booted_fd), store_, initial, generation);
    live_layer_ = std::move(initial);
    live_generation_ = generation;

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
                args_.booted.string(), args_.staged.string(), generation);
    return {};
  }

  // Serves until stopped; then tears down the socket. Returns the exit status.
  int run() {
    std::thread control([this] { control_loop(); });
    auto served = fs_->serve();
    stopping_ = true;
    ::shutdown(listen_fd_.get(), SHUT_RDWR);
    control.join();
    ::unlink(control_socket_path(args_.state).c_str());
    ::unlink((args_.state / "daemon.pid").c_str());
    fs_.reset();
    if (!served) {
      log()->error("serve: {}", served.error().message());
      return kExitStatusError;
    }
    log()->info("unmounted {}", args_.mountpoint.string());
    return 0;
  }

  void request_stop() {
    stopping_ = true;
    if (fs_) fs_->stop();
  }

 private:
  static constexpr int kExitStatusError = 1;

  Status load_booted_manifest() {
    fs::path cached = args_.state / "booted.tree";
    auto config = read_config();
    if (config.is_object() && config.value("booted", "") == fs::absolute(args_.booted).string()) {
      if (auto tree = store::Tree::load(cached)) {
        booted_tree_ = std::move(*tree);
        return {};
      }
    }
    log()->info("scanning the booted tree {}", args_.booted.string());
    store::ImportOptions options;
    options.store_objects = false;
    auto scanned = store::import_directory(args_.booted, nullptr, options);
    if (!scanned) return std::unexpected(with_context(scanned.error(), "scan booted tree"));
    if (auto st = scanned->tree.write_file(cached); !st) return st;
    booted_tree_ = std::move(scanned->tree);
    return {};
  }

  Status import_staged() {
    fs::path cached = args_.state / "staged.tree";
    auto imported = store::import_directory(args_.staged, store_.get());
    if (!imported) return std::unexpected(with_context(imported.error(), "import staged tree"));
    auto id = imported->tree.save(*store_);
    if (!id) return std::unexpected(with_context(id.error(), "save staged tree"));
    if (auto st = store_->add_tree_root(*id); !st) return st;
    if (auto st = imported->tree.write_file(cached); !st) return st;
    log()->info("staged tree {}: {} files, {} bytes stored in {:.3f}s", args_.staged.string(),
                imported->stats.files, imported->stats.bytes_stored, imported->stats.seconds);
    staged_tree_ = std::move(imported->tree);
    return {};
  }

  json read_config() const {
    std::ifstream in(args_.state / "config.json");
    if (!in) return json();
    return json::parse(in, nullptr, false);
  }

  Status write_config() {
    json config = {{"booted", fs::absolute(args_.booted).string()},
                   {"staged", fs::absolute(args_.staged).string()},
                   {"store", fs::absolute(store_->root()).string()},
                   {"mountpoint", fs::absolute(args_.mountpoint).string()}};
    return write_file_atomic(args_.state / "config.json", config.dump(2) + "\n");
  }

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
      json response;
      bool stop_after = false;
      auto peer = peer_credentials(conn.get());
      if (!peer) {
        response = error_response(peer.error());
      } else if (!peer_allowed(*peer)) {
        log()->warn("control: refused pid {} uid {}", peer->pid, peer->uid);
        // The request is read (never acted on) so that closing with it unread does not
        // reset the connection before the refusal reaches the peer.
        (void)read_line(conn.get(), 4096);
        response = error_response(make_error(EACCES, refusal_message(*peer)));
        response["error"] = refusal_message(*peer);
      } else if (auto line = read_line(conn.get()); !line) {
        response = error_response(line.error());
      } else {
        json request = json::parse(*line, nullptr, false);
        try {
          response = handle(request, stop_after);
        } catch (const std::exception& e) {
          // A malformed request (wrong JSON types) must not take the daemon
          // down.
          response = error_response(make_error(EINVAL, std::string("bad request: ") + e.what()));
        }
      }
      if (auto st = write_line(conn.get(), response.dump()); !st) {
        log()->warn("control: {}", st.error().message());
      }
      conn.reset();
      if (stop_after) request_stop();
    }
  }

  json handle(const json& request, bool& stop_after) {
    if (!request.is_object() || !request.contains("cmd")) {
      return error_response(make_error(EINVAL, "bad request"));
    }
    std::string cmd = request.at("cmd").get<std::string>();
    log()->debug("control: {}", cmd);
    if (cmd == "status") return status();
    if (cmd == "diff") return diff();
    if (cmd == "apply") return apply(request);
    if (cmd == "rollback") return go_back(overlay::JournalOp::rollback);
    if (cmd == "reset") return go_back(overlay::JournalOp::reset);
    if (cmd == "umount") {
      stop_after = true;
      return {{"ok", true}, {"mountpoint", fs::absolute(args_.mountpoint).string()}};
    }
    return error_response(make_error(EINVAL, "unknown command " + cmd));
  }

  overlay::SelectionInput selection_input() const {
    return {*booted_tree_, *staged_tree_, *live_layer_};
  }

  json status() const {
    const auto& st = journal_->state();
    json generations = json::array();
    for (const auto& g : st.stack) {
      generations.push_back({{"number", g.number},
                             {"op", g.number == 0 ? "booted" : "apply"},
                             {"paths", g.paths},
                             {"path_count", g.paths.size()},
                             {"layer", g.number == 0 ? "" : g.layer.hex()},
                             {"time_ns", g.time_ns},
                             {"time", g.number == 0 ? "" : iso_time(g.time_ns)}});
    }
    json history = json::array();
    for (const auto& r : st.history) {
      history.push_back({{"seq", r.seq},
                         {"op", overlay::op_name(r.op)},
                         {"generation", r.generation},
                         {"path_count", r.paths.size()},
                         {"time", iso_time(r.time_ns)}});
    }
    json out = {{"ok", true},
                {"pid", ::getpid()},
                {"booted", fs::absolute(args_.booted).string()},
                {"staged", fs::absolute(args_.staged).string()},
                {"store", fs::absolute(store_->root()).string()},
                {"mountpoint", fs::absolute(args_.mountpoint).string()},
                {"live_generation", live_generation_},
                {"generations", generations},
                {"history", history},
                {"warnings", st.warnings},
                {"journal_error", nullptr},
                {"last_switch", nullptr}};
    if (st.error) out["journal_error"] = st.error->message();
    if (layer_error_) out["journal_error"] = layer_error_->message();
    if (last_switch_) {
      out["last_switch"] = {{"from_generation", last_switch_->from_generation},
                            {"to_generation", last_switch_->to_generation},
                            {"changed_paths", last_switch_->changed_paths},
                            {"invalidations", last_switch_->invalidations},
                            {"seconds", last_switch_->seconds}};
    }
    return out;
  }

  json diff() const {
    json changes = json::array();
    for (const auto& c : overlay::pending_changes(selection_input())) {
      changes.push_back(change_json(c));
    }
    return {{"ok", true}, {"live_generation", live_generation_}, {"changes", changes}};
  }

  // Publishes `layer` as the live generation (already journalled).
  Result<overlay::SwitchStats> switch_to(store::Tree layer, uint64_t generation) {
    auto next = base_view_->with_layer(layer, generation);
    auto stats = fs_->switch_to(next);
    if (!stats) return stats;
    live_layer_ = std::move(layer);
    live_generation_ = generation;
    last_switch_ = *stats;
    log()->info("switched generation {} -> {}: {} paths, {} invalidations, {:.6f}s",
                stats->from_generation, stats->to_generation, stats->changed_paths,
                stats->invalidations, stats->seconds);
    return stats;
  }

  static json stats_json(const overlay::SwitchStats& s) {
    return {{"from_generation", s.from_generation},
            {"to_generation", s.to_generation},
            {"changed_paths", s.changed_paths},
            {"invalidations", s.invalidations},
            {"seconds", s.seconds}};
  }

  json refuse_if_untrusted() const {
    if (journal_->state().error) {
      return error_response(
          make_error(EBADMSG, "journal is corrupt, serving generation 0 and refusing changes: " +
                                  journal_->state().error->context));
    }
    if (layer_error_) {
      return error_response(with_context(*layer_error_, "refusing changes"));
    }
    return nullptr;
  }

  json apply(const json& request) {
    std::vector<std::string> patterns = request.value("patterns", std::vector<std::string>{});
    overlay::SelectOptions options;
    options.all = request.value("all", false);
    options.allow_replace = request.value("allow_replace", false);
    bool dry_run = request.value("dry_run", false);
    auto selection = overlay::select_changes(selection_input(), patterns, options);
    if (!selection) {
      // A refusal is a sentence for the operator, not a failed system call.
      json refusal = error_response(selection.error());
      refusal["error"] = selection.error().context;
      return refusal;
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
    if (json refusal = refuse_if_untrusted(); !refusal.is_null()) return refusal;

    // Durable before visible: the layer object, then the journal record, then
    // the switch.
    auto id = selection->layer.save(*store_);
    if (!id) return error_response(with_context(id.error(), "save layer"));
    if (auto st = store_->add_tree_root(*id); !st) return error_response(st.error());
    auto record = journal_->commit(overlay::JournalOp::apply, *id, std::move(paths));
    if (!record) return error_response(record.error());
    auto stats = switch_to(std::move(selection->layer), record->generation);
    if (!stats) {
      return error_response(
          with_context(stats.error(), "generation " + std::to_string(record->generation) +
                                          " is journalled but the switch failed"));
    }
    out["generation"] = record->generation;
    out["switch"] = stats_json(*stats);
    return out;
  }

  json go_back(overlay::JournalOp op) {
    if (json refusal = refuse_if_untrusted(); !refusal.is_null()) return refusal;
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
    auto record = journal_->commit(op, {}, {});
    if (!record) return error_response(record.error());
    auto stats = switch_to(std::move(layer), record->generation);
    if (!stats) return error_response(stats.error());
    return {{"ok", true},
            {"op", overlay::op_name(op)},
            {"generation", record->generation},
            {"switch", stats_json(*stats)}};
  }

  MountArgs args_;
  std::shared_ptr<store::ObjectStore> store_;
  std::optional<store::Tree> booted_tree_;
  std::optional<store::Tree> staged_tree_;
  std::optional<store::Tree> empty_layer_;
  std::optional<overlay::Journal> journal_;
  std::optional<Error> layer_error_;  // the live generation's layer could not be loaded
  std::shared_ptr<const overlay::View> base_view_;
  std::unique_ptr<overlay::Filesystem> fs_;
  UniqueFd listen_fd_;
  std::atomic<bool> stopping_{false};
  // Touched only by the control thread (after start()): requests run one at a
  // time.
  std::optional<store::Tree> live_layer_;
  uint64_t live_generation_ = 0;
  std::optional<overlay::SwitchStats> last_switch_;
};

// Validates, locks the state directory and cleans a stale mount: what can be
// refused before anything is started.
Result<UniqueFd> prepare(const MountArgs& args) {
  std::error_code ec;
  fs::create_directories(args.state, ec);
  if (ec) return fail(ec.value(), "mkdir(" + args.state.string() + ")");
  fs::path lock_path = args.state / "lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return fail_errno("open(" + lock_path.string() + ")");
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      std::string pid;
      std::ifstream in(args.state / "daemon.pid");
      std::getline(in, pid);
      return fail(EBUSY, "a livefs daemon is already running for " + args.state.string() +
                             (pid.empty() ? "" : " (pid " + pid + ")"));
    }
    return fail_errno("flock(" + lock_path.string() + ")");
  }
  // Before looking at the booted tree: when it is over-mounted, a dead daemon's
  // mount hides it.
  if (auto st = clean_stale_mount(args.mountpoint); !st) return std::unexpected(st.error());
  if (auto st = require_dir(args.booted, "booted tree"); !st) return std::unexpected(st.error());
  if (auto st = require_dir(args.staged, "staged tree"); !st) return std::unexpected(st.error());
  if (auto st = require_dir(args.mountpoint, "mount point"); !st) {
    return std::unexpected(st.error());
  }
  if (has_livefs_mount(args.mountpoint)) {
    return fail(EBUSY, "mount point " + args.mountpoint.string() + " already has a livefs mount");
  }
  return lock;
}

Daemon* g_daemon = nullptr;

// Runs in the daemon process: start, report readiness on `ready_fd` (-1:
// foreground), serve. Signals are blocked in every thread and taken by one
// sigwait thread.
int daemon_main(MountArgs args, int ready_fd) {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  Daemon daemon(args);
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
  g_daemon = &daemon;
  std::thread([signals] {
    int sig = 0;
    if (sigwait(&signals, &sig) == 0) {
      log()->info("signal {}: unmounting", sig);
      g_daemon->request_stop();
    }
  }).detach();
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
  return daemon.run();
}

}  // namespace

int run_mount(const MountArgs& raw) {
  MountArgs args = raw;
  args.booted = fs::absolute(args.booted).lexically_normal();
  args.staged = fs::absolute(args.staged).lexically_normal();
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
  strip(args.state);
  strip(args.mountpoint);

  auto lock = prepare(args);
  if (!lock) {
    std::fprintf(stderr, "livefs: %s\n", lock.error().message().c_str());
    return 1;
  }
  if (args.foreground) {
    int status = daemon_main(args, -1);
    return status;
  }
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
    int status = daemon_main(args, pipefd[1]);
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
