// Importing a directory tree: walk it, hash (and optionally store) every regular file, and
// produce its Tree manifest.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>

#include "common/error.h"
#include "common/unique_fd.h"
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
  // Store through the caller's batch instead of one of the import's own: the caller
  // commits it with what else it writes (a layer manifest), and the batch's store lock
  // keeps gc off the new objects until the caller has rooted the tree. `store` is unused.
  ObjectStore::Batch* batch = nullptr;
  // Entries recorded so far, for a caller that reports how far a long import is (the
  // daemon's status while it scans the booted tree). Updated as entries are read.
  std::atomic<uint64_t>* entries_done = nullptr;
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
  // The store lock (shared) of an import that stored objects through its own batches:
  // nothing references them until the caller roots (or pins) the tree, so keep this until
  // then — a gc in between would free them. Empty with options.batch or without a store.
  StoreLock lock;
};

// Imports the tree under `dir` as the kernel presents it (symlinks are recorded, never
// followed; mounts below `dir` are walked like any directory). `store` may be null when
// options.store_objects is false. An unreadable file is an error naming the path. Objects
// are published in batches (one syncfs per batch), and nothing is published for an import
// that fails.
// Every entry is opened once, without following a symlink, and its metadata, xattrs and
// content all come from that descriptor (nothing is looked up twice by name, so a name
// swapped meanwhile cannot mix two files). A hard link to a regular file that the owner of
// `dir` cannot read is refused (EACCES): whoever can write into `dir` must not be able to
// import /etc/shadow by linking it there. (The owner's primary group counts, supplementary
// groups do not: a refusal too many rather than one too few.)
Result<ImportResult> import_directory(const std::filesystem::path& dir, ObjectStore* store,
                                      const ImportOptions& options = {});
// The same for the directory open at `dir_fd` (O_PATH will do), named `what` in errors:
// the directory itself, whatever its path names by now.
Result<ImportResult> import_directory_at(int dir_fd, const std::string& what, ObjectStore* store,
                                         const ImportOptions& options = {});

// One entry `rel` ("" for the directory itself) beneath the directory open at `root_fd`,
// recorded as import_directory records it, under the path `record_as`. `rel` is resolved
// beneath `root_fd` with no symlink followed on the way (openat2 RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: ELOOP when a component is a symlink, EXDEV
// for a path that leaves `root_fd`); the entry itself is opened with O_NOFOLLOW (a symlink
// is recorded as one) and everything about it comes from that descriptor. A hard link to a
// file the owner of `root_fd` cannot read is refused (EACCES). A regular file's content goes
// through `batch` (the caller commits it); with a null batch it is only hashed. `what`
// names the entry in errors (e.g. the source path).
Result<Entry> import_entry_at(int root_fd, std::string_view rel, std::string record_as,
                              ObjectStore::Batch* batch, const std::string& what);

// One entry at `path`, resolved as given up to its last component, which is opened without
// following a symlink (a directory's own metadata only); otherwise as import_entry_at, with
// `path`'s parent directory as the root (its owner is the one whose hard links count).
Result<Entry> import_entry(const std::filesystem::path& path, std::string rel,
                           ObjectStore::Batch* batch);

// Opens `rel` beneath `root_fd` as import_entry_at resolves it (the last component too: no
// symlink anywhere). `flags` as for openat; `what` names the path in errors.
Result<UniqueFd> open_beneath(int root_fd, std::string_view rel, int flags,
                              const std::string& what);

}  // namespace livefs::store
