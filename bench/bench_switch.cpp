// Update latency against the number of changed files, and what a reader sees meanwhile.
//
// For each N (1, 10, 100, 1,000, 10,000) of a --tree-files tree (default 20,000 files of
// 1 KiB, "file I version V" on their first line), one switch from version 0 to a version
// where N files, spread over the tree, are version 1, by each tool:
//   livefs   `livefs apply --all --allow-replace` (the CLI, fork+exec to exit) of a staged
//            directory in directory mode; `reset` (untimed) between runs.
//   copy     a copy-based apply: kernel overlayfs (lower = the booted tree, upper on a
//            fresh tmpfs), the N files copied in through the mount as dpkg does (written
//            beside, renamed over).
//   sysext   `systemd-sysext refresh` after the extension /run/extensions/livefs-bench
//            (the tree under usr/share/livefs-bench) is pointed at its next version: the
//            refresh unmounts the /usr overlay and mounts the new one.
// While a switch runs (from the start of the command to its exit), a reader thread checks
// continuously: lstat, open and read of up to 16 changed files (in the order the copy
// writes them) and of 4 unchanged ones. A check is bad when a file vanished (ENOENT),
// when it saw a mixed version (a changed file read as version 0 after another of them was
// read as version 1: an atomic switch can only show old...old new...new) or a torn one
// (content of neither version). Per switch: its ms, checks made, bad checks of each kind.
//
// The whole program runs in a private mount namespace of its own (unshare(CLONE_NEWNS),
// every mount made private): its mounts, and systemd-sysext's merge over /usr, are never
// seen outside it. systemd-sysext runs without systemd as PID 1 given two things it
// expects of a booted system: /run is a mount point (it remounts it MS_SLAVE; here a
// tmpfs of the namespace's own, so nothing it writes under /run reaches the host) and /
// is shared (it builds the overlay in a namespace of its own and moves it onto /usr,
// which reaches this one only by propagation).
//
//   bench_switch [--livefs PATH] [--quick] [--runs N] [--sizes N,N,...] [--tree-files N]
//                [--csv FILE] [livefs] [copy] [sysext]
//
// --quick: 3 runs a size (default 10). When systemd-sysext is missing or its first merge
// fails, the CSV has a row with the reason and none of its figures, never a failure.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"

namespace fs = std::filesystem;

namespace {

using livefs::bench::Clock;
using livefs::bench::numbered;
using livefs::bench::sh;
using livefs::bench::shell_word;

double ms_since(Clock::time_point t) { return livefs::bench::seconds_since(t) * 1e3; }

// What has to be undone however the run ends: daemons (by state directory), mounts (last
// made first), then the work directory.
struct Setup {
  std::string cli;
  fs::path work;
  std::vector<fs::path> daemons, mounts;
  bool sysext_merged = false;
};
Setup g_setup;

void cleanup() {
  if (g_setup.sysext_merged) (void)sh("systemd-sysext unmerge > /dev/null 2>&1");
  g_setup.sysext_merged = false;
  for (auto it = g_setup.daemons.rbegin(); it != g_setup.daemons.rend(); ++it)
    (void)sh(g_setup.cli + " umount --wait --state " + shell_word(*it) + " > /dev/null 2>&1");
  g_setup.daemons.clear();
  for (auto it = g_setup.mounts.rbegin(); it != g_setup.mounts.rend(); ++it)
    ::umount2(it->c_str(), MNT_DETACH);
  g_setup.mounts.clear();
  if (!g_setup.work.empty()) {
    std::error_code ec;
    fs::remove_all(g_setup.work, ec);
    g_setup.work.clear();
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_switch: %s\n", what.c_str());
  std::fflush(nullptr);
  cleanup();
  ::_exit(1);
}

void must(bool ok, const std::string& what) {
  if (!ok) die(what + " failed");
}

void run_or_die(const std::string& cmd) {
  if (int rc = sh(cmd); rc != 0) die(numbered("exit ", rc) + ": " + cmd);
}

void mount_tmpfs(const fs::path& at) {
  fs::create_directories(at);
  if (::mount("tmpfs", at.c_str(), "tmpfs", 0, "size=2g") != 0)
    die("mount a tmpfs on " + at.string() + ": " + std::strerror(errno));
  g_setup.mounts.push_back(at);
}

void unmount(const fs::path& at) {
  must(::umount2(at.c_str(), MNT_DETACH) == 0, "umount " + at.string());
  std::erase(g_setup.mounts, at);
}

// --- the tree --------------------------------------------------------------------------

fs::path file_rel(size_t i) {
  return fs::path(numbered("d", static_cast<long long>(i / 100))) /
         numbered("f", static_cast<long long>(i));
}

std::string content(size_t i, int version) {
  std::string s = numbered("file ", static_cast<long long>(i)) + numbered(" version ", version);
  s += '\n';
  s.resize(1024, '.');
  s.back() = '\n';
  return s;
}

void write_file(const fs::path& p, const std::string& data) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + p.string() + ": " + std::strerror(errno));
  bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
  ::close(fd);
  must(ok, "write " + p.string());
}

void write_tree(const fs::path& root, size_t files) {
  for (size_t i = 0; i < files; ++i) {
    fs::path p = root / file_rel(i);
    if (i % 100 == 0) fs::create_directories(p.parent_path());
    write_file(p, content(i, 0));
  }
}

// The N changed files, spread evenly over the tree, in the order the copy writes them.
std::vector<size_t> changed_files(size_t tree, size_t n) {
  std::vector<size_t> out;
  for (size_t k = 0; k < n; ++k) out.push_back(k * tree / n);
  return out;
}

// `from` linked (cp -al: unchanged files share inodes) to `to`, with `changed` at version 1.
void write_next(const fs::path& from, const fs::path& to, const std::vector<size_t>& changed) {
  fs::create_directories(to.parent_path());
  run_or_die("cp -al " + shell_word(from) + " " + shell_word(to));
  for (size_t i : changed) {
    fs::remove(to / file_rel(i));
    write_file(to / file_rel(i), content(i, 1));
  }
}

// --- the reader ------------------------------------------------------------------------

struct Counts {
  long checks = 0, bad = 0, vanished = 0, mixed = 0, torn = 0;
  double bad_ms = 0;  // from the start of the first bad check to the end of the last
};

// Checks files under a root while a window is open; counts per window.
class Reader {
 public:
  Reader() : thread_([this] { loop(); }) {}
  ~Reader() {
    quit_ = true;
    thread_.join();
  }
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // Opens a window over `changed` (version 0 -> 1) and `unchanged` (version 0) files below
  // `root`; returns once the first check of it is done, so that the window starts checked.
  void open(const fs::path& root, const std::vector<size_t>& changed,
            const std::vector<size_t>& unchanged) {
    {
      std::lock_guard lock(mutex_);
      changed_.clear();
      unchanged_.clear();
      for (size_t i : changed) changed_.push_back({root / file_rel(i), i});
      for (size_t i : unchanged) unchanged_.push_back({root / file_rel(i), i});
      counts_ = {};
    }
    open_ = true;
    while (checks_done_.load() == 0 && !quit_) std::this_thread::yield();
  }

  // Closes the window after the check under way; the window's counts.
  Counts close() {
    open_ = false;
    std::lock_guard lock(mutex_);  // the loop holds it for a whole check
    checks_done_ = 0;
    return counts_;
  }

 private:
  struct File {
    fs::path path;
    size_t index;
  };
  enum class Seen { vanished, torn, v0, v1 };

  static Seen read(const File& f) {
    struct stat st {};
    if (::lstat(f.path.c_str(), &st) != 0) return errno == ENOENT ? Seen::vanished : Seen::torn;
    int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? Seen::vanished : Seen::torn;
    char buf[2048];
    ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n < 0) return Seen::torn;
    std::string got(buf, static_cast<size_t>(n));
    if (got == content(f.index, 0)) return Seen::v0;
    if (got == content(f.index, 1)) return Seen::v1;
    return Seen::torn;
  }

  void check() {
    auto t0 = Clock::now();
    bool vanished = false, mixed = false, torn = false, saw_new = false;
    for (const File& f : changed_) {
      Seen s = read(f);
      vanished |= s == Seen::vanished;
      torn |= s == Seen::torn;
      mixed |= s == Seen::v0 && saw_new;
      saw_new |= s == Seen::v1;
    }
    for (const File& f : unchanged_) {
      Seen s = read(f);
      vanished |= s == Seen::vanished;
      torn |= s == Seen::torn || s == Seen::v1;
    }
    ++counts_.checks;
    counts_.vanished += vanished;
    counts_.mixed += mixed;
    counts_.torn += torn;
    if (vanished || mixed || torn) {
      ++counts_.bad;
      if (counts_.bad == 1) first_bad_ = t0;
      counts_.bad_ms = std::chrono::duration<double, std::milli>(Clock::now() - first_bad_).count();
    }
  }

  void loop() {
    while (!quit_) {
      if (!open_) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        continue;
      }
      std::lock_guard lock(mutex_);
      if (!open_) continue;
      check();
      ++checks_done_;
    }
  }

  std::mutex mutex_;
  std::vector<File> changed_, unchanged_;
  Counts counts_;
  Clock::time_point first_bad_;
  std::atomic<bool> open_{false}, quit_{false};
  std::atomic<long> checks_done_{0};
  std::thread thread_;
};

// Up to 16 of the changed files (the first and the last written among them) and 4 unchanged.
std::vector<size_t> probe_changed(const std::vector<size_t>& changed) {
  std::vector<size_t> out;
  size_t n = std::min<size_t>(16, changed.size());
  for (size_t k = 0; k < n; ++k)
    out.push_back(changed[n == 1 ? 0 : k * (changed.size() - 1) / (n - 1)]);
  return out;
}

std::vector<size_t> probe_unchanged(size_t tree, const std::vector<size_t>& changed) {
  std::set<size_t> taken(changed.begin(), changed.end());
  std::vector<size_t> out;
  for (size_t i = 1; i < tree && out.size() < 4; i += tree / 5 + 1)
    if (!taken.contains(i)) out.push_back(i);
  return out;
}

// --- results ---------------------------------------------------------------------------

struct Switch {
  std::string tool;
  size_t files = 0;
  int run = 0;
  double ms = 0;
  Counts counts;
};
std::vector<Switch> g_switches;

void record(const std::string& tool, size_t files, int run, double ms, const Counts& c) {
  g_switches.push_back({tool, files, run, ms, c});
  std::fprintf(stderr, "%-7s %6zu files  run %2d  %9.2f ms  %5ld checks, %ld bad (over %.2f ms)\n",
               tool.c_str(), files, run, ms, c.checks, c.bad, c.bad_ms);
}

// Every probed changed file reads version 1 (the switch is complete when its command
// returns).
void must_see_new(const fs::path& root, const std::vector<size_t>& probes, const std::string& who) {
  for (size_t i : probes) {
    std::ifstream in(root / file_rel(i), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    must(ss.str() == content(i, 1), who + ": version 1 of " + file_rel(i).string() + " after it");
  }
}

struct Options {
  std::string cli = LIVEFS_BINARY;
  bool quick = false;
  int runs = 0;
  std::vector<size_t> sizes = {1, 10, 100, 1000, 10000};
  size_t tree_files = 20000;
  std::string csv = "bench_switch.csv";
  std::set<std::string> tools;
};

// --- the tools -------------------------------------------------------------------------

double timed_command(const std::string& cmd) {
  auto t = Clock::now();
  run_or_die(cmd);
  return ms_since(t);
}

void bench_livefs(const Options& o, Reader& reader, const fs::path& booted, const fs::path& dir,
                  size_t n) {
  auto changed = changed_files(o.tree_files, n);
  fs::path staged = dir / "staged", state = dir / "state", mnt = dir / "view";
  write_next(booted, staged, changed);
  fs::create_directories(mnt);
  g_setup.daemons.push_back(state);
  std::string with_state = " --state " + shell_word(state);
  run_or_die(o.cli + " mount --booted " + shell_word(booted) + " --staged " + shell_word(staged) +
             with_state + " " + shell_word(mnt) + " > /dev/null");
  // Once, untimed: the daemon's first apply also finishes what its start left to do.
  run_or_die(o.cli + " apply --all --allow-replace" + with_state + " > /dev/null");
  run_or_die(o.cli + " reset" + with_state + " > /dev/null");
  auto probes = probe_changed(changed);
  for (int run = 0; run < o.runs; ++run) {
    reader.open(mnt, probes, probe_unchanged(o.tree_files, changed));
    double ms = timed_command(o.cli + " apply --all --allow-replace" + with_state + " > /dev/null");
    Counts c = reader.close();
    must_see_new(mnt, probes, "livefs apply");
    record("livefs", n, run, ms, c);
    run_or_die(o.cli + " reset" + with_state + " > /dev/null");
  }
  run_or_die(o.cli + " umount --wait" + with_state + " > /dev/null");
  std::erase(g_setup.daemons, state);
  fs::remove_all(dir);
}

void bench_copy(const Options& o, Reader& reader, const fs::path& booted, const fs::path& dir,
                size_t n) {
  auto changed = changed_files(o.tree_files, n);
  fs::path tmp = dir / "tmpfs", mnt = dir / "mnt";
  // The new contents at hand, as a package manager has them unpacked before it installs.
  std::vector<std::string> data;
  for (size_t i : changed) data.push_back(content(i, 1));
  auto probes = probe_changed(changed);
  for (int run = 0; run < o.runs; ++run) {
    mount_tmpfs(tmp);
    fs::create_directories(tmp / "upper");
    fs::create_directories(tmp / "work");
    fs::create_directories(mnt);
    std::string opts = "lowerdir=" + booted.string() + ",upperdir=" + (tmp / "upper").string() +
                       ",workdir=" + (tmp / "work").string();
    must(::mount("overlay", mnt.c_str(), "overlay", 0, opts.c_str()) == 0, "mount overlayfs");
    g_setup.mounts.push_back(mnt);
    reader.open(mnt, probes, probe_unchanged(o.tree_files, changed));
    auto t = Clock::now();
    for (size_t k = 0; k < changed.size(); ++k) {
      fs::path to = mnt / file_rel(changed[k]), beside = to;
      beside += ".new";
      write_file(beside, data[k]);
      must(::rename(beside.c_str(), to.c_str()) == 0, "rename " + beside.string());
    }
    double ms = ms_since(t);
    Counts c = reader.close();
    must_see_new(mnt, probes, "copy");
    record("copy", n, run, ms, c);
    unmount(mnt);
    unmount(tmp);
  }
  fs::remove_all(dir);
}

const char* kExtension = "livefs-bench";

// Why systemd-sysext cannot run here; empty when it can.
std::string sysext_unavailable() {
  if (sh("command -v systemd-sysext > /dev/null 2>&1") != 0)
    return "systemd-sysext is not installed";
  struct stat st {};
  if (::lstat("/usr", &st) != 0 || !S_ISDIR(st.st_mode)) return "/usr is not a directory";
  return "";
}

// The namespace made ready for systemd-sysext (see the top of this file), with the
// extension directory empty.
void prepare_sysext() {
  must(::mount(nullptr, "/", nullptr, MS_REC | MS_SHARED, nullptr) == 0,
       "make / shared in this namespace");
  mount_tmpfs("/run");
  fs::create_directories("/run/extensions");
}

// Why the extension did not merge (systemd-sysext's own words); empty when it did.
std::string first_merge(const fs::path& dir, const fs::path& probe) {
  fs::path log = dir / "merge.log";
  int rc = sh("systemd-sysext refresh > " + shell_word(log) + " 2>&1");
  std::ifstream in(log);
  std::string said((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(said.begin(), said.end(), '\n', ' ');
  std::erase(said, '"');
  if (rc != 0) return numbered("systemd-sysext refresh exited ", rc) + ": " + said;
  if (!fs::exists(probe)) return "systemd-sysext refresh merged nothing into /usr: " + said;
  return "";
}

// Empty, or why systemd-sysext does not work here (nothing measured then).
std::string bench_sysext(const Options& o, Reader& reader, const fs::path& booted,
                         const fs::path& dir, size_t n) {
  auto changed = changed_files(o.tree_files, n);
  // Two versions of the extension, each a directory with usr/ and its extension-release.
  fs::path v0 = dir / "v0", v1 = dir / "v1", link = fs::path("/run/extensions") / kExtension;
  const fs::path below = "usr/share/livefs-bench";
  fs::create_directories(v0 / below.parent_path());
  run_or_die("cp -al " + shell_word(booted) + " " + shell_word(v0 / below));
  fs::create_directories(v0 / "usr/lib/extension-release.d");
  std::ofstream(v0 / "usr/lib/extension-release.d" /
                (std::string("extension-release.") + kExtension))
      << "ID=_any\n";
  write_next(v0 / "usr", v1 / "usr", {});
  for (size_t i : changed) {
    fs::remove(v1 / below / file_rel(i));
    write_file(v1 / below / file_rel(i), content(i, 1));
  }
  auto point_at = [&](const fs::path& version) {
    fs::path fresh = link;
    fresh += ".new";
    fs::remove(fresh);
    fs::create_directory_symlink(version, fresh);
    fs::rename(fresh, link);
  };
  const std::string refresh = "systemd-sysext refresh > /dev/null 2>&1";
  const fs::path root = "/" / below;
  auto probes = probe_changed(changed);
  point_at(v0);
  g_setup.sysext_merged = true;
  if (std::string why = first_merge(dir, root / file_rel(0)); !why.empty()) return why;
  for (int run = 0; run < o.runs; ++run) {
    point_at(v0);
    run_or_die(refresh);
    must(fs::exists(root / file_rel(0)), "the extension merged into /usr");
    reader.open(root, probes, probe_unchanged(o.tree_files, changed));
    auto t = Clock::now();
    point_at(v1);
    run_or_die(refresh);
    double ms = ms_since(t);
    Counts c = reader.close();
    must_see_new(root, probes, "systemd-sysext refresh");
    record("sysext", n, run, ms, c);
  }
  run_or_die("systemd-sysext unmerge > /dev/null 2>&1");
  g_setup.sysext_merged = false;
  fs::remove(link);
  fs::remove_all(dir);
  return "";
}

// --- output ----------------------------------------------------------------------------

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) / 2];
}

void print_summary(const std::vector<std::string>& tools, const std::vector<size_t>& sizes) {
  std::printf("\n%-8s %8s %5s %12s %8s %8s %9s %7s %6s\n", "tool", "files", "runs", "median ms",
              "checks", "bad", "vanished", "mixed", "torn");
  for (const std::string& tool : tools) {
    for (size_t n : sizes) {
      std::vector<double> ms;
      Counts sum;
      for (const Switch& s : g_switches) {
        if (s.tool != tool || s.files != n) continue;
        ms.push_back(s.ms);
        sum.checks += s.counts.checks;
        sum.bad += s.counts.bad;
        sum.vanished += s.counts.vanished;
        sum.mixed += s.counts.mixed;
        sum.torn += s.counts.torn;
      }
      if (ms.empty()) continue;
      std::printf(
          "%-8s %8zu %5zu %12.2f %8ld %7.1f%% %9ld %7ld %6ld\n", tool.c_str(), n, ms.size(),
          median(ms), sum.checks,
          sum.checks ? 100.0 * static_cast<double>(sum.bad) / static_cast<double>(sum.checks) : 0.0,
          sum.vanished, sum.mixed, sum.torn);
    }
  }
}

void write_csv(const std::string& path, size_t tree_files, const std::vector<std::string>& notes) {
  std::ofstream csv(path);
  csv.precision(12);
  csv << "tool,files,tree_files,run,ms,checks,bad,vanished,mixed,torn,bad_ms,note\n";
  for (const Switch& s : g_switches)
    csv << s.tool << ',' << s.files << ',' << tree_files << ',' << s.run << ',' << s.ms << ','
        << s.counts.checks << ',' << s.counts.bad << ',' << s.counts.vanished << ','
        << s.counts.mixed << ',' << s.counts.torn << ',' << s.counts.bad_ms << ",\n";
  // A tool that did not run: one row with its reason.
  for (const std::string& n : notes) csv << n << '\n';
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: bench_switch [--livefs PATH] [--quick] [--runs N] [--sizes N,N,...]\n"
               "                    [--tree-files N] [--csv FILE] [livefs] [copy] [sysext]\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  const char* env_cli = std::getenv("LIVEFS");
  if (env_cli && *env_cli) o.cli = env_cli;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--quick") {
      o.quick = true;
    } else if (a == "--livefs") {
      o.cli = value();
    } else if (a == "--runs") {
      o.runs = std::atoi(value().c_str());
      if (o.runs <= 0) usage();
    } else if (a == "--tree-files") {
      o.tree_files = std::strtoul(value().c_str(), nullptr, 10);
    } else if (a == "--sizes") {
      o.sizes.clear();
      std::istringstream in(value());
      for (std::string w; std::getline(in, w, ',');) {
        size_t n = std::strtoul(w.c_str(), nullptr, 10);
        if (n == 0) usage();
        o.sizes.push_back(n);
      }
    } else if (a == "--csv") {
      o.csv = value();
    } else if (a == "livefs" || a == "copy" || a == "sysext") {
      o.tools.insert(a);
    } else {
      usage();
    }
  }
  if (o.runs == 0) o.runs = o.quick ? 3 : 10;
  if (o.tools.empty()) o.tools = {"livefs", "copy", "sysext"};
  if (o.sizes.empty()) usage();
  // Twice the largest change, so that unchanged files stay between the changed ones.
  o.tree_files = std::max(o.tree_files, 2 * *std::max_element(o.sizes.begin(), o.sizes.end()));
  return o;
}

void on_signal(int) {
  cleanup();
  ::_exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  g_setup.cli = o.cli;
  // First, while this process is single-threaded (unshare(CLONE_NEWNS) refuses otherwise).
  if (::unshare(CLONE_NEWNS) != 0)
    die(std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno));
  must(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0,
       "make every mount private in this namespace");
  char tmpl[] = "/var/tmp/livefs-bench-switch-XXXXXX";
  must(::mkdtemp(tmpl) != nullptr, "mkdtemp");
  g_setup.work = tmpl;
  const fs::path work = tmpl, booted = work / "booted";
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);

  std::vector<std::string> tools, notes;
  for (const char* t : {"livefs", "copy", "sysext"})
    if (o.tools.contains(t)) tools.push_back(t);
  if (o.tools.contains("sysext")) {
    if (std::string why = sysext_unavailable(); !why.empty()) {
      std::fprintf(stderr, "sysext: skipped: %s\n", why.c_str());
      notes.push_back("sysext,,,,,,,,,,,\"skipped: " + why + "\"");
      std::erase(tools, "sysext");
    } else {
      prepare_sysext();
    }
  }

  std::printf("bench_switch: %zu-file tree, %d runs a size, tools:", o.tree_files, o.runs);
  for (const auto& t : tools) std::printf(" %s", t.c_str());
  std::printf("\n");
  std::fflush(stdout);
  auto t_tree = Clock::now();
  write_tree(booted, o.tree_files);
  std::fprintf(stderr, "tree of %zu files written in %.1f s\n", o.tree_files,
               ms_since(t_tree) / 1e3);

  try {
    Reader reader;
    for (size_t n : o.sizes) {
      for (const std::string& tool : std::vector(tools)) {
        std::fprintf(stderr, "== %s, %zu changed files\n", tool.c_str(), n);
        fs::path dir = work / (tool + "-" + std::to_string(n));
        if (tool == "livefs") bench_livefs(o, reader, booted, dir, n);
        if (tool == "copy") bench_copy(o, reader, booted, dir, n);
        if (tool != "sysext") continue;
        if (std::string why = bench_sysext(o, reader, booted, dir, n); !why.empty()) {
          std::fprintf(stderr, "sysext: skipped: %s\n", why.c_str());
          notes.push_back("sysext,,,,,,,,,,,\"skipped: " + why + "\"");
          std::erase(tools, "sysext");
        }
      }
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  cleanup();
  print_summary(tools, o.sizes);
  write_csv(o.csv, o.tree_files, notes);
  std::printf("CSV: %s\n", o.csv.c_str());
  return 0;
}
