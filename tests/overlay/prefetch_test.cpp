// Read-ahead of cold metadata: a directory the kernel lists through a real mount has its
// subdirectories listed ahead into the View's listing cache; the queue is bounded (the
// directories queued longest ago go); stop() with work queued drops it and lets the running
// job end; unmounting while work is queued is clean and keeps no View alive; read-ahead
// across a switch fills only the View it was asked for.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "overlay/filesystem.h"
#include "overlay/prefetch.h"
#include "support/entries.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

// A one-way gate: open() once, wait() until opened or `limit` passed (a bound for a failing
// test, not a pace).
class Gate {
 public:
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::seconds limit = std::chrono::seconds(30)) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Polls `done` until true or a bound for a failing test passes.
template <class Fn>
bool wait_until(Fn&& done) {
  auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!done()) {
    if (std::chrono::steady_clock::now() > limit) return false;
    std::this_thread::yield();
  }
  return true;
}

// A before_job hook that holds the first job until `release` opens, after opening `entered`.
std::function<void(const std::string&)> hold_first_job(Gate& entered, Gate& release) {
  auto first = std::make_shared<std::atomic<bool>>(true);
  return [first, &entered, &release](const std::string&) {
    if (!first->exchange(false)) return;
    entered.open();
    release.wait();
  };
}

class PrefetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    booted_ = tmp_ / "booted";
    mnt_ = tmp_ / "mnt";
    fs::create_directories(mnt_);
  }

  void TearDown() override {
    if (fs_) {
      fs_->abort();
      if (server_.joinable()) server_.join();
      fs_.reset();
    }
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }

  // `count` subdirectories d000.. of the booted root, each with `files` files and one
  // subdirectory `s` holding one file.
  void make_tree(int count, int files) {
    for (int i = 0; i < count; ++i) {
      fs::path d = booted_ / dir_name(i);
      for (int f = 0; f < files; ++f) write_file(d / ("f" + std::to_string(f)), "x");
      write_file(d / "s/deeper", "y");
    }
  }
  static std::string dir_name(int i) {
    char name[16];
    std::snprintf(name, sizeof name, "d%03d", i);
    return name;
  }

  std::shared_ptr<const View> view(store::Tree layer = livefs::testing::build_tree({})) {
    UniqueFd fd(::open(booted_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    EXPECT_TRUE(fd);
    return View::create(std::move(fd), nullptr, std::move(layer), 0);
  }

  void mount(std::shared_ptr<const View> initial, Prefetcher::Options prefetch) {
    MountOptions options{.mountpoint = mnt_};
    options.prefetch = std::move(prefetch);
    auto mounted = Filesystem::mount(options, std::move(initial));
    ASSERT_TRUE(mounted) << mounted.error().message();
    fs_ = std::move(*mounted);
    server_ = std::thread([this] { (void)fs_->serve(); });
  }

  // Lists `dir` through the kernel (readdirplus on the mount).
  static std::set<std::string> list_mounted(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename());
    return names;
  }

  // The root's listing as the kernel gets it, for calling listed() by hand.
  static std::shared_ptr<const std::vector<DirEntry>> root_listing(const View& v) {
    auto root = v.resolve("");
    EXPECT_TRUE(root);
    auto listing = v.cached_list(*root);
    EXPECT_TRUE(listing);
    return *listing;
  }

  TempDir tmp_;
  fs::path booted_, mnt_;
  std::unique_ptr<Filesystem> fs_;
  std::thread server_;
};

TEST_F(PrefetchTest, ListingADirectoryThroughTheMountReadsItsSubdirectoriesAhead) {
  make_tree(10, 5);
  auto v = view();
  mount(v, {.threads = 2, .max_queued = 64, .depth = 1});
  EXPECT_EQ(list_mounted(mnt_).size(), 10u);
  fs_->prefetcher().wait_idle();

  // Each subdirectory was listed (into the View's cache) before anything asked for it; one
  // level only: their own subdirectories were not.
  for (int i = 0; i < 10; ++i) {
    auto listing = v->cached_listing(dir_name(i));
    ASSERT_TRUE(listing) << dir_name(i) << " was not read ahead";
    EXPECT_EQ(listing->size(), 6u);
    EXPECT_FALSE(v->cached_listing(dir_name(i) + "/s"));
  }
  EXPECT_EQ(fs_->prefetcher().stats().prefetched, 10u);
  // What was read ahead is what the kernel then gets.
  EXPECT_EQ(list_mounted(mnt_ / "d003").size(), 6u);
}

TEST_F(PrefetchTest, DepthTwoReadsTheSubdirectoriesOfSubdirectories) {
  make_tree(4, 1);
  auto v = view();
  Prefetcher p({.threads = 1, .max_queued = 64, .depth = 2});
  p.listed(v, "", *root_listing(*v));
  p.wait_idle();
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(v->cached_listing(dir_name(i))) << i;
    EXPECT_TRUE(v->cached_listing(dir_name(i) + "/s")) << i;
  }
  EXPECT_EQ(p.stats().prefetched, 8u);
}

TEST_F(PrefetchTest, TheQueueIsBoundedAndKeepsTheDirectoriesNeededFirst) {
  // More subdirectories than the bound: the first eight in listing order are taken (a walk
  // visits them first), the others are never read.
  make_tree(50, 1);
  auto v = view();
  v->set_listing_cache_limit(1 << 20);
  Gate entered, release;
  Prefetcher p(
      {.threads = 1, .max_queued = 8, .depth = 1, .before_job = hold_first_job(entered, release)});
  auto listing = root_listing(*v);
  std::vector<std::string> names;
  for (const DirEntry& e : *listing) names.push_back(e.name);
  p.listed(v, "", *listing);
  EXPECT_EQ(p.stats().queued, 8u);
  ASSERT_TRUE(entered.wait());  // the worker holds names[0]; names[1..7] wait

  // Two listings deeper in the walk: their subdirectories are needed sooner, so they go in
  // front, and the one queued longest ago (names[7]) is pushed out.
  auto listing_of = [&](const std::string& path) {
    auto dir = v->resolve(path);
    EXPECT_TRUE(dir);
    return *v->list(*dir);
  };
  p.listed(v, names[10], listing_of(names[10]));
  p.listed(v, names[11], listing_of(names[11]));
  EXPECT_EQ(p.stats().queued, 10u);
  EXPECT_EQ(p.stats().dropped, 1u);
  release.open();
  p.wait_idle();
  EXPECT_EQ(p.stats().prefetched, 9u);
  for (size_t i = 0; i < names.size(); ++i)
    EXPECT_EQ(v->cached_listing(names[i]) != nullptr, i < 7) << names[i] << " at " << i;
  EXPECT_TRUE(v->cached_listing(names[10] + "/s"));
  EXPECT_TRUE(v->cached_listing(names[11] + "/s"));

  // Listed again: the ones read ahead are found in the View's cache and not read again.
  p.listed(v, "", *listing);
  p.wait_idle();
  EXPECT_EQ(p.stats().prefetched, 10u);  // names[7] only
}

TEST_F(PrefetchTest, StopDropsQueuedWorkAndEndsTheRunningJob) {
  make_tree(50, 1);
  auto v = view();
  Gate entered, release;
  Prefetcher p(
      {.threads = 1, .max_queued = 64, .depth = 1, .before_job = hold_first_job(entered, release)});
  p.listed(v, "", *root_listing(*v));
  ASSERT_TRUE(entered.wait());  // the worker holds the first directory; 49 wait in the queue
  std::thread stopper([&] { p.stop(); });
  // stop() has dropped the queue (and now waits for the worker) before it is let go.
  EXPECT_TRUE(wait_until([&] { return p.stats().dropped >= 49; }));
  release.open();
  stopper.join();
  Prefetcher::Stats s = p.stats();
  EXPECT_EQ(s.dropped, 49u);
  EXPECT_EQ(s.prefetched, 0u);  // the running job saw the stop before reading anything
  EXPECT_FALSE(v->cached_listing(dir_name(0)));
  p.listed(v, "", *root_listing(*v));  // after stop: nothing is queued
  EXPECT_EQ(p.stats().queued, 50u);
}

TEST_F(PrefetchTest, UnmountingWithWorkQueuedIsCleanAndKeepsNoViewAlive) {
  make_tree(200, 2);
  auto v = view();
  Gate entered, release;
  mount(v, {.threads = 1,
            .max_queued = 512,
            .depth = 2,
            .before_job = hold_first_job(entered, release)});
  EXPECT_EQ(list_mounted(mnt_).size(), 200u);
  ASSERT_TRUE(entered.wait()) << "listing the root queued nothing";
  Prefetcher* p = &fs_->prefetcher();
  fs_->abort();
  server_.join();
  // The Filesystem goes while its worker is held inside a job with 199 queued behind it.
  std::thread destroyer([&] { fs_.reset(); });
  EXPECT_TRUE(wait_until([&] { return p->stats().dropped >= 199; }));
  release.open();
  destroyer.join();
  EXPECT_EQ(v.use_count(), 1);  // neither the queue nor a worker holds the View
}

TEST_F(PrefetchTest, ReadAheadAcrossASwitchFillsOnlyTheViewItWasAskedFor) {
  make_tree(3, 1);
  auto store = store::ObjectStore::open(tmp_ / "store");
  ASSERT_TRUE(store);
  auto objects = std::make_shared<store::ObjectStore>(std::move(*store));
  auto id = objects->put_bytes(std::string_view("new"));
  ASSERT_TRUE(id);
  UniqueFd fd(::open(booted_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto old_view = View::create(std::move(fd), objects, livefs::testing::build_tree({}), 0);
  Gate entered, release;
  mount(
      old_view,
      {.threads = 1, .max_queued = 64, .depth = 1, .before_job = hold_first_job(entered, release)});
  EXPECT_EQ(list_mounted(mnt_).size(), 3u);
  ASSERT_TRUE(entered.wait()) << "listing the root queued nothing";  // d000, old View

  store::Entry added;
  added.path = "d000/added";
  added.type = store::EntryType::file;
  added.mode = 0644;
  added.size = 3;
  added.object = *id;
  auto next = old_view->with_layer(livefs::testing::build_tree({added}), 1);
  bool switched = fs_->switch_to(next).has_value();
  release.open();  // the job held since before the switch now reads d000 of the old View
  ASSERT_TRUE(switched);
  fs_->prefetcher().wait_idle();

  // The old View's listing (read ahead after the switch) is the old one, and it is in the
  // old View only: the current one lists d000 afresh, with the new name.
  auto old_listing = old_view->cached_listing("d000");
  ASSERT_TRUE(old_listing);
  EXPECT_FALSE(std::ranges::any_of(*old_listing, [](auto& e) { return e.name == "added"; }));
  EXPECT_EQ(list_mounted(mnt_ / "d000"), (std::set<std::string>{"added", "f0", "s"}));
}

}  // namespace
}  // namespace livefs::overlay
