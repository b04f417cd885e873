// `apply --etc` and `rollback --to N` end to end on a real OSTree sysroot (built with the
// `ostree` CLI): the staged deployment changes, adds and removes defaults in usr/etc, the
// administrator changed one file in the booted deployment's etc; the merge, its conflict
// report, rollback putting /etc back exactly, and a daemon killed after a merge whose
// journal record never made it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <set>

#include "e2e/live_support.h"
#include "e2e/ostree_support.h"
#include "support/tree_dump.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
using json = nlohmann::json;

void make_tree_a(const fs::path& root) {
  write_file(root / "usr/lib/modules/6.1.0/vmlinuz", "kernel\n");
  write_file(root / "usr/etc/os-release", "ID=livefs-test\n");
  write_file(root / "usr/bin/tool", "tool 1\n", 0755);
  write_file(root / "usr/etc/same.conf", "same\n");
  write_file(root / "usr/etc/changed.conf", "changed = a\n");
  write_file(root / "usr/etc/admin.conf", "admin = a\n");
  write_file(root / "usr/etc/removed.conf", "removed\n");
  write_file(root / "usr/etc/removed.d/x.conf", "x\n");
  fs::create_symlink("same.conf", root / "usr/etc/link");
}

void make_tree_b(const fs::path& root) {
  make_tree_a(root);
  write_file(root / "usr/bin/tool", "tool 2\n", 0755);
  write_file(root / "usr/etc/changed.conf", "changed = b\n", 0600);
  write_file(root / "usr/etc/admin.conf", "admin = b\n");
  fs::remove(root / "usr/etc/removed.conf");
  fs::remove_all(root / "usr/etc/removed.d");
  write_file(root / "usr/etc/added.conf", "added\n");
  write_file(root / "usr/etc/added.d/y.conf", "y\n");
  fs::remove(root / "usr/etc/link");
  fs::create_symlink("changed.conf", root / "usr/etc/link");
}

// Every attribute the merge keeps or restores, for every entry under `root`.
// The live directory itself is left out (its own time moves with what is made in it).
std::map<std::string, std::string> snapshot(const fs::path& root) {
  auto out = livefs::testing::dump_tree(root);
  out.erase("");
  return out;
}

// A sysroot whose deployments are trees A and B above.
struct EtcSysroot : OstreeSysroot {
  EtcSysroot() : OstreeSysroot("livefs-etc-e2e", make_tree_a, make_tree_b) {}
};
using EtcMount = OstreeMount;

std::set<std::string> strings(const json& a) {
  std::set<std::string> out;
  for (const auto& x : a) out.insert(x.get<std::string>());
  return out;
}

TEST(EtcMergeLive, MergeReportsConflictsAndRollbackToPutsEtcBackExactly) {
  EtcSysroot s;
  fs::path live = s.deployment(s.commit_a) / "etc";
  ASSERT_TRUE(fs::is_directory(live));
  write_file(live / "admin.conf", "admin = mine\n");
  auto before = snapshot(live);

  EtcMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  json dry = m.cmd_json("apply", "--etc --dry-run");
  ASSERT_TRUE(dry.contains("etc")) << dry.dump(2);
  EXPECT_EQ(snapshot(live), before);  // a dry run changes nothing
  EXPECT_FALSE(dry.contains("generation"));

  json merged = m.cmd_json("apply", "--etc");
  EXPECT_EQ(merged["generation"], 1) << merged.dump(2);
  const json& e = merged["etc"];
  EXPECT_EQ(strings(e["updated"]), (std::set<std::string>{"etc/changed.conf", "etc/link"}))
      << e.dump(2);
  EXPECT_EQ(strings(e["added"]),
            (std::set<std::string>{"etc/added.conf", "etc/added.d", "etc/added.d/y.conf"}));
  EXPECT_EQ(strings(e["removed"]),
            (std::set<std::string>{"etc/removed.conf", "etc/removed.d", "etc/removed.d/x.conf"}));
  ASSERT_EQ(e["conflicts"].size(), 1u) << e.dump(2);
  EXPECT_EQ(e["conflicts"][0]["path"], "etc/admin.conf");
  EXPECT_EQ(dry["etc"], e);  // the dry run showed what was done

  EXPECT_EQ(read_file(live / "changed.conf"), "changed = b\n");
  struct stat st {};
  ASSERT_EQ(::stat((live / "changed.conf").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(fs::read_symlink(live / "link"), "changed.conf");
  EXPECT_EQ(read_file(live / "added.d/y.conf"), "y\n");
  EXPECT_FALSE(present(live / "removed.conf"));
  EXPECT_FALSE(present(live / "removed.d"));
  EXPECT_EQ(read_file(live / "admin.conf"), "admin = mine\n");
  EXPECT_EQ(read_file(live / "same.conf"), "same\n");
  EXPECT_EQ(read_file(m.mnt / "bin/tool"), "tool 1\n");  // the layer did not change

  // A selection on top; then back past both in one switch.
  json all = m.cmd_json("apply", "--all --allow-replace");
  EXPECT_EQ(all["generation"], 2);
  EXPECT_EQ(read_file(m.mnt / "bin/tool"), "tool 2\n");

  Ran missing = m.cmd("rollback", "--to 7");
  EXPECT_EQ(missing.status, 1) << missing.out;
  EXPECT_NE(missing.out.find("not on the generation stack"), std::string::npos) << missing.out;

  json back = m.cmd_json("rollback", "--to 0");
  EXPECT_EQ(back["generation"], 0) << back.dump(2);
  EXPECT_EQ(back["etc_restored"], json({1})) << back.dump(2);
  EXPECT_EQ(back["switch"]["from_generation"], 2);
  EXPECT_EQ(read_file(m.mnt / "bin/tool"), "tool 1\n");
  EXPECT_EQ(snapshot(live), before);
  json st_after = m.cmd_json("status");
  EXPECT_EQ(st_after["live_generation"], 0);
  // One record for the whole way back.
  ASSERT_FALSE(st_after["history"].empty());
  EXPECT_EQ(st_after["history"].back()["op"], "rollback");
  EXPECT_EQ(st_after["history_records"].get<int>(), 4) << st_after["history"].dump(2);

  Ran text = m.cmd("apply", "--etc --dry-run");
  ASSERT_EQ(text.status, 0) << text.out;
  EXPECT_NE(text.out.find("etc conflict /etc/admin.conf"), std::string::npos) << text.out;
}

// A directory the merge added that the administrator has put a file in is kept, said, and the
// rollback succeeds; an undo that cannot complete makes rollback exit 1 (after saying what
// was done).
TEST(EtcMergeLive, RollbackKeepsAFilledDirectoryAndFailsWhenTheUndoCannotComplete) {
  EtcSysroot s;
  fs::path live = s.deployment(s.commit_a) / "etc";
  auto before = snapshot(live);
  EtcMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;

  json merged = m.cmd_json("apply", "--etc");
  ASSERT_TRUE(merged.contains("generation")) << merged.dump(2);
  write_file(live / "added.d/mine.conf", "mine\n");
  Ran back = m.cmd("rollback");
  EXPECT_EQ(back.status, 0) << back.out;
  EXPECT_NE(back.out.find("/etc: kept etc/added.d"), std::string::npos) << back.out;
  EXPECT_EQ(read_file(live / "added.d/mine.conf"), "mine\n");
  EXPECT_FALSE(present(live / "added.d/y.conf"));
  EXPECT_EQ(read_file(live / "changed.conf"), "changed = a\n");
  EXPECT_TRUE(present(live / "removed.d/x.conf"));
  fs::remove_all(live / "added.d");
  EXPECT_EQ(snapshot(live), before);

  merged = m.cmd_json("apply", "--etc");
  ASSERT_TRUE(merged.contains("generation")) << merged.dump(2);
  fs::path undo = m.state / "etc-undo" / std::to_string(merged["generation"].get<uint64_t>());
  ASSERT_TRUE(present(undo / "manifest"));
  // The backups are gone: /etc cannot be put back.
  fs::remove_all(undo / "b");
  fs::create_directories(undo / "b");
  back = m.cmd("rollback");
  EXPECT_EQ(back.status, 1) << back.out;
  EXPECT_NE(back.out.find("rollback: live generation is now 0"), std::string::npos) << back.out;
  EXPECT_NE(back.out.find("/etc: undo failed"), std::string::npos) << back.out;
  EXPECT_TRUE(present(undo / "manifest"));  // kept for the next try
}

// `apply --all --etc` when the tree has nothing left to apply: /etc is still merged, and the
// reply says that no tree change was pending.
TEST(EtcMergeLive, ApplyAllEtcMergesEtcWhenNoTreeChangeIsPending) {
  EtcSysroot s;
  fs::path live = s.deployment(s.commit_a) / "etc";
  auto before = snapshot(live);
  EtcMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  json all = m.cmd_json("apply", "--all --allow-replace");
  ASSERT_EQ(all["generation"], 1) << all.dump(2);
  EXPECT_EQ(snapshot(live), before);

  Ran dry = m.cmd("apply", "--all --etc --dry-run");
  EXPECT_EQ(dry.status, 0) << dry.out;
  EXPECT_NE(dry.out.find("note: no tree change was pending"), std::string::npos) << dry.out;
  EXPECT_EQ(snapshot(live), before);

  json merged = m.cmd_json("apply", "--all --etc");
  EXPECT_EQ(merged["generation"], 2) << merged.dump(2);
  EXPECT_TRUE(merged["applied"].empty()) << merged.dump(2);
  EXPECT_NE(merged.value("note", "").find("no tree change was pending"), std::string::npos)
      << merged.dump(2);
  EXPECT_EQ(strings(merged["etc"]["updated"]),
            (std::set<std::string>{"etc/admin.conf", "etc/changed.conf", "etc/link"}))
      << merged.dump(2);
  EXPECT_EQ(read_file(live / "changed.conf"), "changed = b\n");

  json back = m.cmd_json("rollback");
  EXPECT_EQ(back["etc_restored"], json({2})) << back.dump(2);
  EXPECT_EQ(snapshot(live), before);
}

TEST(EtcMergeLive, AMergeWhoseGenerationWasNeverJournalledIsUndoneAtStart) {
  EtcSysroot s;
  fs::path live = s.deployment(s.commit_a) / "etc";
  write_file(live / "admin.conf", "admin = mine\n");
  auto before = snapshot(live);
  EtcMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  // With a selection: the layer and /etc in one generation.
  json merged = m.cmd_json("apply", "--etc --all --allow-replace");
  ASSERT_EQ(merged["generation"], 1) << merged.dump(2);
  EXPECT_EQ(read_file(m.mnt / "bin/tool"), "tool 2\n");
  ASSERT_NE(snapshot(live), before);
  m.kill_daemon();

  // As if the daemon had died after the merge but before its journal record: the record is
  // cut off the journal.
  fs::path journal = m.state / "journal";
  std::string text = read_file(journal);
  ASSERT_FALSE(text.empty());
  size_t last = text.rfind('\n', text.size() - 2);
  ASSERT_NE(last, std::string::npos);
  ASSERT_NE(text.find(" apply ", last), std::string::npos) << text;
  write_file(journal, text.substr(0, last + 1), 0600);

  mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  // The daemon answers status once its generations are open (and the recovery ran).
  ASSERT_TRUE(eventually([&] {
    Ran r = m.cmd("status", "--json");
    json j = json::parse(r.out, nullptr, false);
    return r.status == 0 && !j.is_discarded() && j["loading"].is_null();
  }));
  EXPECT_EQ(m.cmd_json("status")["live_generation"], 0);
  EXPECT_EQ(read_file(m.mnt / "bin/tool"), "tool 1\n");
  EXPECT_EQ(snapshot(live), before);
  EXPECT_FALSE(present(m.state / "etc-undo/1"));
}

TEST(EtcMergeLive, AStagedCommitWithoutDeploymentIsMergedFromItsCommit) {
  EtcSysroot s;
  // A commit that is never deployed: its usr/etc exists only in the repository.
  make_tree_b(*s.dir / "tree-c");
  write_file(*s.dir / "tree-c/usr/etc/changed.conf", "changed = c\n");
  write_file(*s.dir / "tree-c/usr/etc/from-commit.conf", "commit only\n");
  std::string commit_c = s.commit("tree-c", "testos/stable", "3.0");
  fs::path live = s.deployment(s.commit_a) / "etc";
  auto before = snapshot(live);
  EtcMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  json staged = m.cmd_json("stage", "--commit " + commit_c);
  ASSERT_EQ(m.cmd_json("status")["staged_origin"]["kind"], "commit") << staged.dump(2);

  json merged = m.cmd_json("apply", "--etc");
  ASSERT_EQ(merged["generation"], 1) << merged.dump(2);
  EXPECT_EQ(read_file(live / "changed.conf"), "changed = c\n");
  EXPECT_EQ(read_file(live / "from-commit.conf"), "commit only\n");
  EXPECT_FALSE(present(live / "removed.conf"));
  struct stat st {};
  ASSERT_EQ(::stat((m.state / "etc-staged").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  json back = m.cmd_json("reset");
  EXPECT_EQ(back["etc_restored"], json({1})) << back.dump(2);
  EXPECT_EQ(snapshot(live), before);
}

TEST(EtcMergeLive, ARootWithoutDefaultConfigurationIsRefused) {
  TempDir dir("livefs-etc-plain");
  // A plain root's /usr (with a package database beside it, so the view serves its usr).
  write_file(dir / "booted/usr/bin/tool", "1\n");
  write_file(dir / "booted/var/lib/dpkg/status", "");
  write_file(dir / "booted/etc/hostname", "plain\n");
  write_file(dir / "staged/usr/bin/tool", "2\n");
  write_file(dir / "staged/var/lib/dpkg/status", "");
  fs::create_directories(dir / "mnt");
  fs::path state = dir / "state";
  Ran mounted = livefs("mount --booted " + quote((dir / "booted/usr").string()) + " --staged " +
                       quote((dir / "staged/usr").string()) + " --state " + quote(state.string()) +
                       " " + quote((dir / "mnt").string()));
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran r = livefs("apply --etc --state " + quote(state.string()));
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("no default configuration to merge"), std::string::npos) << r.out;
  livefs("umount --state " + quote(state.string()));
  for (int i = 0; i < 10 && has_mount(dir / "mnt"); ++i)
    run("umount -l " + quote((dir / "mnt").string()) + " 2>/dev/null");
}

}  // namespace
}  // namespace livefs::e2e
