// Test support: manifest entries for Tree::build, with content ids computed from the
// content (the content itself is not stored).
#pragma once

#include <string>
#include <string_view>

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

}  // namespace livefs::testing
