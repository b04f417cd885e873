// End to end in OSTree mode: a sysroot built with the `ostree` CLI (deployments A then B, a
// dpkg database under usr/), the real `livefs` binary mounted on it with --sysroot, and diff by
// package, apply --package, holders, stage --commit / --pull, a corrupt object and background
// staging of a new deployment, all through the CLI and the FUSE mount.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <set>

#include "e2e/live_support.h"
#include "e2e/ostree_support.h"
#include "store/object_store.h"
#include "support/http_server.h"
#include "support/tree_dump.h"

namespace livefs::e2e {
namespace {

using livefs::testing::free_port;
using livefs::testing::HttpServer;
using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using json = nlohmann::json;

// A dpkg status stanza for an installed package.
std::string stanza(const std::string& name, const std::string& version,
                   const std::string& depends = "") {
  return "Package: " + name + "\nStatus: install ok installed\nVersion: " + version +
         "\nArchitecture: amd64\n" + (depends.empty() ? "" : "Depends: " + depends + "\n") + "\n";
}

// Commit A: foo 1.0 (bin/foo, share/foo/data, share/foo/old), bar 2.0, kernel 6.1.0.
void make_tree_a(const fs::path& root) {
  write_file(root / "usr/etc/os-release", "ID=livefs-test\nVERSION_ID=1\n");
  write_file(root / "usr/etc/xyz.conf", "setting = a\n");
  write_file(root / "usr/lib/modules/6.1.0/vmlinuz", "kernel 1\n");
  write_file(root / "usr/bin/foo", "foo 1.0\n", 0755);
  write_file(root / "usr/share/foo/data", "foo data 1.0\n");
  write_file(root / "usr/share/foo/old", "dropped in 1.1\n");
  write_file(root / "usr/bin/bar", "bar 2.0\n", 0755);
  write_file(root / "usr/lib/libbar.so.2", "libbar 2\n");
  write_file(root / "usr/var/lib/dpkg/status", stanza("foo", "1.0") + stanza("bar", "2.0"));
  write_file(root / "usr/var/lib/dpkg/info/foo.list",
             "/usr/bin/foo\n/usr/share/foo/data\n/usr/share/foo/old\n");
  write_file(root / "usr/var/lib/dpkg/info/bar.list", "/usr/bin/bar\n/usr/lib/libbar.so.2\n");
}

// Commit B: foo 1.1 (changed files, share/foo/old gone), baz 0.1 new, bar unchanged, and
// xyz.conf changed (so the deployments' /etc differ).
void make_tree_b(const fs::path& root) {
  make_tree_a(root);
  write_file(root / "usr/etc/xyz.conf", "setting = b\n");
  write_file(root / "usr/bin/foo", "foo 1.1, rebuilt\n", 0755);
  write_file(root / "usr/share/foo/data", "foo data 1.1\n");
  fs::remove(root / "usr/share/foo/old");
  write_file(root / "usr/bin/baz", "baz 0.1\n", 0755);
  write_file(root / "usr/var/lib/dpkg/status", stanza("foo", "1.1", "bar (>= 2.0)") +
                                                   stanza("bar", "2.0") +
                                                   stanza("baz", "0.1", "foo (>= 1.1)"));
  write_file(root / "usr/var/lib/dpkg/info/foo.list", "/usr/bin/foo\n/usr/share/foo/data\n");
  write_file(root / "usr/var/lib/dpkg/info/baz.list", "/usr/bin/baz\n");
}

// The suite's sysroot: A (foo 1.0, bar 2.0) deployed, then B (foo 1.1, baz 0.1).
struct Sysroot : OstreeSysroot {
  Sysroot() : OstreeSysroot("livefs-ostree-e2e", make_tree_a, make_tree_b) {}
};

// Paths by change kind, from a diff's or apply's list.
std::map<std::string, std::string> kinds_of(const json& changes) {
  std::map<std::string, std::string> out;
  for (const auto& c : changes) out[c.at("path")] = c.at("kind");
  return out;
}

// One sysroot (A and B deployed) for the suite; tests that change the deployments build
// their own.
class OstreeLive : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { shared_ = new Sysroot(); }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
  }
  static Sysroot* shared_;
};
Sysroot* OstreeLive::shared_ = nullptr;

TEST_F(OstreeLive, DiffGroupsByPackageAndListsConfigChanges) {
  Sysroot& s = *shared_;
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  ASSERT_TRUE(has_mount(m.mnt));
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");
  EXPECT_FALSE(present(m.mnt / "bin/baz"));

  json d = m.cmd_json("diff", "--by-package");
  auto kinds = kinds_of(d["changes"]);
  EXPECT_EQ(kinds["bin/foo"], "modified");
  EXPECT_EQ(kinds["share/foo/data"], "modified");
  EXPECT_EQ(kinds["share/foo/old"], "removed");
  EXPECT_EQ(kinds["bin/baz"], "added");
  EXPECT_FALSE(kinds.contains("bin/bar"));
  EXPECT_FALSE(kinds.contains("lib/libbar.so.2"));

  std::map<std::string, json> groups;
  for (const auto& g : d["packages"]) groups[g["package"]] = g;
  ASSERT_TRUE(groups.contains("foo")) << d.dump(2);
  EXPECT_EQ(groups["foo"]["old_version"], "1.0");
  EXPECT_EQ(groups["foo"]["new_version"], "1.1");
  EXPECT_EQ(groups["foo"]["paths"], json({"bin/foo", "share/foo/data", "share/foo/old"}));
  ASSERT_TRUE(groups.contains("baz")) << d.dump(2);
  EXPECT_EQ(groups["baz"]["old_version"], "");
  EXPECT_EQ(groups["baz"]["new_version"], "0.1");
  EXPECT_EQ(groups["baz"]["paths"], json({"bin/baz"}));
  // baz 0.1 needs foo >= 1.1, which is pending too.
  EXPECT_EQ(groups["baz"]["goes_with"], json({"foo"})) << d.dump(2);
  EXPECT_FALSE(groups["foo"].contains("goes_with")) << d.dump(2);
  EXPECT_FALSE(groups.contains("bar"));

  // The deployments' /etc (usr/etc merged by `ostree admin deploy`) differ in xyz.conf.
  auto config = kinds_of(d["config_changes"]);
  EXPECT_EQ(config["etc/xyz.conf"], "modified") << d["config_changes"].dump();
  EXPECT_NE(d["config_note"].get<std::string>().find("/etc"), std::string::npos);

  Ran text = m.cmd("diff", "--by-package");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("foo: 1.0 -> 1.1"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("needs, to go live: foo"), std::string::npos) << text.out;
}

TEST_F(OstreeLive, ApplyPackageChecksWhatThePackageNeeds) {
  Sysroot& s = *shared_;
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  // baz 0.1 needs foo (>= 1.1); live has foo 1.0.
  Ran refused = m.cmd("apply", "--package baz");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("baz 0.1 needs foo (>= 1.1); live has 1.0"), std::string::npos)
      << refused.out;
  EXPECT_NE(refused.out.find("--package foo, or use --with-deps"), std::string::npos)
      << refused.out;
  EXPECT_FALSE(present(m.mnt / "bin/baz"));
  EXPECT_EQ(m.status()["live_generation"], 0);

  // A dry run shows the plan; nothing changes.
  json plan = m.cmd_json("apply", "--package baz --with-deps --allow-replace --dry-run");
  ASSERT_EQ(plan["added_packages"].size(), 1u) << plan.dump(2);
  EXPECT_EQ(plan["added_packages"][0]["package"], "foo");
  EXPECT_EQ(plan["added_packages"][0]["because"], "baz 0.1 needs foo (>= 1.1)");
  EXPECT_EQ(kinds_of(plan["applied"]).size(), 4u) << plan.dump(2);
  EXPECT_FALSE(present(m.mnt / "bin/baz"));

  Ran with = m.cmd("apply", "--package baz --with-deps --allow-replace");
  ASSERT_EQ(with.status, 0) << with.out;
  EXPECT_NE(with.out.find("added package foo: baz 0.1 needs foo (>= 1.1)"), std::string::npos)
      << with.out;
  EXPECT_EQ(read_file(m.mnt / "bin/baz"), "baz 0.1\n");
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.1, rebuilt\n");

  // Once foo is live, baz alone is fine; and --ignore-deps applies against the check.
  ASSERT_EQ(m.cmd("reset").status, 0);
  json foo = m.cmd_json("apply", "--package foo --allow-replace");
  EXPECT_TRUE(foo.contains("generation")) << foo.dump(2);
  json baz = m.cmd_json("apply", "--package baz");
  EXPECT_TRUE(baz.contains("generation")) << baz.dump(2);
  EXPECT_FALSE(baz.contains("added_packages"));
  EXPECT_EQ(kinds_of(baz["applied"]), (std::map<std::string, std::string>{{"bin/baz", "added"}}));
  ASSERT_EQ(m.cmd("reset").status, 0);
  json forced = m.cmd_json("apply", "--package baz --ignore-deps");
  EXPECT_EQ(forced["dependency_problems"], json({"baz 0.1 needs foo (>= 1.1); live has 1.0"}))
      << forced.dump(2);
  EXPECT_EQ(read_file(m.mnt / "bin/baz"), "baz 0.1\n");
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");
}

TEST_F(OstreeLive, ApplyPackagesRollbackResetAndStatusNamesTheCommits) {
  Sysroot& s = *shared_;
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  json st = m.status();
  EXPECT_EQ(st["booted_origin"]["checksum"], s.commit_a);
  EXPECT_EQ(st["booted_origin"]["version"], "1.0");
  EXPECT_EQ(st["staged_origin"]["checksum"], s.commit_b);
  EXPECT_EQ(st["staged_origin"]["version"], "2.0");
  EXPECT_NE(st["booted"].get<std::string>().find(s.commit_a.substr(0, 12)), std::string::npos)
      << st["booted"];
  EXPECT_NE(st["staged"].get<std::string>().find(s.commit_b.substr(0, 12)), std::string::npos)
      << st["staged"];
  EXPECT_EQ(st["live_generation"], 0);

  Ran unknown = m.cmd("apply", "--package nosuch");
  EXPECT_EQ(unknown.status, 1) << unknown.out;
  EXPECT_NE(unknown.out.find("unknown package"), std::string::npos) << unknown.out;
  EXPECT_NE(unknown.out.find("nosuch"), std::string::npos) << unknown.out;

  Ran needs_replace = m.cmd("apply", "--package foo");
  EXPECT_EQ(needs_replace.status, 1) << needs_replace.out;
  EXPECT_NE(needs_replace.out.find("--allow-replace"), std::string::npos) << needs_replace.out;
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");

  json foo = m.cmd_json("apply", "--package foo --allow-replace");
  EXPECT_EQ(foo["generation"], 1);
  auto applied = kinds_of(foo["applied"]);
  EXPECT_EQ(applied.size(), 3u) << foo["applied"].dump();
  EXPECT_EQ(applied["share/foo/old"], "removed");
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.1, rebuilt\n");
  EXPECT_EQ(read_file(m.mnt / "share/foo/data"), "foo data 1.1\n");
  EXPECT_FALSE(present(m.mnt / "share/foo/old"));
  EXPECT_EQ(read_file(m.mnt / "bin/bar"), "bar 2.0\n");
  EXPECT_EQ(read_file(m.mnt / "lib/libbar.so.2"), "libbar 2\n");
  EXPECT_FALSE(present(m.mnt / "bin/baz"));
  // The dpkg database is not part of a package: it stays as booted.
  EXPECT_EQ(read_file(m.mnt / "var/lib/dpkg/status"), stanza("foo", "1.0") + stanza("bar", "2.0"));

  json baz = m.cmd_json("apply", "--package baz");
  EXPECT_EQ(baz["generation"], 2);
  EXPECT_EQ(kinds_of(baz["applied"]), (std::map<std::string, std::string>{{"bin/baz", "added"}}));
  EXPECT_EQ(read_file(m.mnt / "bin/baz"), "baz 0.1\n");

  Ran nothing_left = m.cmd("apply", "--package baz");
  EXPECT_EQ(nothing_left.status, 1) << nothing_left.out;

  Ran back = m.cmd("rollback");
  ASSERT_EQ(back.status, 0) << back.out;
  EXPECT_FALSE(present(m.mnt / "bin/baz"));
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.1, rebuilt\n");
  EXPECT_EQ(m.status()["live_generation"], 1);

  Ran reset = m.cmd("reset");
  ASSERT_EQ(reset.status, 0) << reset.out;
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");
  EXPECT_EQ(read_file(m.mnt / "share/foo/old"), "dropped in 1.1\n");
  st = m.status();
  EXPECT_EQ(st["live_generation"], 0);
  EXPECT_EQ(st["staged_origin"]["checksum"], s.commit_b);

  Ran text = m.cmd("status");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find(s.commit_a.substr(0, 12)), std::string::npos) << text.out;
  EXPECT_NE(text.out.find(s.commit_b.substr(0, 12)), std::string::npos) << text.out;
}

bool lists_holder(const json& holders, pid_t pid, const std::string& path) {
  for (const auto& h : holders) {
    if (h.value("pid", 0) == pid && h.value("path", "") == path) return true;
  }
  return false;
}

TEST_F(OstreeLive, HoldersOfAReplacedFileInApplyAndStatus) {
  Sysroot& s = *shared_;
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  {
    Holder holder(m.mnt / "bin/foo");
    ASSERT_TRUE(holder.wait_holding());
    json foo = m.cmd_json("apply", "--package foo --allow-replace");
    // apply answers right after the switch; the holders are found after it, off the request.
    EXPECT_FALSE(foo.contains("holders")) << foo.dump();
    EXPECT_TRUE(foo.contains("holders_scan")) << foo.dump();
    json st;
    ASSERT_TRUE(eventually([&] {
      st = m.status();
      return st["holders_scan"]["current"] == true &&
             lists_holder(st["holders"], holder.pid(), "bin/foo");
    })) << st.dump();
    for (const auto& h : st["holders"]) {
      if (h["pid"] == holder.pid()) {
        EXPECT_EQ(h["command"], "sleep");
        EXPECT_EQ(h["how"], "fd 3");
      }
    }
    // The holder still reads the booted version through its open fd; new opens see 1.1.
    EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.1, rebuilt\n");
    EXPECT_EQ(read_file("/proc/" + std::to_string(holder.pid()) + "/fd/3"), "foo 1.0\n");
  }
  // Gone: not listed once a later scan ran (a status starts one when the last is a second old).
  json st;
  EXPECT_TRUE(eventually([&] {
    st = m.status();
    for (const auto& h : st["holders"])
      if (h["path"] == "bin/foo") return false;
    return true;
  })) << st["holders"].dump();
}

TEST_F(OstreeLive, StageACommitOfTheRepositoryKernelChangeNeedsAReboot) {
  Sysroot& s = *shared_;
  // Commit C (branch testos/next, not deployed): B plus bin/qux and a new kernel.
  make_tree_b(*s.dir / "tree-c");
  write_file(*s.dir / "tree-c/usr/bin/qux", "qux\n", 0755);
  write_file(*s.dir / "tree-c/usr/lib/modules/6.1.0/vmlinuz", "kernel 2\n");
  std::string commit_c = s.commit("tree-c", "testos/next", "3.0");
  ASSERT_EQ(commit_c.size(), 64u);

  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  Ran bad = m.cmd("stage", "--commit nosuch");
  EXPECT_EQ(bad.status, 1) << bad.out;
  EXPECT_NE(bad.out.find("nosuch"), std::string::npos) << bad.out;
  EXPECT_EQ(m.status()["staged_origin"]["checksum"], s.commit_b);

  json staged = m.cmd_json("stage", "--commit testos/next");
  EXPECT_EQ(staged["staged_origin"]["checksum"], commit_c) << staged.dump(2);
  json st = m.status();
  EXPECT_EQ(st["staged_origin"]["checksum"], commit_c);
  EXPECT_NE(st["staged"].get<std::string>().find(commit_c.substr(0, 12)), std::string::npos);

  json d = m.cmd_json("diff");
  auto kinds = kinds_of(d["changes"]);
  EXPECT_EQ(kinds["bin/qux"], "added");
  EXPECT_EQ(kinds["bin/foo"], "modified");
  EXPECT_EQ(kinds["lib/modules/6.1.0/vmlinuz"], "modified");
  for (const auto& c : d["changes"]) {
    if (c["path"] == "lib/modules/6.1.0/vmlinuz") {
      EXPECT_EQ(c["kernel"], true);
    }
  }

  Ran kernel = m.cmd("apply", "--allow-replace lib/modules/6.1.0/vmlinuz");
  EXPECT_EQ(kernel.status, 1) << kernel.out;
  EXPECT_NE(kernel.out.find("needs a reboot"), std::string::npos) << kernel.out;
  EXPECT_EQ(read_file(m.mnt / "lib/modules/6.1.0/vmlinuz"), "kernel 1\n");

  json all = m.cmd_json("apply", "--all --allow-replace");
  EXPECT_EQ(all["skipped_kernel"], json({"lib/modules/6.1.0/vmlinuz"})) << all.dump(2);
  EXPECT_EQ(read_file(m.mnt / "bin/qux"), "qux\n");
  EXPECT_EQ(read_file(m.mnt / "lib/modules/6.1.0/vmlinuz"), "kernel 1\n");
}

// A stage that cannot go on (here: a gc holds the store) keeps only changes waiting: status
// is answered meanwhile and says what is being staged.
TEST_F(OstreeLive, StatusIsAnsweredWhileAStageRuns) {
  Sysroot& s = *shared_;
  make_tree_b(*s.dir / "tree-slow");
  write_file(*s.dir / "tree-slow/usr/bin/slow", "slow\n", 0755);
  std::string commit = s.commit("tree-slow", "testos/slow", "4.0");
  ASSERT_EQ(commit.size(), 64u);
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  ASSERT_TRUE(eventually([&] { return m.status()["loading"].is_null(); }));

  auto store = store::ObjectStore::open(m.state / "store");
  ASSERT_TRUE(store) << store.error().message();
  auto gc = store->lock_exclusive(std::chrono::milliseconds(0));
  ASSERT_TRUE(gc) << gc.error().message();
  auto staging =
      std::async(std::launch::async, [&] { return m.cmd("stage", "--commit testos/slow"); });
  json seen;
  ASSERT_TRUE(eventually([&] {
    seen = m.status();
    return seen["staging"].is_object();
  })) << seen.dump();
  EXPECT_EQ(seen["staging"]["what"], "commit " + commit);
  // The booted tree's file count is the estimate: a percentage below 100 while it runs.
  EXPECT_GT(seen["staging"].value("expected", 0), 0) << seen.dump();
  EXPECT_LE(seen["staging"].value("percent", 100), 99) << seen.dump();
  Ran text = m.cmd("status");
  EXPECT_NE(text.out.find("files read so far, about "), std::string::npos) << text.out;
  EXPECT_EQ(seen["staged_origin"]["checksum"], s.commit_b);  // not staged yet
  *gc = store::StoreLock();                                  // the "gc" ends
  Ran staged = staging.get();
  EXPECT_EQ(staged.status, 0) << staged.out;
  json st = m.status();
  EXPECT_TRUE(st["staging"].is_null()) << st.dump();
  EXPECT_EQ(st["staged_origin"]["checksum"], commit);
}

TEST_F(OstreeLive, CorruptObjectIsRefusedAndTheStagedCommitStays) {
  Sysroot& s = *shared_;
  make_tree_b(*s.dir / "tree-d");
  write_file(*s.dir / "tree-d/usr/bin/corrupted", "content only commit D has\n", 0755);
  std::string commit_d = s.commit("tree-d", "testos/corrupt", "4.0");
  ASSERT_EQ(commit_d.size(), 64u);
  fs::path object = s.file_object(commit_d, "/usr/bin/corrupted");
  ASSERT_TRUE(fs::exists(object)) << object;
  std::string sha = object.parent_path().filename().string() + object.stem().string();
  {
    std::FILE* f = std::fopen(object.c_str(), "r+");
    ASSERT_NE(f, nullptr) << object;
    std::fputc('C', f);  // "content…" -> "Content…"
    std::fclose(f);
  }

  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran r = m.cmd("stage", "--commit testos/corrupt");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find(sha), std::string::npos) << r.out;
  json st = m.status();
  EXPECT_EQ(st["staged_origin"]["checksum"], s.commit_b);
  EXPECT_FALSE(kinds_of(m.cmd_json("diff")["changes"]).contains("bin/corrupted"));
  EXPECT_FALSE(present(m.mnt / "bin/corrupted"));
}

TEST_F(OstreeLive, StagePullFromAnArchiveRepositoryOverHttp) {
  Sysroot& s = *shared_;
  TempDir d{"livefs-ostree-served"};
  fs::path served = d / "repo";
  ASSERT_TRUE(sh("ostree --repo=" + served.string() + " init --mode=archive"));
  make_tree_b(d / "tree");
  write_file(d / "tree/usr/bin/pulled", "from the remote\n", 0755);
  std::string commit_e = sh_out("ostree --repo=" + served.string() +
                                " commit -b testos/remote --tree=dir=" + (d / "tree").string() +
                                " --add-metadata-string=version=5.0");
  ASSERT_EQ(commit_e.size(), 64u);
  int port = free_port();
  HttpServer server(d.path(), port);
  ASSERT_TRUE(server.wait_ready());
  ASSERT_TRUE(sh("ostree remote add --repo=" + s.repo.string() + " --no-gpg-verify served" +
                 std::to_string(port) + " http://127.0.0.1:" + std::to_string(port) + "/repo"));

  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  Ran unknown = m.cmd("stage", "--pull served" + std::to_string(port) + " no/such-ref");
  EXPECT_EQ(unknown.status, 1) << unknown.out;
  EXPECT_NE(unknown.out.find("no/such-ref"), std::string::npos) << unknown.out;
  EXPECT_EQ(m.status()["staged_origin"]["checksum"], s.commit_b);

  json staged = m.cmd_json("stage", "--pull served" + std::to_string(port) + " testos/remote");
  EXPECT_EQ(staged["staged_origin"]["checksum"], commit_e) << staged.dump(2);
  EXPECT_EQ(m.status()["staged_origin"]["checksum"], commit_e);
  auto kinds = kinds_of(m.cmd_json("diff")["changes"]);
  EXPECT_EQ(kinds["bin/pulled"], "added");
  EXPECT_EQ(kinds["bin/baz"], "added");

  json applied = m.cmd_json("apply", "bin/pulled");
  EXPECT_EQ(read_file(m.mnt / "bin/pulled"), "from the remote\n");
}

// A pull shows its progress: objects fetched of those requested. The remote's HTTP server
// holds every content object back until the test opens a gate, so the pull is seen halfway.
TEST_F(OstreeLive, StagePullShowsItsProgress) {
  Sysroot& s = *shared_;
  TempDir d{"livefs-ostree-gated"};
  fs::path served = d / "repo";
  ASSERT_TRUE(sh("ostree --repo=" + served.string() + " init --mode=archive"));
  make_tree_b(d / "tree");
  write_file(d / "tree/usr/bin/gated", "behind the gate\n", 0755);
  std::string commit = sh_out("ostree --repo=" + served.string() +
                              " commit -b testos/gated --tree=dir=" + (d / "tree").string());
  ASSERT_EQ(commit.size(), 64u);
  fs::path gate = d / "gate";
  write_file(d / "server.py",
             "import http.server, os, sys, time\n"
             "class Gated(http.server.SimpleHTTPRequestHandler):\n"
             "    def do_GET(self):\n"
             "        while self.path.endswith('.filez') and not os.path.exists(sys.argv[2]):\n"
             "            time.sleep(0.01)\n"
             "        super().do_GET()\n"
             "    def log_message(self, *args):\n"
             "        pass\n"
             "http.server.ThreadingHTTPServer.allow_reuse_address = True\n"
             "os.chdir(sys.argv[3])\n"
             "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), Gated)"
             ".serve_forever()\n");
  int port = free_port();
  pid_t server = ::fork();
  if (server == 0) {
    ::setpgid(0, 0);
    ::execlp("python3", "python3", (d / "server.py").c_str(), std::to_string(port).c_str(),
             gate.c_str(), d.path().c_str(), nullptr);
    ::_exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reap{server};
  ASSERT_TRUE(eventually([&] {
    return livefs::testing::run(
               "python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1])' "
               "http://127.0.0.1:" +
               std::to_string(port) + "/repo/config 2>/dev/null") == 0;
  }));
  std::string remote = "gated" + std::to_string(port);
  ASSERT_TRUE(sh("ostree remote add --repo=" + s.repo.string() + " --no-gpg-verify " + remote +
                 " http://127.0.0.1:" + std::to_string(port) + "/repo"));
  OstreeMount m;
  ASSERT_EQ(m.mount(s).status, 0);
  auto staging = std::async(std::launch::async,
                            [&] { return m.cmd("stage", "--pull " + remote + " testos/gated"); });
  json seen;
  // The metadata is fetched; the content waits at the gate.
  bool halfway = eventually([&] {
    seen = m.status();
    return seen["staging"].is_object() &&
           seen["staging"]["what"] == "pull " + remote + " testos/gated" &&
           seen["staging"].value("files", 0) > 0 && seen["staging"].value("expected", 0) > 0;
  });
  write_file(gate, "open\n");
  Ran staged = staging.get();
  ASSERT_TRUE(halfway) << seen.dump(2);
  EXPECT_LT(seen["staging"].value("files", 0), seen["staging"].value("expected", 0))
      << seen.dump(2);
  EXPECT_LE(seen["staging"].value("percent", 100), 99) << seen.dump(2);
  EXPECT_EQ(staged.status, 0) << staged.out;
  EXPECT_EQ(m.status()["staged_origin"]["checksum"], commit);
}

// Deploying changes the sysroot's deployments, so this test has its own.
// Live equals rebooted, in OSTree mode: after `apply --all` the view equals `ostree checkout`
// of the staged commit in every attribute OSTree records — content, type, mode (set-id bits
// included), owner, link targets, xattrs (security.* too) and file times. Not compared:
// times of directories and symlinks (OSTree records none: a checkout's are the time of the
// checkout) and link counts (a deployment's files are hard links into the repository).
TEST(OstreeFidelity, ApplyAllEqualsACheckoutOfTheStagedCommit) {
  Sysroot s;
  fs::path x = *s.dir / "tree-x";
  make_tree_b(x);
  ASSERT_EQ(::chmod((x / "usr/bin/bar").c_str(), 0700), 0);  // metadata only against A
  ASSERT_EQ(::chown((x / "usr/share/foo/data").c_str(), 1000, 1000), 0);
  ASSERT_EQ(::setxattr((x / "usr/lib/libbar.so.2").c_str(), "user.livefs", "x", 1, 0), 0);
  ASSERT_EQ(::setxattr((x / "usr/bin/baz").c_str(), "security.livefs", "label", 5, 0), 0);
  ASSERT_EQ(::symlink("bar", (x / "usr/bin/bar-alias").c_str()), 0);
  write_file(x / "usr/sbin/tool", "set-uid tool\n", 0755);
  ASSERT_EQ(::chmod((x / "usr/sbin/tool").c_str(), 04755), 0);
  std::string commit_x = s.commit("tree-x", "testos/stable", "3.0");
  ASSERT_EQ(commit_x.size(), 64u);
  s.deploy();

  OstreeMount m;
  Ran mounted = m.mount(s, "2");  // A, below X and B now
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  json st = m.status();
  ASSERT_EQ(st["booted_origin"]["checksum"], s.commit_a);
  ASSERT_EQ(st["staged_origin"]["checksum"], commit_x);
  json applied = m.cmd_json("apply", "--all --allow-replace");
  auto kinds = kinds_of(applied["applied"]);
  EXPECT_TRUE(kinds.contains("bin/bar")) << applied.dump();
  EXPECT_TRUE(kinds.contains("lib/libbar.so.2")) << applied.dump();

  // Hard-linked to the repository's objects, as a deployment is (a copy would take the time
  // of the checkout; the objects have OSTree's fixed file time).
  fs::path checkout = *s.dir / "checkout-x";
  ASSERT_TRUE(sh("ostree --repo=" + s.repo.string() + " checkout --subpath=/usr " + commit_x + " " +
                 checkout.string()));
  livefs::testing::DumpOptions options;
  options.dir_and_symlink_mtimes = false;
  options.nlink = false;
  EXPECT_EQ(livefs::testing::compare_dumps(livefs::testing::dump_tree(checkout, options),
                                           livefs::testing::dump_tree(m.mnt, options)),
            "");
}

TEST(OstreeLiveDeploy, NewDeploymentIsStagedInTheBackground) {
  Sysroot s;
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  EXPECT_EQ(m.status()["staged_origin"]["checksum"], s.commit_b);

  make_tree_b(*s.dir / "tree-f");
  write_file(*s.dir / "tree-f/usr/bin/deployed-later", "new deployment\n", 0755);
  std::string commit_f = s.commit("tree-f", "testos/stable", "6.0");
  ASSERT_EQ(commit_f.size(), 64u);
  s.deploy();

  // Bounded poll: the daemon notices the deployment through inotify and stages it.
  json st;
  for (int i = 0; i < 100; ++i) {
    st = m.status();
    if (st["staged_origin"]["checksum"] == commit_f) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(st["staged_origin"]["checksum"], commit_f) << st.dump(2);
  EXPECT_EQ(st["staged_origin"]["version"], "6.0");
  EXPECT_TRUE(st["stage_error"].is_null()) << st["stage_error"];
  // The booted deployment is still A, whatever its index is now.
  EXPECT_EQ(st["booted_origin"]["checksum"], s.commit_a);
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");
  auto kinds = kinds_of(m.cmd_json("diff")["changes"]);
  EXPECT_EQ(kinds["bin/deployed-later"], "added");

  json applied = m.cmd_json("apply", "bin/deployed-later");
  EXPECT_EQ(read_file(m.mnt / "bin/deployed-later"), "new deployment\n");

  // A deployment with a corrupt object (`ostree admin deploy` hard-links it without checking):
  // background staging fails, says so in status, and the staged deployment stays F.
  make_tree_b(*s.dir / "tree-g");
  write_file(*s.dir / "tree-g/usr/bin/damaged", "only commit G has this\n", 0755);
  std::string commit_g = s.commit("tree-g", "testos/stable", "7.0");
  ASSERT_EQ(commit_g.size(), 64u);
  fs::path object = s.file_object(commit_g, "/usr/bin/damaged");
  std::string sha = object.parent_path().filename().string() + object.stem().string();
  {
    std::FILE* f = std::fopen(object.c_str(), "r+");
    ASSERT_NE(f, nullptr) << object;
    std::fputc('O', f);
    std::fclose(f);
  }
  s.deploy();
  for (int i = 0; i < 100; ++i) {
    st = m.status();
    if (!st["stage_error"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(st["stage_error"].is_string()) << st.dump(2);
  EXPECT_NE(st["stage_error"].get<std::string>().find(sha), std::string::npos) << st["stage_error"];
  EXPECT_NE(st["stage_error"].get<std::string>().find("bin/damaged"), std::string::npos)
      << st["stage_error"];
  EXPECT_EQ(st["staged_origin"]["checksum"], commit_f);
  Ran text = m.cmd("status");
  EXPECT_NE(text.out.find("STAGING FAILED"), std::string::npos) << text.out;
  EXPECT_FALSE(kinds_of(m.cmd_json("diff")["changes"]).contains("bin/damaged"));
  EXPECT_EQ(read_file(m.mnt / "bin/deployed-later"), "new deployment\n");
}

// A fresh mount degrades as a running daemon does: the staging failure is in status, the
// booted tree is served, and nothing is offered to apply.
TEST(OstreeLiveDeploy, MountWithACorruptPendingDeploymentServesTheBootedTree) {
  Sysroot s;
  make_tree_b(*s.dir / "tree-g");
  write_file(*s.dir / "tree-g/usr/bin/damaged", "only commit G has this\n", 0755);
  std::string commit_g = s.commit("tree-g", "testos/stable", "7.0");
  ASSERT_EQ(commit_g.size(), 64u);
  fs::path object = s.file_object(commit_g, "/usr/bin/damaged");
  {
    std::FILE* f = std::fopen(object.c_str(), "r+");
    ASSERT_NE(f, nullptr) << object;
    std::fputc('O', f);
    std::fclose(f);
  }
  s.deploy();  // G is index 0, B 1, A 2
  OstreeMount m;
  Ran mounted = m.mount(s, s.commit_a);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  EXPECT_EQ(read_file(m.mnt / "bin/foo"), "foo 1.0\n");
  // The pending deployment is staged in the background after the view serves.
  ASSERT_TRUE(eventually([&] { return m.status()["loading"].is_null(); }));
  json st = m.status();
  ASSERT_TRUE(st["stage_error"].is_string()) << st.dump(2);
  EXPECT_NE(st["stage_error"].get<std::string>().find("bin/damaged"), std::string::npos)
      << st["stage_error"];
  EXPECT_EQ(m.cmd_json("diff")["changes"].size(), 0u);
  EXPECT_EQ(m.cmd("apply", "--all").status, 1);
  EXPECT_FALSE(fs::exists(m.mnt / "bin/damaged"));
}

}  // namespace
}  // namespace livefs::e2e
