// Serving speed and switch latency of the livefs view, beside native, kernel overlayfs and
// fuse-overlayfs in the same run.
//
// Serving: `find -printf` (stat of every entry) over a real tree (default /usr), a tar of
// /usr/include through a pipe, and one large file read sequentially — cold (caches
// dropped) and warm. The livefs row mounts the view in this process (overlay::Filesystem,
// the daemon's own code) with an empty layer: the booted tree served as it is.
// Switch latency: N changed files (1, 100, 1,000, 10,000) made visible — livefs builds the
// next layer and switches; the copy-based apply copies the changed files into a kernel
// overlayfs' tmpfs upper directory, as rpm-ostree apply-live does. Both are timed until a
// changed file reads its new content through the mount.
//
//   bench_serve [--quick] [--tree DIR] [--csv FILE]
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "bench/bench_util.h"
#include "common/log.h"
#include "overlay/filesystem.h"

namespace fs = std::filesystem;
using namespace livefs;

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

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void must(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "bench_serve: %s failed\n", what.c_str());
    std::exit(1);
  }
}

// A livefs view of `booted` mounted at `mnt` in this process.
class LiveMount {
 public:
  LiveMount(const fs::path& booted, const fs::path& mnt,
            std::shared_ptr<store::ObjectStore> store) {
    UniqueFd fd(::open(booted.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    must(fd.valid(), "open " + booted.string());
    auto view = overlay::View::create(std::move(fd), std::move(store), *store::Tree::build({}), 0);
    auto mounted = overlay::Filesystem::mount({.mountpoint = mnt}, view);
    must(mounted.has_value(), "livefs mount " + mnt.string());
    fs_ = std::move(*mounted);
    thread_ = std::thread([this] { (void)fs_->serve(); });
  }
  ~LiveMount() {
    fs_->stop();
    thread_.join();
  }
  overlay::Filesystem& fs() { return *fs_; }

 private:
  std::unique_ptr<overlay::Filesystem> fs_;
  std::thread thread_;
};

struct Peer {
  std::string name;
  fs::path root;  // where the tree is seen
};

struct Row {
  std::string workload, cache, peer;
  double seconds, ratio;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  fs::path tree = "/usr";
  std::string csv_path = "bench_serve.csv";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick")
      quick = true;
    else if (a == "--tree" && i + 1 < argc)
      tree = argv[++i];
    else if (a == "--csv" && i + 1 < argc)
      csv_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_serve [--quick] [--tree DIR] [--csv FILE]\n");
      return 2;
    }
  }
  set_log_level(spdlog::level::warn);
  char tmpl[] = "/var/tmp/livefs-bench-serve-XXXXXX";
  must(mkdtemp(tmpl) != nullptr, "mkdtemp");
  fs::path work = tmpl;
  auto store = std::make_shared<store::ObjectStore>(*store::ObjectStore::open(work / "store"));

  // The large file lives in its own tree, served by every peer the same way.
  fs::path big_tree = work / "big";
  fs::create_directories(big_tree);
  size_t big_mb = quick ? 256 : 2048;
  must(sh("dd if=/dev/urandom of=" + (big_tree / "file").string() +
          " bs=1M count=" + std::to_string(big_mb) + " status=none") == 0,
       "make the large file");

  std::vector<Row> rows;
  std::vector<fs::path> mounts;
  auto mount_peers = [&](const fs::path& src, const std::string& tag,
                         std::vector<std::unique_ptr<LiveMount>>& live) {
    std::vector<Peer> peers = {{"native", src}};
    fs::path empty = work / (tag + "-empty"), ovl = work / (tag + "-ovl");
    fs::create_directories(empty);
    fs::create_directories(ovl);
    // Two lower layers and no upper: a read-only kernel overlay.
    if (sh("mount -t overlay overlay -o lowerdir=" + src.string() + ":" + empty.string() + " " +
           ovl.string()) == 0) {
      peers.push_back({"overlayfs", ovl});
      mounts.push_back(ovl);
    }
    fs::path fo = work / (tag + "-fuse-ovl"), up = work / (tag + "-up"), wk = work / (tag + "-wk");
    fs::create_directories(fo);
    fs::create_directories(up);
    fs::create_directories(wk);
    if (sh("fuse-overlayfs -o lowerdir=" + src.string() + ",upperdir=" + up.string() +
           ",workdir=" + wk.string() + " " + fo.string()) == 0) {
      peers.push_back({"fuse-overlayfs", fo});
      mounts.push_back(fo);
    }
    fs::path lv = work / (tag + "-livefs");
    fs::create_directories(lv);
    live.push_back(std::make_unique<LiveMount>(src, lv, store));
    peers.push_back({"livefs", lv});
    return peers;
  };

  auto run_workload = [&](const std::string& name, const std::vector<Peer>& peers,
                          const std::function<std::string(const fs::path&)>& cmd) {
    // An untimed cold pass first: this machine's disk may be cached by its host, and the
    // first peer to read from it would otherwise pay for everyone.
    drop_caches();
    must(sh(cmd(peers.front().root)) == 0, "untimed cold pass");
    for (bool cold : {true, false}) {
      double native = 0;
      for (const Peer& p : peers) {
        std::string c = cmd(p.root);
        if (!cold) must(sh(c) == 0, c);  // warm-up pass
        if (cold) drop_caches();
        auto t = Clock::now();
        must(sh(c) == 0, c);
        double s = since(t);
        if (p.name == "native") native = s;
        rows.push_back({name, cold ? "cold" : "warm", p.name, s, s / native});
        std::fprintf(stderr, "%-28s %-5s %-15s %8.3f s\n", name.c_str(), cold ? "cold" : "warm",
                     p.name.c_str(), s);
      }
    }
  };

  {
    std::vector<std::unique_ptr<LiveMount>> live;
    auto peers = mount_peers(tree, "tree", live);
    run_workload("find -printf (stat all) " + tree.string(), peers, [](const fs::path& r) {
      return "find " + r.string() + " -printf '%s %m\\n' > /dev/null";
    });
    if (fs::exists(tree / "include"))
      run_workload("tar include | cat", peers, [](const fs::path& r) {
        return "tar -C " + r.string() + " -cf - include 2>/dev/null | cat > /dev/null";
      });
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    mounts.clear();
  }
  {
    std::vector<std::unique_ptr<LiveMount>> live;
    auto peers = mount_peers(big_tree, "big", live);
    run_workload("read " + std::to_string(big_mb) + " MiB file", peers, [](const fs::path& r) {
      return "dd if=" + (r / "file").string() + " of=/dev/null bs=1M status=none";
    });
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    mounts.clear();
  }

  // Switch latency.
  std::vector<int> counts =
      quick ? std::vector<int>{1, 100, 1000} : std::vector<int>{1, 100, 1000, 10000};
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
  std::vector<Row> switch_rows;
  for (int n : counts) {
    std::string probe_rel = numbered("d", (n - 1) % 100) + numbered("/f", n - 1);
    std::string expect = numbered("new ", n - 1);
    double live_s, copy_s;
    {
      fs::path lv = work / "sw-livefs";
      fs::create_directories(lv);
      LiveMount live(booted, lv, store);
      must(read_str(lv / probe_rel) == numbered("old ", n - 1), "livefs old content");
      auto t = Clock::now();
      std::vector<store::Entry> layer(staged.begin(), staged.begin() + n);
      auto next = store::Tree::build(std::move(layer));
      must(next.has_value(), "layer");
      must(live.fs().switch_to(live.fs().current()->with_layer(std::move(*next), 1)).has_value(),
           "switch");
      must(read_str(lv / probe_rel) == expect, "livefs new content");
      live_s = since(t);
    }
    {
      fs::path up = work / "sw-upper", wk = work / "sw-work", ovl = work / "sw-ovl";
      fs::create_directories(up);
      must(sh("mount -t tmpfs tmpfs " + up.string()) == 0, "tmpfs");
      fs::create_directories(up / "u");
      fs::create_directories(up / "w");
      fs::create_directories(ovl);
      must(sh("mount -t overlay overlay -o lowerdir=" + booted.string() + ",upperdir=" +
              (up / "u").string() + ",workdir=" + (up / "w").string() + " " + ovl.string()) == 0,
           "overlay");
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
      copy_s = since(t);
      must(got == expect, "overlay new content (" + got + ")");
      ::umount2(ovl.c_str(), MNT_DETACH);
      ::umount2(up.c_str(), MNT_DETACH);
    }
    switch_rows.push_back({std::to_string(n) + " files", "", "livefs switch", live_s, 1.0});
    switch_rows.push_back(
        {std::to_string(n) + " files", "", "copy into overlayfs", copy_s, copy_s / live_s});
  }

  std::printf("\nServing (ratio = time / native time; lower is better)\n");
  std::printf("%-34s %-5s %-16s %10s %8s\n", "workload", "cache", "peer", "seconds", "x native");
  for (const Row& r : rows)
    std::printf("%-34s %-5s %-16s %10.3f %8.2f\n", r.workload.c_str(), r.cache.c_str(),
                r.peer.c_str(), r.seconds, r.ratio);
  std::printf("\nSwitch latency (apply until a changed file reads new content)\n");
  std::printf("%-14s %-22s %10s %12s\n", "changed", "method", "ms", "x livefs");
  for (const Row& r : switch_rows)
    std::printf("%-14s %-22s %10.3f %12.1f\n", r.workload.c_str(), r.peer.c_str(), r.seconds * 1e3,
                r.ratio);
  std::ofstream csv(csv_path);
  csv << "workload,cache,peer,seconds,ratio\n";
  for (const Row& r : rows)
    csv << '"' << r.workload << "\"," << r.cache << ',' << r.peer << ',' << r.seconds << ','
        << r.ratio << '\n';
  for (const Row& r : switch_rows)
    csv << '"' << "switch " << r.workload << "\",," << r.peer << ',' << r.seconds << ',' << r.ratio
        << '\n';
  std::printf("CSV: %s\n", csv_path.c_str());
  fs::remove_all(work);
  return 0;
}
