// Staging throughput from an OSTree repository: livefs staging a commit into its object
// store (the first stage of os/a into an empty store, then the second stage of a similar
// os/b into the same store, where the OSTree-checksum index makes unchanged files free),
// beside `ostree checkout` of the same commits (hard links, and --force-copy), cold and
// warm, in one run. Prints a table with the ratio livefs ÷ checkout per row; CSV on request.
//
//   bench_stage [--quick] [--files N] [--runs N] [--mode bare|bare-user] [--csv FILE]
//
// --runs N repeats every timed run N times and reports the median of each column (the
// machine may be shared; one run is noisy).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"
#include "ostree/repo.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace fs = std::filesystem;

namespace {

using livefs::bench::drop_caches;
using livefs::bench::sh;
namespace store = livefs::store;

using Clock = std::chrono::steady_clock;

double since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// prefix + n, built by append: g++ 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::to_string(n)`.
std::string numbered(const char* prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

fs::path g_work;  // removed on the way out, failures included

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_stage: %s\n", what.c_str());
  if (!g_work.empty()) fs::remove_all(g_work);
  std::exit(1);
}

void run_or_die(const std::string& cmd) {
  if (int rc = sh(cmd); rc != 0) die(numbered("command failed: exit ", rc) + ": " + cmd);
}

void write_or_die(const fs::path& path, const char* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + path.string() + ": " + std::strerror(errno));
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) die("write " + path.string() + ": " + std::strerror(errno));
    data += n;
    size -= static_cast<size_t>(n);
  }
  ::close(fd);
}

// A /usr-like tree: many small files with a long tail of large ones (median ~3 KB, mean
// ~10 KB), ~25 files a directory, every file's content distinct (so neither OSTree nor the
// store deduplicates), plus the two files an OSTree commit needs to be deployable.
class TreeGenerator {
 public:
  TreeGenerator(fs::path root, size_t files) : root_(std::move(root)), files_(files) {
    noise_.resize(4 << 20);
    for (auto& c : noise_) c = static_cast<char>(rng_());
  }

  void generate() {
    for (size_t i = 0; i < files_; ++i) write_file(i, 0);
    fs::create_directories(root_ / "usr/etc");
    write_text(root_ / "usr/etc/os-release", "ID=livefs-bench\nVERSION_ID=1\n");
    fs::path modules = root_ / "usr/lib/modules/6.1.0";
    fs::create_directories(modules);
    write_or_die(modules / "vmlinuz", noise_.data(), noise_.size());
  }

  // The next version: every 20th file rewritten (5%), 1% new files, a new os-release.
  // Returns {changed, added}.
  std::pair<size_t, size_t> evolve() {
    size_t changed = 0, added = 0;
    for (size_t i = 7; i < files_; i += 20, ++changed) write_file(i, 1);
    for (size_t i = files_; i < files_ + files_ / 100; ++i, ++added) write_file(i, 1);
    write_text(root_ / "usr/etc/os-release", "ID=livefs-bench\nVERSION_ID=2\n");
    return {changed, added};
  }

 private:
  static constexpr size_t kDirs = 2000;
  static constexpr const char* kTop[] = {"lib", "share", "libexec", "include"};

  void write_file(size_t i, int version) {
    fs::path dir = root_ / "usr" / kTop[i % kDirs % 4] / numbered("d", i % kDirs / 100) /
                   numbered("s", i % kDirs);
    if (i < kDirs) fs::create_directories(dir);
    size_t size = std::min(static_cast<size_t>(size_dist_(rng_)), noise_.size() - 64);
    std::string data = numbered("livefs bench file ", static_cast<long long>(i));
    data += numbered(" version ", version);
    data += '\n';
    size_t offset = rng_() % (noise_.size() - size);
    data.append(noise_.data() + offset, size);
    write_or_die(dir / numbered("f", static_cast<long long>(i)), data.data(), data.size());
  }

  static void write_text(const fs::path& path, const std::string& text) {
    write_or_die(path, text.data(), text.size());
  }

  fs::path root_;
  size_t files_;
  std::mt19937_64 rng_{42};
  std::lognormal_distribution<double> size_dist_{8.0, 1.6};
  std::vector<char> noise_;
};

struct StageRun {
  livefs::ostree::OstreeImportStats stats;
  uint64_t tree_bytes = 0;  // content bytes of the staged tree's files
  double seconds = 0;
};

// One stage as livefs does it: open the store, read the commit's usr/ into it, keep the
// manifest as a tree root. Timed as a whole.
StageRun stage(const fs::path& repo, const std::string& rev, const fs::path& store_dir) {
  auto start = Clock::now();
  auto st = store::ObjectStore::open(store_dir);
  if (!st) die("open store: " + st.error().message());
  auto result = livefs::ostree::import_commit(repo, rev, *st, {.subdir = "usr"});
  if (!result) die("stage " + rev + ": " + result.error().message());
  auto id = result->tree.save(*st);
  if (!id) die("save manifest: " + id.error().message());
  if (auto kept = st->add_tree_root(*id); !kept) die("tree root: " + kept.error().message());
  StageRun run{result->stats, 0, since(start)};
  for (size_t i = 0; i < result->tree.size(); ++i) {
    auto e = result->tree.entry(i);
    if (e.type() == store::EntryType::file) run.tree_bytes += e.size();
  }
  return run;
}

struct CheckoutRun {
  double seconds = 0;  // the ostree checkout command
  double sync = 0;     // then syncfs of its file system: staging is only done when durable
  double total() const { return seconds + sync; }
};

CheckoutRun checkout(const std::string& ostree_cmd, const std::string& rev, const fs::path& out,
                     bool copy) {
  std::string cmd =
      ostree_cmd + " checkout " + (copy ? "--force-copy " : "") + rev + " '" + out.string() + "'";
  CheckoutRun run;
  auto start = Clock::now();
  run_or_die(cmd);
  run.seconds = since(start);
  start = Clock::now();
  int fd = ::open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::syncfs(fd) != 0) die("syncfs " + out.string() + ": " + std::strerror(errno));
  ::close(fd);
  run.sync = since(start);
  return run;
}

struct Row {
  std::string stage, cache;
  StageRun livefs = {};
  CheckoutRun hardlink = {}, copy = {};
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// The median of each timed column over the runs (the counts are the same in every run).
Row median_row(const std::vector<Row>& runs) {
  Row m = runs.front();
  auto column = [&](auto field) {
    std::vector<double> v;
    for (const Row& r : runs) v.push_back(field(r));
    return median(std::move(v));
  };
  m.livefs.seconds = column([](const Row& r) { return r.livefs.seconds; });
  m.hardlink.seconds = column([](const Row& r) { return r.hardlink.seconds; });
  m.hardlink.sync = column([](const Row& r) { return r.hardlink.sync; });
  m.copy.seconds = column([](const Row& r) { return r.copy.seconds; });
  m.copy.sync = column([](const Row& r) { return r.copy.sync; });
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string csv_path;
  std::string mode = "bare";
  size_t files = 0;
  int runs = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--csv" && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (a == "--runs" && i + 1 < argc && std::atoi(argv[i + 1]) > 0) {
      runs = std::atoi(argv[++i]);
    } else if (a == "--files" && i + 1 < argc) {
      files = std::stoul(argv[++i]);
    } else if (a == "--mode" && i + 1 < argc &&
               (std::string(argv[i + 1]) == "bare" || std::string(argv[i + 1]) == "bare-user")) {
      mode = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: bench_stage [--quick] [--files N] [--runs N] "
                   "[--mode bare|bare-user] [--csv FILE]\n");
      return 2;
    }
  }
  if (files == 0) files = quick ? 5000 : 50000;
  if (sh("command -v ostree >/dev/null") != 0) die("needs ostree on PATH");

  char tmpl[] = "/var/tmp/livefs-bench-stage-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) die("mkdtemp: " + std::string(std::strerror(errno)));
  const fs::path work = tmpl;
  g_work = work;
  const fs::path repo = work / "repo";
  const fs::path tree = work / "tree";
  const fs::path out = work / "checkout";
  // A bare-user repository is checked out in user mode (-U); root checks a bare one out
  // with the recorded ownership.
  const std::string ostree = "ostree --repo='" + repo.string() + "'";
  const std::string checkout_cmd = ostree + (mode == "bare-user" ? " -U" : "");

  std::fprintf(stderr, "generating a %zu-file tree and committing it as os/a (%s)...\n", files,
               mode.c_str());
  const auto setup_start = Clock::now();
  TreeGenerator gen(tree, files);
  gen.generate();
  run_or_die(ostree + " init --mode=" + mode);
  run_or_die(ostree + " commit --branch=os/a --tree=dir='" + tree.string() + "' >/dev/null");
  auto [changed, added] = gen.evolve();
  std::fprintf(stderr, "os/b: %zu files changed, %zu added; committing...\n", changed, added);
  run_or_die(ostree + " commit --branch=os/b --tree=dir='" + tree.string() + "' >/dev/null");
  fs::remove_all(tree);
  std::fprintf(stderr, "set up in %.0f s\n", since(setup_start));

  std::vector<Row> rows;
  for (bool cold : {true, false}) {
    const std::string cache = cold ? "cold" : "warm";
    std::fprintf(stderr, "%s runs...\n", cache.c_str());
    const auto runs_start = Clock::now();
    // Cold: every timed run starts with an empty page cache. Warm: an untimed pass of the
    // same work first, so every tool meets the repository in the page cache; then the
    // writeback left by removing the pass's output is flushed before the clock starts.
    auto prepare = [&] {
      if (cold)
        drop_caches();
      else
        sync();
    };
    if (!cold) {
      stage(repo, "os/a", work / "store-warmup");
      stage(repo, "os/b", work / "store-warmup");
      fs::remove_all(work / "store-warmup");
    }
    std::vector<Row> firsts, seconds;
    for (int run = 0; run < runs; ++run) {
      Row first{"first (os/a)", cache}, second{"second (os/b)", cache};
      const fs::path store_dir = work / "store";
      fs::remove_all(store_dir);
      prepare();
      first.livefs = stage(repo, "os/a", store_dir);
      prepare();
      second.livefs = stage(repo, "os/b", store_dir);
      fs::remove_all(store_dir);

      for (Row* row : {&first, &second}) {
        const std::string rev = row == &first ? "os/a" : "os/b";
        for (bool copy : {false, true}) {
          if (!cold) {
            checkout(checkout_cmd, rev, out, copy);
            fs::remove_all(out);
          }
          prepare();
          (copy ? row->copy : row->hardlink) = checkout(checkout_cmd, rev, out, copy);
          fs::remove_all(out);
        }
      }
      if (first.livefs.stats.files != files + 2 || second.livefs.stats.files != files + 2 + added)
        die(numbered("staged ", first.livefs.stats.files) +
            numbered(" and ", second.livefs.stats.files) +
            numbered(" files, expected ", files + 2) + numbered(" and ", files + 2 + added));
      firsts.push_back(std::move(first));
      seconds.push_back(std::move(second));
    }
    std::fprintf(stderr, "%s runs took %.0f s\n", cache.c_str(), since(runs_start));
    rows.push_back(median_row(firsts));
    rows.push_back(median_row(seconds));
  }

  std::printf("\n%-14s %-5s %7s %7s %7s %8s %8s %9s %7s | %7s %6s %7s %6s | %6s %6s\n", "stage",
              "cache", "files", "read", "reused", "MB read", "livefs s", "files/s", "MB/s", "ln s",
              "+sync", "copy s", "+sync", "x ln", "x copy");
  for (const Row& r : rows) {
    const auto& s = r.livefs.stats;
    double t = r.livefs.seconds;
    std::printf(
        "%-14s %-5s %7llu %7llu %7llu %8.1f %8.2f %9.0f %7.1f | %7.2f %6.2f %7.2f %6.2f "
        "| %6.2f %6.2f\n",
        r.stage.c_str(), r.cache.c_str(), static_cast<unsigned long long>(s.files),
        static_cast<unsigned long long>(s.files_read),
        static_cast<unsigned long long>(s.files_reused), s.bytes_read / 1e6, t, s.files / t,
        r.livefs.tree_bytes / 1e6 / t, r.hardlink.seconds, r.hardlink.sync, r.copy.seconds,
        r.copy.sync, t / r.hardlink.total(), t / r.copy.total());
  }
  std::printf(
      "files/s, MB/s: the staged commit's files and content bytes per second (read or reused).\n"
      "ln: `ostree checkout` (hard links into the %s repo); copy: with --force-copy; "
      "+sync: syncfs after it.\n"
      "x ln, x copy: livefs seconds / (checkout + syncfs) seconds of the same commit.\n"
      "os/a: %zu generated files + 2, %.1f MB; os/b: %zu changed, %zu added; "
      "median of %d run(s).\n",
      mode.c_str(), files, rows.front().livefs.tree_bytes / 1e6, changed, added, runs);

  if (!csv_path.empty()) {
    std::ofstream csv(csv_path);
    csv << "stage,cache,files,files_read,files_reused,bytes_read,tree_bytes,livefs_seconds,"
           "files_per_s,mb_per_s,checkout_seconds,checkout_syncfs_seconds,copy_seconds,"
           "copy_syncfs_seconds,ratio_to_checkout,ratio_to_copy\n";
    for (const Row& r : rows) {
      const auto& s = r.livefs.stats;
      double t = r.livefs.seconds;
      csv << '"' << r.stage << "\"," << r.cache << ',' << s.files << ',' << s.files_read << ','
          << s.files_reused << ',' << s.bytes_read << ',' << r.livefs.tree_bytes << ',' << t << ','
          << s.files / t << ',' << r.livefs.tree_bytes / 1e6 / t << ',' << r.hardlink.seconds << ','
          << r.hardlink.sync << ',' << r.copy.seconds << ',' << r.copy.sync << ','
          << t / r.hardlink.total() << ',' << t / r.copy.total() << '\n';
    }
    std::printf("CSV: %s\n", csv_path.c_str());
  }
  fs::remove_all(work);
  return 0;
}
