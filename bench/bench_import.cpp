// Import throughput: `livefs store import` of a real tree (/usr/include) and of a generated
// 200,000-file tree, cold and warm, beside reading the same files (the floor: import should
// run at the speed of reading), sha256sum of them, and `ostree commit` of the same tree —
// all in one run. Prints a table of seconds, MB/s, files/s and the ratio to reading, and
// writes CSV.
//
//   bench_import [--quick] [--csv FILE] [--tree DIR]...
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "bench/bench_util.h"

namespace fs = std::filesystem;

namespace {

using livefs::bench::drop_caches;
using livefs::bench::sh;

// prefix + n, built by append: g++ 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::to_string(n)`.
std::string numbered(const char* prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

struct TreeInfo {
  std::string label;
  fs::path path;
  uint64_t files = 0;
  uint64_t bytes = 0;
};

struct Row {
  std::string tree, cache, tool;
  double seconds;
  double mbps, files_per_s, ratio;
};

double time_command(const std::string& cmd, bool cold) {
  if (cold) drop_caches();
  auto start = std::chrono::steady_clock::now();
  int rc = sh(cmd);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (rc != 0) {
    std::fprintf(stderr, "bench_import: command failed (%d): %s\n", rc, cmd.c_str());
    std::exit(1);
  }
  return s;
}

TreeInfo measure(const std::string& label, const fs::path& path) {
  TreeInfo t{label, path};
  for (auto& e :
       fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied)) {
    std::error_code ec;
    if (e.is_regular_file(ec) && !e.is_symlink(ec)) {
      ++t.files;
      t.bytes += e.file_size();
    }
  }
  return t;
}

// A tree shaped like a /usr: many small files, some large, in a few thousand directories.
void generate_tree(const fs::path& root, size_t files) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> size_dist(8.0, 1.6);  // median ~3 KB, long tail
  std::vector<char> buf(1 << 20);
  for (auto& c : buf) c = static_cast<char>(rng());
  for (size_t i = 0; i < files; ++i) {
    fs::path dir = root / (numbered("d", i % 2000 / 100)) / (numbered("s", i % 2000));
    if (i < 2000) fs::create_directories(dir);
    size_t size = std::min<size_t>(static_cast<size_t>(size_dist(rng)), buf.size());
    std::string name = (dir / (numbered("f", i))).string();
    int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ::write(fd, buf.data() + (i % 4096), size - std::min(size, i % 4096)) < 0) {
      std::perror(name.c_str());
      std::exit(1);
    }
    ::close(fd);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string csv_path = "bench_import.csv";
  std::vector<fs::path> extra;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      quick = true;
    } else if (a == "--csv" && i + 1 < argc) {
      csv_path = argv[++i];
    } else if (a == "--tree" && i + 1 < argc) {
      extra.emplace_back(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: bench_import [--quick] [--csv FILE] [--tree DIR]...\n");
      return 2;
    }
  }
  if (sh("command -v ostree >/dev/null && command -v sha256sum >/dev/null") != 0) {
    std::fprintf(stderr, "bench_import: needs ostree and sha256sum on PATH\n");
    return 1;
  }
  char tmpl[] = "/var/tmp/livefs-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  fs::path work = tmpl;

  std::vector<TreeInfo> trees;
  if (fs::exists("/usr/include")) trees.push_back(measure("/usr/include", "/usr/include"));
  size_t gen_files = quick ? 20000 : 200000;
  std::fprintf(stderr, "generating a %zu-file tree...\n", gen_files);
  generate_tree(work / "generated", gen_files);
  trees.push_back(measure("generated-" + std::to_string(gen_files), work / "generated"));
  for (const fs::path& p : extra) trees.push_back(measure(p.string(), p));

  const std::string livefs = LIVEFS_BINARY;
  std::vector<Row> rows;
  for (const TreeInfo& t : trees) {
    std::string q = "'" + t.path.string() + "'";
    for (bool cold : {true, false}) {
      struct Tool {
        std::string name;
        std::string cmd;
      };
      fs::remove_all(work / "store");
      fs::remove_all(work / "repo");
      std::vector<Tool> tools = {
          {"read (cat)", "find " + q + " -type f -print0 | xargs -0 -r cat > /dev/null"},
          {"livefs import", livefs + " store import --store " + (work / "store").string() + " " +
                                q + " > /dev/null"},
          {"sha256sum", "find " + q + " -type f -print0 | xargs -0 -r sha256sum > /dev/null"},
          {"ostree commit", "ostree --repo=" + (work / "repo").string() + " init --mode=bare && " +
                                "ostree --repo=" + (work / "repo").string() +
                                " commit -b bench --tree=dir=" + q + " > /dev/null"},
      };
      double baseline = 0;
      for (const Tool& tool : tools) {
        // Warm runs: one untimed pass first so every tool meets the same page cache; the
        // stores written by a pass are removed so each timed import writes everything.
        if (!cold) time_command(tool.cmd, false);
        fs::remove_all(work / "store");
        fs::remove_all(work / "repo");
        double s = time_command(tool.cmd, cold);
        fs::remove_all(work / "store");
        fs::remove_all(work / "repo");
        if (tool.name == "read (cat)") baseline = s;
        rows.push_back(Row{t.label, cold ? "cold" : "warm", tool.name, s, t.bytes / 1e6 / s,
                           t.files / s, s / baseline});
      }
    }
  }

  std::printf("\n%-22s %-5s %-14s %9s %9s %10s %9s\n", "tree", "cache", "tool", "seconds", "MB/s",
              "files/s", "x read");
  for (const Row& r : rows)
    std::printf("%-22s %-5s %-14s %9.2f %9.1f %10.0f %9.2f\n", r.tree.c_str(), r.cache.c_str(),
                r.tool.c_str(), r.seconds, r.mbps, r.files_per_s, r.ratio);
  for (const TreeInfo& t : trees)
    std::printf("%s: %llu files, %.1f MB\n", t.label.c_str(),
                static_cast<unsigned long long>(t.files), t.bytes / 1e6);
  std::ofstream csv(csv_path);
  csv << "tree,cache,tool,seconds,mb_per_s,files_per_s,ratio_to_read\n";
  for (const Row& r : rows)
    csv << r.tree << ',' << r.cache << ',' << r.tool << ',' << r.seconds << ',' << r.mbps << ','
        << r.files_per_s << ',' << r.ratio << '\n';
  std::printf("CSV: %s\n", csv_path.c_str());
  fs::remove_all(work);
  return 0;
}
