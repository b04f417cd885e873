// The /etc merge on temporary directories: the plan, the merge, undo, and the recovery of a
// merge or undo cut short.
#include "livefs/etc_merge.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <thread>

#include "support/temp_dir.h"
#include "support/tree_dump.h"

namespace livefs::etc {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::write_file;

// Everything the merge promises to keep or restore, for every entry under `root`.
// The live directory itself is left out (its own time moves with what is made in it).
std::map<std::string, std::string> snapshot(const fs::path& root) {
  auto out = livefs::testing::dump_tree(root);
  out.erase("");
  return out;
}

void xattr(const fs::path& p, const std::string& name, const std::string& value) {
  ASSERT_EQ(::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0), 0) << p;
}

// A booted default, a staged default and a live /etc that the administrator changed.
struct Sides {
  TempDir tmp{"livefs-etc"};
  fs::path b = tmp / "booted", s = tmp / "staged", l = tmp / "live", undo = tmp / "undo";

  Sides() {
    for (const auto& root : {b, s}) {
      write_file(root / "same.conf", "same\n");
      write_file(root / "admin.conf", root == b ? "v1\n" : "v2\n");
      write_file(root / "updated.conf", root == b ? "v1\n" : "v2\n", root == b ? 0644 : 0640);
      fs::create_directories(root / "dir");
      write_file(root / "dir/inner.conf", root == b ? "old\n" : "new\n");
      fs::create_symlink(root == b ? "same.conf" : "dir/inner.conf", root / "link");
    }
    EXPECT_EQ(::chown((s / "updated.conf").c_str(), 1234, 5678), 0);
    xattr(s / "updated.conf", "user.label", "staged");
    xattr(s / "updated.conf", "trusted.label", "staged_t");
    ::chmod((s / "dir").c_str(), 0750);
    // Removed defaults: one never changed, one changed, a whole directory.
    write_file(b / "gone.conf", "gone\n");
    write_file(b / "kept-gone.conf", "default\n");
    fs::create_directories(b / "gonedir/deeper");
    write_file(b / "gonedir/deeper/x", "x\n");
    // New defaults: a file, a directory with a file, one where the administrator made one.
    write_file(s / "new.conf", "new\n", 0600);
    fs::create_directories(s / "newdir");
    write_file(s / "newdir/sub.conf", "sub\n");
    fs::create_symlink("new.conf", s / "newlink");
    write_file(s / "clash.conf", "default\n");

    fs::copy(b, l, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    for (auto it = fs::recursive_directory_iterator(b); it != fs::recursive_directory_iterator();
         ++it) {
      // A copy of the booted default: the same owners and permissions.
      fs::path lp = l / it->path().lexically_relative(b);
      struct stat st {};
      ::lstat(it->path().c_str(), &st);
      ::lchown(lp.c_str(), st.st_uid, st.st_gid);
      if (!S_ISLNK(st.st_mode)) ::chmod(lp.c_str(), st.st_mode & 07777);
    }
    write_file(l / "admin.conf", "mine\n");
    write_file(l / "kept-gone.conf", "mine too\n");
    write_file(l / "clash.conf", "the administrator's\n");
    write_file(l / "local.conf", "only here\n");
    xattr(l / "same.conf", "user.note", "admin");  // changed, but its default did not
  }
};

std::map<std::string, std::string> by_path(const Plan& p) {
  std::map<std::string, std::string> out;
  for (const auto& a : p.actions) out[a.path] = action_name(a.kind);
  return out;
}

TEST(EtcMerge, PlanIsTheThreeWayMergeAndReadsOnly) {
  Sides w;
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p) << p.error().message();
  std::map<std::string, std::string> want = {
      {"admin.conf", "conflict"},     {"updated.conf", "update"}, {"dir", "update"},
      {"dir/inner.conf", "update"},   {"link", "update"},         {"gone.conf", "remove"},
      {"kept-gone.conf", "conflict"}, {"gonedir", "remove"},      {"gonedir/deeper", "remove"},
      {"gonedir/deeper/x", "remove"}, {"new.conf", "add"},        {"newdir", "add"},
      {"newdir/sub.conf", "add"},     {"newlink", "add"},         {"clash.conf", "conflict"},
  };
  EXPECT_EQ(by_path(*p), want);
  // A directory before its entries; a removed one after them.
  auto index = [&](const std::string& path) {
    for (size_t i = 0; i < p->actions.size(); ++i)
      if (p->actions[i].path == path) return i;
    return p->actions.size();
  };
  EXPECT_LT(index("newdir"), index("newdir/sub.conf"));
  EXPECT_GT(index("gonedir"), index("gonedir/deeper/x"));
  EXPECT_EQ(snapshot(w.l), before);
}

TEST(EtcMerge, MergeTakesTheStagedDefaultsAndUndoPutsEtcBackExactly) {
  Sides w;
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  auto st = merge(*p, w.s, w.l, w.undo, "tag");
  ASSERT_TRUE(st) << st.error().message();

  EXPECT_EQ(testing::read_file(w.l / "updated.conf"), "v2\n");
  struct stat s {};
  ASSERT_EQ(::stat((w.l / "updated.conf").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0640u);
  EXPECT_EQ(s.st_uid, 1234u);
  EXPECT_EQ(s.st_gid, 5678u);
  char v[64] = {};
  ASSERT_EQ(::getxattr((w.l / "updated.conf").c_str(), "trusted.label", v, sizeof v), 8);
  EXPECT_EQ(std::string(v, 8), "staged_t");
  ASSERT_EQ(::stat((w.l / "dir").c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0750u);
  EXPECT_EQ(testing::read_file(w.l / "dir/inner.conf"), "new\n");
  EXPECT_EQ(fs::read_symlink(w.l / "link"), "dir/inner.conf");
  EXPECT_EQ(testing::read_file(w.l / "newdir/sub.conf"), "sub\n");
  EXPECT_EQ(fs::read_symlink(w.l / "newlink"), "new.conf");
  EXPECT_FALSE(fs::exists(w.l / "gone.conf"));
  EXPECT_FALSE(fs::exists(w.l / "gonedir"));
  // What the administrator changed is kept.
  EXPECT_EQ(testing::read_file(w.l / "admin.conf"), "mine\n");
  EXPECT_EQ(testing::read_file(w.l / "kept-gone.conf"), "mine too\n");
  EXPECT_EQ(testing::read_file(w.l / "clash.conf"), "the administrator's\n");
  EXPECT_EQ(testing::read_file(w.l / "local.conf"), "only here\n");
  // The undo is private.
  ASSERT_EQ(::stat(w.undo.c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0700u);
  // Merging again finds nothing more to do.
  auto again = plan(w.b, w.s, w.l);
  ASSERT_TRUE(again);
  EXPECT_FALSE(again->changes());

  auto u = undo(w.undo);
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_EQ(snapshot(w.l), before);
  EXPECT_FALSE(fs::exists(w.undo));
}

TEST(EtcMerge, RecoveryUndoesAMergeCutShortAndKeepsLiveOnes) {
  Sides w;
  auto before = snapshot(w.l);
  fs::path root = w.tmp / "etc-undo";
  fs::create_directories(root);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, root / "7", "tag"));
  auto merged = snapshot(w.l);
  // Generation 7 is live: nothing to do.
  auto kept = recover(root, {0, 7}, "tag");
  ASSERT_TRUE(kept) << kept.error().message();
  EXPECT_TRUE(kept->empty());
  EXPECT_EQ(snapshot(w.l), merged);

  // Cut short: the crash came after some steps only (the others still show the old /etc),
  // and a temporary of the step in flight is left.
  fs::remove_all(w.l / "newdir");
  fs::remove(w.l / "updated.conf");
  fs::copy_file(w.b / "updated.conf", w.l / "updated.conf");
  write_file(w.l / ".livefs-etc-99-1", "half");
  auto undone = recover(root, {0}, "tag");
  ASSERT_TRUE(undone) << undone.error().message();
  EXPECT_EQ(*undone, std::vector<uint64_t>{7});
  EXPECT_EQ(snapshot(w.l), before);
  EXPECT_FALSE(fs::exists(root / "7"));
}

TEST(EtcMerge, RecoveryFinishesAnUndoCutShort) {
  Sides w;
  auto before = snapshot(w.l);
  fs::path root = w.tmp / "etc-undo";
  fs::create_directories(root);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, root / "3", "tag"));
  // An undo that restored some entries before the crash: the rest is still merged.
  fs::remove(w.l / "new.conf");
  write_file(w.l / "gone.conf", "gone\n");
  auto undone = recover(root, {0}, "tag");
  ASSERT_TRUE(undone) << undone.error().message();
  EXPECT_EQ(snapshot(w.l), before);
  // Twice is the same as once.
  auto again = recover(root, {0}, "tag");
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->empty());
  EXPECT_EQ(snapshot(w.l), before);
}

TEST(EtcMerge, RecoveryUndoesStackedMergesHighestFirst) {
  Sides w;
  auto before = snapshot(w.l);
  fs::path root = w.tmp / "etc-undo";
  fs::create_directories(root);
  auto p1 = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p1);
  ASSERT_TRUE(merge(*p1, w.s, w.l, root / "1", "tag"));
  // A later deployment changes a default again; merged over the first merge.
  fs::path s2 = w.tmp / "staged2";
  fs::copy(w.s, s2, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  write_file(s2 / "updated.conf", "v3\n");
  write_file(s2 / "newer.conf", "newer\n");
  auto p2 = plan(w.s, s2, w.l);
  ASSERT_TRUE(p2);
  ASSERT_TRUE(p2->changes());
  ASSERT_TRUE(merge(*p2, s2, w.l, root / "2", "tag"));
  EXPECT_EQ(testing::read_file(w.l / "updated.conf"), "v3\n");
  auto undone = recover(root, {0}, "tag");
  ASSERT_TRUE(undone) << undone.error().message();
  EXPECT_EQ(*undone, (std::vector<uint64_t>{2, 1}));
  EXPECT_EQ(snapshot(w.l), before);
}

// A directory the merge added, in which the administrator has since made a file: undo keeps
// both (and says so) and still puts everything else back and completes.
TEST(EtcMerge, UndoKeepsADirectoryItAddedThatTheAdministratorFilled) {
  Sides w;
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, w.undo, "tag"));
  write_file(w.l / "newdir/mine.conf", "the administrator's\n");
  std::vector<std::string> kept;
  auto u = undo(w.undo, &kept);
  ASSERT_TRUE(u) << u.error().message();
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_TRUE(kept[0].starts_with("newdir ")) << kept[0];
  EXPECT_EQ(testing::read_file(w.l / "newdir/mine.conf"), "the administrator's\n");
  EXPECT_FALSE(fs::exists(w.l / "newdir/sub.conf"));
  EXPECT_FALSE(fs::exists(w.undo));
  // Everything else is as before the merge.
  auto after = snapshot(w.l);
  after.erase("newdir");
  after.erase("newdir/mine.conf");
  auto want = before;
  want.erase("");  // the live directory's own time is not compared by snapshot anyway
  EXPECT_EQ(after, want);
}

// What the administrator changed after the merge is not overwritten by undo: a file the merge
// updated and then the administrator edited, one made where the merge removed a default, one
// the merge added and the administrator rewrote. An entry an earlier, cut-short undo already
// put back is not reported.
TEST(EtcMerge, UndoKeepsWhatTheAdministratorChangedSinceTheMerge) {
  Sides w;
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, w.undo, "tag"));
  write_file(w.l / "updated.conf", "edited after the merge\n");
  write_file(w.l / "gone.conf", "made again\n");
  write_file(w.l / "new.conf", "rewritten\n", 0600);
  ASSERT_EQ(::chmod((w.l / "dir").c_str(), 0700), 0);
  fs::remove(w.l / "dir/inner.conf");
  fs::copy_file(w.b / "dir/inner.conf", w.l / "dir/inner.conf");
  std::vector<std::string> kept;
  auto u = undo(w.undo, &kept);
  ASSERT_TRUE(u) << u.error().message();
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(kept,
            (std::vector<std::string>{
                "dir (changed since the merge)", "gone.conf (changed since the merge)",
                "new.conf (changed since the merge)", "updated.conf (changed since the merge)"}));
  EXPECT_EQ(testing::read_file(w.l / "updated.conf"), "edited after the merge\n");
  EXPECT_EQ(testing::read_file(w.l / "gone.conf"), "made again\n");
  EXPECT_EQ(testing::read_file(w.l / "new.conf"), "rewritten\n");
  EXPECT_EQ(testing::read_file(w.l / "dir/inner.conf"), "old\n");
  EXPECT_FALSE(fs::exists(w.undo));
  // The rest is as before the merge.
  auto after = snapshot(w.l);
  for (const char* changed : {"updated.conf", "gone.conf", "new.conf", "dir", ""}) {
    after.erase(changed);
    before.erase(changed);
  }
  EXPECT_EQ(after, before);
}

// Start-up recovery goes on past an undo directory it cannot undo, to the next, and names
// every failure.
TEST(EtcMerge, RecoveryCarriesOnPastAFailedUndo) {
  Sides w;
  auto before = snapshot(w.l);
  fs::path root = w.tmp / "etc-undo";
  fs::create_directories(root);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, root / "3", "tag"));
  for (const char* g : {"5", "9"}) {
    fs::create_directories(root / g);
    write_file(root / g / "manifest", "not a manifest\n");
  }
  auto undone = recover(root, {0}, "tag");
  ASSERT_FALSE(undone);
  EXPECT_NE(undone.error().message().find("generation 9"), std::string::npos)
      << undone.error().message();
  EXPECT_NE(undone.error().message().find("generation 5"), std::string::npos)
      << undone.error().message();
  EXPECT_EQ(snapshot(w.l), before);
  EXPECT_FALSE(fs::exists(root / "3"));
  EXPECT_TRUE(fs::exists(root / "5/manifest"));  // kept for the next start
  EXPECT_TRUE(fs::exists(root / "9/manifest"));
}

TEST(EtcMerge, AnUndoWithoutManifestTouchedNothingAndAnotherTreesIsSetAside) {
  Sides w;
  auto before = snapshot(w.l);
  fs::path root = w.tmp / "etc-undo";
  // A merge that crashed while writing its backups: /etc was not touched yet.
  fs::create_directories(root / "4/b");
  write_file(root / "4/b/0", "partial");
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, root / "5", "other tree"));
  auto merged = snapshot(w.l);
  auto r = recover(root, {0}, "tag");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->empty());
  EXPECT_FALSE(fs::exists(root / "4"));
  EXPECT_FALSE(fs::exists(root / "5"));
  EXPECT_EQ(snapshot(w.l), merged);  // another booted tree's undo is not applied here
  bool aside = false;
  for (const auto& e : fs::directory_iterator(root))
    aside |= e.path().filename().string().starts_with("5.aside-");
  EXPECT_TRUE(aside);
  (void)before;
}

TEST(EtcMerge, AFailedStepUndoesTheStepsBefore) {
  Sides w;
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  // The staged default of a late step is gone when the merge reaches it.
  fs::remove(w.s / "newlink");
  auto st = merge(*p, w.s, w.l, w.undo, "tag");
  ASSERT_FALSE(st);
  EXPECT_NE(st.error().message().find("newlink"), std::string::npos) << st.error().message();
  EXPECT_EQ(snapshot(w.l), before);
  EXPECT_FALSE(fs::exists(w.undo));
}

// Polls `done` (a condition on the file system another process changes).
template <class F>
bool wait_for(F&& done) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return done();
}

// Runs `fn` in a child process and SIGKILLs it once `started` holds (or it has ended).
template <class Fn, class Started>
void kill_during(Fn&& fn, Started&& started) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(fn() ? 0 : 1);
  int status = 0;
  EXPECT_TRUE(wait_for([&] { return started() || ::waitpid(pid, &status, WNOHANG) == pid; }));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
}

size_t count_content(const fs::path& dir, size_t files, const std::string& prefix) {
  size_t n = 0;
  for (size_t i = 0; i < files; ++i) {
    std::string text;
    std::ifstream in(dir / ("f" + std::to_string(i)));
    std::getline(in, text);
    n += text.starts_with(prefix);
  }
  return n;
}

TEST(EtcMerge, AProcessKilledMidMergeOrMidUndoIsRecoveredToTheOriginal) {
  TempDir tmp("livefs-etc-kill");
  fs::path b = tmp / "booted", s = tmp / "staged", l = tmp / "live", root = tmp / "etc-undo";
  constexpr size_t kFiles = 120;
  for (size_t i = 0; i < kFiles; ++i) {
    std::string name = "f" + std::to_string(i);
    write_file(b / name, "old " + name + "\n");
    write_file(s / name, "new " + name + "\n", 0600);
    write_file(l / name, "old " + name + "\n");
  }
  write_file(s / "added/one", "added\n");
  fs::create_directories(root);
  auto before = snapshot(l);
  auto p = plan(b, s, l);
  ASSERT_TRUE(p);
  ASSERT_EQ(p->count(ActionKind::update), kFiles);

  // Killed once the merge has begun to change /etc.
  kill_during([&] { return bool(merge(*p, s, l, root / "1", "tag")); },
              [&] { return count_content(l, kFiles, "new") > 0; });
  size_t merged = count_content(l, kFiles, "new");
  RecordProperty("merged_before_kill", std::to_string(merged));
  auto undone = recover(root, {0}, "tag");
  ASSERT_TRUE(undone) << undone.error().message();
  EXPECT_EQ(snapshot(l), before) << merged << " files were merged when it was killed";

  // A whole merge, then its undo killed once it has begun to restore.
  ASSERT_TRUE(merge(*p, s, l, root / "2", "tag"));
  ASSERT_EQ(count_content(l, kFiles, "new"), kFiles);
  kill_during([&] { return bool(undo(root / "2")); },
              [&] { return count_content(l, kFiles, "old") > 0; });
  undone = recover(root, {0}, "tag");
  ASSERT_TRUE(undone) << undone.error().message();
  EXPECT_EQ(snapshot(l), before);
  EXPECT_TRUE(fs::is_empty(root));
}

// A live directory the administrator replaced by a symlink out of /etc: what the defaults
// hold below it is not in /etc, so nothing there is merged, even a level further down where
// the symlink's target has a directory of the same name.
TEST(EtcMerge, NothingIsMergedThroughASymlinkOutOfEtc) {
  TempDir tmp("livefs-etc-symlink");
  fs::path b = tmp / "booted", s = tmp / "staged", l = tmp / "live", out = tmp / "outside";
  for (const auto& root : {b, s}) {
    write_file(root / "dir/sub/f.conf", root == b ? "v1\n" : "v2\n");
    write_file(root / "dir/f.conf", root == b ? "v1\n" : "v2\n");
  }
  write_file(b / "dir/sub/gone.conf", "gone\n");
  write_file(s / "dir/sub/new.conf", "new\n");
  // What the symlink leads to looks like the booted default.
  fs::copy(b / "dir", out, fs::copy_options::recursive);
  fs::create_directories(l);
  fs::create_symlink(out, l / "dir");
  auto before = snapshot(out);
  // The other way round: a staged default directory became a symlink (out of the staged
  // tree); the booted one's entries are not read through it.
  write_file(b / "linked/a.conf", "v1\n");
  write_file(l / "linked/a.conf", "v1\n");
  write_file(tmp / "elsewhere/a.conf", "not a default\n");
  fs::create_symlink(tmp / "elsewhere", s / "linked");

  auto p = plan(b, s, l);
  ASSERT_TRUE(p) << p.error().message();
  std::map<std::string, std::string> reasons;
  for (const auto& a : p->actions) {
    EXPECT_TRUE(!a.path.starts_with("dir") || a.kind == ActionKind::conflict)
        << action_name(a.kind) << " " << a.path;
    reasons[a.path] = a.reason;
  }
  EXPECT_EQ(reasons["dir/sub/f.conf"], "its directory is not a directory in /etc");
  EXPECT_NE(reasons["linked"], "");
  ASSERT_TRUE(merge(*p, s, l, tmp / "undo", "tag"));
  EXPECT_EQ(snapshot(out), before);
  EXPECT_TRUE(fs::is_symlink(l / "dir"));
  // (Removed as a default the staged tree no longer has there.)
  if (fs::exists(l / "linked/a.conf")) {
    EXPECT_NE(testing::read_file(l / "linked/a.conf"), "not a default\n");
  }
}

// A live directory replaced by a symlink out of /etc after the plan (the merge then), or
// after the merge (its undo then): neither writes through it.
struct Swapped : Sides {
  fs::path out = tmp / "outside";
  void swap() {
    fs::rename(l / "dir", out);
    fs::create_symlink(out, l / "dir");
  }
  void unswap() {
    fs::remove(l / "dir");
    fs::rename(out, l / "dir");
  }
};

TEST(EtcMerge, MergeNeverWritesThroughASymlinkThatReplacedADirectory) {
  Swapped w;
  fs::path out = w.out;
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  auto before = snapshot(w.l);
  w.swap();
  auto outside = snapshot(out);
  auto st = merge(*p, w.s, w.l, w.undo, "tag");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, ENOTDIR) << st.error().message();
  EXPECT_NE(st.error().message().find((w.l / "dir").string()), std::string::npos)
      << st.error().message();
  EXPECT_EQ(snapshot(out), outside);
  EXPECT_FALSE(fs::exists(w.undo));
  w.unswap();
  EXPECT_EQ(snapshot(w.l), before);
}

TEST(EtcMerge, UndoNeverWritesThroughASymlinkThatReplacedADirectory) {
  Swapped w;
  fs::path out = w.out;
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, w.undo, "tag"));
  w.swap();
  auto outside = snapshot(out);
  EXPECT_FALSE(undo(w.undo));
  EXPECT_EQ(snapshot(out), outside);
  EXPECT_TRUE(fs::exists(w.undo / "manifest"));  // kept for another try
}

TEST(EtcMerge, UndoLeavesAnAdministratorsFileNamedLikeATemporary) {
  Sides w;
  write_file(w.l / ".livefs-etc-notes", "mine\n");
  write_file(w.l / "dir/.livefs-etc-1-x", "mine\n");
  auto before = snapshot(w.l);
  auto p = plan(w.b, w.s, w.l);
  ASSERT_TRUE(p);
  ASSERT_TRUE(merge(*p, w.s, w.l, w.undo, "tag"));
  ASSERT_TRUE(undo(w.undo));
  EXPECT_EQ(snapshot(w.l), before);
}

// Names are bytes: a newline, spaces, a byte that is not UTF-8, the longest name a file
// system takes, all through plan, merge, the manifest and undo.
TEST(EtcMerge, NamesAreBytes) {
  TempDir tmp("livefs-etc-names");
  fs::path b = tmp / "booted", s = tmp / "staged", l = tmp / "live";
  const std::vector<std::string> names = {"new\nline.conf",      " spaced  out ", "caf\xe9.conf",
                                          std::string(255, 'n'), "-dash",         "\x01\x7f\xff"};
  for (const auto& n : names) {
    write_file(b / n, "old\n");
    write_file(s / n, "new\n");
    write_file(b / ("d" + n.substr(0, 254)) / n, "removed\n");
    write_file(s / ("a" + n.substr(0, 254)) / n, "added\n");
  }
  fs::copy(b, l, fs::copy_options::recursive);
  auto before = snapshot(l);
  auto p = plan(b, s, l);
  ASSERT_TRUE(p) << p.error().message();
  EXPECT_EQ(p->count(ActionKind::conflict), 0u);
  EXPECT_EQ(p->count(ActionKind::update), names.size());
  ASSERT_TRUE(merge(*p, s, l, tmp / "undo", "tag"));
  for (const auto& n : names) {
    EXPECT_EQ(testing::read_file(l / n), "new\n");
    EXPECT_FALSE(fs::exists(l / ("d" + n.substr(0, 254))));
    EXPECT_EQ(testing::read_file(l / ("a" + n.substr(0, 254)) / n), "added\n");
  }
  auto u = undo(tmp / "undo");
  ASSERT_TRUE(u) << u.error().message();
  EXPECT_EQ(snapshot(l), before);
}

std::string hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) {
    out += "0123456789abcdef"[c >> 4];
    out += "0123456789abcdef"[c & 15];
  }
  return out;
}

TEST(EtcMerge, AnUndoManifestNamingAPathOutsideLiveIsRefusedAndTouchesNothing) {
  TempDir tmp("livefs-etc-hostile");
  fs::path live = tmp / "etc";
  fs::create_directories(live);
  write_file(tmp / "victim", "outside /etc\n");
  for (const std::string& path : {std::string("../victim"), (tmp / "victim").string(),
                                  std::string("sub/../../victim"), std::string("./x")}) {
    fs::path dir = tmp / "undo";
    fs::create_directories(dir / "b");
    write_file(dir / "manifest", "livefs-etc-undo 1\nlive " + hex(live.string()) + "\ntag " +
                                     hex("tag") + "\nadd 0 " + hex(path) + "\nend\n");
    auto st = undo(dir);
    ASSERT_FALSE(st) << path;
    EXPECT_EQ(st.error().code, EBADMSG) << path;
    EXPECT_NE(st.error().message().find("leaves the directory"), std::string::npos)
        << st.error().message();
    EXPECT_EQ(testing::read_file(tmp / "victim"), "outside /etc\n") << path;
    fs::remove_all(dir);
  }
}

TEST(EtcMerge, TheUndoManifestRoundTripsAnyByteButNul) {
  UndoManifest m;
  m.live = "/sysroot/etc";
  m.tag = std::string("tag\n with \xff and \0 bytes", 23);
  m.steps = {{ActionKind::update, 0, "with space.conf", ""},
             {ActionKind::add, 1, "new\nline/caf\xe9", std::string(32, 'a')},
             {ActionKind::update, 2, "u", "0123456789abcdef0123456789abcdef"},
             {ActionKind::remove, 3, "r", "none"},
             {ActionKind::remove, 18446744073709551615ull, std::string(255, 'x'), ""}};
  m.dir_times = {{-5, 999999999, ""}, {1700000000, 5, "new\nline"}};
  auto again = parse_undo_manifest(encode_undo_manifest(m));
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, m);
  for (const std::string& bad : std::vector<std::string>{
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 0 6100\nend\n",  // a NUL in a path
           "livefs-etc-undo 1\nlive 2f\ntag \nadd -1 61\nend\n",   // a negative index
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 1x 61\nend\n",   // not a number
           "livefs-etc-undo 1\nlive 2f\ntag \ndirtime 1.1000000000 61\nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 1 61 none\nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nremove 1 61 " + std::string(32, 'a') + "\nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 1 61 " + std::string(32, 'A') + "\nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 1 61 " + std::string(31, 'a') + "\nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nadd 1 61 \nend\n",
           "livefs-etc-undo 1\nlive 2f\ntag \nremove 1 61 none x\nend\n",
           "livefs-etc-undo 1\nlive 65\ntag \nend\n"}) {  // a relative live
    auto p = parse_undo_manifest(bad);
    EXPECT_FALSE(p) << bad;
    if (!p) {
      EXPECT_EQ(p.error().code, EBADMSG);
    }
  }
}

TEST(EtcMerge, MissingDefaultsAreAClearError) {
  TempDir tmp;
  fs::create_directories(tmp / "staged");
  fs::create_directories(tmp / "live");
  auto p = plan(tmp / "booted", tmp / "staged", tmp / "live");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, ENOENT);
  EXPECT_NE(p.error().message().find("booted default configuration"), std::string::npos);
}

}  // namespace
}  // namespace livefs::etc
