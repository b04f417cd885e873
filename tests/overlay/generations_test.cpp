// Generations without FUSE: the switch is a callback that records what it was asked to serve.
#include "overlay/generations.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "support/entries.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using testing::build_tree;
using testing::dir;
using testing::file;
using testing::TempDir;

struct World {
  TempDir tmp{"livefs-generations"};
  std::shared_ptr<store::ObjectStore> store;
  store::Tree empty = build_tree({dir("")});
  // What the switch was called with, in order.
  std::vector<std::pair<uint64_t, store::ObjectId>> switches;
  // What the observer was told each change made live, all together.
  std::set<std::string> changed;
  bool fail_switch = false;

  World() {
    auto s = store::ObjectStore::open(tmp / "store");
    EXPECT_TRUE(s) << s.error().message();
    store = std::make_shared<store::ObjectStore>(std::move(*s));
  }

  std::unique_ptr<Generations> open() {
    Generations::Options options;
    options.journal = tmp / "journal";
    options.booted_identity = "dir:test";
    auto g = Generations::open(store, empty, options);
    EXPECT_TRUE(g) << g.error().message();
    if (!g) return nullptr;
    (*g)->set_switch([this](store::Tree served, uint64_t generation) -> Result<SwitchStats> {
      if (fail_switch) return fail(EIO, "switch");
      switches.emplace_back(generation, served.id());
      SwitchStats s;
      s.to_generation = generation;
      return s;
    });
    (*g)->set_on_changed([this](const std::vector<std::string>& paths) {
      changed.insert(paths.begin(), paths.end());
    });
    return std::move(*g);
  }
};

TEST(Generations, ApplyIsJournalledThenSwitchedAndSurvivesAReopen) {
  World w;
  auto g = w.open();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->live_generation(), 0u);
  store::Tree layer = build_tree({dir(""), dir("bin"), file("bin/tool", "new")});
  auto changed = g->apply(layer, {"bin/tool"});
  ASSERT_TRUE(changed) << changed.error().message();
  EXPECT_EQ(changed->generation, 1u);
  ASSERT_EQ(w.switches.size(), 1u);
  EXPECT_EQ(w.switches[0].first, 1u);
  EXPECT_EQ(w.switches[0].second, layer.id());
  EXPECT_EQ(w.changed, std::set<std::string>{"bin/tool"});

  // A restart serves what the journal says, from the store.
  g.reset();
  auto again = w.open();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->live_generation(), 1u);
  EXPECT_EQ(again->applied_layer().id(), layer.id());
  auto report = again->report(10);
  ASSERT_EQ(report.stack.size(), 2u);
  EXPECT_EQ(report.stack[1].paths, std::vector<std::string>{"bin/tool"});
}

TEST(Generations, RollbackAndResetGoBackAndTheHotfixLayerStaysOnTop) {
  World w;
  auto g = w.open();
  ASSERT_TRUE(g);
  store::Tree one = build_tree({dir(""), file("a", "1")});
  store::Tree two = build_tree({dir(""), file("a", "1"), file("b", "2")});
  ASSERT_TRUE(g->apply(one, {"a"}));
  ASSERT_TRUE(g->apply(two, {"b"}));
  store::Tree hot = build_tree({dir(""), file("h", "hot")});
  auto hot_id = hot.save_rooted(*w.store);
  ASSERT_TRUE(hot_id);
  auto h = g->set_hotfix(hot, *hot_id, {"h"});
  ASSERT_TRUE(h) << h.error().message();
  EXPECT_EQ(h->generation, 2u);  // a hotfix does not move the stack

  auto back = g->go_back(JournalOp::rollback);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->generation, 1u);
  EXPECT_EQ(g->applied_layer().id(), one.id());
  ASSERT_TRUE(g->hotfix_layer());
  auto served = g->served_layer();
  ASSERT_TRUE(served);
  EXPECT_TRUE(served->find("h"));
  EXPECT_TRUE(served->find("a"));
  EXPECT_FALSE(served->find("b"));
  EXPECT_TRUE(w.changed.contains("b"));  // what left the view

  auto reset = g->go_back(JournalOp::reset);
  ASSERT_TRUE(reset);
  EXPECT_EQ(reset->generation, 0u);
  EXPECT_EQ(g->applied_layer().id(), w.empty.id());
  EXPECT_FALSE(g->go_back(JournalOp::rollback));  // nothing below generation 0
}

TEST(Generations, AFailedSwitchChangesNothingServed) {
  World w;
  auto g = w.open();
  ASSERT_TRUE(g);
  w.fail_switch = true;
  auto changed = g->apply(build_tree({dir(""), file("a", "1")}), {"a"});
  ASSERT_FALSE(changed);
  EXPECT_NE(changed.error().message().find("journalled but the switch failed"), std::string::npos)
      << changed.error().message();
  EXPECT_EQ(g->live_generation(), 0u);
  EXPECT_EQ(g->applied_layer().id(), w.empty.id());
}

TEST(Generations, ACorruptJournalServesGenerationZeroAndRefusesChanges) {
  World w;
  {
    auto g = w.open();
    ASSERT_TRUE(g);
    ASSERT_TRUE(g->apply(build_tree({dir(""), file("a", "1")}), {"a"}));
    ASSERT_TRUE(g->apply(build_tree({dir(""), file("a", "2")}), {"a"}));
  }
  // Damage the first apply record (not the last line, which would be a torn append).
  std::string text;
  {
    std::ifstream in(w.tmp / "journal");
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  size_t first_apply = text.find(" apply ");
  ASSERT_NE(first_apply, std::string::npos);
  text[first_apply + 8] ^= 1;
  {
    std::ofstream out(w.tmp / "journal", std::ios::trunc);
    out << text;
  }
  w.switches.clear();
  auto g = w.open();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->live_generation(), 0u);
  ASSERT_TRUE(g->refusal());
  EXPECT_FALSE(g->apply(build_tree({dir(""), file("b", "1")}), {"b"}));
  EXPECT_FALSE(g->go_back(JournalOp::reset));
  EXPECT_TRUE(g->report(5).journal_error);
  EXPECT_TRUE(w.switches.empty());
}

TEST(Generations, RollbackToAnEarlierGenerationIsOneRecordAndOneSwitch) {
  World w;
  auto g = w.open();
  ASSERT_TRUE(g);
  store::Tree one = build_tree({dir(""), file("a", "1")});
  store::Tree two = build_tree({dir(""), file("a", "1"), file("b", "2")});
  store::Tree three = build_tree({dir(""), file("a", "1"), file("b", "2"), file("c", "3")});
  ASSERT_TRUE(g->apply(one, {"a"}));
  ASSERT_TRUE(g->apply(two, {"b"}));
  ASSERT_TRUE(g->apply(three, {"c"}));
  w.switches.clear();
  w.changed.clear();
  size_t records = g->report(100).history_records;

  // Not on the stack, and the live generation itself: refused, nothing recorded or switched.
  auto missing = g->go_back(JournalOp::rollback, 7);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, EINVAL);
  EXPECT_NE(missing.error().message().find("not on the generation stack"), std::string::npos)
      << missing.error().message();
  EXPECT_FALSE(g->go_back(JournalOp::rollback, 3));
  EXPECT_EQ(g->report(100).history_records, records);
  EXPECT_TRUE(w.switches.empty());

  auto back = g->go_back(JournalOp::rollback, 1);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->generation, 1u);
  EXPECT_EQ(back->popped, (std::vector<uint64_t>{3, 2}));
  ASSERT_EQ(w.switches.size(), 1u);
  EXPECT_EQ(w.switches[0].first, 1u);
  EXPECT_EQ(w.switches[0].second, one.id());
  EXPECT_EQ(w.changed, (std::set<std::string>{"b", "c"}));
  EXPECT_EQ(g->report(100).history_records, records + 1);
  EXPECT_EQ(g->stack_numbers(), (std::vector<uint64_t>{0, 1}));

  // The one record replays to the same stack; generation numbers are not reused.
  g.reset();
  auto again = w.open();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->live_generation(), 1u);
  EXPECT_EQ(again->applied_layer().id(), one.id());
  auto next = again->apply(two, {"b"});
  ASSERT_TRUE(next);
  EXPECT_EQ(next->generation, 4u);
  // --to 0 goes back to the booted tree.
  auto zero = again->go_back(JournalOp::rollback, 0);
  ASSERT_TRUE(zero) << zero.error().message();
  EXPECT_EQ(zero->generation, 0u);
  EXPECT_EQ(zero->popped, (std::vector<uint64_t>{4, 1}));
  EXPECT_EQ(again->applied_layer().id(), w.empty.id());
}

TEST(Generations, ABeforeCommitFailureCommitsNothing) {
  World w;
  auto g = w.open();
  ASSERT_TRUE(g);
  store::Tree one = build_tree({dir(""), file("a", "1")});
  uint64_t seen = 0;
  auto refused = g->apply(one, {"a"}, [&](uint64_t generation) -> Status {
    seen = generation;
    return fail(EIO, "etc merge");
  });
  ASSERT_FALSE(refused);
  EXPECT_EQ(seen, 1u);
  EXPECT_EQ(g->live_generation(), 0u);
  EXPECT_TRUE(w.switches.empty());
  auto ok = g->apply(one, {"a"}, [&](uint64_t generation) -> Status {
    seen = generation;
    return {};
  });
  ASSERT_TRUE(ok);
  EXPECT_EQ(seen, 1u);
  EXPECT_EQ(ok->generation, 1u);
}

}  // namespace
}  // namespace livefs::overlay
