// gc beside running writers and daemons: the store lock (a batch's unrooted objects, an
// import's result before its tree is rooted), pins held by a live process (a real child,
// killed), and dangling roots that do not stop a gc. gc runs through the real CLI where
// that is what an operator would run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "store/import.h"
#include "store/object_store.h"
#include "store/tree.h"
#include "support/temp_dir.h"

namespace livefs::store {
namespace {

using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

std::string cli() { return LIVEFS_BINARY; }

// A tree of one file per content, saved (not rooted); returns its id.
ObjectId tree_of(ObjectStore::Batch& batch, const std::vector<std::string>& contents) {
  std::vector<Entry> entries;
  for (size_t i = 0; i < contents.size(); ++i) {
    auto id = batch.put_bytes(contents[i]);
    EXPECT_TRUE(id);
    Entry e;
    e.path = "f" + std::to_string(i);
    e.type = EntryType::file;
    e.size = contents[i].size();
    e.object = *id;
    entries.push_back(std::move(e));
  }
  auto tree = Tree::build(std::move(entries));
  EXPECT_TRUE(tree);
  auto id = batch.put_bytes(tree->bytes());
  EXPECT_TRUE(id);
  return *id;
}

bool has(const ObjectStore& store, std::string_view content) {
  return store.has(ObjectId::of(content));
}

nlohmann::json gc_json(const fs::path& store, const std::string& extra = "") {
  std::string out;
  int rc = run(cli() + " store gc --json --store " + store.string() + " " + extra, &out);
  EXPECT_EQ(rc, 0) << out;
  return rc == 0 ? nlohmann::json::parse(out) : nlohmann::json();
}

TEST(StoreGc, WaitsForABatchWhoseObjectsAreNotRootedYet) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId tree;
  {
    ObjectStore::Batch batch(*store);
    tree = tree_of(batch, {"published, not rooted yet"});
    ASSERT_TRUE(batch.commit());
    ASSERT_TRUE(has(*store, "published, not rooted yet"));
    // A gc now would free them: it is told to wait for the batch, and gives up.
    std::string out;
    EXPECT_EQ(run(cli() + " store gc --wait 0 --store " + (tmp / "store").string() + " 2>&1", &out),
              1);
    EXPECT_NE(out.find("Device or resource busy"), std::string::npos) << out;
    EXPECT_TRUE(has(*store, "published, not rooted yet"));
    ASSERT_TRUE(store->add_tree_root(tree));
  }
  auto rep = gc_json(tmp / "store");
  EXPECT_EQ(rep["removed"], 0);
  EXPECT_EQ(rep["kept"], 2);
  EXPECT_TRUE(has(*store, "published, not rooted yet"));
}

TEST(StoreGc, AWaitingGcGoesOnOnceTheBatchHasRootedItsTree) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto gc_store = ObjectStore::open(tmp / "store");  // as another process would
  ASSERT_TRUE(gc_store);
  std::mutex m;
  std::condition_variable cv;
  bool waiting = false;
  Result<GcReport> report = fail(EINVAL, "not run");
  std::optional<std::thread> gc;
  {
    ObjectStore::Batch batch(*store);
    ObjectId kept = tree_of(batch, {"rooted before the batch ends"});
    ObjectId dropped = tree_of(batch, {"never rooted"});
    (void)dropped;
    ASSERT_TRUE(batch.commit());
    gc.emplace([&] {
      GcOptions options;
      options.lock_wait = std::chrono::minutes(10);  // a bound, not a duration under test
      options.on_wait = [&] {
        std::lock_guard lock(m);
        waiting = true;
        cv.notify_all();
      };
      report = gc_store->gc(options);
    });
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return waiting; });
    }
    ASSERT_TRUE(store->add_tree_root(kept));
  }  // the batch lets go of the lock
  gc->join();
  ASSERT_TRUE(report) << report.error().message();
  EXPECT_TRUE(has(*store, "rooted before the batch ends"));
  EXPECT_FALSE(has(*store, "never rooted")) << "what nothing references is still freed";
  EXPECT_EQ(report->removed, 2u);  // the unrooted content and its manifest
}

TEST(StoreGc, AnImportHoldsTheLockUntilItsTreeIsRooted) {
  TempDir tmp;
  write_file(tmp / "src/a", "imported a");
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  auto imported = import_directory(tmp / "src", &*store, {});
  ASSERT_TRUE(imported) << imported.error().message();
  EXPECT_TRUE(imported->lock.held());
  EXPECT_EQ(run(cli() + " store gc --wait 0 --store " + (tmp / "store").string() + " 2>/dev/null"),
            1);
  EXPECT_TRUE(has(*store, "imported a"));
  auto id = imported->tree.save_rooted(*store);
  ASSERT_TRUE(id) << id.error().message();
  imported->lock = StoreLock();
  auto rep = gc_json(tmp / "store");
  EXPECT_EQ(rep["removed"], 0);
  EXPECT_TRUE(has(*store, "imported a"));
}

// A child process that pins `tree` in the store and then waits to be killed. Returns its
// pid once the pin is in place (-1 on failure).
pid_t spawn_pinner(const fs::path& store_dir, const ObjectId& tree) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) < 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    ::close(ready[0]);
    auto store = ObjectStore::open(store_dir);
    if (!store || !store->pin(tree)) _exit(1);
    (void)!::write(ready[1], "p", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c = 0;
  ssize_t n = ::read(ready[0], &c, 1);
  ::close(ready[0]);
  if (n != 1) {
    ::waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

TEST(StoreGc, APinnedTreeLivesAsLongAsTheProcessThatPinnedIt) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId superseded;
  {
    ObjectStore::Batch batch(*store);
    superseded = tree_of(batch, {"a superseded hotfix layer's file"});
    ASSERT_TRUE(batch.commit());
    // Rooted while it was live...
    ASSERT_TRUE(store->add_tree_root(superseded));
  }
  pid_t pinner = spawn_pinner(tmp / "store", superseded);
  ASSERT_GT(pinner, 0);
  // ...and no longer once another layer replaced it: the daemon still serves it.
  ASSERT_TRUE(store->remove_tree_root(superseded));
  auto rep = gc_json(tmp / "store");
  EXPECT_EQ(rep["pinned"], 1);
  EXPECT_EQ(rep["removed"], 0);
  EXPECT_TRUE(has(*store, "a superseded hotfix layer's file"));

  // The daemon dies. Its whole thread group is gone when waitpid reaps it (and with it the
  // lock on its pin file).
  ASSERT_EQ(kill(pinner, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pinner, &status, 0), pinner);
  ASSERT_TRUE(WIFSIGNALED(status));
  rep = gc_json(tmp / "store");
  EXPECT_EQ(rep["pinned"], 0);
  EXPECT_EQ(rep["stale_pins"], 1);
  EXPECT_EQ(rep["removed"], 2);  // the file and the manifest
  EXPECT_FALSE(has(*store, "a superseded hotfix layer's file"));
  EXPECT_TRUE(fs::is_empty(tmp / "store/pins"));
}

TEST(StoreGc, PinsAreCountedAndEndWithTheHandle) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId tree;
  {
    ObjectStore::Batch batch(*store);
    tree = tree_of(batch, {"pinned twice"});
    ASSERT_TRUE(batch.commit());
  }
  ASSERT_TRUE(store->pin(tree));
  ASSERT_TRUE(store->pin(tree));
  ASSERT_TRUE(store->unpin(tree));
  auto other = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(other);
  auto rep = other->gc({.lock_wait = std::chrono::seconds(0), .on_wait = {}});
  ASSERT_TRUE(rep) << rep.error().message();
  EXPECT_EQ(rep->pinned, 1u);
  EXPECT_EQ(rep->removed, 0u);
  ASSERT_TRUE(store->unpin(tree));
  EXPECT_FALSE(store->unpin(tree));
  rep = other->gc({.lock_wait = std::chrono::seconds(0), .on_wait = {}});
  ASSERT_TRUE(rep);
  EXPECT_EQ(rep->removed, 2u);
  // A closed handle leaves no pin file behind.
  auto pin_files = [&] {
    auto it = fs::directory_iterator(tmp / "store/pins");
    return std::distance(fs::begin(it), fs::end(it));
  };
  EXPECT_EQ(pin_files(), 1);  // `store`'s, empty now
  ASSERT_TRUE(other->pin(ObjectId::of(std::string_view("whatever"))));
  EXPECT_EQ(pin_files(), 2);
  other = fail(EINVAL, "closed");
  EXPECT_EQ(pin_files(), 1);
}

TEST(StoreGc, ADanglingRootIsReportedAndDoesNotStopGc) {
  TempDir tmp;
  auto store = ObjectStore::open(tmp / "store");
  ASSERT_TRUE(store);
  ObjectId good, corrupt;
  {
    ObjectStore::Batch batch(*store);
    good = tree_of(batch, {"kept by a good root"});
    corrupt = tree_of(batch, {"only a corrupt tree names me"});
    ASSERT_TRUE(batch.put_bytes("garbage nobody names"));
    ASSERT_TRUE(batch.commit());
    ASSERT_TRUE(store->add_tree_root(good));
    ASSERT_TRUE(store->add_tree_root(corrupt));
  }
  ObjectId missing = ObjectId::of(std::string_view("a tree that was never stored"));
  ASSERT_TRUE(store->add_tree_root(missing));
  fs::path obj = tmp / "store" / ObjectStore::relative_path(corrupt);
  ASSERT_EQ(chmod(obj.c_str(), 0644), 0);
  ASSERT_EQ(truncate(obj.c_str(), 10), 0);

  std::string out, err_file = (tmp / "err").string();
  ASSERT_EQ(
      run(cli() + " store gc --json --store " + (tmp / "store").string() + " 2>" + err_file, &out),
      0)
      << out;
  auto rep = nlohmann::json::parse(out);
  ASSERT_EQ(rep["dangling"].size(), 2u);
  std::set<std::string> dangling;
  for (const auto& d : rep["dangling"]) dangling.insert(d["tree"].get<std::string>());
  EXPECT_EQ(dangling, (std::set<std::string>{missing.hex(), corrupt.hex()}));
  std::string errors = livefs::testing::read_file(err_file);
  EXPECT_NE(errors.find("livefs: warning: gc: tree root " + missing.hex() + ": missing"),
            std::string::npos)
      << errors;
  EXPECT_NE(errors.find("tree root " + corrupt.hex()), std::string::npos) << errors;
  // Everything else as it should be: the good tree kept, the rest freed.
  EXPECT_TRUE(has(*store, "kept by a good root"));
  EXPECT_TRUE(store->has(good));
  EXPECT_FALSE(has(*store, "garbage nobody names"));
  EXPECT_FALSE(has(*store, "only a corrupt tree names me"));
  // And the next gc is no different.
  EXPECT_EQ(gc_json(tmp / "store")["dangling"].size(), 2u);
}

}  // namespace
}  // namespace livefs::store
