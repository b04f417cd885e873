// The store commands of the livefs binary: exit codes, output, JSON.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "store/object_store.h"
#include "support/temp_dir.h"

namespace livefs {
namespace {

using livefs::testing::run;
using livefs::testing::settle_times;
using livefs::testing::TempDir;
using livefs::testing::write_file;

std::string cli() { return LIVEFS_BINARY; }

TEST(CliStore, ImportDiffStatsVerifyGc) {
  TempDir tmp;
  write_file(tmp / "old/bin/tool", "v1");
  write_file(tmp / "old/bin/gone", "g");
  write_file(tmp / "new/bin/tool", "v2");
  write_file(tmp / "new/bin/added", "a");
  settle_times(tmp / "old");
  settle_times(tmp / "new");
  std::string store = (tmp / "store").string();
  std::string old_id, new_id;
  ASSERT_EQ(run(cli() + " store import --store " + store + " " + (tmp / "old").string(), &old_id),
            0);
  ASSERT_EQ(run(cli() + " store import --store " + store + " " + (tmp / "new").string(), &new_id),
            0);
  old_id.pop_back();
  new_id.pop_back();
  EXPECT_EQ(old_id.size(), 32u);

  std::string out;
  ASSERT_EQ(run(cli() + " diff --store " + store + " " + old_id + " " + new_id, &out), 0);
  EXPECT_EQ(out, "A bin/added\nD bin/gone\nM bin/tool\n");
  ASSERT_EQ(
      run(cli() + " diff --json " + (tmp / "old").string() + " " + (tmp / "new").string(), &out),
      0);
  auto j = nlohmann::json::parse(out);
  ASSERT_EQ(j.size(), 3u);
  EXPECT_EQ(j[2]["path"], "bin/tool");
  EXPECT_EQ(j[2]["kind"], "modified");

  ASSERT_EQ(run(cli() + " store stats --json --store " + store, &out), 0);
  auto stats = nlohmann::json::parse(out);
  EXPECT_EQ(stats["trees"], 2);
  EXPECT_EQ(stats["objects"], 6);  // four contents, two manifests
  EXPECT_EQ(run(cli() + " store verify --store " + store + " >/dev/null"), 0);

  // Corrupt one object: verify fails and names it.
  auto opened = store::ObjectStore::open(tmp / "store");
  ASSERT_TRUE(opened);
  std::string rel = store::ObjectStore::relative_path(store::ObjectId::of(std::string_view("v2")));
  chmod((tmp / "store" / rel).c_str(), 0644);
  write_file(tmp / "store" / rel, "v3", 0444);
  ASSERT_EQ(run(cli() + " store verify --store " + store + " 2>&1", &out), 1);
  EXPECT_NE(out.find(rel), std::string::npos) << out;

  // gc keeps what the stored trees reference.
  ASSERT_EQ(run(cli() + " store gc --json --store " + store, &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["removed"], 0);
}

TEST(CliStore, ErrorsAndUsage) {
  TempDir tmp;
  std::string out;
  EXPECT_EQ(
      run(cli() + " store import --store " + (tmp / "s").string() + " /does/not/exist 2>&1", &out),
      1);
  EXPECT_NE(out.find("/does/not/exist"), std::string::npos);
  EXPECT_NE(out.find("No such file"), std::string::npos);
  EXPECT_EQ(run(cli() + " store 2>/dev/null"), 2);
  EXPECT_EQ(run(cli() + " store import 2>/dev/null"), 2);
  EXPECT_EQ(run(cli() + " no-such-command 2>/dev/null"), 2);
}

}  // namespace
}  // namespace livefs
