// Finding the daemon without --state: each daemon registers its mount point in the runtime
// directory (a private one here, LIVEFS_RUNTIME_DIR), commands take --mount or find the only
// one, say clearly when there is none or several, and a second daemon on one mount point is
// refused. `mount` without --state keeps its state in LIVEFS_STATE_ROOT/NAME.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "live_support.h"
#include "support/temp_dir.h"

namespace livefs::e2e {
namespace {

using livefs::testing::write_file;
using json = nlohmann::json;

// The runtime directory and the default state root of this test only.
class Discovery : public ::testing::Test {
 protected:
  void SetUp() override {
    ::setenv("LIVEFS_RUNTIME_DIR", (dir / "run").c_str(), 1);
    ::setenv("LIVEFS_STATE_ROOT", (dir / "lib").c_str(), 1);
  }
  void TearDown() override {
    ::unsetenv("LIVEFS_RUNTIME_DIR");
    ::unsetenv("LIVEFS_STATE_ROOT");
  }
  livefs::testing::TempDir dir{"livefs-discovery"};
};

void write_trees(LiveWorld& w, const std::string& tag) {
  write_file(w.booted / "bin/tool", "tool 1 " + tag + "\n");
  write_file(w.staged / "bin/tool", "tool 2 " + tag + "\n");
  w.settle();
}

json parse(const Ran& r) { return json::parse(r.out, nullptr, false); }

TEST_F(Discovery, NoneOneOrSeveralDaemons) {
  Ran none = livefs("status");
  EXPECT_EQ(none.status, 1) << none.out;
  EXPECT_NE(none.out.find("no livefs daemon is running"), std::string::npos) << none.out;

  LiveWorld a, b;
  write_trees(a, "a");
  write_trees(b, "b");
  Ran mounted = a.mount();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  // The one daemon: found without --state, by every client command.
  json st = parse(livefs("status --json"));
  EXPECT_EQ(st["mountpoint"], a.mnt.string()) << st.dump();
  Ran diff = livefs("diff");
  EXPECT_EQ(diff.status, 0) << diff.out;
  EXPECT_NE(diff.out.find("1 pending change"), std::string::npos) << diff.out;
  Ran applied = livefs("apply --all --allow-replace");
  ASSERT_EQ(applied.status, 0) << applied.out;
  EXPECT_EQ(livefs::testing::read_file(a.mnt / "bin/tool"), "tool 2 a\n");

  ASSERT_EQ(b.mount().status, 0);
  Ran several = livefs("status");
  EXPECT_EQ(several.status, 1) << several.out;
  EXPECT_NE(several.out.find("several livefs daemons are running"), std::string::npos)
      << several.out;
  EXPECT_NE(several.out.find("--mount " + a.mnt.string()), std::string::npos) << several.out;
  EXPECT_NE(several.out.find("--mount " + b.mnt.string()), std::string::npos) << several.out;
  EXPECT_EQ(parse(livefs("status --json --mount " + quote(b.mnt.string())))["mountpoint"],
            b.mnt.string());
  EXPECT_EQ(parse(livefs("status --json --mount " + quote(a.mnt.string())))["live_generation"], 1);
  Ran nowhere = livefs("status --mount " + quote((dir / "nowhere").string()));
  EXPECT_EQ(nowhere.status, 1) << nowhere.out;
  EXPECT_NE(nowhere.out.find("no livefs daemon serves"), std::string::npos) << nowhere.out;
  Ran both = livefs("status --mount " + quote(a.mnt.string()) + " " + a.state_arg());
  EXPECT_EQ(both.status, 1) << both.out;

  // One daemon per mount point.
  LiveWorld c;
  write_trees(c, "c");
  Ran second = livefs("mount --booted " + quote(c.booted.string()) + " --staged " +
                      quote(c.staged.string()) + " " + c.state_arg() + " " + quote(a.mnt.string()));
  EXPECT_EQ(second.status, 1) << second.out;
  EXPECT_NE(second.out.find("is served already"), std::string::npos) << second.out;
  EXPECT_EQ(livefs::testing::read_file(a.mnt / "bin/tool"), "tool 2 a\n");

  // Unmounted by its mount point: then b is the only one.
  Ran gone = livefs("umount --wait --mount " + quote(a.mnt.string()));
  ASSERT_EQ(gone.status, 0) << gone.out;
  a.mounted_at.clear();
  EXPECT_EQ(parse(livefs("status --json"))["mountpoint"], b.mnt.string());
}

TEST_F(Discovery, ADeadDaemonsRegistrationIsNoDaemon) {
  LiveWorld w;
  write_trees(w, "w");
  ASSERT_EQ(w.mount().status, 0);
  pid_t pid = daemon_pid(w.state);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(is_livefs_process(pid));
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(eventually([&] { return thread_group_gone(pid); }));
  Ran none = livefs("status");
  EXPECT_EQ(none.status, 1) << none.out;
  EXPECT_NE(none.out.find("no livefs daemon is running"), std::string::npos) << none.out;
  // The mount point is free for the next daemon (the dead mount is detached by it).
  Ran again = w.mount();
  ASSERT_EQ(again.status, 0) << again.out;
  EXPECT_EQ(parse(livefs("status --json"))["mountpoint"], w.mnt.string());
}

TEST_F(Discovery, MountWithoutStateKeepsItUnderTheStateRoot) {
  LiveWorld w;
  write_trees(w, "w");
  w.mounted_at = w.mnt;
  Ran mounted = livefs("mount --booted " + quote(w.booted.string()) + " --staged " +
                       quote(w.staged.string()) + " " + quote(w.mnt.string()));
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  // NAME is the mount point escaped as systemd escapes paths.
  std::string name = w.mnt.string().substr(1);
  std::string escaped;
  for (char c : name) {
    if (c == '/') {
      escaped += '-';
    } else if (c == '-') {
      escaped += "\\x2d";
    } else {
      escaped += c;
    }
  }
  fs::path state = dir / "lib" / escaped;
  struct stat st {};
  ASSERT_EQ(::stat(state.c_str(), &st), 0) << state;
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(present(state / "control.sock"));
  EXPECT_TRUE(present(dir / "run" / (escaped + ".sock")));
  EXPECT_EQ(parse(livefs("status --json"))["mountpoint"], w.mnt.string());
  Ran gone = livefs("umount --wait");
  ASSERT_EQ(gone.status, 0) << gone.out;
  w.mounted_at.clear();
  EXPECT_FALSE(present(dir / "run" / (escaped + ".sock")));
}

TEST_F(Discovery, MountWithoutArgumentsWantsABootedOstreeSystem) {
  // This machine is not one: a usage error that says what to give instead.
  if (::access("/run/ostree-booted", F_OK) == 0) GTEST_SKIP() << "a booted OSTree system";
  Ran r = livefs("mount");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("/run/ostree-booted is missing"), std::string::npos) << r.out;
  // On one (faked in a private mount namespace), it serves /usr of the sysroot at /sysroot.
  std::string out;
  int status = livefs::testing::run(
      "unshare -m --propagation private sh -c 'mount -t tmpfs none /run && "
      "touch /run/ostree-booted && LIVEFS_STATE_ROOT=" +
          (dir / "lib").string() + " " + LIVEFS_BINARY + " mount' 2>&1",
      &out);
  EXPECT_NE(status, 0) << out;
  EXPECT_NE(out.find("/sysroot"), std::string::npos) << out;
  EXPECT_FALSE(present(dir / "lib/usr/control.sock"));
}

}  // namespace
}  // namespace livefs::e2e
