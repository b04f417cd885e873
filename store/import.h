// Importing a directory tree: walk it, hash (and optionally store) every regular file, and
// produce its Tree manifest.
#pragma once

#include <filesystem>
#include <functional>

#include "common/error.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::store {

struct ImportOptions {
  // Store file contents in the store (import) or only hash them (scan: a manifest of a
  // tree that is served from where it is, such as the booted tree).
  bool store_objects = true;
  bool link = false;      // PutOptions::link for every file
  bool progress = false;  // a progress line on stderr when it is a terminal
  // A manifest of a tree served from where it is (the booted tree): a file whose content
  // equals the file at the same path there is hashed but not stored, since it is never
  // served from the store. Cost of a staged import then grows with the change.
  const Tree* unchanged_from = nullptr;
};

struct ImportStats {
  uint64_t files = 0;
  uint64_t dirs = 0;
  uint64_t other = 0;  // symlinks, devices, fifos, sockets
  uint64_t bytes = 0;  // file bytes hashed
  uint64_t bytes_stored = 0;
  uint64_t files_unchanged = 0;  // not stored: the same at the same path in unchanged_from
  double seconds = 0;
};

struct ImportResult {
  Tree tree;
  ImportStats stats;
};

// Imports the tree under `dir` as the kernel presents it (symlinks are recorded, never
// followed; mounts below `dir` are walked like any directory). `store` may be null when
// options.store_objects is false. An unreadable file is an error naming the path. Objects
// are published in batches (one syncfs per batch), and nothing is published for an import
// that fails.
Result<ImportResult> import_directory(const std::filesystem::path& dir, ObjectStore* store,
                                      const ImportOptions& options = {});

// One entry at `path` (never following a symlink; a directory's own metadata only), recorded
// as import_directory records it under the relative path `rel`. A regular file's content
// goes through `batch` (the caller commits it); with a null batch it is only hashed.
Result<Entry> import_entry(const std::filesystem::path& path, std::string rel,
                           ObjectStore::Batch* batch);

}  // namespace livefs::store
