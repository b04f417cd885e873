// Test support: manifest entries for Tree::build, with content ids computed from the
// content (the content itself is not stored).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "store/tree.h"

namespace livefs::testing {

inline store::Entry file(std::string path, std::string_view content, uint32_t mode = 0644) {
  store::Entry e;
  e.path = std::move(path);
  e.type = store::EntryType::file;
  e.mode = mode;
  e.size = content.size();
  e.object = store::ObjectId::of(content);
  return e;
}

inline store::Entry dir(std::string path, uint32_t mode = 0755) {
  store::Entry e;
  e.path = std::move(path);
  e.type = store::EntryType::dir;
  e.mode = mode;
  return e;
}

// Tree::build, failing the test when the entries are refused.
inline store::Tree build_tree(std::vector<store::Entry> entries) {
  auto t = store::Tree::build(std::move(entries));
  EXPECT_TRUE(t) << t.error().message();
  return std::move(*t);
}

}  // namespace livefs::testing
