// A directory imported into an object store, for the tests that read a tree as a staged
// deployment is read: a manifest in the store.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>

#include "store/import.h"
#include "store/object_store.h"

namespace livefs::packages::testing {

struct Imported {
  std::shared_ptr<store::ObjectStore> store;
  std::optional<store::Tree> tree;  // nullopt when the import failed (a test failure)
};

inline Imported import(const std::filesystem::path& dir, const std::filesystem::path& store_dir) {
  Imported out;
  auto opened = store::ObjectStore::open(store_dir);
  EXPECT_TRUE(opened) << opened.error().message();
  if (!opened) return out;
  out.store = std::make_shared<store::ObjectStore>(std::move(*opened));
  auto imported = store::import_directory(dir, out.store.get());
  EXPECT_TRUE(imported) << imported.error().message();
  if (imported) out.tree = std::move(imported->tree);
  return out;
}

}  // namespace livefs::packages::testing
