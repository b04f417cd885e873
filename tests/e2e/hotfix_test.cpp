// End to end for the hotfix loop through the real `livefs` binary, a real FUSE mount and real
// inotify: a developer edits a source directory and the mount follows. Every wait polls the
// mount for the expected state up to a generous deadline; nothing asserts a duration.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <map>
#include <optional>
#include <system_error>

#include "e2e/live_support.h"
#include "inotify/inotify_test_util.h"
#include "livefs/hotfix.h"
#include "store/object_store.h"
#include "support/temp_dir.h"

namespace livefs::e2e {
namespace {

using livefs::testing::run;
using livefs::testing::write_file;

std::optional<std::string> try_read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

bool reads(const fs::path& p, const std::string& content) { return try_read(p) == content; }

std::optional<unsigned> mode_of(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return std::nullopt;
  return st.st_mode & 07777;
}

// A recursive listing with contents: "d" for a directory, "f:<content>" for a file,
// "l:<target>" for a symlink. Empty (and `ok` false) when `root` cannot be listed.
std::map<std::string, std::string> snapshot(const fs::path& root, bool* ok = nullptr) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  auto it = fs::recursive_directory_iterator(root, ec);
  if (ok != nullptr) *ok = !ec;
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::path& p = it->path();
    std::string rel = p.lexically_relative(root).string();
    auto st = it->symlink_status(ec);
    if (ec) break;
    if (fs::is_directory(st)) {
      out[rel] = "d";
    } else if (fs::is_symlink(st)) {
      out[rel] = "l:" + fs::read_symlink(p, ec).string();
    } else {
      auto c = try_read(p);
      out[rel] = c ? "f:" + *c : "unreadable";
    }
  }
  if (ec && ok != nullptr) *ok = false;
  return out;
}

std::string describe(const std::map<std::string, std::string>& m) {
  std::string s;
  for (const auto& [k, v] : m) s += "  " + k + " = " + v.substr(0, 40) + "\n";
  return s;
}

// What differs between two listings, for failure messages.
std::string difference(const std::map<std::string, std::string>& view,
                       const std::map<std::string, std::string>& source) {
  std::string s;
  for (const auto& [k, v] : view) {
    auto it = source.find(k);
    if (it == source.end()) {
      s += "  only in the view: " + k + "\n";
    } else if (it->second != v) {
      s += "  differs: " + k + " view " + v.substr(0, 30) + " source " + it->second.substr(0, 30) +
           "\n";
    }
  }
  for (const auto& [k, v] : source) {
    if (!view.contains(k)) s += "  only in the source: " + k + "\n";
  }
  return s;
}

// True when the view below `at` equals `source` (listing and contents).
bool mirrors(const fs::path& view, const fs::path& source) {
  bool ok_view = false, ok_src = false;
  auto a = snapshot(view, &ok_view);
  auto b = snapshot(source, &ok_src);
  return ok_view && ok_src && a == b;
}

// A mounted world with a source directory and a place outside it, all in one file system.
// Held (shared) for the whole life of a HotWorld, daemon included: the inotify limits
// tests lower machine-wide sysctls under the exclusive lock.
struct InotifyLimitsShared {
  livefs::inotify::testing::SysctlLock inotify_lock{/*exclusive=*/false};
};

class HotWorld : private InotifyLimitsShared, public LiveWorld {
 public:
  using InotifyLimitsShared::inotify_lock;
  fs::path src = dir / "src";
  fs::path outside = dir / "outside";

  HotWorld() {
    fs::create_directories(src);
    fs::create_directories(outside);
  }

  Ran watch(const fs::path& source, const std::string& at, const std::string& extra = "") {
    return cmd("hotfix watch", quote(source.string()) + " --at " + quote(at) + " " + extra);
  }
  Ran add(const fs::path& file, const std::string& at) {
    return cmd("hotfix add", quote(file.string()) + " --at " + quote(at));
  }
  nlohmann::json list() {
    Ran r = cmd("hotfix list", "--json");
    if (r.status != 0) return nlohmann::json();
    return nlohmann::json::parse(r.out, nullptr, false);
  }
};

// Booted tree: opt/app/{x,keep}, etc/app/{conf,other}, bin/tool.
void make_booted(HotWorld& w) {
  write_file(w.booted / "opt/app/x", "booted x\n");
  write_file(w.booted / "opt/app/keep", "booted keep\n");
  write_file(w.booted / "etc/app/conf", "booted conf\n");
  write_file(w.booted / "etc/app/other", "booted other\n");
  write_file(w.booted / "bin/tool", "tool v1\n", 0755);
}

TEST(Hotfix, EditAndReadLoop) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "x", "v0");
  ASSERT_EQ(w.mount().status, 0);
  Ran r = w.watch(w.src, "opt/app");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("watching " + w.src.string() + " at /opt/app"), std::string::npos) << r.out;
  fs::path x = w.mnt / "opt/app/x";
  EXPECT_EQ(try_read(x), "v0");
  // What is below and not shadowed stays visible.
  EXPECT_EQ(try_read(w.mnt / "opt/app/keep"), "booted keep\n");
  for (int i = 1; i <= 50; ++i) {
    std::string v = "v" + std::to_string(i) + std::string(static_cast<size_t>(i % 7) * 10, '.');
    write_file(w.src / "x", v);
    ASSERT_TRUE(eventually([&] { return reads(x, v); }))
        << "edit " << i << ": the view reads " << try_read(x).value_or("<nothing>");
  }
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  ASSERT_EQ(l["watches"].size(), 1u);
  EXPECT_EQ(l["watches"][0]["source"], w.src.string());
  EXPECT_EQ(l["watches"][0]["at"], "opt/app");
  EXPECT_EQ(l["watches"][0]["error"], "");
  EXPECT_GE(l["watches"][0]["changes"].get<int>(), 1);
  EXPECT_EQ(l["files"], nlohmann::json({"opt/app/x"}));
  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  EXPECT_TRUE(st["hotfix"].is_object());
  EXPECT_EQ(st["hotfix"]["watches"].size(), 1u);
  EXPECT_EQ(st["live_generation"], 0);
}

TEST(Hotfix, AtomicRenameSaves) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "x", "start\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "opt/app").status, 0);
  fs::path x = w.mnt / "opt/app/x";
  ASSERT_EQ(try_read(x), "start\n");
  for (int i = 1; i <= 20; ++i) {
    std::string v = "saved " + std::to_string(i) + "\n";
    write_file(w.src / ".x.swp", v);
    fs::rename(w.src / ".x.swp", w.src / "x");
    ASSERT_TRUE(eventually([&] { return reads(x, v); }))
        << "save " << i << ": the view reads " << try_read(x).value_or("<nothing>");
  }
  // The temporary file is gone from the source, so from the view too.
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "opt/app/.x.swp"); }));
  // The view is the source plus the booted file below that it does not shadow.
  std::map<std::string, std::string> expected = {{"x", "f:saved 20\n"},
                                                 {"keep", "f:booted keep\n"}};
  EXPECT_TRUE(eventually([&] { return snapshot(w.mnt / "opt/app") == expected; }))
      << describe(snapshot(w.mnt / "opt/app"));
}

TEST(Hotfix, MkdirPThenFilesAndRmRf) {
  HotWorld w;
  make_booted(w);
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "srv/site").status, 0);
  // New directories and files in them immediately: the watcher must not miss the files
  // written before it had watches on the new directories.
  std::string s = quote(w.src.string());
  ASSERT_EQ(run("mkdir -p " + s + "/a/b/c && echo one > " + s + "/a/b/c/f1 && echo two > " + s +
                "/a/b/f2 && echo three > " + s + "/a/f3 && ln -s b/c/f1 " + s + "/a/link"),
            0);
  EXPECT_TRUE(eventually([&] { return mirrors(w.mnt / "srv/site", w.src); }))
      << "view:\n"
      << describe(snapshot(w.mnt / "srv/site")) << "source:\n"
      << describe(snapshot(w.src));
  EXPECT_EQ(try_read(w.mnt / "srv/site/a/b/c/f1"), "one\n");
  EXPECT_EQ(try_read(w.mnt / "srv/site/a/link"), "one\n");
  // The new directories are followed too.
  write_file(w.src / "a/b/c/f1", "one, edited\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "srv/site/a/b/c/f1", "one, edited\n"); }));

  ASSERT_EQ(run("rm -rf " + s + "/a"), 0);
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "srv/site/a"); }));
  EXPECT_TRUE(eventually([&] { return mirrors(w.mnt / "srv/site", w.src); }))
      << describe(snapshot(w.mnt / "srv/site"));
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  EXPECT_EQ(l["files"], nlohmann::json::array());

  // Again, at once: mkdir -p and files, then rm -rf, the same names recreated.
  ASSERT_EQ(run("mkdir -p " + s + "/a/b/c && echo x > " + s + "/a/b/c/f && rm -rf " + s +
                "/a && mkdir -p " + s + "/a/b && echo y > " + s + "/a/b/c"),
            0);
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "srv/site/a/b/c", "y\n"); }))
      << describe(snapshot(w.mnt / "srv/site"));
  EXPECT_TRUE(eventually([&] { return mirrors(w.mnt / "srv/site", w.src); }))
      << describe(snapshot(w.mnt / "srv/site"));
}

TEST(Hotfix, DirectoryMovedInAndOut) {
  HotWorld w;
  make_booted(w);
  write_file(w.outside / "d/one", "one\n");
  write_file(w.outside / "d/sub/two", "two\n");
  write_file(w.outside / "d/sub/deeper/three", "three\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "opt/app").status, 0);

  fs::rename(w.outside / "d", w.src / "d");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/d/sub/deeper/three", "three\n"); }))
      << describe(snapshot(w.mnt / "opt/app"));
  EXPECT_EQ(try_read(w.mnt / "opt/app/d/one"), "one\n");
  // Edits inside the moved-in tree are followed: it is watched now.
  write_file(w.src / "d/sub/deeper/three", "three, edited\n");
  write_file(w.src / "d/sub/new", "new\n");
  EXPECT_TRUE(
      eventually([&] { return reads(w.mnt / "opt/app/d/sub/deeper/three", "three, edited\n"); }));
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/d/sub/new", "new\n"); }));

  // And out again: gone from the view, and edits out there do not come back.
  fs::rename(w.src / "d", w.outside / "d2");
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "opt/app/d"); }))
      << describe(snapshot(w.mnt / "opt/app"));
  write_file(w.outside / "d2/one", "edited outside\n");
  write_file(w.src / "marker", "after\n");  // a later event of the watch itself
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/marker", "after\n"); }));
  EXPECT_FALSE(present(w.mnt / "opt/app/d"));
  // The booted files below are untouched.
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "booted x\n");

  // Moved in once more under another name, then renamed within the source.
  fs::rename(w.outside / "d2", w.src / "e");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/e/one", "edited outside\n"); }));
  fs::rename(w.src / "e", w.src / "f");
  EXPECT_TRUE(eventually([&] {
    return !present(w.mnt / "opt/app/e") &&
           reads(w.mnt / "opt/app/f/sub/deeper/three", "three, edited\n");
  })) << describe(snapshot(w.mnt / "opt/app"));
}

// The inotify queue of the watch is created with a tiny limit, so a storm overflows it; the
// watch must recover with a full rescan and end up equal to the source.
TEST(Hotfix, EventStormOverflowsTheQueue) {
  HotWorld w;
  ASSERT_EQ(w.mount().status, 0);
  {
    w.inotify_lock.relock(/*exclusive=*/true);
    livefs::inotify::testing::SysctlOverride low("max_queued_events", 64);
    if (!low.ok()) GTEST_SKIP() << "cannot lower fs.inotify.max_queued_events";
    // The limit is taken when the inotify instance is created: by the watch command.
    Ran r = w.watch(w.src, "storm");
    low.restore();
    w.inotify_lock.relock(/*exclusive=*/false);
    ASSERT_EQ(r.status, 0) << r.out;
  }
  std::string s = quote(w.src.string());
  // Many creations, deletions, rewrites and directories, as fast as a shell goes.
  ASSERT_EQ(run("cd " + s +
                " && for i in $(seq 1 400); do echo $i > f$i; done"
                " && for i in $(seq 1 400 | awk '$1 % 3 == 0'); do rm f$i; done"
                " && for i in $(seq 1 40); do mkdir -p d$i/e && echo in$i > d$i/e/g; done"
                " && for i in $(seq 1 40 | awk '$1 % 4 == 0'); do rm -rf d$i; done"
                " && for i in $(seq 1 400 | awk '$1 % 5 == 0'); do echo again$i > f$i; done"),
            0);
  bool same = eventually([&] { return mirrors(w.mnt / "storm", w.src); });
  EXPECT_TRUE(same) << difference(snapshot(w.mnt / "storm"), snapshot(w.src))
                    << "list: " << w.list().dump() << "\ndaemon.log:\n"
                    << try_read(w.state / "daemon.log").value_or("");
  // And it keeps following after the overflow.
  write_file(w.src / "after", "after the storm\n");
  ASSERT_EQ(run("rm -f " + s + "/f1 && rm -rf " + s + "/d1"), 0);
  EXPECT_TRUE(eventually([&] { return mirrors(w.mnt / "storm", w.src); }))
      << difference(snapshot(w.mnt / "storm"), snapshot(w.src));
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  ASSERT_EQ(l["watches"].size(), 1u);
  EXPECT_EQ(l["watches"][0]["error"], "");
}

TEST(Hotfix, ShadowsABootedFileAndRevealsItAgain) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "conf", "hot conf\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(try_read(w.mnt / "etc/app/conf"), "booted conf\n");
  ASSERT_EQ(w.watch(w.src, "etc/app/").status, 0);
  EXPECT_EQ(try_read(w.mnt / "etc/app/conf"), "hot conf\n");
  EXPECT_EQ(try_read(w.mnt / "etc/app/other"), "booted other\n");

  fs::remove(w.src / "conf");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/conf", "booted conf\n"); }))
      << try_read(w.mnt / "etc/app/conf").value_or("<nothing>");
  write_file(w.src / "conf", "hot again\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/conf", "hot again\n"); }));
  // A name with nothing below it disappears when its source goes.
  write_file(w.src / "extra", "extra\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/extra", "extra\n"); }));
  fs::remove(w.src / "extra");
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "etc/app/extra"); }));
  // A directory in the source where booted has a file, and back.
  fs::remove(w.src / "conf");
  write_file(w.src / "other/inside", "inside\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/other/inside", "inside\n"); }));
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/conf", "booted conf\n"); }));
  fs::remove_all(w.src / "other");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "etc/app/other", "booted other\n"); }))
      << describe(snapshot(w.mnt / "etc/app"));
}

TEST(Hotfix, OverAnAppliedGenerationAndThroughRollback) {
  HotWorld w;
  make_booted(w);
  write_file(w.staged / "bin/tool", "tool v2\n", 0755);
  write_file(w.staged / "bin/new", "new\n", 0755);
  write_file(w.staged / "opt/app/x", "booted x\n");
  write_file(w.staged / "opt/app/keep", "booted keep\n");
  write_file(w.staged / "etc/app/conf", "booted conf\n");
  write_file(w.staged / "etc/app/other", "booted other\n");
  ASSERT_EQ(w.mount().status, 0);
  Ran a = w.cmd("apply", "--allow-replace bin/tool");
  ASSERT_EQ(a.status, 0) << a.out;
  ASSERT_EQ(try_read(w.mnt / "bin/tool"), "tool v2\n");

  write_file(w.src / "tool", "tool hot\n", 0755);
  ASSERT_EQ(w.watch(w.src, "bin").status, 0);
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool hot\n");
  // A later apply goes below the hotfix layer.
  Ran a2 = w.cmd("apply", "bin/new");
  ASSERT_EQ(a2.status, 0) << a2.out;
  EXPECT_EQ(try_read(w.mnt / "bin/new"), "new\n");
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool hot\n");
  EXPECT_EQ(w.status_json()["live_generation"], 2);

  Ran rb = w.cmd("rollback");
  ASSERT_EQ(rb.status, 0) << rb.out;
  EXPECT_FALSE(present(w.mnt / "bin/new"));
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool hot\n") << "rollback keeps the hotfix";
  auto st = w.status_json();
  EXPECT_EQ(st["live_generation"], 1);
  EXPECT_EQ(st["hotfix"]["watches"].size(), 1u);

  // Deleting the source reveals the applied generation's version, and edits still follow.
  fs::remove(w.src / "tool");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "bin/tool", "tool v2\n"); }))
      << try_read(w.mnt / "bin/tool").value_or("<nothing>");
  write_file(w.src / "tool", "tool hot 2\n", 0755);
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "bin/tool", "tool hot 2\n"); }));
  ASSERT_EQ(w.cmd("rollback").status, 0);
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool hot 2\n");
  Ran rs = w.cmd("hotfix reset");
  ASSERT_EQ(rs.status, 0) << rs.out;
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool v1\n");
}

TEST(Hotfix, ResetPrefixVersusAll) {
  HotWorld w;
  make_booted(w);
  fs::path src_a = w.dir / "src_a", src_b = w.dir / "src_b";
  write_file(src_a / "x", "a x\n");
  write_file(src_b / "y", "b y\n");
  write_file(w.outside / "single", "single\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(src_a, "opt/app").status, 0);
  ASSERT_EQ(w.watch(src_b, "opt/b").status, 0);
  ASSERT_EQ(w.add(w.outside / "single", "etc/single").status, 0);
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "a x\n");
  EXPECT_EQ(try_read(w.mnt / "opt/b/y"), "b y\n");
  EXPECT_EQ(try_read(w.mnt / "etc/single"), "single\n");

  // Watching the same source at the same place twice is refused.
  Ran twice = w.watch(src_a, "opt/app");
  EXPECT_EQ(twice.status, 1);
  EXPECT_NE(twice.out.find("already watched"), std::string::npos) << twice.out;

  // A prefix that matches nothing is refused and changes nothing.
  Ran none = w.cmd("hotfix reset", "usr");
  EXPECT_EQ(none.status, 1);
  EXPECT_NE(none.out.find("no hotfix under /usr"), std::string::npos) << none.out;
  // "opt" is not a prefix of "opt/b" by characters only: "op" matches nothing.
  EXPECT_EQ(w.cmd("hotfix reset", "op").status, 1);

  Ran ra = w.cmd("hotfix reset", "opt/app --json");
  ASSERT_EQ(ra.status, 0) << ra.out;
  auto rj = nlohmann::json::parse(ra.out, nullptr, false);
  ASSERT_TRUE(rj.is_object()) << ra.out;
  EXPECT_EQ(rj["removed_watches"], 1);
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "booted x\n");
  EXPECT_EQ(try_read(w.mnt / "opt/b/y"), "b y\n");
  EXPECT_EQ(try_read(w.mnt / "etc/single"), "single\n");
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  ASSERT_EQ(l["watches"].size(), 1u);
  EXPECT_EQ(l["watches"][0]["at"], "opt/b");
  ASSERT_EQ(l["adds"].size(), 1u);
  // The dropped watch no longer follows: an edit of its source goes nowhere, while the
  // other watch still follows (its own thread; checked after the other's edit shows).
  write_file(src_a / "x", "a x edited\n");
  write_file(src_b / "y", "b y edited\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/b/y", "b y edited\n"); }));

  Ran all = w.cmd("hotfix reset");
  ASSERT_EQ(all.status, 0) << all.out;
  EXPECT_NE(all.out.find("hotfix reset:"), std::string::npos) << all.out;
  EXPECT_FALSE(present(w.mnt / "opt/b"));
  EXPECT_FALSE(present(w.mnt / "etc/single"));
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "booted x\n");
  l = w.list();
  ASSERT_TRUE(l.is_object());
  EXPECT_EQ(l["watches"].size(), 0u);
  EXPECT_EQ(l["adds"].size(), 0u);
  EXPECT_EQ(l["files"].size(), 0u);
  Ran again = w.cmd("hotfix reset");
  EXPECT_EQ(again.status, 1);
  EXPECT_NE(again.out.find("no hotfix to reset"), std::string::npos) << again.out;
}

TEST(Hotfix, AddIsASnapshot) {
  HotWorld w;
  make_booted(w);
  write_file(w.outside / "tool", "tool added\n", 0755);
  ASSERT_EQ(w.mount().status, 0);
  Ran r = w.add(w.outside / "tool", "bin/tool");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("added /bin/tool"), std::string::npos) << r.out;
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool added\n");
  EXPECT_EQ(mode_of(w.mnt / "bin/tool"), 0755u);
  // A new path in a new directory.
  ASSERT_EQ(w.add(w.outside / "tool", "usr/local/bin/tool2").status, 0);
  EXPECT_EQ(try_read(w.mnt / "usr/local/bin/tool2"), "tool added\n");
  // The content as added: later edits of the file are not followed.
  write_file(w.outside / "tool", "tool edited later\n", 0755);
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool added\n");
  // Adding again at the same path takes the new content.
  ASSERT_EQ(w.add(w.outside / "tool", "bin/tool").status, 0);
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool edited later\n");
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  EXPECT_EQ(l["adds"].size(), 2u);
  EXPECT_EQ(l["files"], nlohmann::json({"bin/tool", "usr/local/bin/tool2"}));
  // A directory, a missing file, the root are refused.
  Ran d = w.add(w.outside, "opt/dir");
  EXPECT_EQ(d.status, 1);
  EXPECT_NE(d.out.find("a directory (use hotfix watch)"), std::string::npos) << d.out;
  Ran missing = w.add(w.outside / "nope", "bin/nope");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find((w.outside / "nope").string()), std::string::npos) << missing.out;
  Ran root = w.add(w.outside / "tool", w.mnt.string());
  EXPECT_EQ(root.status, 1);
  EXPECT_NE(root.out.find("--at names the root"), std::string::npos) << root.out;
  // Resetting the added path reveals the booted file.
  ASSERT_EQ(w.cmd("hotfix reset", "bin/tool").status, 0);
  EXPECT_EQ(try_read(w.mnt / "bin/tool"), "tool v1\n");
  EXPECT_EQ(try_read(w.mnt / "usr/local/bin/tool2"), "tool added\n");
}

TEST(Hotfix, SetIdBitsOfNonRootSourcesAreDropped) {
  HotWorld w;
  make_booted(w);
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  write_file(w.src / "suid_user", "#!/bin/sh\n", 0755);
  write_file(w.src / "sgid_user", "#!/bin/sh\n", 0755);
  write_file(w.src / "suid_root", "#!/bin/sh\n", 0755);
  ASSERT_EQ(::chown((w.src / "suid_user").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chown((w.src / "sgid_user").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((w.src / "suid_user").c_str(), 04755), 0);
  ASSERT_EQ(::chmod((w.src / "sgid_user").c_str(), 02755), 0);
  ASSERT_EQ(::chmod((w.src / "suid_root").c_str(), 04755), 0);
  ASSERT_EQ(mode_of(w.src / "suid_user"), 04755u);
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "opt/app").status, 0);
  EXPECT_EQ(mode_of(w.mnt / "opt/app/suid_user"), 0755u);
  EXPECT_EQ(mode_of(w.mnt / "opt/app/sgid_user"), 0755u);
  EXPECT_EQ(mode_of(w.mnt / "opt/app/suid_root"), 04755u) << "root's own bits are kept";

  // Through an edit (the watch's incremental path): a new file and a chmod.
  write_file(w.src / "later", "later\n", 0755);
  ASSERT_EQ(::chown((w.src / "later").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::chmod((w.src / "later").c_str(), 06755), 0);
  write_file(w.src / "marker", "m\n");
  EXPECT_TRUE(eventually(
      [&] { return reads(w.mnt / "opt/app/marker", "m\n") && present(w.mnt / "opt/app/later"); }));
  ASSERT_EQ(::chmod((w.src / "suid_user").c_str(), 04700), 0);
  EXPECT_TRUE(eventually([&] { return mode_of(w.mnt / "opt/app/suid_user") == 0700u; }))
      << std::oct << mode_of(w.mnt / "opt/app/suid_user").value_or(0);
  // The chmod of `later` came before the marker's events settled; wait for it anyway.
  EXPECT_TRUE(eventually([&] { return mode_of(w.mnt / "opt/app/later") == 0755u; }))
      << std::oct << mode_of(w.mnt / "opt/app/later").value_or(0);
  EXPECT_EQ(mode_of(w.mnt / "opt/app/later").value_or(0) & 06000, 0u);

  // And through hotfix add.
  ASSERT_EQ(w.add(w.src / "suid_user", "bin/added").status, 0);
  ASSERT_EQ(::chmod((w.src / "suid_user").c_str(), 04755), 0);
  ASSERT_EQ(w.add(w.src / "suid_user", "bin/added").status, 0);
  EXPECT_EQ(mode_of(w.mnt / "bin/added"), 0755u);
}

TEST(Hotfix, SurvivesADaemonRestart) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "x", "before the crash\n");
  write_file(w.src / "gone_meanwhile", "will go\n");
  write_file(w.outside / "single", "single\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "opt/app").status, 0);
  ASSERT_EQ(w.add(w.outside / "single", "etc/single").status, 0);
  write_file(w.src / "x", "edited before the crash\n");
  ASSERT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "edited before the crash\n"); }));

  pid_t pid = daemon_pid(w.state);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(is_livefs_process(pid));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return thread_group_gone(pid); }));
  // Edits while it is down: a change, an addition, a removal; and the added file changes
  // (an add is a snapshot: its journalled content is served, not the new one).
  write_file(w.src / "x", "edited while down\n");
  write_file(w.src / "new", "new while down\n");
  fs::remove(w.src / "gone_meanwhile");
  write_file(w.outside / "single", "single changed while down\n");

  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  EXPECT_EQ(try_read(w.mnt / "etc/single"), "single\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "edited while down\n"); }))
      << try_read(w.mnt / "opt/app/x").value_or("<nothing>");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/new", "new while down\n"); }));
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "opt/app/gone_meanwhile"); }));
  EXPECT_EQ(try_read(w.mnt / "opt/app/keep"), "booted keep\n");
  // The re-established watch follows new edits.
  write_file(w.src / "x", "edited after the restart\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "edited after the restart\n"); }));
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  ASSERT_EQ(l["watches"].size(), 1u);
  EXPECT_EQ(l["watches"][0]["source"], w.src.string());
  EXPECT_EQ(l["watches"][0]["error"], "");
  ASSERT_EQ(l["adds"].size(), 1u);
  EXPECT_EQ(l["adds"][0]["at"], "etc/single");
  auto st = w.status_json();
  ASSERT_TRUE(st.is_object());
  EXPECT_TRUE(st["journal_error"].is_null());

  // A clean umount and mount again: the same.
  ASSERT_EQ(w.cmd("umount").status, 0);
  ASSERT_EQ(w.mount().status, 0);
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "edited after the restart\n");
  EXPECT_EQ(try_read(w.mnt / "etc/single"), "single\n");
  write_file(w.src / "x", "after the remount\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "after the remount\n"); }));
  if (HasFailure())
    livefs::testing::run("cat " + quote((w.state / "daemon.log").string()) + " >&2");
}

TEST(Hotfix, SourceDirectoryRemoved) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "x", "hot x\n");
  write_file(w.src / "only_here", "only here\n");
  write_file(w.src / "sub/deep", "deep\n");
  ASSERT_EQ(w.mount().status, 0);
  ASSERT_EQ(w.watch(w.src, "opt/app").status, 0);
  ASSERT_EQ(try_read(w.mnt / "opt/app/x"), "hot x\n");

  fs::remove_all(w.src);
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "booted x\n"); }))
      << try_read(w.mnt / "opt/app/x").value_or("<nothing>");
  EXPECT_TRUE(eventually([&] { return !present(w.mnt / "opt/app/only_here"); }));
  EXPECT_FALSE(present(w.mnt / "opt/app/sub"));
  EXPECT_EQ(try_read(w.mnt / "opt/app/keep"), "booted keep\n");
  nlohmann::json l;
  EXPECT_TRUE(eventually([&] {
    l = w.list();
    return l.is_object() && l["watches"].size() == 1 && l["watches"][0]["error"] != "";
  })) << l.dump();
  std::printf("list after the source went: %s\n", l.dump().c_str());
  EXPECT_EQ(l["files"], nlohmann::json::array());
  // Recreating the directory does not bring the watch back (it was dropped).
  write_file(w.src / "x", "recreated\n");
  // The daemon keeps serving and answering.
  Ran st = w.cmd("status", "--json");
  EXPECT_EQ(st.status, 0) << st.out;
  EXPECT_EQ(try_read(w.mnt / "etc/app/conf"), "booted conf\n");
  // A new watch of the recreated directory replaces the failed one.
  Ran again = w.watch(w.src, "opt/app");
  ASSERT_EQ(again.status, 0) << again.out;
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "recreated\n");
  l = w.list();
  ASSERT_EQ(l["watches"].size(), 1u) << l.dump();
  EXPECT_EQ(l["watches"][0]["error"], "") << l.dump();
  // A live watch of the same source and place is still refused.
  EXPECT_EQ(w.watch(w.src, "opt/app").status, 1);
  write_file(w.src / "x", "recreated, edited\n");
  EXPECT_TRUE(eventually([&] { return reads(w.mnt / "opt/app/x", "recreated, edited\n"); }));
  ASSERT_EQ(w.cmd("hotfix reset").status, 0);
  EXPECT_EQ(w.list()["watches"].size(), 0u);
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "booted x\n");
}

// A relative SRC_DIR is the CLI's, not the daemon's working directory.
TEST(Hotfix, RelativeSourcePath) {
  HotWorld w;
  make_booted(w);
  write_file(w.src / "x", "relative\n");
  ASSERT_EQ(w.mount().status, 0);
  Ran r;
  r.status = run("cd " + quote(w.dir.path().string()) + " && " + LIVEFS_BINARY +
                     " hotfix watch --state " + quote(w.state.string()) + " src --at opt/app 2>&1",
                 &r.out);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(try_read(w.mnt / "opt/app/x"), "relative\n");
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  ASSERT_EQ(l["watches"].size(), 1u);
  EXPECT_EQ(l["watches"][0]["source"], w.src.string());
}

TEST(Hotfix, RefusalsAreClear) {
  HotWorld w;
  make_booted(w);
  write_file(w.outside / "file", "f\n");
  ASSERT_EQ(w.mount().status, 0);
  Ran missing = w.watch(w.dir / "no_such_dir", "opt/app");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find((w.dir / "no_such_dir").string()), std::string::npos) << missing.out;
  // (The reason itself, "No such file or directory", is not in the message: refusals
  // carry the error's context only. Reported.)
  EXPECT_NE(missing.out.find("hotfix source"), std::string::npos) << missing.out;
  Ran file = w.watch(w.outside / "file", "opt/app");
  EXPECT_EQ(file.status, 1);
  EXPECT_NE(file.out.find((w.outside / "file").string()), std::string::npos) << file.out;

  Ran nothing = w.cmd("hotfix reset");
  EXPECT_EQ(nothing.status, 1);
  EXPECT_NE(nothing.out.find("no hotfix to reset"), std::string::npos) << nothing.out;

  for (std::string bad : {"../x", "opt/../../x", "a/.."}) {
    Ran up = w.watch(w.src, bad);
    EXPECT_EQ(up.status, 1) << bad;
    EXPECT_NE(up.out.find("'..' is not allowed"), std::string::npos) << up.out;
    Ran up_add = w.add(w.outside / "file", bad);
    EXPECT_EQ(up_add.status, 1) << bad;
    EXPECT_NE(up_add.out.find("'..' is not allowed"), std::string::npos) << up_add.out;
  }
  Ran up_reset = w.cmd("hotfix reset", "../x");
  EXPECT_EQ(up_reset.status, 1);
  auto l = w.list();
  ASSERT_TRUE(l.is_object());
  EXPECT_EQ(l["watches"].size(), 0u);
  EXPECT_EQ(l["adds"].size(), 0u);

  // Without a daemon.
  ASSERT_EQ(w.cmd("umount").status, 0);
  Ran down = w.watch(w.src, "opt/app");
  EXPECT_EQ(down.status, 1);
  EXPECT_NE(down.out.find("no livefs daemon"), std::string::npos) << down.out;
}

// The hotfix set itself, with the change set an inotify burst could deliver: its owner
// swaps a watched directory (or the source itself) for a symlink to files only root may
// read, then names a path through it. Nothing is read through the symlink.
TEST(HotfixSetBeneath, ASwappedDirectoryNeverImportsWhatItPointsTo) {
  livefs::testing::TempDir tmp;
  fs::path src = tmp / "src", outside = tmp / "outside";
  write_file(src / "d/secret", "public\n");
  write_file(src / "secret", "public too\n");
  const std::string kSecret = "TOPSECRET\n";
  write_file(outside / "secret", kSecret, 0600);
  auto opened = store::ObjectStore::open(tmp / "store");
  ASSERT_TRUE(opened);
  store::ObjectStore& store = *opened;
  cli::HotfixSet set(store);
  uint64_t id;
  {
    store::ObjectStore::Batch batch(store);
    auto added = set.add_watch(src, "opt", &batch);
    ASSERT_TRUE(added) << added.error().message();
    id = *added;
    ASSERT_TRUE(batch.commit());
  }
  const store::ObjectId secret = store::ObjectId::of(std::string_view(kSecret));
  auto served = [&](const std::string& path) -> std::optional<store::ObjectId> {
    auto layer = set.build();
    if (!layer || !*layer) return std::nullopt;
    auto e = (*layer)->find(path);
    if (!e || e->type() != store::EntryType::file) return std::nullopt;
    return e->object();
  };
  ASSERT_EQ(served("opt/d/secret"), store::ObjectId::of(std::string_view("public\n")));

  // A directory of the source swapped for a symlink; the change set names a file below it.
  fs::rename(src / "d", src / "d.real");
  ASSERT_EQ(symlink(outside.c_str(), (src / "d").c_str()), 0);
  {
    store::ObjectStore::Batch batch(store);
    inotify::ChangeSet changes;
    changes.paths = {"d/secret"};
    auto changed = set.apply(id, changes, batch);
    ASSERT_TRUE(changed) << changed.error().message();
    ASSERT_TRUE(batch.commit());
  }
  EXPECT_FALSE(store.has(secret));
  EXPECT_NE(served("opt/d/secret"), secret);
  EXPECT_EQ(served("opt/d/secret"), std::nullopt) << "no longer beneath the source: gone";

  // The source directory itself swapped for a symlink: its path names another directory
  // now, which is not followed (inotify says the watched one went away).
  fs::rename(src, tmp / "src.moved");
  ASSERT_EQ(symlink(outside.c_str(), src.c_str()), 0);
  for (bool rescan : {false, true}) {
    store::ObjectStore::Batch batch(store);
    inotify::ChangeSet changes;
    changes.paths = {"secret"};
    changes.full_rescan = rescan;
    auto changed = set.apply(id, changes, batch);
    ASSERT_FALSE(changed);
    EXPECT_EQ(changed.error().code, ESTALE) << changed.error().message();
    ASSERT_TRUE(batch.commit());
    EXPECT_FALSE(store.has(secret));
    EXPECT_EQ(served("opt/secret"), store::ObjectId::of(std::string_view("public too\n")));
  }
}

}  // namespace
}  // namespace livefs::e2e
