// What needs a reboot, end to end through the real `livefs` binary and a real FUSE mount: a
// staged kernel update that moves the modules from the running kernel's directory to the new
// one's keeps the running kernel's modules (apply --all says why), a second --all says that
// only a reboot is left, and `status` lists what the reboot is still needed for: the kernel,
// the running kernel's modules, the SELinux policy, the processes holding replaced files
// (restart) and, in OSTree mode, the next boot's kernel arguments.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <functional>

#include "e2e/live_support.h"
#include "inotify/inotify_test_util.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using json = nlohmann::json;

// A /usr view: the booted kernel 6.1.0 (vmlinuz in its modules directory, as OSTree has it),
// the staged kernel 6.2.0 instead, a changed tool and a changed SELinux policy.
void make_kernel_move(LiveWorld& w) {
  write_file(w.booted / "bin/tool", "tool 1\n", 0755);
  write_file(w.booted / "lib/modules/6.1.0/vmlinuz", "kernel 6.1.0\n");
  write_file(w.booted / "lib/modules/6.1.0/kernel/drivers/a.ko", "module a for 6.1.0\n");
  write_file(w.booted / "lib/modules/6.1.0/modules.dep", "a.ko:\n");
  write_file(w.booted / "etc/selinux/targeted/policy/policy.33", "policy 1\n");
  write_file(w.staged / "bin/tool", "tool 2\n", 0755);
  write_file(w.staged / "lib/modules/6.2.0/vmlinuz", "kernel 6.2.0\n");
  write_file(w.staged / "lib/modules/6.2.0/initramfs.img", "initramfs 6.2.0\n");
  write_file(w.staged / "lib/modules/6.2.0/kernel/drivers/a.ko", "module a for 6.2.0\n");
  write_file(w.staged / "lib/modules/6.2.0/modules.dep", "a.ko:\n");
  write_file(w.staged / "etc/selinux/targeted/policy/policy.33", "policy 2\n");
  w.settle();
}

json run_json(LiveWorld& w, const std::string& command, const std::string& args, int want = 0) {
  Ran r = w.cmd(command, "--json " + args);
  EXPECT_EQ(r.status, want) << command << " " << args << "\n" << r.out;
  json j = json::parse(r.out, nullptr, false);
  if (want == 0) {
    EXPECT_FALSE(j.is_discarded()) << r.out;
  }
  return j;
}

// The "reboot_needed_for" entry of `what`, or null.
json need_of(const json& status, const std::string& what) {
  for (const auto& n : status.value("reboot_needed_for", json::array())) {
    if (n.value("what", "") == what) return n;
  }
  return nullptr;
}

TEST(RebootNeeded, TheRunningKernelsModulesStayAndStatusSaysARebootIsNeeded) {
  LiveWorld w;
  make_kernel_move(w);
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;

  // diff marks what cannot go live, with the reason.
  json diff = run_json(w, "diff", "");
  bool listed = false;
  for (const auto& c : diff["changes"]) {
    if (c["path"] != "lib/modules/6.1.0") continue;
    listed = true;
    EXPECT_EQ(c["kind"], "removed");
    EXPECT_EQ(c["kernel"], true);
    EXPECT_EQ(c["reboot"], "modules of the running kernel 6.1.0: needs a reboot");
  }
  EXPECT_TRUE(listed) << diff.dump(2);

  // Naming the running kernel's modules is refused.
  Ran named = w.cmd("apply", "--allow-replace lib/modules/6.1.0/kernel");
  EXPECT_EQ(named.status, 1) << named.out;
  EXPECT_NE(named.out.find("modules of the running kernel 6.1.0: needs a reboot"),
            std::string::npos)
      << named.out;

  // The text of --all names what is kept and why.
  Ran dry = w.cmd("apply", "--all --allow-replace --dry-run");
  ASSERT_EQ(dry.status, 0) << dry.out;
  EXPECT_NE(dry.out.find("kept         /lib/modules/6.1.0  (removed modules of the running "
                         "kernel 6.1.0: needs a reboot)"),
            std::string::npos)
      << dry.out;
  EXPECT_NE(dry.out.find("/lib/modules/6.2.0/vmlinuz  (added kernel: needs a reboot)"),
            std::string::npos)
      << dry.out;

  Holder holder(w.mnt / "bin/tool");
  ASSERT_TRUE(holder.wait_holding());
  json all = run_json(w, "apply", "--all --allow-replace");
  json kept = all["kept"];
  ASSERT_EQ(kept.size(), 3u) << all.dump(2);
  EXPECT_EQ(kept[0], json({{"path", "lib/modules/6.1.0"},
                           {"kind", "removed"},
                           {"reason", "modules of the running kernel 6.1.0: needs a reboot"}}));
  EXPECT_EQ(kept[1]["path"], "lib/modules/6.2.0/initramfs.img");
  EXPECT_EQ(kept[2]["path"], "lib/modules/6.2.0/vmlinuz");
  EXPECT_EQ(kept[2]["reason"], "kernel: needs a reboot");

  // modprobe on the running kernel still finds its modules; the new kernel's modules are
  // there for after the reboot; its image is not.
  EXPECT_EQ(read_file(w.mnt / "lib/modules/6.1.0/kernel/drivers/a.ko"), "module a for 6.1.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/modules/6.1.0/modules.dep"), "a.ko:\n");
  EXPECT_EQ(read_file(w.mnt / "lib/modules/6.1.0/vmlinuz"), "kernel 6.1.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/modules/6.2.0/kernel/drivers/a.ko"), "module a for 6.2.0\n");
  EXPECT_FALSE(present(w.mnt / "lib/modules/6.2.0/vmlinuz"));
  EXPECT_FALSE(present(w.mnt / "lib/modules/6.2.0/initramfs.img"));
  EXPECT_EQ(read_file(w.mnt / "bin/tool"), "tool 2\n");
  EXPECT_EQ(read_file(w.mnt / "etc/selinux/targeted/policy/policy.33"), "policy 2\n");

  // Only what needs a reboot is left: --all says so (not "matches no pending change").
  Ran again = w.cmd("apply", "--all --allow-replace");
  EXPECT_EQ(again.status, 1) << again.out;
  EXPECT_NE(again.out.find("every pending change needs a reboot"), std::string::npos) << again.out;
  EXPECT_EQ(again.out.find("matches no pending change"), std::string::npos) << again.out;

  // status: the reboot is still needed for the kernel, the running kernel's modules and the
  // policy; the holder of the old tool needs a restart.
  json st;
  ASSERT_TRUE(eventually([&] {
    st = w.status_json();
    return !need_of(st, "processes").is_null();
  })) << st.dump(2);
  json kernel = need_of(st, "kernel");
  ASSERT_FALSE(kernel.is_null()) << st.dump(2);
  EXPECT_EQ(kernel["items"],
            json({"lib/modules/6.2.0/initramfs.img", "lib/modules/6.2.0/vmlinuz"}));
  EXPECT_EQ(kernel["restart"], false);
  json modules = need_of(st, "kernel_modules");
  ASSERT_FALSE(modules.is_null()) << st.dump(2);
  EXPECT_EQ(modules["items"], json({"lib/modules/6.1.0"}));
  json policy = need_of(st, "selinux_policy");
  ASSERT_FALSE(policy.is_null()) << st.dump(2);
  EXPECT_EQ(policy["items"], json({"etc/selinux/targeted/policy/policy.33"}));
  json processes = need_of(st, "processes");
  EXPECT_EQ(processes["restart"], true);
  EXPECT_EQ(processes["items"],
            json({std::to_string(holder.pid()) + " sleep" +
                  (st["holders"][0]["unit"] == ""
                       ? std::string()
                       : " (" + st["holders"][0]["unit"].get<std::string>() + ")")}))
      << st.dump(2);
  EXPECT_TRUE(need_of(st, "kernel_arguments").is_null()) << "not an OSTree sysroot";

  Ran text = w.cmd("status");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("reboot still needed for:\n  kernel: "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("    /lib/modules/6.2.0/vmlinuz\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  kernel_modules: modules of the running kernel 6.1.0"),
            std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("restart them (no reboot needed)"), std::string::npos) << text.out;
}

TEST(RebootNeeded, NothingStagedNeedsNoReboot) {
  LiveWorld w;
  write_file(w.booted / "bin/tool", "tool 1\n", 0755);
  write_file(w.booted / "lib/modules/6.1.0/vmlinuz", "kernel 6.1.0\n");
  // The same tree, times included.
  ASSERT_EQ(run("cp -a " + quote((w.booted / ".").string()) + " " + quote(w.staged.string())), 0);
  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  json st;
  ASSERT_TRUE(eventually([&] {
    st = w.status_json();
    return st.contains("reboot_needed_for");
  })) << st.dump(2);
  EXPECT_EQ(st["reboot_needed_for"], json::array()) << st.dump(2);
  Ran text = w.cmd("status");
  EXPECT_EQ(text.out.find("reboot still needed"), std::string::npos) << text.out;
}

// OSTree: a deployment of the booted commit with other kernel arguments stages nothing, but
// the reboot is needed for the arguments.
TEST(RebootNeededOstree, TheNextBootsKernelArgumentsAreListed) {
  livefs::inotify::testing::SysctlLock inotify_lock{/*exclusive=*/false};
  TempDir dir("livefs-ostree-kargs");
  fs::path root = dir / "sysroot";
  fs::path repo = root / "ostree/repo";
  fs::create_directories(root);
  auto sh = [](const std::string& command) {
    std::string out;
    int status = run(command + " 2>&1", &out);
    EXPECT_EQ(status, 0) << command << "\n" << out;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  };
  struct Unlock {
    fs::path root;
    ~Unlock() { run("chattr -R -i " + quote(root.string()) + " 2>/dev/null"); }
  } unlock{root};
  sh("ostree admin init-fs " + quote(root.string()));
  sh("ostree admin os-init --sysroot=" + quote(root.string()) + " testos");
  write_file(dir / "tree/usr/etc/os-release", "ID=livefs-test\n");
  write_file(dir / "tree/usr/lib/modules/6.1.0/vmlinuz", "kernel 1\n");
  write_file(dir / "tree/usr/bin/tool", "tool 1\n", 0755);
  std::string commit = sh("ostree --repo=" + quote(repo.string()) + " commit -b testos/stable " +
                          "--tree=dir=" + quote((dir / "tree").string()));
  ASSERT_EQ(commit.size(), 64u) << commit;
  std::string deploy =
      "ostree admin deploy --sysroot=" + quote(root.string()) + " --os=testos --retain ";
  sh(deploy + "--karg-none testos/stable");

  fs::path state = dir / "state", mnt = dir / "mnt";
  fs::create_directories(mnt);
  auto cmd = [&](const std::string& command, const std::string& args = "") {
    return livefs(command + " --state " + quote(state.string()) + " " + args);
  };
  Ran mounted =
      livefs("mount --sysroot " + quote(root.string()) + " --os testos --booted " + commit +
             " --subdir usr --state " + quote(state.string()) + " " + quote(mnt.string()));
  struct Unmount {
    std::function<void()> f;
    ~Unmount() { f(); }
  } unmount{[&] {
    if (daemon_pid(state) > 0) cmd("umount");
    pid_t pid = daemon_pid(state);
    if (pid > 0 && is_livefs_process(pid)) ::kill(pid, SIGKILL);
    for (int i = 0; i < 10 && has_mount(mnt); ++i) run("umount -l " + quote(mnt.string()));
  }};
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  auto status = [&] {
    Ran r = cmd("status", "--json");
    return r.status == 0 ? json::parse(r.out, nullptr, false) : json();
  };
  json st;
  ASSERT_TRUE(eventually([&] {
    st = status();
    return st.contains("reboot_needed_for");
  })) << st.dump(2);
  EXPECT_TRUE(need_of(st, "kernel_arguments").is_null()) << st.dump(2);

  sh(deploy + "--karg=livefs.test=1 --karg=quiet testos/stable");
  // Bounded poll: the daemon notices the deployment through inotify.
  ASSERT_TRUE(eventually(
      [&] {
        st = status();
        return !need_of(st, "kernel_arguments").is_null();
      },
      std::chrono::seconds(30)))
      << st.dump(2);
  EXPECT_EQ(need_of(st, "kernel_arguments")["items"], json({"", "livefs.test=1 quiet"}))
      << st.dump(2);
  // The booted kernel (the same commit) needs nothing else.
  EXPECT_TRUE(need_of(st, "kernel").is_null()) << st.dump(2);
  Ran text = cmd("status");
  EXPECT_NE(text.out.find("  kernel_arguments: "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("    next boot: livefs.test=1 quiet\n"), std::string::npos) << text.out;
}

}  // namespace
}  // namespace livefs::e2e
