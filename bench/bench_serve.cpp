// Serving speed, page cache and switch latency of the livefs view, beside native, kernel
// overlayfs, fuse-overlayfs, unionfs-fuse and mergerfs in the same run (issue 13's goals).
//
// Sections (all by default; naming one or more runs only those):
//   serve    `find -printf` (stat of every entry) over a real tree (default /usr) and a tar
//            of its include/ through a pipe, cold (caches dropped) and warm.
//   read     one large random file (--big-mib, default 2 GiB) read sequentially, cold and
//            warm.
//   cache    how much the page cache (`Cached:` in /proc/meminfo) grows when --cache-mib
//            (default 1 GiB) of that file are read through each mount after the caches
//            were dropped, against reading it natively: a view that caches every byte
//            twice (its own inode's pages and the backing file's) shows 2x.
//   dpkg     `dpkg --verify` of every package (--quick: a spread of ~40) with the view
//            over-mounted on /usr in a private mount namespace (unshare -m), cold.
//   build    compiling a fixed set of livefs's own translation units (from this build's
//            compile_commands.json; as many as take --build-seconds natively) with /usr
//            over-mounted the same way, cold and warm.
//   switch   N changed files (1, 100, 1,000, 10,000) made visible: livefs builds the next
//            layer and switches; the copy-based apply copies the changed files into a
//            kernel overlayfs' tmpfs upper directory, as rpm-ostree apply-live does. Both
//            are timed until a changed file reads its new content through the mount.
// Each timed figure is the best of --runs (default 2) runs; ratios are to native.
//
// In serve, read and cache the livefs row mounts the view in this process
// (overlay::Filesystem, the daemon's own code and mount options) with an empty layer: the
// booted tree served as it is. The over-mounted rows run the real daemon (`livefs mount
// --booted /usr ... /usr`); there the peers are native and kernel overlayfs (a FUSE peer
// that resolves its branch by path cannot be mounted over that branch).
// A peer that is not installed or does not mount is a skipped column, never a failure.
// Every mount is undone however the run ends (failure, SIGINT, SIGTERM, SIGHUP).
//
// A full run takes about 15 minutes on a 2-core VM with a 160k-entry /usr (dpkg --verify of
// every package is a third of it); --quick (smaller files, a spread of packages, one run
// each) about 9; --runs 1 nearly halves a full run.
//
//   bench_serve [--quick] [--tree DIR] [--runs N] [--big-mib N] [--cache-mib N]
//               [--build-seconds S] [--compile-db FILE] [--livefs PATH] [--csv FILE]
//               [serve] [read] [cache] [dpkg] [build] [switch]
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "common/log.h"
#include "overlay/filesystem.h"

namespace fs = std::filesystem;
using namespace livefs;

namespace {

using bench::Clock;
using bench::drop_caches;
using bench::numbered;
using bench::seconds_since;
using bench::sh;
using bench::shell_word;

struct Options {
  bool quick = false;
  fs::path tree = "/usr";
  int runs = 2;
  long big_mib = 2048;
  long cache_mib = 1024;
  double build_seconds = 20;
  fs::path compile_db = fs::path(LIVEFS_BUILD_DIR) / "compile_commands.json";
  std::string cli = LIVEFS_BINARY;
  std::string csv = "bench_serve.csv";
  std::set<std::string> sections;
  bool wants(const std::string& s) const { return sections.empty() || sections.contains(s); }
};

// ---------------------------------------------------------------------------------------
// What has to be undone however the run ends: daemons (by state directory), then mounts
// (last made first), then the work directory. die() and the signal watcher both run it;
// the first to get the lock does, and the process ends without the other.

struct Cleanup {
  std::mutex mutex;
  std::string cli;
  fs::path work;
  std::vector<fs::path> daemons;  // state directories of `livefs mount` daemons
  std::vector<fs::path> mounts;
};
Cleanup g_cleanup;

void track_mount(const fs::path& p) {
  std::lock_guard lock(g_cleanup.mutex);
  g_cleanup.mounts.push_back(p);
}

// Unmounts `p` (lazily: a shell still inside it must not make the run fail) and forgets it.
void unmount(const fs::path& p) {
  ::umount2(p.c_str(), MNT_DETACH);
  std::lock_guard lock(g_cleanup.mutex);
  std::erase(g_cleanup.mounts, p);
}

// Mount points at or below `dir`.
std::vector<std::string> mounts_below(const fs::path& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mounts");
  std::string dev, at, rest;
  std::string prefix = dir.string() + "/";
  while (in >> dev >> at) {
    std::getline(in, rest);
    if (at == dir.string() || at.starts_with(prefix)) out.push_back(at);
  }
  return out;
}

void cleanup_locked() {
  for (auto it = g_cleanup.daemons.rbegin(); it != g_cleanup.daemons.rend(); ++it)
    (void)sh(g_cleanup.cli + " umount --wait --state " + shell_word(*it) + " > /dev/null 2>&1");
  g_cleanup.daemons.clear();
  for (auto it = g_cleanup.mounts.rbegin(); it != g_cleanup.mounts.rend(); ++it)
    ::umount2(it->c_str(), MNT_DETACH);
  g_cleanup.mounts.clear();
  if (g_cleanup.work.empty()) return;
  auto left = mounts_below(g_cleanup.work);
  for (auto it = left.rbegin(); it != left.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
  // Removing a tree with a mount still below would reach into it: leave it all.
  if (!mounts_below(g_cleanup.work).empty()) {
    std::fprintf(stderr, "bench_serve: mounts are left below %s\n", g_cleanup.work.c_str());
  } else {
    std::error_code ec;
    fs::remove_all(g_cleanup.work, ec);
  }
  g_cleanup.work.clear();
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_serve: %s\n", what.c_str());
  std::fflush(nullptr);
  std::lock_guard lock(g_cleanup.mutex);
  cleanup_locked();
  // _exit: the signal watcher may be waiting on the lock; static destructors must not run
  // under it.
  ::_exit(1);
}

void must(bool ok, const std::string& what) {
  if (!ok) die(what + " failed");
}

void run_or_die(const std::string& cmd) {
  if (int rc = sh(cmd); rc != 0) die(numbered("exit ", rc) + ": " + cmd);
}

// The handlers only write the signal's number to a pipe; a thread reads it and cleans up.
// Nothing is blocked, so the commands this program runs get their signals as usual.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  unsigned char b = static_cast<unsigned char>(sig);
  (void)!::write(g_signal_pipe[1], &b, 1);
}

void watch_signals() {
  must(::pipe2(g_signal_pipe, O_CLOEXEC) == 0, "pipe2");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  std::thread([] {
    unsigned char sig = 0;
    while (::read(g_signal_pipe[0], &sig, 1) != 1) {
    }
    std::fprintf(stderr, "bench_serve: signal %d, cleaning up\n", sig);
    std::lock_guard lock(g_cleanup.mutex);
    cleanup_locked();
    ::_exit(128 + sig);
  }).detach();
}

// ---------------------------------------------------------------------------------------
// Results: one per (workload, cache, peer); printed as a table of ratios to native and
// written as CSV.

struct Result {
  std::string workload, cache, peer;
  std::optional<double> value;      // nullopt: the peer was skipped
  std::string unit;                 // "s" or "MiB"
  std::string note;                 // why it was skipped, or what was wrong
  std::string baseline = "native";  // the peer its ratio is to
};

class Results {
 public:
  void add(Result r) {
    std::fprintf(
        stderr, "%-44s %-5s %-15s %s\n", r.workload.c_str(), r.cache.c_str(), r.peer.c_str(),
        r.value ? (format_value(*r.value, r.unit)).c_str() : ("skipped: " + r.note).c_str());
    results_.push_back(std::move(r));
  }
  std::optional<double> ratio(const Result& r) const {
    const Result* base = find(r.workload, r.cache, r.baseline);
    if (!r.value || base == nullptr || !base->value || *base->value <= 0) return {};
    return *r.value / *base->value;
  }
  // Case x peer: native's absolute figure, every other peer's ratio to it.
  void print_table(const std::vector<std::string>& peers) const {
    std::printf("\n%-44s %-5s %12s", "case (ratio to native; lower is better)", "cache", "native");
    for (const auto& p : peers)
      if (p != "native") std::printf(" %15s", p.c_str());
    std::printf("\n");
    std::vector<std::pair<std::string, std::string>> cases;
    for (const Result& r : results_)
      if (r.baseline == "native" &&
          std::ranges::find(cases, std::pair(r.workload, r.cache)) == cases.end())
        cases.emplace_back(r.workload, r.cache);
    for (const auto& [workload, cache] : cases) {
      const Result* native = find(workload, cache, "native");
      std::printf(
          "%-44s %-5s %12s", workload.c_str(), cache.c_str(),
          native && native->value ? format_value(*native->value, native->unit).c_str() : "-");
      for (const auto& p : peers) {
        if (p == "native") continue;
        const Result* r = find(workload, cache, p);
        std::string cell = "-";
        if (r && !r->value) cell = "skipped";
        if (r) {
          if (auto x = ratio(*r)) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%.2fx", *x);
            cell = buf;
            // Measured, but something was wrong (the note in the CSV and above says what).
            if (!r->note.empty()) cell += " (!)";
          }
        }
        std::printf(" %15s", cell.c_str());
      }
      std::printf("\n");
    }
  }
  // The rows whose baseline is not native (switch latency), one per line.
  void print_others() const {
    std::printf("\n%-22s %-22s %10s %12s\n", "case", "method", "ms", "ratio");
    for (const Result& r : results_) {
      if (r.baseline == "native" || !r.value) continue;
      auto x = ratio(r);
      std::printf("%-22s %-22s %10.3f %11.1fx\n", r.workload.c_str(), r.peer.c_str(),
                  *r.value * 1e3, x.value_or(0));
    }
  }
  void write_csv(std::ostream& out) const {
    out << "workload,cache,peer,value,unit,ratio,note\n";
    for (const Result& r : results_) {
      out << '"' << r.workload << "\"," << r.cache << ',' << r.peer << ',';
      if (r.value) out << *r.value;
      out << ',' << r.unit << ',';
      if (auto x = ratio(r)) out << *x;
      out << ",\"" << r.note << "\"\n";
    }
  }

 private:
  static std::string format_value(double v, const std::string& unit) {
    char buf[48];
    if (unit == "s" && v < 1)
      std::snprintf(buf, sizeof buf, "%.1f ms", v * 1e3);
    else
      std::snprintf(buf, sizeof buf, unit == "s" ? "%.3f %s" : "%.0f %s", v, unit.c_str());
    return buf;
  }
  const Result* find(const std::string& w, const std::string& c, const std::string& p) const {
    for (const Result& r : results_)
      if (r.workload == w && r.cache == c && r.peer == p) return &r;
    return nullptr;
  }
  std::vector<Result> results_;
};

// ---------------------------------------------------------------------------------------
// Peers: every way of seeing one tree, each mounted at its own directory.

// The columns, in the order printed.
// "livefs" serves opened files by FUSE passthrough (the default where the kernel has it);
// "livefs-np" is the same view with --no-passthrough (reads through the daemon, no opens).
const std::vector<std::string> kPeers = {"native",   "overlayfs", "fuse-overlayfs", "unionfs-fuse",
                                         "mergerfs", "livefs",    "livefs-np"};
bool is_livefs(const std::string& peer) { return peer == "livefs" || peer == "livefs-np"; }

struct Peer {
  std::string name;
  fs::path root;     // where the tree is seen
  std::string skip;  // why it is not measured; empty when it is
};

// A livefs view of `booted` mounted at `mnt` in this process.
class LiveMount {
 public:
  LiveMount(const fs::path& booted, const fs::path& mnt, std::shared_ptr<store::ObjectStore> store,
            bool passthrough) {
    UniqueFd fd(::open(booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    must(fd.valid(), "open " + booted.string());
    auto view = overlay::View::create(std::move(fd), std::move(store), *store::Tree::build({}), 0);
    auto mounted =
        overlay::Filesystem::mount({.mountpoint = mnt, .passthrough = passthrough}, view);
    must(mounted.has_value(), "livefs mount " + mnt.string());
    fs_ = std::move(*mounted);
    mnt_ = fs_->mountpoint();
    track_mount(mnt_);
    thread_ = std::thread([this] { (void)fs_->serve(); });
  }
  ~LiveMount() {
    fs_->stop();
    thread_.join();
    std::lock_guard lock(g_cleanup.mutex);
    std::erase(g_cleanup.mounts, mnt_);
  }
  LiveMount(const LiveMount&) = delete;
  LiveMount& operator=(const LiveMount&) = delete;
  overlay::Filesystem& fs() { return *fs_; }

 private:
  std::unique_ptr<overlay::Filesystem> fs_;
  fs::path mnt_;
  std::thread thread_;
};

bool installed(const std::string& program) {
  return sh("command -v " + program + " > /dev/null 2>&1") == 0;
}

// The command that mounts `src` read-only at `mnt` as `peer` does best: every cache it
// offers on, as a read-only tree allows. `scratch` holds what the peer needs beside.
std::string peer_mount_command(const std::string& peer, const fs::path& src, const fs::path& mnt,
                               const fs::path& scratch) {
  if (peer == "overlayfs") {
    // Two lower layers and no upper: a read-only kernel overlay.
    fs::create_directories(scratch / "empty");
    return "mount -t overlay overlay -o ro,lowerdir=" + src.string() + ":" +
           (scratch / "empty").string() + " " + shell_word(mnt);
  }
  if (peer == "fuse-overlayfs") {
    fs::create_directories(scratch / "up");
    fs::create_directories(scratch / "wk");
    return "fuse-overlayfs -o lowerdir=" + src.string() + ",upperdir=" + (scratch / "up").string() +
           ",workdir=" + (scratch / "wk").string() + " " + shell_word(mnt);
  }
  if (peer == "unionfs-fuse") {
    return "unionfs -o ro,allow_other,use_ino,kernel_cache,entry_timeout=3600,attr_timeout=3600,"
           "negative_timeout=3600,fsname=bench-unionfs " +
           shell_word(src.string() + "=RO") + " " + shell_word(mnt);
  }
  if (peer == "mergerfs") {
    // cache.files=full keeps file pages across opens (its fastest warm reads); the tree does
    // not change under it, so the entry, attribute and readdir caches can be long. (use_ino,
    // inodecalc=passthrough, cache.symlinks and cache.statfs were no faster here.)
    return "mergerfs -o ro,allow_other,cache.files=full,cache.attr=3600,cache.entry=3600,"
           "cache.negative_entry=3600,cache.readdir=true,fsname=bench-mergerfs " +
           shell_word(src.string() + "=RO") + " " + shell_word(mnt);
  }
  die("no mount command for " + peer);
}

const char* peer_program(const std::string& peer) {
  if (peer == "overlayfs") return "mount";
  if (peer == "fuse-overlayfs") return "fuse-overlayfs";
  if (peer == "unionfs-fuse") return "unionfs";
  if (peer == "mergerfs") return "mergerfs";
  return nullptr;
}

// Every peer's view of `src`, mounted for as long as this lives.
class PeerSet {
 public:
  PeerSet(const fs::path& src, const fs::path& dir, std::shared_ptr<store::ObjectStore> store) {
    for (const std::string& name : kPeers) {
      if (name == "native") {
        peers_.push_back({name, src, ""});
        continue;
      }
      fs::path mnt = dir / name;
      fs::create_directories(mnt);
      if (is_livefs(name)) {
        live_.push_back(std::make_unique<LiveMount>(src, mnt, store, name == "livefs"));
        peers_.push_back({name, mnt, ""});
        continue;
      }
      const char* program = peer_program(name);
      if (!installed(program)) {
        peers_.push_back({name, mnt, std::string(program) + " is not installed"});
        continue;
      }
      std::string cmd = peer_mount_command(name, src, mnt, dir / (name + "-scratch"));
      if (sh(cmd + " > " + shell_word(dir / (name + ".log")) + " 2>&1") != 0) {
        peers_.push_back({name, mnt, "mount failed: " + cmd});
        continue;
      }
      track_mount(mnt);
      mounted_.push_back(mnt);
      peers_.push_back({name, mnt, ""});
    }
  }
  ~PeerSet() {
    for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) unmount(*it);
  }
  PeerSet(const PeerSet&) = delete;
  PeerSet& operator=(const PeerSet&) = delete;
  const std::vector<Peer>& peers() const { return peers_; }

 private:
  std::vector<Peer> peers_;
  std::vector<fs::path> mounted_;
  std::vector<std::unique_ptr<LiveMount>> live_;
};

// ---------------------------------------------------------------------------------------
// Timed workloads through mounted peers.

using Command = std::function<std::string(const fs::path& root)>;

// The peers in the order of run `run`: each run starts one peer later, so that no peer is
// always the one right after the untimed pass or after a given other.
std::vector<const Peer*> in_turn(const std::vector<Peer>& peers, int run) {
  std::vector<const Peer*> out;
  for (size_t i = 0; i < peers.size(); ++i) {
    const Peer& p = peers[(i + static_cast<size_t>(run)) % peers.size()];
    if (p.skip.empty()) out.push_back(&p);
  }
  return out;
}

// `cmd` through every peer, cold (caches dropped before each run) and warm (right after an
// untimed pass); the best of `runs` runs. The runs go round the peers in turn, so that what
// else the machine does falls on all of them alike.
void time_workload(Results& results, const std::string& workload, const std::vector<Peer>& peers,
                   const Command& cmd, int runs) {
  // An untimed cold pass first: this machine's disk may be cached by its host, and the
  // first peer to read from it would otherwise pay for everyone.
  drop_caches();
  run_or_die(cmd(peers.front().root));
  for (bool cold : {true, false}) {
    std::map<std::string, double> best;
    for (int run = 0; run < runs; ++run) {
      for (const Peer* peer : in_turn(peers, run)) {
        const Peer& p = *peer;
        std::string c = cmd(p.root);
        if (cold)
          drop_caches();
        else
          run_or_die(c);
        auto t = Clock::now();
        run_or_die(c);
        double s = seconds_since(t);
        if (!best.contains(p.name) || s < best[p.name]) best[p.name] = s;
      }
    }
    for (const Peer& p : peers) {
      std::string cache = cold ? "cold" : "warm";
      if (p.skip.empty())
        results.add({workload, cache, p.name, best[p.name], "s", ""});
      else
        results.add({workload, cache, p.name, std::nullopt, "s", p.skip});
    }
  }
}

void section_serve(Results& results, const Options& o, const fs::path& work,
                   std::shared_ptr<store::ObjectStore> store) {
  PeerSet set(o.tree, work / "tree", store);
  time_workload(
      results, "find + stat " + o.tree.string(), set.peers(),
      [](const fs::path& r) { return "find " + shell_word(r) + " -printf '%s %m\\n' > /dev/null"; },
      o.runs);
  if (fs::exists(o.tree / "include"))
    time_workload(
        results, "tar " + (o.tree / "include").string() + " | cat", set.peers(),
        [](const fs::path& r) {
          return "tar -C " + shell_word(r) + " -cf - include 2>/dev/null | cat > /dev/null";
        },
        o.runs);
}

// Resident MiB of `file` in the page cache as fincore sees it (through a mount: what the
// mount's own inode maps); -1 when fincore is missing or fails.
double resident_mib(const fs::path& file) {
  auto out = bench::sh_out("fincore --bytes --noheadings --output RES " + shell_word(file) +
                           " 2>/dev/null");
  if (!out || out->empty()) return -1;
  return std::strtod(out->c_str(), nullptr) / (1 << 20);
}

// Growth of `Cached:` while the first `mib` MiB of `file` are read through each peer, from
// dropped caches; the least of `runs` runs (what else runs here only adds to it).
void measure_page_cache(Results& results, const std::vector<Peer>& peers, const fs::path& rel,
                        long mib, int runs) {
  std::string workload = numbered("page cache growth, read ", mib) + " MiB";
  std::map<std::string, double> least;
  for (int run = 0; run < runs; ++run) {
    for (const Peer* peer : in_turn(peers, run)) {
      const Peer& p = *peer;
      fs::path file = p.root / rel;
      drop_caches();
      long long before = bench::meminfo_kib("Cached");
      run_or_die("dd if=" + shell_word(file) + numbered(" of=/dev/null bs=1M count=", mib) +
                 " status=none");
      long long after = bench::meminfo_kib("Cached");
      double grown = static_cast<double>(after - before) / 1024;
      if (!least.contains(p.name) || grown < least[p.name]) least[p.name] = grown;
      if (run + 1 == runs)
        std::fprintf(
            stderr, "  %s: Cached grew %.0f MiB; fincore: backing %.0f MiB, view %.0f MiB\n",
            p.name.c_str(), grown, resident_mib(peers.front().root / rel), resident_mib(file));
    }
  }
  for (const Peer& p : peers) {
    if (p.skip.empty())
      results.add({workload, "cold", p.name, least[p.name], "MiB", ""});
    else
      results.add({workload, "cold", p.name, std::nullopt, "MiB", p.skip});
  }
}

// The large file lives in its own tree, served by every peer the same way.
void section_large_file(Results& results, const Options& o, const fs::path& work,
                        std::shared_ptr<store::ObjectStore> store, bool read, bool cache) {
  fs::path big_tree = work / "big";
  fs::create_directories(big_tree);
  long mib = std::max(read ? o.big_mib : 0, cache ? o.cache_mib : 0);
  run_or_die("dd if=/dev/urandom of=" + shell_word(big_tree / "file") +
             numbered(" bs=1M count=", mib) + " status=none");
  PeerSet set(big_tree, work / "big-peers", store);
  if (read)
    time_workload(
        results, numbered("read ", o.big_mib) + " MiB file", set.peers(),
        [&](const fs::path& r) {
          return "dd if=" + shell_word(r / "file") +
                 numbered(" of=/dev/null bs=1M status=none count=", o.big_mib);
        },
        o.runs);
  if (cache) measure_page_cache(results, set.peers(), "file", o.cache_mib, o.runs);
}

// ---------------------------------------------------------------------------------------
// Real workloads with a view over-mounted on /usr, each run in its own private mount
// namespace (unshare -m) so that nothing else on the machine sees it. The run's script
// mounts, drops the caches (cold) or makes an untimed pass (warm), times the command with
// bash's $EPOCHREALTIME (no program started to read the clock) and unmounts.

// The peers that can be mounted over the tree they serve.
const std::vector<std::string> kOverUsrPeers = {"native", "overlayfs", "livefs", "livefs-np"};

// As in_turn: each run starts one peer later.
std::vector<std::string> over_usr_in_turn(int run) {
  std::vector<std::string> out;
  for (size_t i = 0; i < kOverUsrPeers.size(); ++i)
    out.push_back(kOverUsrPeers[(i + static_cast<size_t>(run)) % kOverUsrPeers.size()]);
  return out;
}

struct OverUsr {
  std::string cli;
  fs::path dir;  // scripts, outputs, the daemon's state and staged directories
};

struct OverUsrRun {
  double seconds = 0;
  int rc = 0;
  fs::path out;  // the command's stdout
};

OverUsrRun run_over_usr(const OverUsr& u, const std::string& peer, const std::string& cmd,
                        bool cold, const std::string& tag) {
  fs::path dir = u.dir / (tag + "-" + peer);
  fs::create_directories(dir);
  fs::path state = u.dir / "livefs-state", staged = u.dir / "livefs-staged",
           empty = u.dir / "empty";
  fs::create_directories(staged);
  fs::create_directories(empty);
  std::ostringstream s;
  s << "export LC_ALL=C\n";
  if (is_livefs(peer)) {
    // The first start scans the booted tree in the background (later ones load the
    // manifest cached in the state directory): the clock starts when the daemon is idle
    // (its status says `"loading": null`).
    std::string status = u.cli + " status --json --state " + shell_word(state);
    s << u.cli << " mount " << (peer == "livefs" ? "" : "--no-passthrough ")
      << "--booted /usr --staged " << shell_word(staged) << " --state " << shell_word(state)
      << " /usr >> " << shell_word(dir / "mount.log") << " 2>&1 || exit 90\n"
      << "grep -q ' /usr fuse.livefs ' /proc/self/mounts || exit 91\n"
      << "while " << status << " 2>/dev/null | grep -q '\"loading\": *{'; do sleep 0.2; done\n";
  } else if (peer == "overlayfs") {
    s << "mount -t overlay overlay -o ro,lowerdir=/usr:" << shell_word(empty)
      << " /usr || exit 90\n";
  }
  if (cold)
    s << "sync; echo 3 > /proc/sys/vm/drop_caches\n";
  else
    s << "( " << cmd << " ) > /dev/null 2>&1\n";
  s << "t0=$EPOCHREALTIME\n"
    << "( " << cmd << " ) > " << shell_word(dir / "out") << " 2> " << shell_word(dir / "err")
    << "\n"
    << "rc=$?\n"
    << "t1=$EPOCHREALTIME\n"
    << "echo \"$t0 $t1 $rc\" > " << shell_word(dir / "times") << "\n";
  std::ofstream(dir / "run.sh") << s.str();
  fs::remove(dir / "times");
  if (is_livefs(peer)) {
    std::lock_guard lock(g_cleanup.mutex);
    g_cleanup.daemons.push_back(state);
  }
  int rc = sh("unshare -m --propagation private bash " + shell_word(dir / "run.sh"));
  if (is_livefs(peer)) {
    // From here, outside the namespace: a client started inside it runs on the view's
    // libraries, and `umount --wait` would wait for itself.
    int unmounted = sh(u.cli + " umount --wait --state " + shell_word(state) + " > /dev/null");
    if (rc == 0 && unmounted != 0) die("livefs umount --state " + state.string());
    std::lock_guard lock(g_cleanup.mutex);
    std::erase(g_cleanup.daemons, state);
  }
  std::ifstream times(dir / "times");
  double t0 = 0, t1 = 0;
  OverUsrRun r;
  if (rc != 0 || !(times >> t0 >> t1 >> r.rc))
    die(numbered("exit ", rc) + " of " + (dir / "run.sh").string() + " (see " + dir.string() + ")");
  r.seconds = t1 - t0;
  r.out = dir / "out";
  return r;
}

std::vector<std::string> read_lines(const fs::path& p) {
  std::vector<std::string> lines;
  std::ifstream in(p);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// `dpkg --verify` through native /usr, kernel overlayfs and livefs over /usr, cold. What
// it prints (files that differ from their packages) must be the same through every view.
void section_dpkg(Results& results, const Options& o, const OverUsr& u) {
  if (!installed("dpkg")) {
    std::fprintf(stderr, "dpkg: not a Debian system, skipped\n");
    return;
  }
  std::string cmd = "dpkg --verify";
  std::string workload = "dpkg --verify, /usr over-mounted";
  if (o.quick) {
    // A spread of packages, not the first few of the alphabet.
    auto names = bench::sh_out("dpkg-query -W -f '${Package}\\n' | sort | awk 'NR % 20 == 1'");
    must(names.has_value(), "dpkg-query");
    std::istringstream in(*names);
    int n = 0;
    for (std::string name; in >> name; ++n) cmd += " " + name;
    workload = numbered("dpkg --verify (", n) + " pkgs), /usr over-mounted";
  }
  (void)run_over_usr(u, "native", cmd, true, "dpkg-untimed");
  std::map<std::string, double> best;
  std::map<std::string, std::vector<std::string>> outputs;
  for (int run = 0; run < o.runs; ++run) {
    for (const std::string& peer : over_usr_in_turn(run)) {
      auto r = run_over_usr(u, peer, cmd, true, "dpkg");
      if (!best.contains(peer) || r.seconds < best[peer]) best[peer] = r.seconds;
      auto lines = read_lines(r.out);
      std::ranges::sort(lines);
      outputs[peer] = std::move(lines);
    }
  }
  for (const std::string& peer : kOverUsrPeers) {
    std::string note;
    if (outputs[peer] != outputs["native"]) {
      note = "its report differs from native's (see " + (u.dir / ("dpkg-" + peer)).string() + ")";
      std::fprintf(stderr, "dpkg --verify through %s: %s\n", peer.c_str(), note.c_str());
    }
    results.add({workload, "cold", peer, best[peer], "s", note});
  }
}

// The compile commands of livefs's own libraries (common/, store/, overlay/), each writing
// its object into `objects`, in a stable order.
std::vector<std::string> livefs_compile_commands(const fs::path& db, const fs::path& objects) {
  std::ifstream in(db);
  if (!in) return {};
  auto entries = nlohmann::json::parse(in, nullptr, false);
  if (!entries.is_array()) return {};
  std::vector<std::pair<std::string, std::string>> picked;  // (file, command)
  for (const auto& e : entries) {
    if (!e.contains("file") || !e.contains("command") || !e.contains("directory")) continue;
    std::string file = e["file"], dir = e["directory"];
    fs::path f(file);
    std::string parent = f.parent_path().filename().string();
    if (parent != "common" && parent != "store" && parent != "overlay") continue;
    if (f.parent_path().parent_path().filename() == "tests") continue;
    // Replace the object path after -o; the rest is the build's own command (its compiler,
    // flags and include paths, /usr/include among them).
    std::istringstream words(e["command"].get<std::string>());
    std::string cmd, w;
    bool next_is_output = false;
    while (words >> w) {
      if (next_is_output) w = (objects / (parent + "_" + f.stem().string() + ".o")).string();
      next_is_output = w == "-o";
      cmd += (cmd.empty() ? "" : " ") + w;
    }
    picked.emplace_back(file, "cd " + shell_word(dir) + " && " + cmd);
  }
  std::ranges::sort(picked);
  std::vector<std::string> out;
  for (auto& [file, cmd] : picked) out.push_back(std::move(cmd));
  return out;
}

void section_build(Results& results, const Options& o, const OverUsr& u) {
  fs::path objects = u.dir / "objects";
  fs::create_directories(objects);
  auto all = livefs_compile_commands(o.compile_db, objects);
  if (all.empty()) {
    std::fprintf(stderr, "build: no compile commands in %s, skipped\n", o.compile_db.c_str());
    return;
  }
  // As many translation units as take --build-seconds natively, chosen once by an untimed
  // native pass (which also warms the host's cache of the disk for everyone).
  std::vector<std::string> chosen;
  auto t = Clock::now();
  for (const std::string& cmd : all) {
    run_or_die(cmd);
    chosen.push_back(cmd);
    if (seconds_since(t) >= o.build_seconds) break;
  }
  std::string script;
  for (const std::string& c : chosen) script += "(" + c + ") && ";
  script += "true";
  std::string workload =
      numbered("g++ ", static_cast<long long>(chosen.size())) + " livefs TUs, /usr over-mounted";
  for (bool cold : {true, false}) {
    std::map<std::string, double> best;
    for (int run = 0; run < o.runs; ++run) {
      for (const std::string& peer : over_usr_in_turn(run)) {
        auto r = run_over_usr(u, peer, script, cold, "build");
        if (r.rc != 0) die("build through " + peer + " failed (see " + u.dir.string() + ")");
        if (!best.contains(peer) || r.seconds < best[peer]) best[peer] = r.seconds;
      }
    }
    for (const std::string& peer : kOverUsrPeers)
      results.add({workload, cold ? "cold" : "warm", peer, best[peer], "s", ""});
  }
}

// ---------------------------------------------------------------------------------------
// Switch latency.

void section_switch(Results& results, const Options& o, const fs::path& work,
                    std::shared_ptr<store::ObjectStore> store) {
  std::vector<int> counts =
      o.quick ? std::vector<int>{1, 100, 1000} : std::vector<int>{1, 100, 1000, 10000};
  int max_n = counts.back();
  fs::path booted = work / "sw-booted";
  for (int i = 0; i < max_n; ++i) {
    fs::path p = booted / (numbered("d", i % 100)) / (numbered("f", i));
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "old " << i << "\n";
  }
  // The staged contents, already imported (staging happens before apply, for both).
  std::vector<store::Entry> staged;
  for (int i = 0; i < max_n; ++i) {
    std::string rel = numbered("d", i % 100) + numbered("/f", i);
    std::string content = numbered("new ", i) + "\n";
    store::Entry e;
    e.path = rel;
    e.type = store::EntryType::file;
    e.mode = 0644;
    e.size = content.size();
    e.object = *store->put_bytes(std::string_view(content));
    staged.push_back(std::move(e));
  }
  fs::path staged_dir = work / "sw-staged";
  for (int i = 0; i < max_n; ++i) {
    fs::path p = staged_dir / (numbered("d", i % 100)) / (numbered("f", i));
    fs::create_directories(p.parent_path());
    std::ofstream(p) << "new " << i << "\n";
  }
  auto read_str = [](const fs::path& p) {
    std::ifstream in(p);
    std::string s;
    std::getline(in, s);
    return s;
  };
  for (int n : counts) {
    std::string probe_rel = numbered("d", (n - 1) % 100) + numbered("/f", n - 1);
    std::string expect = numbered("new ", n - 1);
    double live_s, copy_s;
    {
      fs::path lv = work / "sw-livefs";
      fs::create_directories(lv);
      LiveMount live(booted, lv, store, true);
      must(read_str(lv / probe_rel) == numbered("old ", n - 1), "livefs old content");
      auto t = Clock::now();
      std::vector<store::Entry> layer(staged.begin(), staged.begin() + n);
      auto next = store::Tree::build(std::move(layer));
      must(next.has_value(), "layer");
      must(live.fs().switch_to(live.fs().current()->with_layer(std::move(*next), 1)).has_value(),
           "switch");
      must(read_str(lv / probe_rel) == expect, "livefs new content");
      live_s = seconds_since(t);
    }
    {
      fs::path up = work / "sw-upper", ovl = work / "sw-ovl";
      fs::create_directories(up);
      run_or_die("mount -t tmpfs tmpfs " + shell_word(up));
      track_mount(up);
      fs::create_directories(up / "u");
      fs::create_directories(up / "w");
      fs::create_directories(ovl);
      run_or_die("mount -t overlay overlay -o lowerdir=" + booted.string() + ",upperdir=" +
                 (up / "u").string() + ",workdir=" + (up / "w").string() + " " + shell_word(ovl));
      track_mount(ovl);
      must(read_str(ovl / probe_rel) == numbered("old ", n - 1), "overlay old content");
      auto t = Clock::now();
      for (int i = 0; i < n; ++i) {
        std::string rel = numbered("d", i % 100) + numbered("/f", i);
        fs::create_directories((up / "u" / rel).parent_path());
        fs::copy_file(staged_dir / rel, up / "u" / rel, fs::copy_options::overwrite_existing);
      }
      // The overlay caches the old dentry: a copy-based apply has to drop it to be seen.
      sync();
      std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
      std::string got = read_str(ovl / probe_rel);
      copy_s = seconds_since(t);
      must(got == expect, "overlay new content (" + got + ")");
      unmount(ovl);
      unmount(up);
    }
    std::string workload = numbered("switch ", n) + " files";
    results.add({workload, "", "livefs switch", live_s, "s", "", "livefs switch"});
    results.add({workload, "", "copy into overlayfs", copy_s, "s", "", "livefs switch"});
  }
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: bench_serve [--quick] [--tree DIR] [--runs N] [--big-mib N] "
               "[--cache-mib N]\n"
               "                   [--build-seconds S] [--compile-db FILE] [--livefs PATH] "
               "[--csv FILE]\n"
               "                   [serve] [read] [cache] [dpkg] [build] [switch]\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  bool big_set = false, cache_set = false, build_set = false, runs_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    auto number = [&]() -> double {
      std::string v = value();
      char* end = nullptr;
      double d = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || d <= 0) usage();
      return d;
    };
    if (a == "--quick")
      o.quick = true;
    else if (a == "--tree")
      o.tree = value();
    else if (a == "--runs")
      o.runs = static_cast<int>(number()), runs_set = true;
    else if (a == "--big-mib")
      o.big_mib = static_cast<long>(number()), big_set = true;
    else if (a == "--cache-mib")
      o.cache_mib = static_cast<long>(number()), cache_set = true;
    else if (a == "--build-seconds")
      o.build_seconds = number(), build_set = true;
    else if (a == "--compile-db")
      o.compile_db = value();
    else if (a == "--livefs")
      o.cli = value();
    else if (a == "--csv")
      o.csv = value();
    else if (std::set<std::string>{"serve", "read", "cache", "dpkg", "build", "switch"}.contains(a))
      o.sections.insert(a);
    else
      usage();
  }
  if (o.quick) {
    if (!big_set) o.big_mib = 256;
    if (!cache_set) o.cache_mib = 256;
    if (!build_set) o.build_seconds = 8;
    if (!runs_set) o.runs = 1;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  set_log_level(spdlog::level::warn);
  watch_signals();
  char tmpl[] = "/var/tmp/livefs-bench-serve-XXXXXX";
  must(mkdtemp(tmpl) != nullptr, "mkdtemp");
  {
    std::lock_guard lock(g_cleanup.mutex);
    g_cleanup.work = tmpl;
    g_cleanup.cli = o.cli;
  }
  fs::path work = tmpl;
  auto opened = store::ObjectStore::open(work / "store");
  must(opened.has_value(), "open the object store");
  auto store = std::make_shared<store::ObjectStore>(std::move(*opened));

  Results results;
  if (o.wants("serve")) section_serve(results, o, work, store);
  if (o.wants("read") || o.wants("cache"))
    section_large_file(results, o, work, store, o.wants("read"), o.wants("cache"));
  OverUsr over{o.cli, work / "over-usr"};
  if (o.wants("dpkg")) section_dpkg(results, o, over);
  if (o.wants("build")) section_build(results, o, over);
  if (o.wants("switch")) section_switch(results, o, work, store);

  results.print_table(kPeers);
  if (o.wants("switch")) {
    std::printf("\nSwitch latency (apply until a changed file reads new content; ratio to livefs)");
    results.print_others();
  }
  std::ofstream csv(o.csv);
  results.write_csv(csv);
  std::printf("CSV: %s\n", o.csv.c_str());
  std::lock_guard lock(g_cleanup.mutex);
  cleanup_locked();
  return 0;
}
