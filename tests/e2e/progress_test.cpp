// Progress of long work in `status`: the staged tree's import at start-up is measured against
// the booted tree's size (an estimate), so `status --json` gives a percentage and `status`
// says it. The import is held at its start by an exclusive store lock (as a gc would).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "live_support.h"
#include "store/object_store.h"
#include "support/temp_dir.h"

namespace livefs::e2e {
namespace {

using livefs::testing::write_file;
using json = nlohmann::json;

TEST(Progress, StartUpImportHasAPercentage) {
  LiveWorld w;
  for (int i = 0; i < 40; ++i) {
    write_file(w.booted / "lib" / ("f" + std::to_string(i)), "booted " + std::to_string(i));
    write_file(w.staged / "lib" / ("f" + std::to_string(i)), "staged " + std::to_string(i));
  }
  w.settle();
  fs::create_directories(w.state);
  fs::permissions(w.state, fs::perms::owner_all);
  auto store = store::ObjectStore::open(w.state / "store");
  ASSERT_TRUE(store) << store.error().message();
  auto gc = store->lock_exclusive(std::chrono::milliseconds(0));
  ASSERT_TRUE(gc) << gc.error().message();

  Ran mounted = w.mount();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  json seen;
  ASSERT_TRUE(eventually([&] {
    seen = w.status_json();
    return seen["loading"].is_object() && seen["loading"]["phase"] == "importing the staged tree";
  })) << seen.dump();
  // The booted manifest: the root, lib and 40 files.
  EXPECT_EQ(seen["loading"].value("expected", 0), 42) << seen.dump();
  EXPECT_EQ(seen["loading"].value("percent", 100), 0) << seen.dump();
  Ran text = w.cmd("status");
  EXPECT_NE(text.out.find("entries so far, about 0%"), std::string::npos) << text.out;

  *gc = store::StoreLock();
  ASSERT_TRUE(eventually([&] {
    seen = w.status_json();
    return seen["loading"].is_null();
  })) << seen.dump();
}

}  // namespace
}  // namespace livefs::e2e
