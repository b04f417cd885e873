// What the operator feels: the `livefs` CLI run as a subprocess (fork+exec to exit), never
// its library, so the figures include process start-up, the control round trip and what the
// daemon does under its lock.
//
// Sections (all by default; naming one or more runs only those):
//   --apply        a synthetic update of the real Debian update's shape (6,000-file booted
//                  tree; 1,650 changed paths, 1,430 of them files with new content) in
//                  directory mode: `apply --all --allow-replace`, `reset`, `rollback`,
//                  `status`, N runs each; beside it a copy-based apply (kernel overlayfs,
//                  lower = the booted tree, upper on a tmpfs, the changes copied in) and
//                  the ratio livefs ÷ copy; the floor: /bin/true, `livefs --version`.
//   --large        the same with 10,000 changed files in a 20,000-file tree (apply and
//                  reset; N/5 runs, at least 5).
//   --stage-status `status` latency while `livefs stage --commit` imports a 50,000-file
//                  OSTree commit (sysroot mode).
//   --mount-usr    `mount --booted /usr` with a fresh state directory to the first stat
//                  that succeeds through the view (--cold: the page cache dropped first).
//   --rss          daemon VmRSS/VmHWM over the /usr view after `find` (stat of every entry)
//                  and a read of every file; bytes per entry.
//
//   bench_apply [--livefs PATH] [--daemon PATH] [--quick] [--runs N] [--stage-files N]
//               [--usr DIR] [--mount-runs N] [--cold] [--csv FILE] [SECTIONS...]
//
// The CLI is --livefs, else $LIVEFS, else the livefs built with this program; `mount` (and
// the store `diff` that counts the update) runs --daemon (default: the CLI), for when the
// client and the daemon are separate programs.
// Timings are wall clock on whatever else the machine runs: read them with its load.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using livefs::bench::sh;
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// prefix + n, built by append: g++ 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::to_string(n)`.
std::string numbered(const char* prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// What has to be undone however the run ends, in this order: daemons (by state directory),
// other mounts (overlayfs, tmpfs), immutable OSTree deployments, then the work directory.
struct Setup {
  std::string cli;
  fs::path work;
  std::vector<fs::path> daemons, mounts, immutable;
};
Setup g_setup;

// Mount points at or below `dir`, deepest last.
std::vector<std::string> mounts_below(const fs::path& dir) {
  std::vector<std::string> out;
  std::ifstream in("/proc/self/mounts");
  std::string dev, at;
  std::string prefix = dir.string() + "/";
  while (in >> dev >> at) {
    std::string rest;
    std::getline(in, rest);
    if (at == dir.string() || at.starts_with(prefix)) out.push_back(at);
  }
  return out;
}

bool mounted_below(const fs::path& dir) { return !mounts_below(dir).empty(); }

void stop_daemon(const fs::path& state) {
  (void)sh(g_setup.cli + " umount --wait --state " + quoted(state) + " > /dev/null 2>&1");
  std::erase(g_setup.daemons, state);
}

void cleanup() {
  for (auto it = g_setup.daemons.rbegin(); it != g_setup.daemons.rend(); ++it)
    (void)sh(g_setup.cli + " umount --wait --state " + quoted(*it) + " > /dev/null 2>&1");
  g_setup.daemons.clear();
  for (auto it = g_setup.mounts.rbegin(); it != g_setup.mounts.rend(); ++it)
    (void)sh("umount -l " + quoted(fs::path(*it)) + " 2>/dev/null");
  g_setup.mounts.clear();
  for (const fs::path& p : g_setup.immutable)
    (void)sh("chattr -R -i " + quoted(p) + " 2>/dev/null");
  g_setup.immutable.clear();
  if (!g_setup.work.empty()) {
    // A view whose daemon did not unmount it (it failed or died): all below work are ours.
    auto left = mounts_below(g_setup.work);
    for (auto it = left.rbegin(); it != left.rend(); ++it)
      (void)sh("umount -l " + quoted(fs::path(*it)) + " 2>/dev/null");
    // Removing a tree with a live mount below would reach into it: leave it all.
    if (mounted_below(g_setup.work)) {
      std::fprintf(stderr, "bench_apply: mounts are left below %s\n", g_setup.work.c_str());
    } else {
      std::error_code ec;
      fs::remove_all(g_setup.work, ec);
    }
    g_setup.work.clear();
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_apply: %s\n", what.c_str());
  cleanup();
  std::exit(1);
}

void must(bool ok, const std::string& what) {
  if (!ok) die(what + " failed");
}

void run_or_die(const std::string& cmd) {
  if (int rc = sh(cmd); rc != 0) die(numbered("exit ", rc) + ": " + cmd);
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

// Starts argv with stdout and stderr to /dev/null (or to `log`); its pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log = "/dev/null") {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die("spawn " + args[0] + ": " + std::strerror(rc));
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) die(std::string("waitpid: ") + std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Timed {
  double ms = 0;
  int rc = 0;
};

// Wall time from fork+exec to exit.
Timed timed(const std::vector<std::string>& args) {
  auto t0 = Clock::now();
  pid_t pid = spawn(args);
  int rc = wait_exit(pid);
  return {ms_between(t0, Clock::now()), rc};
}

// stdout of a shell command (its exit status must be 0).
std::string capture(const std::string& cmd) {
  FILE* f = ::popen(cmd.c_str(), "r");
  must(f != nullptr, "popen " + cmd);
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int rc = ::pclose(f);
  if (rc != 0) die("command failed: " + cmd + "\n" + out);
  return out;
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

// A goal of the issue: a statistic of a row at most `ms`.
struct Goal {
  const char* stat;  // "median", "p99" or "max"
  double ms;
};

// One measured row: samples in ms (sorted by print_row).
struct Row {
  Row(std::string section_, std::string name_, std::vector<Goal> goals_ = {})
      : section(std::move(section_)), name(std::move(name_)), goals(std::move(goals_)) {}
  std::string section, name;
  std::vector<Goal> goals;
  std::vector<double> ms;
  size_t failures = 0;
  double median() const { return percentile(ms, 0.5); }
  double stat(const std::string& s) const {
    if (s == "p99") return percentile(ms, 0.99);
    if (s == "max") return ms.empty() ? 0.0 : ms.back();
    return median();
  }
};

std::vector<Row> g_rows;
struct Extra {
  std::string section, workload, metric;
  double value;
};
std::vector<Extra> g_extras;  // single figures for the CSV (and already printed)

void note(const std::string& section, const std::string& workload, const std::string& metric,
          double value) {
  g_extras.push_back({section, workload, metric, value});
}

void print_rows_header(const char* title) {
  std::printf("\n%s\n", title);
  std::printf("%-44s %5s %8s %8s %8s %8s %5s  %s\n", "what", "runs", "median", "p90", "p99", "max",
              "fail", "goal");
}

void print_row(Row& r) {
  std::sort(r.ms.begin(), r.ms.end());
  std::string goal;
  for (const Goal& g : r.goals) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s%s <= %g ms: %s", goal.empty() ? "" : "; ", g.stat, g.ms,
                  r.stat(g.stat) <= g.ms ? "met" : "NOT met");
    goal += buf;
  }
  std::printf("%-44s %5zu %8.2f %8.2f %8.2f %8.2f %5zu  %s\n", r.name.c_str(), r.ms.size(),
              r.median(), percentile(r.ms, 0.9), percentile(r.ms, 0.99),
              r.ms.empty() ? 0.0 : r.ms.back(), r.failures, goal.c_str());
  std::fflush(stdout);
}

// --- files ---------------------------------------------------------------------------------

void write_all(int fd, const char* data, size_t size, const fs::path& p) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) die("write " + p.string() + ": " + std::strerror(errno));
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void write_file(const fs::path& p, const std::string& data, mode_t mode = 0644) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) die("open " + p.string() + ": " + std::strerror(errno));
  write_all(fd, data.data(), data.size(), p);
  ::close(fd);
}

std::optional<std::string> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Copies `from` to `to` (created or truncated), as `cp` does.
void copy_like_cp(const fs::path& from, const fs::path& to) {
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) die("open " + from.string() + ": " + std::strerror(errno));
  struct stat st {};
  ::fstat(in, &st);
  int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, st.st_mode & 07777);
  if (out < 0) die("open " + to.string() + ": " + std::strerror(errno));
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(in, buf, sizeof buf);
    if (n < 0) die("read " + from.string() + ": " + std::strerror(errno));
    if (n == 0) break;
    write_all(out, buf, static_cast<size_t>(n), to);
  }
  ::close(in);
  ::close(out);
}

// --- the synthetic update ------------------------------------------------------------------

// A /usr-like tree: ~25 files a directory under bin, lib, share, libexec; sizes from 256
// bytes to 256 KB, most small (median ~2 KB, mean ~20 KB); every file's content distinct.
class TreeWriter {
 public:
  explicit TreeWriter(uint32_t seed) : rng_(seed) {
    noise_.resize(1 << 20);
    for (auto& c : noise_) c = static_cast<char>(rng_());
  }

  static fs::path file_path(size_t i) {
    static constexpr const char* kTop[] = {"bin", "lib", "share", "libexec"};
    size_t dir = i / 25;
    return fs::path(kTop[dir % 4]) / numbered("d", static_cast<long long>(dir / 40)) /
           numbered("s", static_cast<long long>(dir)) / numbered("f", static_cast<long long>(i));
  }

  std::string content(size_t i, int version) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng_);
    size_t size = static_cast<size_t>(256 * std::pow(2.0, 10 * u * u));
    std::string data = numbered("livefs bench file ", static_cast<long long>(i));
    data += numbered(" version ", version);
    data += '\n';
    size_t offset = rng_() % (noise_.size() - size);
    data.append(noise_.data() + offset, size);
    return data;
  }

 private:
  std::mt19937_64 rng_;
  std::string noise_;
};

enum class Kind { modified, added_file, added_dir, removed, symlink_added, symlink_retargeted };

struct Change {
  Kind kind;
  fs::path path;  // relative
};

struct Update {
  fs::path booted, staged;
  std::vector<Change> changes;
  size_t booted_files = 0, modified = 0;
  uint64_t booted_bytes = 0, changed_bytes = 0;
};

// Writes `booted` with `files` files and `staged` as its copy with `modified` files given new
// content; with `extras`, also the rest of a Debian update's shape: 100 added files (40 of
// them in 10 new directories), 60 removed files, 25 new symlinks and 25 retargeted ones.
Update make_update(const fs::path& dir, size_t files, size_t modified, bool extras) {
  Update u;
  u.booted = dir / "booted";
  u.staged = dir / "staged";
  u.booted_files = files;
  u.modified = modified;
  TreeWriter w(static_cast<uint32_t>(files * 7 + modified));
  for (size_t i = 0; i < files; ++i) {
    fs::path p = u.booted / TreeWriter::file_path(i);
    if (i % 25 == 0) fs::create_directories(p.parent_path());
    std::string data = w.content(i, 0);
    u.booted_bytes += data.size();
    write_file(p, data, i % 4 == 0 ? 0755 : 0644);
  }
  const size_t links = extras ? 50 : 0;
  for (size_t i = 0; i < links; ++i) {
    fs::path link = u.booted / "lib" / numbered("libbench.so.", static_cast<long long>(i));
    fs::create_symlink(TreeWriter::file_path(i * 3 + 1).lexically_relative("lib"), link);
  }
  // Hard links: staged files that do not change share the booted inode (as a deployment
  // checkout does); the changed ones are written anew, so the booted tree stays as it was.
  run_or_die("cp -al " + quoted(u.booted) + " " + quoted(u.staged));

  // Modified: spread evenly over the tree.
  const size_t removed = extras ? 60 : 0;
  std::set<size_t> chosen;
  for (size_t k = 0; k < modified; ++k) chosen.insert(k * (files - removed) / modified);
  must(chosen.size() == modified, "choose the modified files (tree too small)");
  for (size_t i : chosen) {
    fs::path rel = TreeWriter::file_path(i);
    fs::path p = u.staged / rel;
    fs::remove(p);
    std::string data = w.content(i, 1);
    u.changed_bytes += data.size();
    write_file(p, data, i % 4 == 0 ? 0755 : 0644);
    u.changes.push_back({Kind::modified, rel});
  }
  if (extras) {
    for (size_t i = 0; i < 60; ++i) {
      fs::path rel = TreeWriter::file_path(files - 1 - i);
      fs::remove(u.staged / rel);
      u.changes.push_back({Kind::removed, rel});
    }
    for (size_t d = 0; d < 10; ++d) {
      fs::path rel = fs::path("share") / numbered("new", static_cast<long long>(d));
      fs::create_directory(u.staged / rel);
      u.changes.push_back({Kind::added_dir, rel});
      for (size_t j = 0; j < 4; ++j) {
        fs::path f = rel / numbered("f", static_cast<long long>(j));
        std::string data = w.content(files + d * 4 + j, 1);
        u.changed_bytes += data.size();
        write_file(u.staged / f, data);
        u.changes.push_back({Kind::added_file, f});
      }
    }
    for (size_t i = 0; i < 60; ++i) {
      fs::path rel = TreeWriter::file_path(i * 50 + 7).parent_path() /
                     numbered("added", static_cast<long long>(i));
      std::string data = w.content(files + 100 + i, 1);
      u.changed_bytes += data.size();
      write_file(u.staged / rel, data);
      u.changes.push_back({Kind::added_file, rel});
    }
    for (size_t i = 0; i < links; ++i) {
      fs::path rel = fs::path("lib") / numbered("libbench.so.", static_cast<long long>(i));
      if (i < 25) {
        fs::remove(u.staged / rel);
        fs::create_symlink(TreeWriter::file_path(i * 3 + 2).lexically_relative("lib"),
                           u.staged / rel);
        u.changes.push_back({Kind::symlink_retargeted, rel});
      } else {
        fs::path added = fs::path("lib") / numbered("libbench-new.so.", static_cast<long long>(i));
        fs::create_symlink(TreeWriter::file_path(i * 3 + 2).lexically_relative("lib"),
                           u.staged / added);
        u.changes.push_back({Kind::symlink_added, added});
      }
    }
  }
  return u;
}

// The update as `livefs diff OLD NEW` sees it: {kind -> count} and the total; when that
// command fails (a client without it), the changes as written.
std::map<std::string, size_t> diff_kinds(const std::string& cli, const Update& u, size_t* total) {
  std::map<std::string, size_t> kinds;
  std::string cmd =
      cli + " diff " + quoted(u.booted) + " " + quoted(u.staged) + " --json 2>/dev/null";
  std::string out;
  if (FILE* f = ::popen(cmd.c_str(), "r")) {
    char buf[65536];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    if (::pclose(f) != 0) out.clear();
  }
  json d = json::parse(out, nullptr, false);
  if (!d.is_discarded() && (d.is_array() || d.contains("changes"))) {
    const json& changes = d.is_array() ? d : d.at("changes");
    for (const auto& c : changes) ++kinds[c.at("kind").get<std::string>()];
    *total = changes.size();
    return kinds;
  }
  static constexpr const char* kNames[] = {
      "modified (as written)", "added file (as written)",  "added dir (as written)",
      "removed (as written)",  "new symlink (as written)", "retargeted symlink (as written)"};
  for (const Change& c : u.changes) ++kinds[kNames[static_cast<int>(c.kind)]];
  *total = u.changes.size();
  return kinds;
}

// --- the copy-based apply ------------------------------------------------------------------

// One apply by copying: an overlayfs over the booted tree with a fresh tmpfs upper; the
// changes made through it (files created or truncated and copied into as `cp` does, removals
// as whiteouts, new directories and symlinks), in this process (no process start: the copy
// is timed at its cheapest). Returns the ms of the copying only.
double copy_apply_once(const Update& u, const fs::path& dir, bool verify) {
  fs::path tmp = dir / "tmpfs", mnt = dir / "mnt";
  fs::create_directories(tmp);
  fs::create_directories(mnt);
  run_or_die("mount -t tmpfs -o size=4g tmpfs " + quoted(tmp));
  g_setup.mounts.push_back(tmp);
  fs::create_directories(tmp / "upper");
  fs::create_directories(tmp / "work");
  run_or_die("mount -t overlay overlay -o lowerdir=" + u.booted.string() + ",upperdir=" +
             (tmp / "upper").string() + ",workdir=" + (tmp / "work").string() + " " + quoted(mnt));
  g_setup.mounts.push_back(mnt);

  auto t0 = Clock::now();
  for (const Change& c : u.changes) {
    fs::path to = mnt / c.path;
    switch (c.kind) {
      case Kind::modified:
      case Kind::added_file:
        copy_like_cp(u.staged / c.path, to);
        break;
      case Kind::added_dir:
        must(::mkdir(to.c_str(), 0755) == 0, "mkdir " + to.string());
        break;
      case Kind::removed:
        must(::unlink(to.c_str()) == 0, "unlink " + to.string());
        break;
      case Kind::symlink_retargeted:
        must(::unlink(to.c_str()) == 0, "unlink " + to.string());
        [[fallthrough]];
      case Kind::symlink_added:
        must(::symlink(fs::read_symlink(u.staged / c.path).c_str(), to.c_str()) == 0,
             "symlink " + to.string());
        break;
    }
  }
  double ms = ms_between(t0, Clock::now());
  if (verify) {
    for (const Change& c : u.changes) {
      if (c.kind != Kind::modified) continue;
      must(read_file(mnt / c.path) == read_file(u.staged / c.path),
           "the copied file " + c.path.string() + " in the overlay");
      break;
    }
  }
  run_or_die("umount " + quoted(mnt));
  run_or_die("umount " + quoted(tmp));
  g_setup.mounts.resize(g_setup.mounts.size() - 2);
  return ms;
}

// --- the daemon ----------------------------------------------------------------------------

struct Options {
  std::string cli, daemon;
  bool quick = false;
  int runs = 0, mount_runs = 0;
  bool cold = false;  // drop the page cache before each mount of /usr
  size_t stage_files = 50000;
  fs::path usr = "/usr";
  std::string csv = "bench_apply.csv";
};

std::vector<std::string> cli_args(const Options& o, const std::string& command,
                                  const fs::path& state, const std::string& extra = "") {
  std::vector<std::string> args = split_words(o.cli);
  args.push_back(command);
  args.push_back("--state");
  args.push_back(state.string());
  for (auto& w : split_words(extra)) args.push_back(w);
  return args;
}

void must_run(const Options& o, const std::string& command, const fs::path& state,
              const std::string& extra = "") {
  run_or_die(o.cli + " " + command + " --state " + quoted(state) + " " + extra + " > /dev/null");
}

// Timed CLI command into `row`; a failure is counted, its output shown once.
void timed_into(Row& row, const Options& o, const std::string& command, const fs::path& state,
                const std::string& extra = "") {
  Timed t = timed(cli_args(o, command, state, extra));
  row.ms.push_back(t.ms);
  if (t.rc != 0) {
    if (row.failures++ == 0) {
      std::fprintf(stderr, "%s %s: exit %d; once more with its output:\n", command.c_str(),
                   extra.c_str(), t.rc);
      (void)sh(o.cli + " " + command + " --state " + quoted(state) + " " + extra + " >&2");
    }
  }
}

pid_t daemon_pid(const fs::path& state) {
  auto s = read_file(state / "daemon.pid");
  return s ? static_cast<pid_t>(std::atol(s->c_str())) : -1;
}

// The daemon's "switched generation A -> B: P paths, I invalidations, T s|ms" lines (the
// daemon and the file system each log one per switch): ms of each switch of >= min_paths.
std::vector<double> switch_ms(const fs::path& log, size_t min_paths) {
  std::vector<double> out;
  std::ifstream in(log);
  std::string line;
  std::pair<unsigned long long, unsigned long long> last{~0ULL, ~0ULL};
  while (std::getline(in, line)) {
    auto at = line.find("switched generation ");
    if (at == std::string::npos) continue;
    unsigned long long a = 0, b = 0, paths = 0, inval = 0;
    double t = 0;
    int used = 0;
    if (std::sscanf(line.c_str() + at,
                    "switched generation %llu -> %llu: %llu paths, %llu invalidations, %lf%n", &a,
                    &b, &paths, &inval, &t, &used) != 5)
      continue;
    if (std::pair(a, b) == last) continue;
    last = {a, b};
    bool in_ms = std::string_view(line).substr(at + static_cast<size_t>(used)).starts_with(" ms");
    if (paths >= min_paths) out.push_back(in_ms ? t : t * 1000);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// --- sections ------------------------------------------------------------------------------

// Directory-mode apply of `u`: mount, then per run apply/status/reset and apply/rollback,
// then the copy-based apply; rows under `section`.
void bench_update(const Options& o, const std::string& section, const std::string& label,
                  const Update& u, const fs::path& dir, const std::vector<Goal>& apply_goals,
                  bool full) {
  size_t total = 0;
  auto kinds = diff_kinds(o.daemon, u, &total);
  std::printf("\n%s: booted %zu files (%.1f MB); staged: %zu changed paths (", label.c_str(),
              u.booted_files, static_cast<double>(u.booted_bytes) / 1e6, total);
  bool first = true;
  for (auto& [k, n] : kinds) {
    std::printf("%s%zu %s", first ? "" : ", ", n, k.c_str());
    first = false;
  }
  std::printf("), %.1f MB of new content\n", static_cast<double>(u.changed_bytes) / 1e6);
  std::fflush(stdout);
  note(section, label, "changed_paths", static_cast<double>(total));

  fs::path state = dir / "state", mnt = dir / "view";
  fs::create_directories(mnt);
  g_setup.daemons.push_back(state);
  auto t0 = Clock::now();
  run_or_die(o.daemon + " mount --booted " + quoted(u.booted) + " --staged " + quoted(u.staged) +
             " --state " + quoted(state) + " " + quoted(mnt) + " > /dev/null");
  double mount_ms = ms_between(t0, Clock::now());
  std::fprintf(stderr, "%s: mounted in %.0f ms\n", label.c_str(), mount_ms);
  note(section, label, "mount_ms", mount_ms);

  // Once, untimed: the apply is what it says.
  const Change* probe = nullptr;
  for (const Change& c : u.changes)
    if (c.kind == Kind::modified) {
      probe = &c;
      break;
    }
  must(probe != nullptr, "a modified file");
  must_run(o, "apply", state, "--all --allow-replace");
  must(read_file(mnt / probe->path) == read_file(u.staged / probe->path),
       "the new content through the view after apply");
  must_run(o, "reset", state);
  must(read_file(mnt / probe->path) == read_file(u.booted / probe->path),
       "the booted content through the view after reset");

  const int runs = full ? o.runs : std::max(5, o.runs / 5);
  Row apply{section, "apply --all --allow-replace", apply_goals};
  std::vector<Goal> none;
  Row reset{section, "reset", full ? std::vector<Goal>{{"median", 5}} : none};
  Row rollback{section, "rollback", {{"median", 5}}};
  Row status_applied{section, "status (applied)", {{"median", 3}}};
  Row status_booted{section, "status (generation 0)", {{"median", 3}}};
  for (int i = 0; i < runs; ++i) {
    timed_into(apply, o, "apply", state, "--all --allow-replace");
    if (full) timed_into(status_applied, o, "status", state);
    timed_into(reset, o, "reset", state);
    if (full) timed_into(status_booted, o, "status", state);
    if (full) {
      timed_into(apply, o, "apply", state, "--all --allow-replace");
      timed_into(rollback, o, "rollback", state);
    }
    if ((i + 1) % 10 == 0) std::fprintf(stderr, "%s: %d/%d runs\n", label.c_str(), i + 1, runs);
  }
  std::vector<double> switches = switch_ms(state / "daemon.log", u.changes.size() / 2);
  stop_daemon(state);

  Row copy(section, "copy-based apply (overlayfs, tmpfs upper)");
  for (int i = 0; i < runs; ++i) copy.ms.push_back(copy_apply_once(u, dir / "copy", i == 0));

  // The floor under every CLI figure: starting a process, and starting the CLI alone.
  Row floor_true(section, "/bin/true (process start)");
  Row floor_cli(section, "livefs --version (CLI start-up)");
  if (full) {
    for (int i = 0; i < runs; ++i) {
      Timed t = timed({"/bin/true"});
      floor_true.ms.push_back(t.ms);
      floor_true.failures += t.rc != 0;
      std::vector<std::string> args = split_words(o.cli);
      args.push_back("--version");
      t = timed(args);
      floor_cli.ms.push_back(t.ms);
      floor_cli.failures += t.rc != 0;
    }
  }

  print_rows_header((label + ": CLI wall time, fork+exec to exit (ms)").c_str());
  for (Row* r : {&apply, &reset, &rollback, &status_applied, &status_booted, &copy, &floor_true,
                 &floor_cli}) {
    if (r->ms.empty()) continue;
    print_row(*r);
    g_rows.push_back(*r);
  }
  double ratio = apply.median() / copy.median();
  std::printf("livefs apply / copy-based apply (medians): %.2f\n", ratio);
  note(section, label, "ratio_livefs_over_copy", ratio);
  if (!switches.empty()) {
    std::printf(
        "the switch inside the daemon (its log, %zu switches of >= %zu paths): median %.2f ms, "
        "max %.2f ms\n",
        switches.size(), u.changes.size() / 2, percentile(switches, 0.5), switches.back());
    note(section, label, "daemon_switch_median_ms", percentile(switches, 0.5));
  }
}

void section_apply(const Options& o, const fs::path& work) {
  fs::path dir = work / "apply";
  std::fprintf(stderr, "apply: writing the trees\n");
  Update u = make_update(dir, 6000, 1430, true);
  bench_update(o, "apply", "Debian-shaped update", u, dir, {{"median", 10}, {"p99", 20}}, true);
}

void section_large(const Options& o, const fs::path& work) {
  fs::path dir = work / "large";
  std::fprintf(stderr, "large: writing the trees\n");
  Update u = make_update(dir, 20000, 10000, false);
  bench_update(o, "large", "10,000 changed files", u, dir, {{"median", 30}}, false);
}

// OSTree sysroot with a small booted deployment, and a commit (branch benchos/next, not
// deployed) with `files` more files; `livefs stage --commit` of it while `status` polls.
void section_stage_status(const Options& o, const fs::path& work) {
  fs::path dir = work / "stage", root = dir / "sysroot", repo = root / "ostree/repo";
  fs::create_directories(root);
  auto t_build = Clock::now();
  run_or_die("ostree admin init-fs " + quoted(root) + " > /dev/null 2>&1");
  run_or_die("ostree admin os-init --sysroot=" + quoted(root) + " benchos > /dev/null 2>&1");
  fs::path a = dir / "tree-a";
  fs::create_directories(a / "usr/etc");
  fs::create_directories(a / "usr/lib/modules/6.1.0");
  fs::create_directories(a / "usr/bin");
  write_file(a / "usr/etc/os-release", "ID=livefs-bench\nVERSION_ID=1\n");
  write_file(a / "usr/lib/modules/6.1.0/vmlinuz", "kernel 1\n");
  write_file(a / "usr/bin/tool", "tool 1\n", 0755);
  run_or_die("ostree --repo=" + quoted(repo) + " commit -b benchos/stable --tree=dir=" + quoted(a) +
             " > /dev/null");
  g_setup.immutable.push_back(root);
  run_or_die("ostree admin deploy --sysroot=" + quoted(root) +
             " --os=benchos --karg-none benchos/stable > /dev/null 2>&1");
  std::fprintf(stderr, "stage: writing %zu files\n", o.stage_files);
  run_or_die("cp -a " + quoted(a) + " " + quoted(dir / "tree-b"));
  TreeWriter w(42);
  for (size_t i = 0; i < o.stage_files; ++i) {
    fs::path p = dir / "tree-b/usr" / TreeWriter::file_path(i);
    if (i % 25 == 0) fs::create_directories(p.parent_path());
    // Small files: the commit is built once, the stage reads them all.
    std::string data = numbered("stage bench file ", static_cast<long long>(i));
    data += w.content(i, 2).substr(0, 2048);
    write_file(p, data);
  }
  std::fprintf(stderr, "stage: ostree commit of %zu files\n", o.stage_files);
  run_or_die("ostree --repo=" + quoted(repo) +
             " commit -b benchos/next --tree=dir=" + quoted(dir / "tree-b") + " > /dev/null");
  fs::remove_all(dir / "tree-b");
  double build_s = ms_between(t_build, Clock::now()) / 1000;
  std::fprintf(stderr, "stage: sysroot and commit built in %.0f s\n", build_s);

  fs::path state = dir / "state", mnt = dir / "view";
  fs::create_directories(mnt);
  g_setup.daemons.push_back(state);
  run_or_die(o.daemon + " mount --sysroot " + quoted(root) +
             " --os benchos --booted 0 --subdir usr --state " + quoted(state) + " " + quoted(mnt) +
             " > /dev/null");

  Row idle("stage-status", "status (idle)");
  for (int i = 0; i < 20; ++i) timed_into(idle, o, "status", state);
  Row busy{"stage-status", "status while the stage runs", {{"max", 50}}};
  auto t0 = Clock::now();
  pid_t stage = spawn(cli_args(o, "stage", state, "--commit benchos/next"), dir / "stage.out");
  int stage_rc = -1;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(stage, &status, WNOHANG);
    if (r == stage) {
      stage_rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      break;
    }
    timed_into(busy, o, "status", state);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  double stage_ms = ms_between(t0, Clock::now());
  if (stage_rc != 0) {
    auto out = read_file(dir / "stage.out");
    die("livefs stage --commit: exit " + std::to_string(stage_rc) + "\n" + out.value_or(""));
  }
  stop_daemon(state);

  std::printf("\nstatus while `livefs stage --commit` imports a %zu-file commit (sysroot mode)\n",
              o.stage_files);
  std::printf("the stage took %.0f ms; status polled every 10 ms meanwhile\n", stage_ms);
  print_rows_header("status wall time (ms)");
  for (Row* r : {&idle, &busy}) {
    print_row(*r);
    g_rows.push_back(*r);
  }
  note("stage-status", "stage", "files", static_cast<double>(o.stage_files));
  note("stage-status", "stage", "stage_ms", stage_ms);
}

// The /usr view (directory mode, a fresh state directory): mount time to the first stat
// that succeeds through it.
struct UsrView {
  fs::path state, mnt;
  double serving_ms = 0, returned_ms = 0;
};

UsrView mount_usr(const Options& o, const fs::path& dir, const fs::path& probe) {
  UsrView v;
  v.state = dir / "state";
  v.mnt = dir / "view";
  fs::create_directories(v.mnt);
  fs::path staged = dir / "staged";
  fs::create_directories(staged / "bin");
  write_file(staged / "bin/livefs-bench", "staged\n");
  std::vector<std::string> args = split_words(o.daemon);
  for (const std::string& a :
       {std::string("mount"), std::string("--booted"), o.usr.string(), std::string("--staged"),
        staged.string(), std::string("--state"), v.state.string(), v.mnt.string()})
    args.push_back(a);
  g_setup.daemons.push_back(v.state);
  fs::path target = v.mnt / probe;
  auto t0 = Clock::now();
  pid_t pid = spawn(args, dir / "mount.out");
  std::optional<int> rc;
  struct stat st {};
  for (;;) {
    if (!rc) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        v.returned_ms = ms_between(t0, Clock::now());
        if (*rc != 0) {
          auto out = read_file(dir / "mount.out");
          die("livefs mount --booted " + o.usr.string() + ": exit " + std::to_string(*rc) + "\n" +
              out.value_or(""));
        }
      }
    }
    if (::lstat(target.c_str(), &st) == 0) {
      v.serving_ms = ms_between(t0, Clock::now());
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (!rc) {
    (void)wait_exit(pid);
    v.returned_ms = ms_between(t0, Clock::now());
  }
  return v;
}

// A regular file of the booted tree (the probe of mount-to-serving).
fs::path usr_probe(const fs::path& usr) {
  for (const char* name : {"bin/sh", "bin/ls", "bin/env"}) {
    struct stat st {};
    if (::lstat((usr / name).c_str(), &st) == 0) return name;
  }
  for (const auto& e : fs::recursive_directory_iterator(usr))
    if (e.is_regular_file()) return e.path().lexically_relative(usr);
  die("no file in " + usr.string());
}

std::optional<UsrView> section_mount_usr(const Options& o, const fs::path& work, bool keep) {
  fs::path probe = usr_probe(o.usr);
  Row serving{"mount-usr", "mount to the first stat through the view", {{"max", 1000}}};
  Row returned("mount-usr", "mount command returned");
  std::optional<UsrView> kept;
  for (int i = 0; i < o.mount_runs; ++i) {
    if (o.cold) livefs::bench::drop_caches();
    fs::path dir = work / numbered("usr", i);
    UsrView v = mount_usr(o, dir, probe);
    std::fprintf(stderr, "mount-usr %d: serving after %.0f ms, returned after %.0f ms\n", i,
                 v.serving_ms, v.returned_ms);
    serving.ms.push_back(v.serving_ms);
    returned.ms.push_back(v.returned_ms);
    if (keep && i + 1 == o.mount_runs) {
      kept = v;
    } else {
      stop_daemon(v.state);
      std::error_code ec;
      if (!mounted_below(dir)) fs::remove_all(dir, ec);
    }
  }
  std::printf("\n`mount --booted %s` (fresh state directory, %s) to serving\n", o.usr.c_str(),
              o.cold ? "page cache dropped before each" : "page cache as it was");
  print_rows_header("wall time (ms)");
  for (Row* r : {&serving, &returned}) {
    print_row(*r);
    g_rows.push_back(*r);
  }
  return kept;
}

std::map<std::string, long> proc_status_kb(pid_t pid) {
  std::map<std::string, long> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    if (key.starts_with("Vm") || key.starts_with("Rss"))
      out[key] = std::atol(line.c_str() + colon + 1);
  }
  return out;
}

void section_rss(const Options& o, const fs::path& work, std::optional<UsrView> view) {
  if (!view) {
    std::fprintf(stderr, "rss: mounting %s\n", o.usr.c_str());
    view = mount_usr(o, work / "usr-rss", usr_probe(o.usr));
  }
  pid_t pid = daemon_pid(view->state);
  must(pid > 0, "the daemon's pid");
  struct Step {
    std::string name;
    double seconds;
    std::map<std::string, long> kb;
  };
  std::vector<Step> steps;
  steps.push_back({"after mount", 0, proc_status_kb(pid)});

  auto t0 = Clock::now();
  std::string count =
      capture("find " + quoted(view->mnt) + " -xdev -printf '%i %s %m %U %G %T@ %y\\n' | wc -l");
  double find_s = ms_between(t0, Clock::now()) / 1000;
  size_t entries = std::stoul(count);
  steps.push_back({"after find -printf (stat of every entry)", find_s, proc_status_kb(pid)});

  t0 = Clock::now();
  (void)capture("find " + quoted(o.usr) + " -xdev -printf '%i %s %m %U %G %T@ %y\\n' | wc -l");
  double native_find_s = ms_between(t0, Clock::now()) / 1000;

  std::fprintf(stderr, "rss: reading every file of the view (%zu entries)\n", entries);
  t0 = Clock::now();
  int cat_rc =
      sh("find " + quoted(view->mnt) + " -xdev -type f -print0 | xargs -0 cat > /dev/null 2>" +
         quoted(work / "rss-cat.err"));
  double read_s = ms_between(t0, Clock::now()) / 1000;
  steps.push_back({"after reading every file", read_s, proc_status_kb(pid)});
  stop_daemon(view->state);

  std::printf(
      "\nDaemon memory over the %s view (%zu entries; find through the view %.1f s, "
      "native %.1f s)\n",
      o.usr.c_str(), entries, find_s, native_find_s);
  if (cat_rc != 0)
    std::printf("(the read of every file exited %d: see %s)\n", cat_rc,
                (work / "rss-cat.err").c_str());
  // B/entry: VmRSS over the entries; "growth": what the walk added over the daemon just
  // mounted (its code, libraries and the booted manifest), per entry.
  std::printf("%-42s %7s %9s %9s %8s %8s %8s %8s %8s\n", "step", "secs", "VmRSS MB", "VmHWM MB",
              "RssAnon", "RssFile", "B/entry", "HWM B/e", "growth");
  double base = 0;
  for (const Step& s : steps) {
    auto kb = [&](const char* k) {
      auto it = s.kb.find(k);
      return it == s.kb.end() ? 0.0 : static_cast<double>(it->second) * 1024;
    };
    const double n = static_cast<double>(entries), rss = kb("VmRSS"), hwm = kb("VmHWM");
    if (s.name == "after mount") base = rss;
    std::printf("%-42s %7.1f %9.1f %9.1f %8.1f %8.1f %8.0f %8.0f %8.0f%s\n", s.name.c_str(),
                s.seconds, rss / 1e6, hwm / 1e6, kb("RssAnon") / 1e6, kb("RssFile") / 1e6, rss / n,
                hwm / n, (rss - base) / n,
                s.name == "after reading every file" ? "  (goal: <= 600 B/entry)" : "");
    for (const char* k : {"VmRSS", "VmHWM", "RssAnon", "RssFile"})
      note("rss", s.name, std::string(k) + "_bytes", kb(k));
    note("rss", s.name, "seconds", s.seconds);
    note("rss", s.name, "rss_bytes_per_entry", rss / n);
    note("rss", s.name, "rss_growth_bytes_per_entry", (rss - base) / n);
  }
  note("rss", "usr", "entries", static_cast<double>(entries));
  note("rss", "usr", "native_find_seconds", native_find_s);
}

void on_signal(int) {
  cleanup();
  std::_Exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::set<std::string> sections;
  const std::set<std::string> known = {"apply", "large", "stage-status", "mount-usr", "rss"};
  const char* env_cli = std::getenv("LIVEFS");
  o.cli = env_cli && *env_cli ? env_cli : LIVEFS_BINARY;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--livefs" && i + 1 < argc) {
      o.cli = argv[++i];
    } else if (a == "--daemon" && i + 1 < argc) {
      o.daemon = argv[++i];
    } else if (a == "--runs" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      o.runs = std::atoi(argv[++i]);
    } else if (a == "--mount-runs" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      o.mount_runs = std::atoi(argv[++i]);
    } else if (a == "--stage-files" && i + 1 < argc && std::atol(argv[i + 1]) > 0) {
      o.stage_files = static_cast<size_t>(std::atol(argv[++i]));
    } else if (a == "--usr" && i + 1 < argc) {
      o.usr = argv[++i];
    } else if (a == "--cold") {
      o.cold = true;
    } else if (a == "--csv" && i + 1 < argc) {
      o.csv = argv[++i];
    } else if (a.starts_with("--") && known.contains(a.substr(2))) {
      sections.insert(a.substr(2));
    } else {
      std::fprintf(
          stderr,
          "usage: bench_apply [--livefs PATH] [--daemon PATH] [--quick] [--runs N]\n"
          "                   [--stage-files N] [--usr DIR] [--mount-runs N] [--cold]\n"
          "                   [--csv FILE]\n"
          "                   [--apply] [--large] [--stage-status] [--mount-usr] [--rss]\n");
      return 2;
    }
  }
  if (sections.empty()) sections = known;
  if (o.daemon.empty()) o.daemon = o.cli;
  if (o.runs == 0) o.runs = o.quick ? 20 : 100;
  if (o.mount_runs == 0) o.mount_runs = o.quick ? 1 : 3;
  g_setup.cli = o.cli;

  char tmpl[] = "/var/tmp/livefs-bench-apply-XXXXXX";
  must(mkdtemp(tmpl) != nullptr, "mkdtemp");
  g_setup.work = tmpl;
  const fs::path work = tmpl;
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);

  std::printf("livefs CLI: %s%s%s; %d runs a row; %u cores, load average %s", o.cli.c_str(),
              o.daemon != o.cli ? ", daemon: " : "", o.daemon != o.cli ? o.daemon.c_str() : "",
              o.runs, std::thread::hardware_concurrency(),
              read_file("/proc/loadavg").value_or("?\n").c_str());
  std::fflush(stdout);

  // A failing std::filesystem call throws: the mounts and the work directory go first.
  try {
    if (sections.contains("apply")) section_apply(o, work);
    if (sections.contains("large")) section_large(o, work);
    if (sections.contains("stage-status")) section_stage_status(o, work);
    std::optional<UsrView> view;
    if (sections.contains("mount-usr")) view = section_mount_usr(o, work, sections.contains("rss"));
    if (sections.contains("rss")) section_rss(o, work, view);
  } catch (const std::exception& e) {
    die(e.what());
  }
  std::printf("\nload average at the end: %s", read_file("/proc/loadavg").value_or("?\n").c_str());
  cleanup();

  std::ofstream csv(o.csv);
  csv.precision(12);
  csv << "section,workload,metric,value\n";
  for (Row& r : g_rows) {
    std::sort(r.ms.begin(), r.ms.end());
    std::string w = "\"" + r.name + "\"";
    csv << r.section << ',' << w << ",runs," << r.ms.size() << '\n';
    csv << r.section << ',' << w << ",median_ms," << r.median() << '\n';
    csv << r.section << ',' << w << ",p90_ms," << percentile(r.ms, 0.9) << '\n';
    csv << r.section << ',' << w << ",p99_ms," << percentile(r.ms, 0.99) << '\n';
    csv << r.section << ',' << w << ",max_ms," << (r.ms.empty() ? 0.0 : r.ms.back()) << '\n';
    csv << r.section << ',' << w << ",failures," << r.failures << '\n';
  }
  for (const Extra& e : g_extras)
    csv << e.section << ",\"" << e.workload << "\"," << e.metric << ',' << e.value << '\n';
  std::printf("CSV: %s\n", o.csv.c_str());
  return 0;
}
