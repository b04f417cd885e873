// Differential test of the change-set contract: a consumer that knows only the initial tree
// and re-stats every path of every change set (dropping the subtree of a path that is
// gone) must end with exactly the tree on disk, whatever mix of writes, saves, mkdir -p,
// rm -rf, renames and moves in and out of the tree happened meanwhile.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "inotify/inotify_test_util.h"
#include "inotify/watch_loop.h"
#include "support/temp_dir.h"

namespace livefs::inotify {
namespace {

namespace fs = std::filesystem;
using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using namespace livefs::inotify::testing;

// What the consumer knows of one path.
struct Node {
  char type;            // 'f' file, 'd' directory, 'l' symlink, '?' other
  unsigned mode;        // permission bits
  std::string content;  // file content or symlink target

  friend bool operator==(const Node&, const Node&) = default;
};
using Model = std::map<std::string, Node>;

std::optional<Node> stat_node(const fs::path& abs) {
  struct stat st;
  if (::lstat(abs.c_str(), &st) != 0) return std::nullopt;
  Node n{'?', st.st_mode & 07777u, ""};
  if (S_ISDIR(st.st_mode)) {
    n.type = 'd';
  } else if (S_ISREG(st.st_mode)) {
    n.type = 'f';
    try {
      n.content = read_file(abs);
    } catch (...) {
      return std::nullopt;  // gone between lstat and open
    }
  } else if (S_ISLNK(st.st_mode)) {
    n.type = 'l';
    std::error_code ec;
    n.content = fs::read_symlink(abs, ec).string();
  }
  return n;
}

// The tree as it is now. Tolerates entries vanishing meanwhile (the consumer scans while
// operations go on after an overflow).
Model scan(const fs::path& root) {
  Model m;
  std::vector<fs::path> todo{root};
  while (!todo.empty()) {
    fs::path dir = std::move(todo.back());
    todo.pop_back();
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      auto n = stat_node(it->path());
      if (!n) continue;
      // Lexically: the tree may change meanwhile, and fs::relative resolves on disk (it threw
      // for an entry removed under it, an abort of the whole suite).
      m[it->path().lexically_relative(root).string()] = *n;
      if (n->type == 'd') todo.push_back(it->path());
    }
  }
  return m;
}

void erase_below(Model& model, const std::string& rel) {
  const std::string prefix = rel.empty() ? "" : rel + "/";
  for (auto it = model.lower_bound(prefix); it != model.end() && it->first.starts_with(prefix);) {
    it = model.erase(it);
  }
}

// The consumer's update rule (ChangeSet's contract): re-stat each reported path; one that
// is gone or no longer a directory takes its subtree with it; one that is a directory now
// is re-listed, since it may have replaced another directory of the same name.
void apply(Model& model, const fs::path& root, const ChangeSet& set) {
  for (const std::string& rel : set.paths) {
    auto n = rel.empty() ? stat_node(root) : stat_node(root / rel);
    if (!n || n->type != 'd') {
      erase_below(model, rel);
    } else {
      // Direct children the model has that are not on disk any more.
      const std::string prefix = rel.empty() ? "" : rel + "/";
      std::vector<std::string> gone;
      for (auto it = model.lower_bound(prefix); it != model.end() && it->first.starts_with(prefix);
           ++it) {
        std::string child = it->first.substr(prefix.size());
        if (child.find('/') != std::string::npos) continue;
        struct stat st;
        if (::lstat((root / it->first).c_str(), &st) != 0) gone.push_back(it->first);
      }
      for (const auto& g : gone) {
        erase_below(model, g);
        model.erase(g);
      }
    }
    if (rel.empty()) continue;  // the root is not in the model
    if (n) {
      model[rel] = *n;
    } else {
      model.erase(rel);
    }
  }
}

class RandomOps {
 public:
  RandomOps(fs::path src, fs::path outside, unsigned seed)
      : src_(std::move(src)), outside_(std::move(outside)), rng_(seed) {}

  // One random operation. One that the file system refuses (a name that is a file now, a
  // rename onto a non-empty directory) is skipped; what it did before failing stays done.
  void step() {
    try {
      do_step();
    } catch (const fs::filesystem_error&) {
    } catch (const std::runtime_error&) {  // write_file on a path that cannot be a file
    }
  }

 private:
  void do_step() {
    switch (pick(9)) {
      case 0:
      case 1:
        write_file(src_ / random_new_path(), random_content());
        break;
      case 2: {  // an editor's or compiler's save: temp file, then rename over the target
        fs::path target = src_ / random_new_path();
        fs::create_directories(target.parent_path());
        write_file(target.parent_path() / ".save.tmp", random_content());
        fs::rename(target.parent_path() / ".save.tmp", target);
        break;
      }
      case 3: {  // mkdir -p and fill at once
        fs::path dir = src_ / random_new_path() / ("m" + std::to_string(pick(3)));
        fs::create_directories(dir);
        for (int i = 0, n = 1 + pick(3); i < n; ++i) {
          write_file(dir / ("g" + std::to_string(i)), random_content());
        }
        break;
      }
      case 4:
        if (auto p = random_existing()) fs::remove_all(*p);
        break;
      case 5:
        if (auto p = random_existing()) rename_within(*p);
        break;
      case 6:
        if (auto p = random_existing()) fs::rename(*p, outside_ / ("out" + std::to_string(n_++)));
        break;
      case 7: {  // a full subtree moved in from outside
        fs::path staged = outside_ / ("in" + std::to_string(n_++));
        write_file(staged / "a" / "x", random_content());
        write_file(staged / "y", random_content());
        fs::path target = src_ / random_new_path();
        fs::create_directories(target.parent_path());
        if (fs::exists(target)) fs::remove_all(target);
        fs::rename(staged, target);
        break;
      }
      case 8:
        if (auto p = random_existing()) {
          fs::permissions(*p, pick(2) ? fs::perms(0700) : fs::perms(0755));
        }
        break;
    }
  }

  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  std::string random_content() { return "content " + std::to_string(rng_()); }
  // A path of 1..3 components from a small name pool, so operations collide often.
  fs::path random_new_path() {
    fs::path p;
    for (int i = 0, depth = 1 + pick(3); i < depth; ++i) p /= "n" + std::to_string(pick(4));
    // Only directories may be walked through: if a prefix is a file, use it as the target.
    fs::path prefix;
    for (const auto& part : p) {
      prefix /= part;
      if (fs::exists(src_ / prefix) && !fs::is_directory(src_ / prefix)) return prefix;
    }
    if (fs::is_directory(src_ / p)) return p / ("f" + std::to_string(pick(3)));
    return p;
  }
  std::optional<fs::path> random_existing() {
    std::vector<fs::path> all;
    for (const auto& e : fs::recursive_directory_iterator(src_)) all.push_back(e.path());
    if (all.empty()) return std::nullopt;
    return all[pick(static_cast<int>(all.size()))];
  }
  void rename_within(const fs::path& from) {
    fs::path dir = src_;
    if (auto d = random_existing(); d && fs::is_directory(*d)) dir = *d;
    fs::path to = dir / ("r" + std::to_string(n_++));
    auto rel = fs::relative(dir, from);
    if (!rel.empty() && *rel.begin() != "..") return;  // into itself
    fs::rename(from, to);
  }

  fs::path src_, outside_;
  std::mt19937 rng_;
  int n_ = 0;
};

// Runs 300 random operations against a watched tree while a consumer applies the change
// sets, then compares its model with the disk. With `overflow`, the inotify instance gets
// a 64-event queue and the loop starts reading only after the first 150 operations, so the
// queue overflows for sure and the rest runs against a tree that was just rescanned.
void run_random_ops(unsigned seed, bool overflow) {
  SysctlLock lock(overflow);
  TempDir tmp("livefs-inotify-random");
  fs::path src = tmp / "src", outside = tmp / "out";
  fs::create_directories(src);
  fs::create_directories(outside);
  write_file(src / "n0/n1/f0", "initial");
  write_file(src / "n2", "initial file");

  Model model = scan(src);
  ChangeSetSink sink;
  Result<std::unique_ptr<WatchLoop>> loop = fail(0, "not opened");
  {
    std::optional<SysctlOverride> queue;
    if (overflow) {
      queue.emplace("max_queued_events", 64);
      ASSERT_TRUE(queue->ok());
    }
    loop = WatchLoop::open(src);
  }
  ASSERT_TRUE(loop) << loop.error().message();
  auto start = [&] {
    return (*loop)->start(
        [&](ChangeSet set) {
          // On the loop's thread, while the operations go on: as the daemon would. After
          // an overflow the consumer diffs the whole tree.
          if (set.full_rescan) model = scan(src);
          apply(model, src, set);
          sink.deliver(std::move(set));
        },
        [&](const Error& e) { sink.fail(e); });
  };
  if (!overflow) {
    ASSERT_TRUE(start());
  }

  if (overflow) {
    // Operations in directories made since the last read raise no events (no watch yet),
    // so make sure of the overflow in a watched one.
    for (int i = 0; i < 100; ++i) write_file(src / ("storm" + std::to_string(i)), "x");
  }
  RandomOps ops(src, outside, seed);
  for (int i = 0; i < 300; ++i) {
    if (overflow && i == 150) {
      ASSERT_TRUE(start());
    }
    ops.step();
  }
  // Events are queued in order: once this is delivered, everything before it was. Moved
  // in whole, so that its one event is the last (a write would report it at IN_CREATE,
  // before its content and the events for it are in).
  write_file(outside / ".sentinel", "end");
  fs::rename(outside / ".sentinel", src / ".sentinel");
  ASSERT_TRUE(sink.wait_for_paths({".sentinel"})) << "seed " << seed;
  (*loop)->stop();  // joins: the model is ours alone now

  EXPECT_TRUE(sink.errors().empty());
  bool full_rescan = false;
  for (const ChangeSet& set : sink.sets()) full_rescan = full_rescan || set.full_rescan;
  EXPECT_EQ(full_rescan, overflow);
  Model disk = scan(src);
  for (const auto& [path, node] : disk) {
    auto it = model.find(path);
    EXPECT_TRUE(it != model.end() && it->second == node)
        << "seed " << seed << ": " << path << " on disk, missed by the consumer";
  }
  for (const auto& [path, node] : model) {
    EXPECT_TRUE(disk.contains(path))
        << "seed " << seed << ": " << path << " in the consumer's model only";
  }
}

class RandomOpsTest : public ::testing::TestWithParam<unsigned> {};

TEST_P(RandomOpsTest, ConsumerThatReStatsEndsWithTheTreeOnDisk) {
  run_random_ops(GetParam(), false);
}

TEST_P(RandomOpsTest, SameAfterAQueueOverflow) { run_random_ops(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Seeds, RandomOpsTest, ::testing::Values(1u, 2u, 3u, 4u, 5u, 6u));

}  // namespace
}  // namespace livefs::inotify
