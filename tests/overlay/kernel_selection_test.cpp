// What needs a reboot: a staged kernel update that moves the modules from the running
// kernel's directory to the new kernel's. The running kernel's modules stay, the new ones go
// live, the images are kept, and what is kept is said (selection, refusals, reboot_needs).
#include <gtest/gtest.h>

#include <algorithm>

#include "overlay/selection.h"
#include "support/entries.h"

namespace livefs::overlay {
namespace {

using livefs::testing::build_tree;
using livefs::testing::dir;
using livefs::testing::file;
using store::ChangeKind;
using store::EntryType;
using store::Tree;

std::vector<std::string> paths_of(const std::vector<store::Change>& changes) {
  std::vector<std::string> out;
  for (const auto& c : changes) out.push_back(c.path);
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// An OSTree-like root (the view serves /): the booted kernel 6.1.0 in usr/lib/modules, the
// staged one 6.2.0 there instead, and one ordinary change (bin/tool).
struct KernelMove {
  Tree booted = build_tree({dir(""), dir("usr"), dir("usr/bin"), file("usr/bin/tool", "t1"),
                            dir("usr/lib"), dir("usr/lib/modules"), dir("usr/lib/modules/6.1.0"),
                            file("usr/lib/modules/6.1.0/vmlinuz", "k1"),
                            file("usr/lib/modules/6.1.0/initramfs.img", "i1"),
                            dir("usr/lib/modules/6.1.0/kernel"),
                            file("usr/lib/modules/6.1.0/kernel/a.ko", "a1"),
                            file("usr/lib/modules/6.1.0/modules.dep", "d1")});
  Tree staged = build_tree({dir(""), dir("usr"), dir("usr/bin"), file("usr/bin/tool", "t2"),
                            dir("usr/lib"), dir("usr/lib/modules"), dir("usr/lib/modules/6.2.0"),
                            file("usr/lib/modules/6.2.0/vmlinuz", "k2"),
                            file("usr/lib/modules/6.2.0/initramfs.img", "i2"),
                            dir("usr/lib/modules/6.2.0/kernel"),
                            file("usr/lib/modules/6.2.0/kernel/a.ko", "a2"),
                            file("usr/lib/modules/6.2.0/modules.dep", "d2")});
  Tree empty = build_tree({dir("")});
  std::vector<std::string> running = {"6.1.0"};
};

TEST(KernelSelection, BootedKernelVersionsAreTheModulesDirectoriesWithAnImage) {
  KernelMove f;
  EXPECT_EQ(booted_kernel_versions(f.booted), std::vector<std::string>{"6.1.0"});
  // A /usr view (lib/modules/VER); a directory without vmlinuz is no kernel.
  Tree usr = build_tree({dir(""), dir("lib"), dir("lib/modules"), dir("lib/modules/5.10"),
                         file("lib/modules/5.10/vmlinuz", "k"), dir("lib/modules/old"),
                         file("lib/modules/old/modules.dep", "d")});
  EXPECT_EQ(booted_kernel_versions(usr), std::vector<std::string>{"5.10"});
  EXPECT_TRUE(booted_kernel_versions(f.empty).empty());
}

TEST(KernelSelection, AllKeepsTheRunningKernelsModulesAndSaysWhy) {
  KernelMove f;
  auto all = select_changes({f.booted, f.staged, f.empty}, {},
                            {.all = true, .allow_replace = true, .running_kernels = f.running});
  ASSERT_TRUE(all) << all.error().message();
  // The running kernel's modules are still served, as booted.
  for (const char* p : {"usr/lib/modules/6.1.0", "usr/lib/modules/6.1.0/kernel/a.ko",
                        "usr/lib/modules/6.1.0/modules.dep", "usr/lib/modules/6.1.0/vmlinuz"}) {
    auto m = resolve_merged(f.booted, all->layer, p);
    ASSERT_TRUE(m) << p;
    EXPECT_TRUE(same_entry(*m, f.booted.find(p)->to_entry())) << p;
  }
  // The rest is live: the tool, and the new kernel's modules (not its image or initramfs).
  EXPECT_EQ(resolve_merged(f.booted, all->layer, "usr/bin/tool")->object,
            store::ObjectId::of("t2"));
  auto ko = resolve_merged(f.booted, all->layer, "usr/lib/modules/6.2.0/kernel/a.ko");
  ASSERT_TRUE(ko);
  EXPECT_EQ(ko->object, store::ObjectId::of("a2"));
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "usr/lib/modules/6.2.0/vmlinuz"));
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "usr/lib/modules/6.2.0/initramfs.img"));

  // Kept, with the reason; the removed directory is one line for its whole subtree.
  std::vector<std::string> kept;
  for (const auto& k : all->kept) kept.push_back(k.path + " " + k.reason);
  EXPECT_EQ(kept, (std::vector<std::string>{
                      "usr/lib/modules/6.1.0 modules of the running kernel 6.1.0: needs a reboot",
                      "usr/lib/modules/6.2.0/initramfs.img kernel: needs a reboot",
                      "usr/lib/modules/6.2.0/vmlinuz kernel: needs a reboot"}));
  EXPECT_EQ(all->kept[0].kind, ChangeKind::removed);
  EXPECT_EQ(all->skipped_kernel, (std::vector<std::string>{"usr/lib/modules/6.1.0",
                                                           "usr/lib/modules/6.2.0/initramfs.img",
                                                           "usr/lib/modules/6.2.0/vmlinuz"}));

  // What stays pending is exactly what needs the reboot: a second --all has nothing to do
  // and says so.
  auto again = select_changes({f.booted, f.staged, all->layer}, {},
                              {.all = true, .allow_replace = true, .running_kernels = f.running});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, EPERM);
  EXPECT_NE(again.error().context.find("every pending change needs a reboot"), std::string::npos)
      << again.error().context;
  EXPECT_NE(again.error().context.find("modules of the running kernel 6.1.0: needs a reboot: "
                                       "usr/lib/modules/6.1.0"),
            std::string::npos)
      << again.error().context;
  EXPECT_NE(again.error().context.find("kernel update: needs a reboot"), std::string::npos);
}

TEST(KernelSelection, WithoutTheRunningVersionOnlyImagesAreKept) {
  // The behaviour without running_kernels (a kernel that is not running: its modules go).
  KernelMove f;
  auto all =
      select_changes({f.booted, f.staged, f.empty}, {}, {.all = true, .allow_replace = true});
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_FALSE(resolve_merged(f.booted, all->layer, "usr/lib/modules/6.1.0/kernel/a.ko"));
}

TEST(KernelSelection, NamingTheRunningKernelsModulesIsRefused) {
  KernelMove f;
  SelectOptions options{.allow_replace = true, .running_kernels = f.running};
  auto refused =
      select_changes({f.booted, f.staged, f.empty}, {"usr/lib/modules/6.1.0/kernel"}, options);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, EPERM);
  EXPECT_EQ(refused.error().context,
            "modules of the running kernel 6.1.0: needs a reboot: usr/lib/modules/6.1.0/kernel");
  // A directory pattern that covers both kernels is refused as a whole, naming both reasons.
  refused = select_changes({f.booted, f.staged, f.empty}, {"usr/lib/modules"}, options);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().context.find("kernel update: needs a reboot: "
                                         "usr/lib/modules/6.2.0/initramfs.img"),
            std::string::npos)
      << refused.error().context;
  EXPECT_NE(refused.error().context.find("modules of the running kernel 6.1.0"), std::string::npos);
  // The new kernel's modules alone go live.
  auto fresh =
      select_changes({f.booted, f.staged, f.empty}, {"usr/lib/modules/6.2.0/kernel"}, options);
  ASSERT_TRUE(fresh) << fresh.error().message();
  EXPECT_TRUE(contains(paths_of(fresh->applied), "usr/lib/modules/6.2.0/kernel/a.ko"));
}

TEST(KernelSelection, RemovingAnAncestorOfTheModulesIsKept) {
  // A /usr view whose update removes lib/modules altogether (and adds another tree).
  Tree booted = build_tree({dir(""), dir("lib"), dir("lib/modules"), dir("lib/modules/6.1.0"),
                            file("lib/modules/6.1.0/a.ko", "a")});
  Tree staged = build_tree({dir(""), dir("lib"), file("lib/new", "n")});
  Tree empty = build_tree({dir("")});
  std::vector<std::string> running = {"6.1.0"};
  store::Change gone{
      .path = "lib/modules", .kind = ChangeKind::removed, .old_index = {}, .new_index = {}};
  EXPECT_EQ(reboot_reason(booted, gone, running),
            "modules of the running kernel 6.1.0: needs a reboot");
  // Another kernel version's ancestor removal is nothing to keep.
  EXPECT_EQ(reboot_reason(booted, gone, {"9.9"}), "");
  EXPECT_EQ(
      reboot_reason(
          booted,
          {.path = "lib/modules/6.1", .kind = ChangeKind::added, .old_index = {}, .new_index = {}},
          running),
      "");

  auto all = select_changes({booted, staged, empty}, {},
                            {.all = true, .allow_replace = true, .running_kernels = running});
  ASSERT_TRUE(all) << all.error().message();
  EXPECT_EQ(paths_of(all->applied), std::vector<std::string>{"lib/new"});
  ASSERT_EQ(all->kept.size(), 1u);
  EXPECT_EQ(all->kept[0].path, "lib/modules");
  EXPECT_TRUE(resolve_merged(booted, all->layer, "lib/modules/6.1.0/a.ko"));
}

// With --all, a hard-link group that reaches into the running kernel's modules keeps that
// link as kept, and the rest of the update goes live (no refusal of the whole apply).
TEST(KernelSelection, AllKeepsAKernelLinkAHardLinkGroupBringsBackIn) {
  auto linked = [](store::Entry e, uint32_t group) {
    e.link_group = group;
    return e;
  };
  Tree booted =
      build_tree({dir(""), dir("lib"), dir("lib/modules"), dir("lib/modules/6.1"),
                  file("lib/modules/6.1/vmlinuz", "k"), linked(file("lib/modules/6.1/a", "x"), 1),
                  dir("share"), linked(file("share/b", "x"), 1)});
  Tree staged =
      build_tree({dir(""), dir("lib"), dir("lib/modules"), dir("lib/modules/6.1"),
                  file("lib/modules/6.1/vmlinuz", "k"), linked(file("lib/modules/6.1/a", "x"), 1),
                  dir("share"), linked(file("share/b", "x"), 1), linked(file("share/c", "x"), 1)});
  Tree empty = build_tree({dir("")});
  auto sel = select_changes({booted, staged, empty}, {},
                            {.all = true, .allow_replace = true, .running_kernels = {"6.1"}});
  ASSERT_TRUE(sel) << sel.error().message();
  EXPECT_TRUE(contains(paths_of(sel->applied), "share/c"));
  EXPECT_FALSE(contains(paths_of(sel->applied), "lib/modules/6.1/a"));
  EXPECT_TRUE(contains(sel->skipped_kernel, "lib/modules/6.1/a"));
}

TEST(KernelSelection, OnlyKernelPlacesAreKernelPaths) {
  EXPECT_TRUE(is_kernel_path("boot/vmlinuz-6.1"));
  EXPECT_TRUE(is_kernel_path("usr/lib/modules/6.1/initramfs.img"));
  EXPECT_TRUE(is_kernel_path("lib/ostree-boot/initramfs-6.1.img"));
  EXPECT_FALSE(is_kernel_path("share/initramfs-tools"));
  EXPECT_FALSE(is_kernel_path("share/man/man8/initramfs-tools.8.gz"));
}

TEST(KernelSelection, RebootNeedsListKernelModulesAndPolicy) {
  KernelMove f;
  Tree staged = build_tree({dir(""), dir("usr"), dir("usr/bin"), file("usr/bin/tool", "t2"),
                            dir("usr/lib"), dir("usr/lib/modules"), dir("usr/lib/modules/6.2.0"),
                            file("usr/lib/modules/6.2.0/vmlinuz", "k2"), dir("usr/etc"),
                            dir("usr/etc/selinux"), dir("usr/etc/selinux/targeted"),
                            dir("usr/etc/selinux/targeted/policy"),
                            file("usr/etc/selinux/targeted/policy/policy.33", "p"),
                            file("usr/etc/selinux/targeted/setrans.conf", "s")});
  auto needs = reboot_needs(f.booted, store::diff(f.booted, staged), f.running);
  ASSERT_EQ(needs.size(), 3u);
  EXPECT_EQ(needs[0].what, "kernel");
  EXPECT_EQ(needs[0].paths, std::vector<std::string>{"usr/lib/modules/6.2.0/vmlinuz"});
  EXPECT_EQ(needs[1].what, "kernel_modules");
  EXPECT_NE(needs[1].reason.find("6.1.0"), std::string::npos);
  EXPECT_EQ(needs[1].paths, std::vector<std::string>{"usr/lib/modules/6.1.0"});
  EXPECT_EQ(needs[2].what, "selinux_policy");
  EXPECT_EQ(needs[2].paths, std::vector<std::string>{"usr/etc/selinux/targeted/policy"});
  // Nothing staged: nothing needs a reboot.
  EXPECT_TRUE(reboot_needs(f.booted, store::diff(f.booted, f.booted), f.running).empty());

  EXPECT_TRUE(is_selinux_policy_path("usr/etc/selinux/targeted/policy"));
  EXPECT_TRUE(is_selinux_policy_path("etc/selinux/mls/policy/policy.33"));
  EXPECT_FALSE(is_selinux_policy_path("etc/selinux/targeted/contexts/files"));
  EXPECT_FALSE(is_selinux_policy_path("usr/etc/selinux/config"));
  EXPECT_FALSE(is_selinux_policy_path("usr/etc/selinux//policy"));
  EXPECT_FALSE(is_selinux_policy_path("usr/etc/selinux/targeted/policy-old"));
}

}  // namespace
}  // namespace livefs::overlay
