// Soak: does the daemon stay flat over a long life? The livefs daemon (started through the
// CLI, as an operator runs it) serves a view while this program drives it through 10,000
// apply/rollback cycles (--quick 500; the first 50 through the CLI, the rest straight to the
// control socket with the CLI's own client) and 1,000 hotfix edits (--quick 100; a watched
// source directory whose files are rewritten editor-style, each edit waited for in the
// view), interleaved, while reader threads read and list the view the whole time.
//
// At the start, after each tenth of the work and at the end, with the readers paused, the
// daemon's VmRSS, thread count and open descriptors are taken twice: as they are ("hot": the
// daemon keeps a backing descriptor per node the kernel still references), and after the
// kernel has forgotten every unused inode (dentries and inodes dropped, then waiting until
// the descriptor count stops moving). Only the second is compared: a node cache that the
// kernel can release is not a leak; what stays after the forgets is. Descriptors are
// reported by what they point at, so a leak says where it is.
//
// Flat means, measured from the end of the first tenth (the warm-up: FUSE worker threads
// and their splice pipes start as concurrency asks): descriptors after forgets at the end
// <= that + 2, VmRSS after forgets at the end <= 1.10 x that + 1 MiB; and zero reader errors
// (wrong bytes, an unexpected errno). End/start ratios are printed as well.
//
//   bench_soak [--quick] [--cycles N] [--edits N] [--readers N] [--csv FILE]
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"
#include "livefs/control.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using livefs::bench::sh;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// prefix + n, built by append: g++ 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::to_string(n)`.
std::string numbered(const char* prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// What has to be undone however the run ends: the daemon's mount and the temp dir.
struct Setup {
  fs::path work, state, mnt;
  bool mounted = false;
};
Setup g_setup;

void cleanup() {
  if (g_setup.mounted) {
    if (sh(std::string(LIVEFS_BINARY) + " umount --state " + quoted(g_setup.state)) != 0) {
      // Removing the tree under a live mount would reach into the view: leave it all.
      std::fprintf(stderr, "bench_soak: umount failed; the mount is left at %s\n",
                   g_setup.mnt.c_str());
      return;
    }
    g_setup.mounted = false;
  }
  if (!g_setup.work.empty()) {
    std::error_code ec;
    fs::remove_all(g_setup.work, ec);
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_soak: %s\n", what.c_str());
  cleanup();
  std::exit(1);
}

void must(bool ok, const std::string& what) {
  if (!ok) die(what + " failed");
}

void write_file(const fs::path& p, const std::string& data) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + p.string() + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) die("write " + p.string() + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

// The whole file, or the errno of the open or read that failed.
struct Read {
  std::string data;
  int error = 0;
};
Read read_file(const fs::path& p) {
  Read r;
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.error = errno;
    return r;
  }
  char buf[16384];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      r.error = errno;
      break;
    }
    if (n == 0) break;
    r.data.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return r;
}

// Names in a directory (without . and ..), or the errno of the listing.
std::optional<std::vector<std::string>> list_dir(const fs::path& p, int& error) {
  DIR* d = ::opendir(p.c_str());
  if (d == nullptr) {
    error = errno;
    return std::nullopt;
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  error = errno;
  ::closedir(d);
  if (error != 0) return std::nullopt;
  return names;
}

// Unique content of about `size` bytes: a header naming it, then filler derived from it.
std::string content(const std::string& tag, size_t size) {
  std::string s = tag + "\n";
  size_t h = std::hash<std::string>{}(tag);
  while (s.size() < size) s += "0123456789abcdef"[(h + s.size()) % 16];
  return s;
}

// The trees: data files d000.. of which the staged tree changes the first kChangedData,
// bin/tool replaced, add/ new in the staged tree. The hotfix source mirrors onto dev/.
constexpr int kDataFiles = 200, kChangedData = 20, kAddedFiles = 5, kHotfixFiles = 50;
constexpr size_t kHotfixSize = 2048;
std::string data_name(int i) {
  char b[16];
  std::snprintf(b, sizeof b, "d%03d", i);
  return b;
}
std::string booted_data(int i) { return content("booted " + data_name(i), 1024); }
std::string staged_data(int i) { return content("staged " + data_name(i), 1024 + 7 * i); }
std::string hotfix_name(int k) { return numbered("f", k); }
std::string hotfix_content(int k, long edit) {
  return content("hotfix " + hotfix_name(k) + " edit " + std::to_string(edit), kHotfixSize);
}
const std::string kToolV1(5000, 'a'), kToolV2(9000, 'b');

// ---- the daemon's resources -----------------------------------------------------------

long status_field_kb(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  size_t n = std::strlen(field);
  while (std::getline(in, line)) {
    if (line.compare(0, n, field) == 0 && line.size() > n && line[n] == ':')
      return std::atol(line.c_str() + n + 1);
  }
  return -1;
}

// Open descriptors by what they point at.
struct Fds {
  std::map<std::string, size_t> kinds;
  size_t total() const {
    size_t t = 0;
    for (const auto& [k, n] : kinds) t += n;
    return t;
  }
  size_t of(const std::string& k) const {
    auto it = kinds.find(k);
    return it == kinds.end() ? 0 : it->second;
  }
};
constexpr const char* kFdKinds[] = {"booted", "objects", "src",  "state", "socket",
                                    "pipe",   "inotify", "fuse", "other"};

Fds daemon_fds(pid_t pid, const fs::path& booted, const fs::path& src, const fs::path& state) {
  Fds f;
  fs::path dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::error_code lec;
    std::string t = fs::read_symlink(e.path(), lec).string();
    if (lec) continue;  // closed meanwhile
    auto under = [&](const fs::path& root) {
      const std::string& r = root.native();
      return t.compare(0, r.size(), r) == 0 && (t.size() == r.size() || t[r.size()] == '/');
    };
    std::string kind = "other";
    if (under(booted))
      kind = "booted";
    else if (t.find("/store/objects/") != std::string::npos)
      kind = "objects";
    else if (under(src))
      kind = "src";
    else if (under(state))
      kind = "state";
    else if (t.starts_with("socket:"))
      kind = "socket";
    else if (t.starts_with("pipe:"))
      kind = "pipe";
    else if (t == "anon_inode:inotify")
      kind = "inotify";
    else if (t == "/dev/fuse")
      kind = "fuse";
    ++f.kinds[kind];
  }
  return f;
}

uint64_t bytes_under(const fs::path& p) {
  std::error_code ec;
  if (fs::is_regular_file(p, ec)) return fs::file_size(p, ec);
  uint64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(p, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec)) total += it->file_size(fec);
  }
  return total;
}

struct Sample {
  std::string point;
  long cycles = 0, edits = 0;
  double seconds = 0;  // since the start sample
  long rss_hot_kb = 0, rss_kb = 0;
  size_t fds_hot = 0, backing_hot = 0;  // backing: into the booted tree or the store's objects
  Fds fds;                              // after the forgets
  long threads = 0;
  uint64_t journal_bytes = 0, store_bytes = 0, history_records = 0;
  double settle_ms = 0;  // how long the forgets took to stop moving the count
};

// ---- readers --------------------------------------------------------------------------

// Readers stop at a gate while the daemon is measured: they hold nothing open then.
class Gate {
 public:
  // False when not every reader got there in time (one is stuck in a read of the view).
  bool close_and_wait(int readers) {
    std::unique_lock lock(m_);
    closed_ = true;
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return waiting_ == readers; });
  }
  void open() {
    std::lock_guard lock(m_);
    closed_ = false;
    cv_.notify_all();
  }
  // Called by a reader between passes.
  void pass() {
    std::unique_lock lock(m_);
    if (!closed_) return;
    ++waiting_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !closed_ || stop_; });
    --waiting_;
  }
  void stop() {
    std::lock_guard lock(m_);
    stop_ = true;
    closed_ = false;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool closed_ = false, stop_ = false;
  int waiting_ = 0;
};

struct ReaderStats {
  std::atomic<long> passes{0}, reads{0}, enoent_added{0}, errors{0};
  std::mutex m;
  std::vector<std::string> first_errors;
  void error(const std::string& what) {
    ++errors;
    std::lock_guard lock(m);
    if (first_errors.size() < 10) first_errors.push_back(what);
  }
};

// One pass: bin/tool is wholly v1 or v2; every data file is its booted or staged content;
// add/ files are absent (ENOENT) or whole; every hotfix file is one whole edit of itself.
void reader_pass(const fs::path& mnt, ReaderStats& st) {
  Read r = read_file(mnt / "bin/tool");
  ++st.reads;
  if (r.error != 0)
    st.error("bin/tool: " + std::string(std::strerror(r.error)));
  else if (r.data != kToolV1 && r.data != kToolV2)
    st.error("bin/tool: mixed read of " + std::to_string(r.data.size()) + " bytes");

  int err = 0;
  auto names = list_dir(mnt / "data", err);
  if (!names) {
    st.error("readdir data: " + std::string(std::strerror(err)));
  } else if (names->size() != kDataFiles) {
    st.error("readdir data: " + std::to_string(names->size()) + " names");
  }
  for (int i = 0; i < kDataFiles; ++i) {
    Read d = read_file(mnt / "data" / data_name(i));
    ++st.reads;
    if (d.error != 0)
      st.error("data/" + data_name(i) + ": " + std::strerror(d.error));
    else if (d.data != booted_data(i) && !(i < kChangedData && d.data == staged_data(i)))
      st.error("data/" + data_name(i) + ": wrong content (" + std::to_string(d.data.size()) +
               " bytes)");
  }
  for (int i = 0; i < kAddedFiles; ++i) {
    std::string name = numbered("new", i);
    Read a = read_file(mnt / "add" / name);
    ++st.reads;
    if (a.error == ENOENT)
      ++st.enoent_added;
    else if (a.error != 0)
      st.error("add/" + name + ": " + std::strerror(a.error));
    else if (a.data != content("added " + name, 3000))
      st.error("add/" + name + ": wrong content");
  }
  for (int k = 0; k < kHotfixFiles; ++k) {
    Read h = read_file(mnt / "dev" / hotfix_name(k));
    ++st.reads;
    if (h.error != 0) {
      st.error("dev/" + hotfix_name(k) + ": " + std::strerror(h.error));
      continue;
    }
    // The header names the edit; the rest must be that edit's bytes.
    long edit = -2;
    char name[32] = {0};
    if (std::sscanf(h.data.c_str(), "hotfix %31s edit %ld", name, &edit) != 2 ||
        name != hotfix_name(k) || h.data != hotfix_content(k, edit))
      st.error("dev/" + hotfix_name(k) + ": not one whole edit (" + std::to_string(h.data.size()) +
               " bytes)");
  }
  ++st.passes;
}

// ---- report ---------------------------------------------------------------------------

double mib(long kb) { return static_cast<double>(kb) / 1024.0; }

void print_samples(const std::vector<Sample>& samples) {
  std::printf("\n%-6s %7s %6s %8s | %9s %9s %7s | %7s %7s %7s |", "point", "cycles", "edits",
              "seconds", "RSS hot", "RSS MiB", "threads", "fds hot", "backing", "fds");
  for (const char* k : kFdKinds) std::printf(" %7s", k);
  std::printf(" | %10s %10s %8s %8s\n", "journal B", "store B", "history", "settle");
  for (const Sample& s : samples) {
    std::printf("%-6s %7ld %6ld %8.1f | %9.1f %9.1f %7ld | %7zu %7zu %7zu |", s.point.c_str(),
                s.cycles, s.edits, s.seconds, mib(s.rss_hot_kb), mib(s.rss_kb), s.threads,
                s.fds_hot, s.backing_hot, s.fds.total());
    for (const char* k : kFdKinds) std::printf(" %7zu", s.fds.of(k));
    std::printf(" | %10llu %10llu %8llu %6.0fms\n",
                static_cast<unsigned long long>(s.journal_bytes),
                static_cast<unsigned long long>(s.store_bytes),
                static_cast<unsigned long long>(s.history_records), s.settle_ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  long cycles = -1, edits = -1;
  int readers = 4;
  std::string csv_path = "bench_soak.csv";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--cycles" && i + 1 < argc)
      cycles = std::atol(argv[++i]);
    else if (a == "--edits" && i + 1 < argc)
      edits = std::atol(argv[++i]);
    else if (a == "--readers" && i + 1 < argc)
      readers = std::atoi(argv[++i]);
    else if (a == "--csv" && i + 1 < argc)
      csv_path = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_soak [--quick] [--cycles N] [--edits N] [--readers N] "
                   "[--csv FILE]\n");
      return 2;
    }
  }
  if (cycles < 0) cycles = quick ? 500 : 10000;
  if (edits < 0) edits = quick ? 100 : 1000;
  readers = std::max(readers, 1);
  const long cli_cycles = std::min<long>(cycles, 50);
  const auto edit_timeout = std::chrono::seconds(5);
  const std::string livefs = LIVEFS_BINARY;

  char tmpl[] = "/var/tmp/livefs-bench-soak-XXXXXX";
  must(mkdtemp(tmpl) != nullptr, "mkdtemp");
  g_setup.work = tmpl;
  const fs::path work = tmpl, booted = work / "booted", staged = work / "staged",
                 state = work / "state", mnt = work / "mnt", src = work / "src";
  g_setup.state = state;
  g_setup.mnt = mnt;
  for (const fs::path& d :
       {booted / "bin", booted / "data", staged / "bin", staged / "data", staged / "add", src, mnt})
    fs::create_directories(d);
  write_file(booted / "bin/tool", kToolV1);
  write_file(staged / "bin/tool", kToolV2);
  write_file(booted / "bin/other", "other\n");
  write_file(staged / "bin/other", "other\n");
  for (int i = 0; i < kDataFiles; ++i) {
    write_file(booted / "data" / data_name(i), booted_data(i));
    write_file(staged / "data" / data_name(i), i < kChangedData ? staged_data(i) : booted_data(i));
  }
  for (int i = 0; i < kAddedFiles; ++i)
    write_file(staged / "add" / numbered("new", i), content(numbered("added new", i), 3000));
  for (int k = 0; k < kHotfixFiles; ++k) write_file(src / hotfix_name(k), hotfix_content(k, -1));

  must(sh(livefs + " mount --booted " + quoted(booted) + " --staged " + quoted(staged) +
          " --state " + quoted(state) + " " + quoted(mnt) + " > /dev/null") == 0,
       "livefs mount");
  g_setup.mounted = true;
  must(sh(livefs + " hotfix watch --state " + quoted(state) + " " + quoted(src) +
          " --at dev > /dev/null") == 0,
       "livefs hotfix watch");
  pid_t pid = 0;
  {
    std::ifstream in(state / "daemon.pid");
    in >> pid;
  }
  must(pid > 0, "read the daemon's pid");
  must(read_file(mnt / "dev" / hotfix_name(0)).data == hotfix_content(0, -1),
       "the watched files in the view after hotfix watch");

  ReaderStats rstats;
  Gate gate;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < readers; ++t) {
    threads.emplace_back([&] {
      while (!stop) {
        gate.pass();
        if (stop) break;
        reader_pass(mnt, rstats);
      }
    });
  }

  auto status = [&]() -> json {
    auto r = livefs::cli::call_daemon(state, {{"cmd", "status"}});
    if (!r || !r->value("ok", false)) return json();
    return *r;
  };
  auto t_start = Clock::now();
  std::vector<Sample> samples;
  // The readers wait at the gate, the kernel drops unused dentries and inodes (a FORGET for
  // each of the view's), and the count is taken once it has not moved for 200 ms.
  auto measure = [&](const std::string& point, long cycles_done, long edits_done) {
    must(gate.close_and_wait(readers), "pausing the readers within 60 s");
    Sample s;
    s.point = point;
    s.cycles = cycles_done;
    s.edits = edits_done;
    s.seconds = samples.empty() ? 0.0 : seconds_since(t_start);
    s.rss_hot_kb = status_field_kb(pid, "VmRSS");
    Fds hot = daemon_fds(pid, booted, src, state);
    s.fds_hot = hot.total();
    s.backing_hot = hot.of("booted") + hot.of("objects");
    auto t0 = Clock::now();
    { std::ofstream("/proc/sys/vm/drop_caches") << "2\n"; }
    size_t last = SIZE_MAX;
    int steady = 0;
    while (steady < 10 && seconds_since(t0) < 10) {
      size_t n = daemon_fds(pid, booted, src, state).total();
      steady = n == last ? steady + 1 : 0;
      last = n;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    s.settle_ms = seconds_since(t0) * 1000;
    s.fds = daemon_fds(pid, booted, src, state);
    s.rss_kb = status_field_kb(pid, "VmRSS");
    s.threads = status_field_kb(pid, "Threads");
    s.journal_bytes = bytes_under(state / "journal");
    s.store_bytes = bytes_under(state / "store");
    json st = status();
    s.history_records = st.is_object() ? st.value("history_records", 0ull) : 0;
    gate.open();
    std::fprintf(stderr,
                 "%-5s %6ld cycles %5ld edits %7.1f s: RSS %.1f MiB (hot %.1f), fds %zu (hot %zu), "
                 "reader passes %ld, errors %ld\n",
                 point.c_str(), cycles_done, edits_done, s.seconds, mib(s.rss_kb),
                 mib(s.rss_hot_kb), s.fds.total(), s.fds_hot, rstats.passes.load(),
                 rstats.errors.load());
    samples.push_back(std::move(s));
  };

  // Readers make one pass of everything before the start is taken.
  while (rstats.passes.load() < readers) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  measure("start", 0, 0);
  t_start = Clock::now();

  const json apply = {
      {"cmd", "apply"}, {"patterns", {"bin", "data", "add"}}, {"allow_replace", true}};
  const json rollback = {{"cmd", "rollback"}};
  long control_errors = 0, edit_timeouts = 0, cycles_done = 0, edits_done = 0;
  std::string first_control_error;
  std::vector<double> edit_ms, cycle_ms;
  auto call = [&](const json& request) {
    auto r = livefs::cli::call_daemon(state, request);
    if (r && r->value("ok", false)) return true;
    ++control_errors;
    if (first_control_error.empty()) first_control_error = r ? r->dump() : r.error().message();
    return false;
  };
  auto one_edit = [&] {
    int k = static_cast<int>(edits_done % kHotfixFiles);
    long e = edits_done;
    std::string next = hotfix_content(k, e);
    fs::path tmp = src / (hotfix_name(k) + ".tmp");
    write_file(tmp, next);
    must(::rename(tmp.c_str(), (src / hotfix_name(k)).c_str()) == 0, "rename " + tmp.string());
    auto t0 = Clock::now();
    for (;;) {
      if (read_file(mnt / "dev" / hotfix_name(k)).data == next) {
        edit_ms.push_back(seconds_since(t0) * 1000);
        break;
      }
      if (Clock::now() - t0 > edit_timeout) {
        ++edit_timeouts;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    ++edits_done;
  };

  for (int tenth = 1; tenth <= 10 && control_errors == 0; ++tenth) {
    const long cycles_begin = cycles * (tenth - 1) / 10, cycles_end = cycles * tenth / 10;
    const long edits_begin = edits * (tenth - 1) / 10, edits_end = edits * tenth / 10;
    while (cycles_done < cycles_end && control_errors == 0) {
      auto t0 = Clock::now();
      if (cycles_done < cli_cycles) {
        std::string q = " --state " + quoted(state);
        if (sh(livefs + " apply" + q + " --allow-replace bin data add > /dev/null") != 0 ||
            sh(livefs + " rollback" + q + " > /dev/null") != 0) {
          ++control_errors;
          first_control_error = "livefs apply/rollback through the CLI failed";
        }
      } else if (call(apply)) {
        call(rollback);
      }
      cycle_ms.push_back(seconds_since(t0) * 1000);
      ++cycles_done;
      // Edits spread evenly over the cycles of this tenth.
      long due = edits_begin + (edits_end - edits_begin) * (cycles_done - cycles_begin) /
                                   std::max<long>(1, cycles_end - cycles_begin);
      while (edits_done < due) one_edit();
    }
    while (edits_done < edits_end) one_edit();
    measure(numbered("", tenth * 10) + "%", cycles_done, edits_done);
  }

  stop = true;
  gate.stop();
  for (auto& t : threads) t.join();
  json final_status = status();
  cleanup();

  // ---- report ---------------------------------------------------------------------------
  const Sample& first = samples.front();
  const Sample& last = samples.back();
  std::sort(edit_ms.begin(), edit_ms.end());
  std::sort(cycle_ms.begin(), cycle_ms.end());
  auto pct = [](const std::vector<double>& v, double p) {
    if (v.empty()) return 0.0;
    size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
    return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
  };
  std::printf(
      "\nSoak: %ld apply/rollback cycles (%ld through the CLI, the rest on the control socket) "
      "and %ld hotfix edits in %.1f s, %d reader threads\n",
      cycles_done, std::min(cycles_done, cli_cycles), edits_done, last.seconds, readers);
  std::printf(
      "cycle (apply + rollback): p50 %.1f ms, p99 %.1f ms; edit to visible: p50 %.1f ms, "
      "p99 %.1f ms, %ld timeouts\n",
      pct(cycle_ms, 0.5), pct(cycle_ms, 0.99), pct(edit_ms, 0.5), pct(edit_ms, 0.99),
      edit_timeouts);
  std::printf(
      "daemon: 'hot' = as found ('backing': of them, node descriptors into the booted tree or the "
      "store), the rest after the kernel forgot unused inodes; fds by what they point at\n");
  print_samples(samples);

  double rss_ratio = static_cast<double>(last.rss_kb) / static_cast<double>(first.rss_kb);
  double rss_hot_ratio =
      static_cast<double>(last.rss_hot_kb) / static_cast<double>(first.rss_hot_kb);
  double fds_ratio = static_cast<double>(last.fds.total()) /
                     static_cast<double>(std::max<size_t>(1, first.fds.total()));
  // The first tenth is the warm-up: FUSE worker threads (each with its splice pipe) are
  // started as the readers' concurrency asks, the allocator's arenas grow to their working
  // set. A leak keeps growing over the nine tenths after it.
  const Sample& warm = samples.size() > 1 ? samples[1] : first;
  double rss_slope_kb = static_cast<double>(last.rss_kb - warm.rss_kb) / 9.0;
  uint64_t records = last.history_records - std::min(last.history_records, warm.history_records);
  bool fds_flat = last.fds.total() <= warm.fds.total() + 2;
  bool rss_flat =
      static_cast<double>(last.rss_kb) <= 1.10 * static_cast<double>(warm.rss_kb) + 1024;
  std::printf(
      "\nend/start: RSS %.2f (hot %.2f), fds %.2f (%zu -> %zu; hot %zu -> %zu)\n"
      "after the warm-up (end/10%%): RSS %.2f, %.0f KiB more per tenth (%.0f bytes per journal "
      "record: %llu records more); fds %zu -> %zu\n",
      rss_ratio, rss_hot_ratio, fds_ratio, first.fds.total(), last.fds.total(), first.fds_hot,
      last.fds_hot, static_cast<double>(last.rss_kb) / static_cast<double>(warm.rss_kb),
      rss_slope_kb,
      records > 0
          ? static_cast<double>(last.rss_kb - warm.rss_kb) * 1024.0 / static_cast<double>(records)
          : 0.0,
      static_cast<unsigned long long>(records), warm.fds.total(), last.fds.total());
  std::printf(
      "readers: %ld passes, %ld reads, %ld ENOENT of add/ files (absent in a generation), "
      "%ld errors\n",
      rstats.passes.load(), rstats.reads.load(), rstats.enoent_added.load(), rstats.errors.load());
  for (const std::string& e : rstats.first_errors) std::printf("  reader error: %s\n", e.c_str());
  if (control_errors > 0)
    std::printf("control errors: %ld, first: %s\n", control_errors, first_control_error.c_str());
  if (final_status.is_object())
    std::printf("final status: live generation %llu, %llu history records\n",
                final_status.value("live_generation", 0ull),
                final_status.value("history_records", 0ull));
  std::printf(
      "goal: descriptors flat: %s; RSS flat: %s; zero reader errors: %s; all work done: "
      "%s\n",
      fds_flat ? "met" : "NOT met", rss_flat ? "met" : "NOT met",
      rstats.errors == 0 ? "met" : "NOT met",
      cycles_done == cycles && edits_done == edits && control_errors == 0 && edit_timeouts == 0
          ? "met"
          : "NOT met");

  // One row per value, as the other benchmarks write it: section, point, metric, value.
  std::ofstream csv(csv_path);
  csv << "section,point,metric,value\n";
  for (const Sample& s : samples) {
    auto row = [&](const std::string& metric, auto value) {
      csv << "sample," << s.point << ',' << metric << ',' << value << '\n';
    };
    row("cycles", s.cycles);
    row("edits", s.edits);
    row("seconds", s.seconds);
    row("rss_hot_kb", s.rss_hot_kb);
    row("rss_kb", s.rss_kb);
    row("threads", s.threads);
    row("fds_hot", s.fds_hot);
    row("backing_fds_hot", s.backing_hot);
    row("fds", s.fds.total());
    for (const char* k : kFdKinds) row(std::string("fds_") + k, s.fds.of(k));
    row("journal_bytes", s.journal_bytes);
    row("store_bytes", s.store_bytes);
    row("history_records", s.history_records);
    row("settle_ms", s.settle_ms);
  }
  auto summary = [&](const char* metric, auto value) {
    csv << "summary,all," << metric << ',' << value << '\n';
  };
  summary("rss_end_over_start", rss_ratio);
  summary("rss_end_over_warm", static_cast<double>(last.rss_kb) / static_cast<double>(warm.rss_kb));
  summary("fds_end_over_start", fds_ratio);
  summary("reader_errors", rstats.errors.load());
  summary("reader_passes", rstats.passes.load());
  summary("control_errors", control_errors);
  summary("edit_timeouts", edit_timeouts);
  summary("cycle_p50_ms", pct(cycle_ms, 0.5));
  summary("cycle_p99_ms", pct(cycle_ms, 0.99));
  summary("edit_p50_ms", pct(edit_ms, 0.5));
  summary("edit_p99_ms", pct(edit_ms, 0.99));
  std::printf("CSV: %s\n", csv_path.c_str());
  bool ok = fds_flat && rss_flat && rstats.errors == 0 && control_errors == 0 && edit_timeouts == 0;
  return ok ? 0 : 1;
}
