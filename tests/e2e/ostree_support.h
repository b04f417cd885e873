// End-to-end test support in OSTree mode: a sysroot built with the `ostree` CLI (OS "testos",
// commit A deployed, then commit B: B is index 0, the next boot, and A index 1), and one
// test's mount of it with the real `livefs` binary.
#pragma once

#include <signal.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "e2e/live_support.h"
#include "inotify/inotify_test_util.h"
#include "support/temp_dir.h"

namespace livefs::e2e {

struct OstreeSysroot {
  using MakeTree = std::function<void(const fs::path& root)>;

  std::unique_ptr<livefs::testing::TempDir> dir;
  fs::path root, repo;
  std::string commit_a, commit_b;

  // `make_a` and `make_b` write the trees (usr/etc/os-release and a kernel included) of
  // commits A and B.
  OstreeSysroot(const std::string& prefix, const MakeTree& make_a, const MakeTree& make_b)
      : dir(std::make_unique<livefs::testing::TempDir>(prefix)),
        root(*dir / "sysroot"),
        repo(root / "ostree/repo") {
    fs::create_directories(root);
    sh("ostree admin init-fs " + root.string());
    sh("ostree admin os-init --sysroot=" + root.string() + " testos");
    make_a(*dir / "tree-a");
    commit_a = commit("tree-a", "testos/stable", "1.0");
    deploy();
    make_b(*dir / "tree-b");
    commit_b = commit("tree-b", "testos/stable", "2.0");
    deploy();
  }
  // Deployment directories and their hard-linked objects are immutable (chattr +i).
  ~OstreeSysroot() { livefs::testing::run("chattr -R -i " + root.string() + " 2>/dev/null"); }

  // Commits the tree `*dir / tree` on `branch`.
  std::string commit(const std::string& tree, const std::string& branch,
                     const std::string& version) {
    return sh_out("ostree --repo=" + repo.string() + " commit -b " + branch + " --tree=dir=" +
                  (*dir / tree).string() + " --add-metadata-string=version=" + version);
  }
  // --retain: the deployments already there stay (the mounted booted one among them).
  void deploy(const std::string& ref = "testos/stable") {
    sh("ostree admin deploy --sysroot=" + root.string() + " --os=testos --karg-none --retain " +
       ref);
  }
  // The deployment directory of `commit`.
  fs::path deployment(const std::string& commit) const {
    for (const auto& e : fs::directory_iterator(root / "ostree/deploy/testos/deploy"))
      if (e.path().filename().string().starts_with(commit + ".") && e.is_directory())
        return e.path();
    ADD_FAILURE() << "no deployment of " << commit;
    return {};
  }
  // The file object of `path` in `commit` (a bare repository: objects/xx/yyyy.file).
  fs::path file_object(const std::string& commit, const std::string& path) {
    std::string sha = sh_out("ostree --repo=" + repo.string() + " ls -C " + commit + " " + path +
                             " | awk '{print $5}'");
    EXPECT_EQ(sha.size(), 64u) << sha;
    return repo / "objects" / sha.substr(0, 2) / (sha.substr(2) + ".file");
  }
};

// One test's mount of a sysroot: state/ and mnt/ in a temp dir, unmounted at scope exit.
class OstreeMount {
 public:
  // The daemon watches the sysroot with inotify: no limit may be lowered meanwhile (see
  // SysctlLock).
  livefs::inotify::testing::SysctlLock inotify_lock{/*exclusive=*/false};
  livefs::testing::TempDir dir{"livefs-ostree-mnt"};
  fs::path state = dir / "state", mnt = dir / "mnt";

  OstreeMount() { fs::create_directories(mnt); }
  ~OstreeMount() { cleanup(); }
  OstreeMount(const OstreeMount&) = delete;
  OstreeMount& operator=(const OstreeMount&) = delete;

  Ran mount(const OstreeSysroot& s, const std::string& booted = "1") {
    mounted_ = true;
    return livefs("mount --sysroot " + quote(s.root.string()) + " --os testos --booted " +
                  quote(booted) + " --subdir usr --state " + quote(state.string()) + " " +
                  quote(mnt.string()));
  }
  Ran cmd(const std::string& command, const std::string& args = "") {
    return livefs(command + " --state " + quote(state.string()) + " " + args);
  }
  nlohmann::json cmd_json(const std::string& command, const std::string& args = "") {
    Ran r = cmd(command, "--json " + args);
    EXPECT_EQ(r.status, 0) << command << " " << args << "\n" << r.out;
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  nlohmann::json status() { return cmd_json("status"); }

  // SIGKILL, as a crash: the mount is left behind and cleaned here.
  void kill_daemon() {
    pid_t pid = daemon_pid(state);
    ASSERT_GT(pid, 0);
    ASSERT_TRUE(is_livefs_process(pid));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(eventually([&] { return thread_group_gone(pid); }));
    unmount_left_behind();
    mounted_ = false;
  }
  void cleanup() {
    if (!mounted_) return;
    mounted_ = false;
    if (daemon_pid(state) > 0) cmd("umount");
    pid_t pid = daemon_pid(state);
    if (pid > 0 && is_livefs_process(pid)) ::kill(pid, SIGKILL);
    unmount_left_behind();
  }

 private:
  void unmount_left_behind() {
    for (int i = 0; i < 10 && has_mount(mnt); ++i)
      livefs::testing::run("umount -l " + quote(mnt.string()) + " 2>/dev/null");
  }
  bool mounted_ = false;
};

}  // namespace livefs::e2e
