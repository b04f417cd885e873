// The generation journal: record round trips, replay of the stack, torn tails, corruption,
// the booted tree a journal belongs to, and appends that fail (injected through the Sys
// seam, and a real full tmpfs).
#include "overlay/journal.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>

#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;

namespace fs = std::filesystem;

store::ObjectId layer_id(int n) { return store::ObjectId::of("layer " + std::to_string(n)); }

// The names in a directory, sorted.
std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<JournalOp> ops_of(const JournalState& s) {
  std::vector<JournalOp> ops;
  for (const auto& r : s.history) ops.push_back(r.op);
  return ops;
}

JournalRecord record(uint64_t seq, JournalOp op, uint64_t generation, store::ObjectId layer) {
  JournalRecord r;
  r.seq = seq;
  r.op = op;
  r.generation = generation;
  r.layer = layer;
  return r;
}

TEST(JournalRecord, RoundTripsOddPaths) {
  JournalRecord r{.seq = 7,
                  .op = JournalOp::apply,
                  .generation = 3,
                  .layer = layer_id(3),
                  .time_ns = 1234567890123,
                  .paths = {"", "a b/c%d", "tab\there", "new\nline", "ü"},
                  .booted_identity = {}};
  auto line = encode_record(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = decode_record(line);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->seq, 7u);
  EXPECT_EQ(back->op, JournalOp::apply);
  EXPECT_EQ(back->generation, 3u);
  EXPECT_EQ(back->layer, layer_id(3));
  EXPECT_EQ(back->time_ns, 1234567890123);
  EXPECT_EQ(back->paths, r.paths);
}

TEST(JournalRecord, RejectsAnyFlippedByte) {
  auto line = encode_record(record(1, JournalOp::apply, 1, layer_id(1)));
  for (size_t i = 0; i < line.size(); ++i) {
    std::string bad = line;
    bad[i] = bad[i] == 'x' ? 'y' : 'x';
    EXPECT_FALSE(decode_record(bad)) << "byte " << i;
  }
}

TEST(Journal, CommitsPushPopAndReset) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path);
    ASSERT_TRUE(j) << j.error().message();
    EXPECT_EQ(j->live().number, 0u);
    EXPECT_FALSE(j->commit(JournalOp::rollback));  // nothing to roll back
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b", "c"}));
    EXPECT_EQ(j->live().number, 2u);
    auto r = j->commit(JournalOp::rollback);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->generation, 1u);
    EXPECT_EQ(j->live().number, 1u);
    // Generation numbers are never reused.
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(3), {"d"}));
    EXPECT_EQ(j->live().number, 3u);
  }
  auto j = Journal::open(path);
  ASSERT_TRUE(j) << j.error().message();
  EXPECT_FALSE(j->state().error);
  ASSERT_EQ(j->state().stack.size(), 3u);
  EXPECT_EQ(j->state().stack[1].number, 1u);
  EXPECT_EQ(j->live().number, 3u);
  EXPECT_EQ(j->live().layer, layer_id(3));
  EXPECT_EQ(j->live().paths, std::vector<std::string>{"d"});
  EXPECT_EQ(j->state().history.size(), 4u);
  ASSERT_TRUE(j->commit(JournalOp::reset));
  auto again = Journal::open(path);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->live().number, 0u);
  EXPECT_EQ(again->state().next_generation, 4u);
}

TEST(Journal, TornLastRecordIsIgnoredAndCutOff) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path);
    ASSERT_TRUE(j);
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b"}));
  }
  std::string full = read_file(path);
  // Every possible torn append of the second record: the first generation survives.
  size_t first_end = full.find('\n') + 1;
  for (size_t cut = first_end + 1; cut < full.size(); ++cut) {
    write_file(path, full.substr(0, cut), 0600);
    auto j = Journal::open(path);
    ASSERT_TRUE(j) << j.error().message();
    EXPECT_FALSE(j->state().error) << "cut " << cut;
    EXPECT_EQ(j->live().number, 1u) << "cut " << cut;
    EXPECT_EQ(j->state().warnings.size(), 1u);
    // The torn bytes are gone, so the next record lands on a record boundary.
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(5), {"e"}));
    auto reopened = Journal::open(path);
    ASSERT_TRUE(reopened);
    EXPECT_FALSE(reopened->state().error);
    EXPECT_EQ(reopened->live().layer, layer_id(5));
  }
}

TEST(Journal, CorruptRecordInTheMiddleIsAnErrorAndServesGenerationZero) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path);
    ASSERT_TRUE(j);
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b"}));
  }
  std::string full = read_file(path);
  size_t first_end = full.find('\n') + 1;
  write_file(path, full.substr(0, first_end) + "garbage here\n" + full.substr(first_end), 0600);
  auto j = Journal::open(path);
  ASSERT_TRUE(j) << j.error().message();
  ASSERT_TRUE(j->state().error);
  EXPECT_NE(j->state().error->context.find("journal line 2"), std::string::npos)
      << j->state().error->context;
  EXPECT_EQ(j->live().number, 0u);
  // Nothing is appended to a journal that cannot be trusted.
  auto r = j->commit(JournalOp::apply, layer_id(3), {"c"});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().context.find("corrupt"), std::string::npos);
}

TEST(Journal, RecordThatDoesNotFitTheStackIsAnError) {
  JournalState s = replay(encode_record(record(1, JournalOp::apply, 1, layer_id(1))) + "\n" +
                          encode_record(record(2, JournalOp::rollback, 5, {})) + "\n");
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.stack.size(), 1u);
  JournalState gap = replay(encode_record(record(2, JournalOp::apply, 1, layer_id(1))) + "\n");
  EXPECT_TRUE(gap.error);
}

TEST(Journal, RollbackToAnyGenerationBelowTheLiveOnePopsAllAbove) {
  std::string three = encode_record(record(1, JournalOp::apply, 1, layer_id(1))) + "\n" +
                      encode_record(record(2, JournalOp::apply, 2, layer_id(2))) + "\n" +
                      encode_record(record(3, JournalOp::apply, 3, layer_id(3))) + "\n";
  JournalState s = replay(three + encode_record(record(4, JournalOp::rollback, 1, {})) + "\n");
  ASSERT_FALSE(s.error) << s.error->message();
  ASSERT_EQ(s.stack.size(), 2u);
  EXPECT_EQ(s.stack.back().number, 1u);
  // A rollback "to" the live generation is not a rollback.
  JournalState live = replay(three + encode_record(record(4, JournalOp::rollback, 3, {})) + "\n" +
                             encode_record(record(5, JournalOp::apply, 4, layer_id(4))) + "\n");
  EXPECT_TRUE(live.error);

  TempDir dir;
  auto j = Journal::open(dir / "journal");
  ASSERT_TRUE(j);
  for (int i = 1; i <= 3; ++i) ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(i), {"x"}));
  auto bad = j->commit_rollback_to(9);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().context.find("0, 1, 2"), std::string::npos) << bad.error().context;
  auto r = j->commit_rollback_to(2);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->layer, layer_id(2));
  auto reopened = Journal::open(dir / "journal");
  ASSERT_TRUE(reopened);
  EXPECT_FALSE(reopened->state().error);
  EXPECT_EQ(reopened->live().number, 2u);
}

// ---- the booted tree a journal belongs to ---------------------------------------------

const std::string kTreeA = "ostree:aaaa1111:usr";
const std::string kTreeB = "dir:bbbb2222";

TEST(JournalIdentity, ANewJournalNamesItsBootedTree) {
  TempDir dir;
  auto j = Journal::open(dir / "journal", kTreeA);
  ASSERT_TRUE(j) << j.error().message();
  EXPECT_EQ(j->state().booted_identity, kTreeA);
  EXPECT_EQ(j->live().number, 0u);
  EXPECT_TRUE(j->state().note.empty());
  // The file is never without its booted record: it is created with it.
  JournalState s = replay(read_file(dir / "journal"));
  EXPECT_EQ(s.booted_identity, kTreeA);
  EXPECT_EQ(ops_of(s), std::vector<JournalOp>{JournalOp::booted});
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"journal"});
  // Only open() records the booted tree.
  EXPECT_FALSE(j->commit(JournalOp::booted));
}

TEST(JournalIdentity, SameBootedTreeKeepsTheStack) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path, kTreeA);
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b"}));
    ASSERT_TRUE(j->commit(JournalOp::hotfix, layer_id(9), {"h"}));
  }
  std::string before = read_file(path);
  auto j = Journal::open(path, kTreeA);
  ASSERT_TRUE(j) << j.error().message();
  EXPECT_FALSE(j->state().error);
  EXPECT_TRUE(j->state().note.empty());
  EXPECT_TRUE(j->state().set_aside.empty());
  ASSERT_EQ(j->state().stack.size(), 3u);
  EXPECT_EQ(j->live().layer, layer_id(2));
  EXPECT_EQ(j->state().hotfix_layer, layer_id(9));
  EXPECT_EQ(read_file(path), before);  // nothing appended, nothing moved
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"journal"});
}

// A journal naming this tree as an earlier livefs named it (another digest format) is this
// tree's: kept as it is, under the identity it names.
TEST(JournalIdentity, AnEarlierIdentityOfThisTreeKeepsTheJournal) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path, kTreeA);
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
  }
  auto earlier = [](std::string_view old) { return old == kTreeA; };
  auto b = Journal::open(path, kTreeB, UnidentifiedJournal::set_aside, Sys::real(), earlier);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ(b->live().number, 1u);
  EXPECT_TRUE(b->state().set_aside.empty());
  EXPECT_EQ(b->state().booted_identity, kTreeA);
  ASSERT_TRUE(b->commit(JournalOp::apply, layer_id(2), {"b"}));
  // Not an earlier identity of this tree: another tree's journal, set aside.
  auto c = Journal::open(path, kTreeB, UnidentifiedJournal::set_aside, Sys::real(),
                         [](std::string_view) { return false; });
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->live().number, 0u);
  EXPECT_FALSE(c->state().set_aside.empty());
}

TEST(JournalIdentity, AnotherBootedTreeStartsAtGenerationZeroAndKeepsTheOldJournal) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path, kTreeA);
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::hotfix, layer_id(9), {"h"}));
  }
  std::string old_journal = read_file(path);

  auto b = Journal::open(path, kTreeB);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_FALSE(b->state().error);
  EXPECT_EQ(b->live().number, 0u);
  EXPECT_EQ(b->state().stack.size(), 1u);
  EXPECT_TRUE(b->state().hotfix_layer.is_zero());
  EXPECT_EQ(b->state().next_generation, 1u);
  EXPECT_EQ(b->state().booted_identity, kTreeB);
  const std::string& note = b->state().note;
  EXPECT_NE(note.find("the booted tree changed (was " + kTreeA + ", now " + kTreeB + ")"),
            std::string::npos)
      << note;
  EXPECT_NE(note.find("starting at generation 0"), std::string::npos) << note;
  fs::path aside = b->state().set_aside;
  EXPECT_NE(note.find(aside.string()), std::string::npos) << note;
  EXPECT_EQ(aside.parent_path(), dir.path());
  EXPECT_TRUE(aside.filename().string().starts_with("journal.")) << aside;
  EXPECT_TRUE(aside.filename().string().ends_with(".ostree_aaaa1111_usr")) << aside;
  EXPECT_EQ(read_file(aside), old_journal);
  EXPECT_EQ(names_in(dir.path()), (std::vector<std::string>{"journal", aside.filename().string()}));
  ASSERT_TRUE(b->commit(JournalOp::apply, layer_id(5), {"e"}));
  EXPECT_EQ(b->live().number, 1u);

  // The same tree again: no note, nothing else moved.
  auto again = Journal::open(path, kTreeB);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_TRUE(again->state().note.empty()) << again->state().note;
  EXPECT_TRUE(again->state().set_aside.empty());
  EXPECT_EQ(again->live().layer, layer_id(5));
  EXPECT_EQ(names_in(dir.path()), (std::vector<std::string>{"journal", aside.filename().string()}));
  EXPECT_EQ(read_file(aside), old_journal);
}

TEST(JournalIdentity, BackAndForthKeepsEveryOldJournal) {
  TempDir dir;
  auto path = dir / "journal";
  for (int round = 0; round < 3; ++round) {
    auto j = Journal::open(path, round % 2 ? kTreeB : kTreeA);
    ASSERT_TRUE(j) << j.error().message();
    EXPECT_EQ(j->live().number, 0u);
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(round + 1), {"x"}));
  }
  // Three journals within a second of each other: three distinct names.
  auto names = names_in(dir.path());
  ASSERT_EQ(names.size(), 3u) << ::testing::PrintToString(names);
  for (const auto& n : names) {
    if (n == "journal") continue;
    auto s = replay(read_file(dir / n));
    EXPECT_FALSE(s.error);
    EXPECT_EQ(s.stack.size(), 2u);
  }
}

// A journal written before identities were recorded: the caller says whether it is this
// tree's.
std::string unidentified_journal(const fs::path& path) {
  auto j = Journal::open(path);
  EXPECT_TRUE(j);
  EXPECT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
  EXPECT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b"}));
  EXPECT_TRUE(j->state().booted_identity.empty());
  return read_file(path);
}

TEST(JournalIdentity, UnidentifiedJournalIsAdoptedOnceAndStamped) {
  TempDir dir;
  auto path = dir / "journal";
  std::string old_journal = unidentified_journal(path);
  {
    auto j = Journal::open(path, kTreeA);
    ASSERT_TRUE(j) << j.error().message();
    EXPECT_EQ(j->live().number, 2u);
    EXPECT_EQ(j->state().booted_identity, kTreeA);
    EXPECT_NE(j->state().note.find("named no booted tree"), std::string::npos) << j->state().note;
    EXPECT_TRUE(j->state().set_aside.empty());
    // Stamped: the old records, then the booted record.
    std::string now = read_file(path);
    EXPECT_TRUE(now.starts_with(old_journal));
    EXPECT_EQ(ops_of(replay(now)).back(), JournalOp::booted);
  }
  auto again = Journal::open(path, kTreeA);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->state().note.empty());
  EXPECT_EQ(again->live().number, 2u);
  // Now it is tree A's: another tree sets it aside.
  auto b = Journal::open(path, kTreeB);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->live().number, 0u);
  EXPECT_FALSE(b->state().set_aside.empty());
}

TEST(JournalIdentity, UnidentifiedJournalIsSetAsideWhenTheCallerSaysSo) {
  TempDir dir;
  auto path = dir / "journal";
  std::string old_journal = unidentified_journal(path);
  auto j = Journal::open(path, kTreeA, UnidentifiedJournal::set_aside);
  ASSERT_TRUE(j) << j.error().message();
  EXPECT_EQ(j->live().number, 0u);
  EXPECT_EQ(j->state().booted_identity, kTreeA);
  EXPECT_NE(j->state().note.find("names no booted tree"), std::string::npos) << j->state().note;
  EXPECT_TRUE(j->state().set_aside.filename().string().ends_with(".unidentified"))
      << j->state().set_aside;
  EXPECT_EQ(read_file(j->state().set_aside), old_journal);
}

TEST(JournalIdentity, EmptyUnidentifiedJournalIsStampedSilently) {
  TempDir dir;
  auto path = dir / "journal";
  write_file(path, "", 0600);  // created by an older livefs that never committed
  for (auto policy : {UnidentifiedJournal::adopt, UnidentifiedJournal::set_aside}) {
    auto j = Journal::open(path, kTreeA, policy);
    ASSERT_TRUE(j) << j.error().message();
    EXPECT_TRUE(j->state().note.empty()) << j->state().note;
    EXPECT_EQ(j->state().booted_identity, kTreeA);
  }
  EXPECT_EQ(names_in(dir.path()), std::vector<std::string>{"journal"});
}

TEST(JournalIdentity, CorruptJournalOfAnotherTreeIsSetAsideOfThisTreeKept) {
  TempDir dir;
  auto path = dir / "journal";
  {
    auto j = Journal::open(path, kTreeA);
    ASSERT_TRUE(j);
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(2), {"b"}));
  }
  std::string full = read_file(path);
  size_t second = full.find('\n', full.find('\n') + 1) + 1;
  std::string corrupt = full.substr(0, second) + "garbage\n" + full.substr(second);
  write_file(path, corrupt, 0600);
  auto a = Journal::open(path, kTreeA);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->state().error);
  EXPECT_EQ(read_file(path), corrupt);  // left for the operator
  auto b = Journal::open(path, kTreeB);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_FALSE(b->state().error);
  EXPECT_EQ(read_file(b->state().set_aside), corrupt);
  EXPECT_TRUE(b->commit(JournalOp::apply, layer_id(3), {"c"}));
}

TEST(JournalIdentity, OddBytesInTheIdentity) {
  TempDir dir;
  auto path = dir / "journal";
  const std::string odd = std::string("dir:/a b\n\xff%/../") + '\0' + "end";
  {
    auto j = Journal::open(path, odd);
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
  }
  auto same = Journal::open(path, odd);
  ASSERT_TRUE(same);
  EXPECT_EQ(same->state().booted_identity, odd);
  EXPECT_EQ(same->live().number, 1u);
  auto other = Journal::open(path, kTreeA);
  ASSERT_TRUE(other);
  std::string aside = other->state().set_aside.filename().string();
  EXPECT_EQ(
      aside.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"),
      std::string::npos)
      << aside;
  // The note shows the bytes escaped (it goes into JSON and the log).
  for (unsigned char c : other->state().note) EXPECT_TRUE(c >= 0x20 && c < 0x7f) << int(c);
  EXPECT_FALSE(Journal::open(path, std::string(5000, 'x')));
}

TEST(JournalIdentity, ReplayIsOfOneBootedTree) {
  auto booted = [](uint64_t seq, uint64_t generation, const std::string& id) {
    JournalRecord r = record(seq, JournalOp::booted, generation, {});
    r.booted_identity = id;
    return encode_record(r) + "\n";
  };
  auto apply1 = encode_record(record(2, JournalOp::apply, 1, layer_id(1))) + "\n";
  JournalState ok = replay(booted(1, 0, kTreeA) + apply1 + booted(3, 1, kTreeA));
  EXPECT_FALSE(ok.error);
  EXPECT_EQ(ok.booted_identity, kTreeA);
  EXPECT_EQ(ok.stack.back().number, 1u);
  JournalState two = replay(booted(1, 0, kTreeA) + apply1 + booted(3, 1, kTreeB));
  ASSERT_TRUE(two.error);
  EXPECT_EQ(two.booted_identity, kTreeA);
  EXPECT_TRUE(replay(booted(1, 5, kTreeA)).error);  // not the live generation
  JournalRecord empty = record(1, JournalOp::booted, 0, {});
  EXPECT_FALSE(decode_record(encode_record(empty)));
}

// ---- failed appends -------------------------------------------------------------------

// Fails chosen calls of the journal's write path, as a full or failing disk would.
class FaultySys : public Sys {
 public:
  int ok_writes = -1;  // after this many more writes, each write fails with write_errno
  int write_errno = ENOSPC;
  size_t write_max = std::numeric_limits<size_t>::max();  // a longer write is cut short
  bool fail_fdatasync = false;
  bool fail_ftruncate = false;
  bool fail_fsync = false;

  ssize_t write(int fd, const void* buf, size_t count) override {
    if (ok_writes == 0) {
      errno = write_errno;
      return -1;
    }
    if (ok_writes > 0) --ok_writes;
    return Sys::write(fd, buf, std::min(count, write_max));
  }
  int fdatasync(int fd) override {
    if (fail_fdatasync) {
      errno = EIO;
      return -1;
    }
    return Sys::fdatasync(fd);
  }
  int ftruncate(int fd, off_t length) override {
    if (fail_ftruncate) {
      errno = EIO;
      return -1;
    }
    return Sys::ftruncate(fd, length);
  }
  int fsync(int fd) override {
    if (fail_fsync) {
      errno = EIO;
      return -1;
    }
    return Sys::fsync(fd);
  }
};

struct AppendFault {
  const char* name;
  void (*arm)(FaultySys&);
  int code;
};

const AppendFault kAppendFaults[] = {
    {"EnospcAtOnce", [](FaultySys& s) { s.ok_writes = 0; }, ENOSPC},
    {"ShortWriteThenEnospc",
     [](FaultySys& s) {
       s.write_max = 10;
       s.ok_writes = 1;
     },
     ENOSPC},
    {"MostOfItThenEdquot",
     [](FaultySys& s) {
       s.write_max = 40;
       s.ok_writes = 2;
       s.write_errno = EDQUOT;
     },
     EDQUOT},
    {"FdatasyncEio", [](FaultySys& s) { s.fail_fdatasync = true; }, EIO},
};

void PrintTo(const AppendFault& fault, std::ostream* os) { *os << fault.name; }

class FailedAppend : public ::testing::TestWithParam<AppendFault> {};

TEST_P(FailedAppend, LeavesNoTrace) {
  const AppendFault& fault = GetParam();
  TempDir dir;
  auto path = dir / "journal";
  FaultySys sys;
  auto j = Journal::open(path, kTreeA, UnidentifiedJournal::adopt, sys);
  ASSERT_TRUE(j) << j.error().message();
  ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
  std::string before = read_file(path);
  JournalState state_before = j->state();

  fault.arm(sys);
  auto failed = j->commit(JournalOp::apply, layer_id(2), {"a longer path, to be cut short"});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, fault.code) << failed.error().message();
  EXPECT_NE(failed.error().context.find(path.string()), std::string::npos)
      << failed.error().message();
  sys = FaultySys();
  EXPECT_EQ(read_file(path), before);
  EXPECT_EQ(j->state().next_seq, state_before.next_seq);
  EXPECT_EQ(j->state().history.size(), state_before.history.size());
  EXPECT_EQ(j->live().layer, layer_id(1));

  // The next commit lands on a record boundary and is the next record.
  auto ok = j->commit(JournalOp::apply, layer_id(3), {"c"});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->seq, state_before.next_seq);
  JournalState s = replay(read_file(path));
  EXPECT_FALSE(s.error);
  EXPECT_TRUE(s.warnings.empty()) << ::testing::PrintToString(s.warnings);
  EXPECT_EQ(ops_of(s),
            (std::vector<JournalOp>{JournalOp::booted, JournalOp::apply, JournalOp::apply}));
  ASSERT_EQ(s.stack.size(), 3u);
  EXPECT_EQ(s.stack[1].layer, layer_id(1));
  EXPECT_EQ(s.stack[2].layer, layer_id(3));
}

INSTANTIATE_TEST_SUITE_P(JournalFaults, FailedAppend, ::testing::ValuesIn(kAppendFaults),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(JournalFaults, ShortWritesAreCompleted) {
  TempDir dir;
  FaultySys sys;
  sys.write_max = 3;
  auto j = Journal::open(dir / "journal", kTreeA, UnidentifiedJournal::adopt, sys);
  ASSERT_TRUE(j) << j.error().message();
  ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a", "b c"}));
  JournalState s = replay(read_file(dir / "journal"));
  EXPECT_FALSE(s.error);
  EXPECT_TRUE(s.warnings.empty());
  EXPECT_EQ(s.stack.back().number, 1u);
}

TEST(JournalFaults, AppendThatCannotBeCutOffStopsTheJournal) {
  for (bool truncate_fails : {true, false}) {
    SCOPED_TRACE(truncate_fails ? "ftruncate fails" : "fsync after ftruncate fails");
    TempDir dir;
    auto path = dir / "journal";
    FaultySys sys;
    auto j = Journal::open(path, kTreeA, UnidentifiedJournal::adopt, sys);
    ASSERT_TRUE(j) << j.error().message();
    ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
    sys.write_max = 10;
    sys.ok_writes = 1;
    (truncate_fails ? sys.fail_ftruncate : sys.fail_fsync) = true;
    auto failed = j->commit(JournalOp::apply, layer_id(2), {"b"});
    ASSERT_FALSE(failed);
    EXPECT_NE(failed.error().context.find("cutting a failed append"), std::string::npos)
        << failed.error().message();
    sys = FaultySys();
    // Nothing is appended after the garbage, not even once the disk works again.
    for (auto op : {JournalOp::apply, JournalOp::rollback, JournalOp::hotfix}) {
      auto refused = j->commit(op, layer_id(3), {"c"});
      ASSERT_FALSE(refused);
      EXPECT_NE(refused.error().context.find("refuses to record"), std::string::npos)
          << refused.error().message();
    }
    EXPECT_EQ(j->live().layer, layer_id(1));
    // A restart finds the fragment (if the truncate did not happen) as a torn last record
    // and cuts it off.
    auto reopened = Journal::open(path, kTreeA);
    ASSERT_TRUE(reopened) << reopened.error().message();
    EXPECT_FALSE(reopened->state().error);
    EXPECT_EQ(reopened->state().warnings.size(), truncate_fails ? 1u : 0u);
    EXPECT_EQ(reopened->live().layer, layer_id(1));
    ASSERT_TRUE(reopened->commit(JournalOp::apply, layer_id(3), {"c"}));
    JournalState s = replay(read_file(path));
    EXPECT_FALSE(s.error);
    EXPECT_TRUE(s.warnings.empty());
    EXPECT_EQ(s.stack.back().number, 2u);
  }
}

// A small tmpfs filled up: the append of a record longer than the room left in the
// journal's last page is cut short, then fails with ENOSPC. The fragment must not stay in
// the file, or the next record is glued to it and lost on replay.
TEST(JournalFaults, RealFullFileSystemRollsBackTheFragment) {
  TempDir tmp;
  std::filesystem::path mnt = tmp / "small";
  std::filesystem::create_directories(mnt);
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=64k"), 0) << std::strerror(errno);
  struct Unmount {
    std::filesystem::path p;
    ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
  } unmount{mnt};
  auto path = mnt / "journal";
  auto j = Journal::open(path);
  ASSERT_TRUE(j) << j.error().message();
  ASSERT_TRUE(j->commit(JournalOp::apply, layer_id(1), {"a"}));
  {
    int fd = ::open((mnt / "filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    std::string block(4096, 'f');
    while (::write(fd, block.data(), block.size()) > 0) {
    }
    ::close(fd);
  }
  // Longer than the rest of the journal's first page: part of it fits, then ENOSPC.
  auto failed = j->commit(JournalOp::apply, layer_id(2), {std::string(6000, 'p')});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code, ENOSPC) << failed.error().message();
  EXPECT_EQ(j->live().number, 1u);
  std::filesystem::remove(mnt / "filler");
  auto ok = j->commit(JournalOp::apply, layer_id(3), {"c"});
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->generation, 2u);
  auto reopened = Journal::open(path);
  ASSERT_TRUE(reopened) << reopened.error().message();
  EXPECT_FALSE(reopened->state().error);
  EXPECT_TRUE(reopened->state().warnings.empty())
      << ::testing::PrintToString(reopened->state().warnings);
  EXPECT_EQ(reopened->live().layer, layer_id(3));
  EXPECT_EQ(reopened->state().history.size(), 2u);
}

}  // namespace
}  // namespace livefs::overlay

namespace livefs::overlay {
namespace {

// A hotfix loop writes a record per edit: the daemon keeps only the last ones in memory
// (the soak benchmark saw it grow by ~0.5 KB a record), and still counts them all.
TEST(Journal, KeepsABoundedHistoryAndCountsEveryRecord) {
  livefs::testing::TempDir dir;
  auto path = dir / "journal";
  const size_t total = JournalState::kHistoryKept + 234;
  {
    auto j = Journal::open(path);
    ASSERT_TRUE(j);
    for (size_t i = 0; i < total; ++i)
      ASSERT_TRUE(j->commit(JournalOp::hotfix, store::ObjectId::of(std::to_string(i)), {"x"}));
    EXPECT_EQ(j->state().history.size(), JournalState::kHistoryKept);
    EXPECT_EQ(j->state().history_records, total);
  }
  auto j = Journal::open(path);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->state().history.size(), JournalState::kHistoryKept);
  EXPECT_EQ(j->state().history_records, total);
  EXPECT_EQ(j->state().history.back().layer, store::ObjectId::of(std::to_string(total - 1)));
  EXPECT_EQ(j->state().hotfix_layer, store::ObjectId::of(std::to_string(total - 1)));
}

}  // namespace
}  // namespace livefs::overlay
