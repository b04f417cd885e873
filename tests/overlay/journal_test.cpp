// The generation journal: record round trips, replay of the stack, torn tails, corruption.
#include "overlay/journal.h"

#include <gtest/gtest.h>

#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::read_file;
using livefs::testing::TempDir;
using livefs::testing::write_file;

store::ObjectId layer_id(int n) { return store::ObjectId::of("layer " + std::to_string(n)); }

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
                  .paths = {"", "a b/c%d", "tab\there", "new\nline", "ü"}};
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

}  // namespace
}  // namespace livefs::overlay
