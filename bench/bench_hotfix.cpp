// Edit-to-visible latency of the hotfix loop: the livefs daemon (the CLI, as a developer
// runs it) mirrors SRC_DIR onto bin/dev of the view; a writer changes SRC_DIR and a reader
// polls the mount until it reads the new content.
//
// Single file: N edits (1,000; --quick 100) of SRC/f, saved as editors do (write f.tmp,
// rename over f) and in place (O_TRUNC, write, close); p50/p90/p99/max of the time from the
// end of the save to the first read of the new content. Goal: p50 under 20 ms.
// Burst: a 1,000-file "rebuild" (SRC/burst/N rewritten as fast as possible), 5 rounds: the
// time from the last write until the last file reads new content, then a check that all
// 1,000 do, and how many change sets (watches[0].changes in `status --json`) and journal
// records it took. Goal: one change set, visible within 200 ms of the last write.
//
// SRC_DIR is in /var/tmp (a developer's build tree is on disk); --tmpfs puts it on a tmpfs,
// so the writer's own speed does not decide how a burst is split.
//
// --samples-csv FILE writes every single-file edit's latency (for a distribution);
// --bursts N sets the number of burst rounds (0: none).
//
//   bench_hotfix [--quick] [--edits N] [--size BYTES] [--poll-us US] [--tmpfs] [--csv FILE]
//                [--samples-csv FILE] [--bursts N]
#include <fcntl.h>
#include <sys/stat.h>
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
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_util.h"

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

// What has to be undone however the run ends: the daemon's mount and the temp dir.
struct Setup {
  fs::path work, state, tmpfs;
  bool mounted = false;
};
Setup g_setup;

void cleanup() {
  if (g_setup.mounted) {
    if (sh(std::string(LIVEFS_BINARY) + " umount --wait --state " + quoted(g_setup.state)) != 0) {
      // Removing the tree under a live mount would reach into the view: leave it all.
      std::fprintf(stderr, "bench_hotfix: umount failed; the mount is left at %s\n",
                   (g_setup.work / "mnt").c_str());
      return;
    }
    g_setup.mounted = false;
  }
  if (!g_setup.tmpfs.empty()) {
    (void)sh("umount " + quoted(g_setup.tmpfs));
    g_setup.tmpfs.clear();
  }
  if (!g_setup.work.empty()) {
    std::error_code ec;
    fs::remove_all(g_setup.work, ec);
  }
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_hotfix: %s\n", what.c_str());
  cleanup();
  std::exit(1);
}

void must(bool ok, const std::string& what) {
  if (!ok) die(what + " failed");
}

void write_all(int fd, const std::string& data, const fs::path& p) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) die("write " + p.string() + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

void write_file(const fs::path& p, const std::string& data) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + p.string() + ": " + std::strerror(errno));
  write_all(fd, data, p);
  ::close(fd);
}

// The file's content, or nullopt when it cannot be opened (not there yet).
std::optional<std::string> read_file(const fs::path& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Unique content of about `size` bytes: a header naming it, then filler.
std::string content(const std::string& tag, size_t size) {
  std::string s = tag + "\n";
  while (s.size() < size) s += "0123456789abcdef"[s.size() % 16];
  return s;
}

struct Poll {
  double ms = 0;      // from t0 to the first read of the expected content
  bool seen = false;  // false: timed out
  size_t other = 0;   // reads of content that was neither the old nor the expected one
};

// Reads `p` until it holds `expect` (or `timeout` passes), sleeping `poll_us` between reads.
Poll poll_until(const fs::path& p, const std::string& expect, const std::string& old,
                Clock::time_point t0, std::chrono::microseconds poll_us,
                std::chrono::milliseconds timeout) {
  Poll r;
  for (;;) {
    auto got = read_file(p);
    auto now = Clock::now();
    if (got && *got == expect) {
      r.ms = ms_between(t0, now);
      r.seen = true;
      return r;
    }
    if (got && *got != old) ++r.other;
    if (now - t0 > timeout) {
      r.ms = ms_between(t0, now);
      return r;
    }
    if (poll_us.count() > 0) std::this_thread::sleep_for(poll_us);
  }
}

json daemon_status(const fs::path& state) {
  std::string cmd = std::string(LIVEFS_BINARY) + " status --state " + quoted(state) + " --json";
  FILE* f = ::popen(cmd.c_str(), "r");
  must(f != nullptr, "popen " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  must(::pclose(f) == 0, cmd);
  json j = json::parse(out, nullptr, false);
  must(!j.is_discarded(), "parse the output of " + cmd);
  return j;
}

struct Counters {
  uint64_t changes = 0, records = 0, generation = 0;
};
Counters counters(const fs::path& state) {
  json s = daemon_status(state);
  Counters c;
  c.records = s.at("history_records").get<uint64_t>();
  c.generation = s.at("live_generation").get<uint64_t>();
  const json& w = s.at("hotfix").at("watches");
  must(!w.empty(), "a hotfix watch in status");
  must(w[0].value("error", "").empty(), "the hotfix watch (" + w[0].value("error", "") + ")");
  c.changes = w[0].at("changes").get<uint64_t>();
  return c;
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

struct EditResult {
  std::string name;
  std::vector<double> ms;  // sorted, visible edits only
  size_t timeouts = 0, other_reads = 0;
  uint64_t changes = 0, records = 0;
};

struct BurstRound {
  double write_ms = 0, visible_ms = 0, all_visible_ms = 0;
  size_t stale_at_visible = 0;  // files still old when the last one was new
  uint64_t changes = 0, records = 0;
};

const char* met(bool ok) { return ok ? "met" : "NOT met"; }

}  // namespace

// The daemon's account of each change set (its log line "hotfix watch N: E events, P paths;
// T ms from the last event: settle S, import I, layer L, store W, journal J, switch X").
struct DaemonSteps {
  size_t paths = 0;
  std::vector<double> ms;  // total, then the six steps
};
constexpr const char* kStepNames[] = {"total", "settle",  "import", "layer",
                                      "store", "journal", "switch"};

std::vector<DaemonSteps> read_daemon_steps(const fs::path& log) {
  std::vector<DaemonSteps> out;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    auto at = line.find("hotfix watch ");
    if (at == std::string::npos) continue;
    unsigned long long events = 0, paths = 0;
    double v[7];
    int n = std::sscanf(line.c_str() + at,
                        "hotfix watch %*u: %llu events, %llu paths; %lf ms from the last event: "
                        "settle %lf, import %lf, layer %lf, store %lf, journal %lf, switch %lf",
                        &events, &paths, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]);
    if (n != 9) continue;
    out.push_back({static_cast<size_t>(paths), std::vector<double>(v, v + 7)});
  }
  return out;
}

void print_daemon_steps(const std::vector<DaemonSteps>& steps) {
  std::printf("\nWhere the daemon spends a change set (median ms, from its log)\n");
  std::printf("%-14s %6s", "change set", "count");
  for (const char* name : kStepNames) std::printf(" %8s", name);
  std::printf("\n");
  for (bool burst : {false, true}) {
    std::vector<std::vector<double>> columns(std::size(kStepNames));
    size_t count = 0;
    for (const DaemonSteps& s : steps) {
      if ((s.paths > 100) != burst) continue;
      ++count;
      for (size_t i = 0; i < columns.size(); ++i) columns[i].push_back(s.ms[i]);
    }
    if (count == 0) continue;
    std::printf("%-14s %6zu", burst ? "burst" : "single edit", count);
    for (auto& c : columns) {
      std::sort(c.begin(), c.end());
      std::printf(" %8.1f", percentile(c, 0.5));
    }
    std::printf("\n");
  }
}

int main(int argc, char** argv) {
  bool quick = false;
  int edits = -1;
  size_t size = 4096;
  long poll_us = 100;
  bool tmpfs = false;
  std::string csv_path = "bench_hotfix.csv", samples_path;
  int burst_rounds = 5;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--edits" && i + 1 < argc)
      edits = std::atoi(argv[++i]);
    else if (a == "--size" && i + 1 < argc)
      size = static_cast<size_t>(std::atol(argv[++i]));
    else if (a == "--poll-us" && i + 1 < argc)
      poll_us = std::atol(argv[++i]);
    else if (a == "--tmpfs")
      tmpfs = true;
    else if (a == "--csv" && i + 1 < argc)
      csv_path = argv[++i];
    else if (a == "--samples-csv" && i + 1 < argc)
      samples_path = argv[++i];
    else if (a == "--bursts" && i + 1 < argc && std::atoi(argv[i + 1]) >= 0)
      burst_rounds = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr,
                   "usage: bench_hotfix [--quick] [--edits N] [--size BYTES] [--poll-us US] "
                   "[--tmpfs] [--csv FILE]\n"
                   "                    [--samples-csv FILE] [--bursts N]\n");
      return 2;
    }
  }
  if (edits <= 0) edits = quick ? 100 : 1000;
  const int burst_files = 1000;
  const auto timeout = std::chrono::milliseconds(5000);
  const auto poll = std::chrono::microseconds(poll_us);
  const std::string livefs = LIVEFS_BINARY;

  char tmpl[] = "/var/tmp/livefs-bench-hotfix-XXXXXX";
  must(mkdtemp(tmpl) != nullptr, "mkdtemp");
  g_setup.work = tmpl;
  const fs::path work = tmpl, booted = work / "booted", staged = work / "staged",
                 state = work / "state", mnt = work / "mnt", src = work / "src";
  g_setup.state = state;
  for (const char* name : {"ls", "cat", "sh"}) {
    fs::create_directories(booted / "bin");
    write_file(booted / "bin" / name, content(std::string("booted ") + name, 1024));
  }
  must(sh("cp -a " + quoted(booted) + " " + quoted(staged)) == 0, "copy booted to staged");
  fs::create_directories(state);
  fs::create_directories(mnt);
  fs::create_directories(src);
  if (tmpfs) {
    must(sh("mount -t tmpfs tmpfs " + quoted(src)) == 0, "mount a tmpfs on SRC_DIR");
    g_setup.tmpfs = src;
  }
  fs::create_directories(src / "burst");
  std::string current = content("edit initial", size);
  write_file(src / "f", current);
  std::vector<std::string> burst(burst_files);
  for (int i = 0; i < burst_files; ++i) {
    burst[i] = content(numbered("burst initial ", i), size);
    write_file(src / "burst" / numbered("", i), burst[i]);
  }

  must(sh(livefs + " mount --booted " + quoted(booted) + " --staged " + quoted(staged) +
          " --state " + quoted(state) + " " + quoted(mnt) + " > /dev/null") == 0,
       "livefs mount");
  g_setup.mounted = true;
  must(sh(livefs + " hotfix watch --state " + quoted(state) + " " + quoted(src) +
          " --at bin/dev > /dev/null") == 0,
       "livefs hotfix watch");
  const fs::path view = mnt / "bin" / "dev";
  must(read_file(view / "f") == current, "the watched file in the view after hotfix watch");
  must(read_file(view / "burst" / numbered("", burst_files - 1)) == burst.back(),
       "the burst files in the view after hotfix watch");

  // Single-file edits.
  std::vector<EditResult> results;
  for (bool by_rename : {true, false}) {
    EditResult r;
    r.name = by_rename ? "save by rename (f.tmp -> f)" : "in-place write (O_TRUNC)";
    Counters before = counters(state);
    for (int i = 0; i < edits; ++i) {
      std::string next =
          content((by_rename ? numbered("edit rename ", i) : numbered("edit inplace ", i)), size);
      if (by_rename) {
        write_file(src / "f.tmp", next);
        must(::rename((src / "f.tmp").c_str(), (src / "f").c_str()) == 0, "rename f.tmp");
      } else {
        write_file(src / "f", next);
      }
      auto t0 = Clock::now();
      Poll p = poll_until(view / "f", next, current, t0, poll, timeout);
      r.other_reads += p.other;
      if (p.seen) {
        r.ms.push_back(p.ms);
      } else {
        ++r.timeouts;
        std::fprintf(stderr, "%s: edit %d not visible after %.0f ms\n", r.name.c_str(), i, p.ms);
      }
      current = next;
    }
    // Let a trailing change set land before counting.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Counters after = counters(state);
    r.changes = after.changes - before.changes;
    r.records = after.records - before.records;
    std::sort(r.ms.begin(), r.ms.end());
    std::fprintf(stderr, "%-30s p50 %7.2f ms  p99 %7.2f ms  (%zu timeouts)\n", r.name.c_str(),
                 percentile(r.ms, 0.5), percentile(r.ms, 0.99), r.timeouts);
    results.push_back(std::move(r));
  }

  // Bursts.
  std::vector<BurstRound> rounds;
  for (int round = 0; round < burst_rounds; ++round) {
    std::vector<std::string> next(burst_files);
    for (int i = 0; i < burst_files; ++i)
      next[i] = content("burst round " + std::to_string(round) + numbered(" file ", i), size);
    Counters before = counters(state);
    BurstRound b;
    auto t_start = Clock::now();
    for (int i = 0; i < burst_files; ++i) write_file(src / "burst" / numbered("", i), next[i]);
    auto t_last = Clock::now();
    b.write_ms = ms_between(t_start, t_last);
    const fs::path last = view / "burst" / numbered("", burst_files - 1);
    Poll p = poll_until(last, next.back(), burst.back(), t_last, poll, timeout);
    if (!p.seen)
      std::fprintf(stderr, "burst %d: the last file not visible after %.0f ms\n", round, p.ms);
    b.visible_ms = p.ms;
    for (int i = 0; i < burst_files; ++i)
      if (read_file(view / "burst" / numbered("", i)) != next[i]) ++b.stale_at_visible;
    // When some were not there with the last one: wait until all are.
    b.all_visible_ms = b.visible_ms;
    if (b.stale_at_visible > 0) {
      for (int i = 0; i < burst_files; ++i) {
        Poll q =
            poll_until(view / "burst" / numbered("", i), next[i], burst[i], t_last, poll, timeout);
        if (!q.seen) std::fprintf(stderr, "burst %d: file %d never visible\n", round, i);
        b.all_visible_ms = std::max(b.all_visible_ms, q.ms);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Counters after = counters(state);
    b.changes = after.changes - before.changes;
    b.records = after.records - before.records;
    std::fprintf(stderr,
                 "burst %d: written in %.1f ms, last visible after %.1f ms, %zu stale then, "
                 "%llu change sets\n",
                 round, b.write_ms, b.visible_ms, b.stale_at_visible,
                 static_cast<unsigned long long>(b.changes));
    rounds.push_back(b);
    burst = std::move(next);
  }

  std::vector<DaemonSteps> steps = read_daemon_steps(state / "daemon.log");
  cleanup();

  // Report.
  std::printf(
      "\nSingle-file edit to visible (%d edits of %zu bytes each, SRC_DIR on %s, reader polls "
      "every %ld us)\n",
      edits, size, tmpfs ? "tmpfs" : "/var/tmp", poll_us);
  std::printf("%-30s %8s %8s %8s %8s %8s %8s %8s  %s\n", "edit", "p50 ms", "p90 ms", "p99 ms",
              "max ms", "timeouts", "changes", "records", "goal p50 < 20 ms");
  for (const EditResult& r : results) {
    std::printf("%-30s %8.2f %8.2f %8.2f %8.2f %8zu %8llu %8llu  %s\n", r.name.c_str(),
                percentile(r.ms, 0.5), percentile(r.ms, 0.9), percentile(r.ms, 0.99),
                r.ms.empty() ? 0.0 : r.ms.back(), r.timeouts,
                static_cast<unsigned long long>(r.changes),
                static_cast<unsigned long long>(r.records),
                met(!r.ms.empty() && r.timeouts == 0 && percentile(r.ms, 0.5) < 20));
    if (r.other_reads > 0)
      std::printf("  (%zu reads saw content that was neither the old nor the new one)\n",
                  r.other_reads);
  }

  double median = 0, worst = 0;
  if (!rounds.empty()) {
    std::printf("\nBurst: %d files of %zu bytes rewritten, %d rounds\n", burst_files, size,
                burst_rounds);
    std::printf("%-6s %10s %16s %8s %14s %8s %8s\n", "round", "write ms", "last->visible ms",
                "stale", "all visible ms", "changes", "records");
    std::vector<double> vis, all_vis;
    bool one_set = true;
    for (size_t i = 0; i < rounds.size(); ++i) {
      const BurstRound& b = rounds[i];
      std::printf("%-6zu %10.1f %16.1f %8zu %14.1f %8llu %8llu\n", i, b.write_ms, b.visible_ms,
                  b.stale_at_visible, b.all_visible_ms, static_cast<unsigned long long>(b.changes),
                  static_cast<unsigned long long>(b.records));
      vis.push_back(b.visible_ms);
      all_vis.push_back(b.all_visible_ms);
      one_set = one_set && b.changes == 1 && b.stale_at_visible == 0;
    }
    std::sort(vis.begin(), vis.end());
    std::sort(all_vis.begin(), all_vis.end());
    median = percentile(all_vis, 0.5);
    worst = all_vis.back();
    std::printf("median %.1f ms, max %.1f ms from the last write to all %d visible\n", median,
                worst, burst_files);
    std::printf(
        "goal: one generation (change set) per burst: %s; visible within 200 ms: %s "
        "(median), %s (max)\n",
        met(one_set), met(median <= 200), met(worst <= 200));
  }

  print_daemon_steps(steps);

  std::ofstream csv(csv_path);
  csv << "section,workload,metric,value\n";
  for (const EditResult& r : results) {
    csv << "edit,\"" << r.name << "\",p50_ms," << percentile(r.ms, 0.5) << '\n';
    csv << "edit,\"" << r.name << "\",p90_ms," << percentile(r.ms, 0.9) << '\n';
    csv << "edit,\"" << r.name << "\",p99_ms," << percentile(r.ms, 0.99) << '\n';
    csv << "edit,\"" << r.name << "\",max_ms," << (r.ms.empty() ? 0.0 : r.ms.back()) << '\n';
    csv << "edit,\"" << r.name << "\",timeouts," << r.timeouts << '\n';
    csv << "edit,\"" << r.name << "\",change_sets," << r.changes << '\n';
    csv << "edit,\"" << r.name << "\",journal_records," << r.records << '\n';
  }
  for (size_t i = 0; i < rounds.size(); ++i) {
    const BurstRound& b = rounds[i];
    std::string w = "\"burst round " + std::to_string(i) + "\"";
    csv << "burst," << w << ",write_ms," << b.write_ms << '\n';
    csv << "burst," << w << ",visible_ms," << b.visible_ms << '\n';
    csv << "burst," << w << ",stale_at_visible," << b.stale_at_visible << '\n';
    csv << "burst," << w << ",all_visible_ms," << b.all_visible_ms << '\n';
    csv << "burst," << w << ",change_sets," << b.changes << '\n';
    csv << "burst," << w << ",journal_records," << b.records << '\n';
  }
  if (!rounds.empty()) {
    csv << "burst,all,median_visible_ms," << median << '\n';
    csv << "burst,all,max_visible_ms," << worst << '\n';
  }
  std::printf("CSV: %s\n", csv_path.c_str());
  if (!samples_path.empty()) {
    // Sorted, as the percentiles needed them: a distribution, not a time series.
    std::ofstream samples(samples_path);
    samples << "workload,ms\n";
    for (const EditResult& r : results)
      for (double ms : r.ms) samples << '"' << r.name << "\"," << ms << '\n';
    std::printf("samples: %s\n", samples_path.c_str());
  }
  return 0;
}
