// Reading OSTree through libostree: the deployments of a sysroot (booted, staged, pending)
// and the tree of a commit, imported into the object store without a checkout, with an
// index from OSTree content checksums to object ids so unchanged files are never reread.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::ostree {

using store::Entry;
using store::ObjectId;
using store::ObjectStore;
using store::StoreLock;
using store::Tree;
using store::Xattr;

struct Deployment {
  size_t index = 0;  // position in the sysroot's deployment list (0 = next boot's default)
  std::string osname;
  std::string checksum;  // the commit
  int deployserial = 0;
  std::string version;  // commit metadata "version", "" when absent
  bool booted = false;
  bool staged = false;  // staged by `ostree admin deploy --stage` (finalized at shutdown)
  // What the next boot would use: the staged deployment, else index 0 when it is not the
  // booted one.
  bool pending = false;
  std::filesystem::path path;  // the deployment directory
};

// Lists the deployments of the sysroot at `sysroot` (all OSes, or only `os_name`).
// ENOENT/EINVAL with the path when it is not an OSTree sysroot.
Result<std::vector<Deployment>> list_deployments(const std::filesystem::path& sysroot,
                                                 const std::string& os_name = "");

// The deployment named by `spec`: a decimal index of at most three digits (a position in
// `list`), else a checksum or a unique checksum prefix. ENOENT when nothing matches, EINVAL
// when a prefix is ambiguous; the message lists what exists.
Result<Deployment> resolve_deployment(const std::vector<Deployment>& list, std::string_view spec);

// The booted deployment when the sysroot is the running one, else the one `spec` names.
// EINVAL when there is no booted deployment and no spec.
Result<Deployment> booted_deployment(const std::vector<Deployment>& list,
                                     const std::optional<std::string>& spec);

struct OstreeImportOptions {
  // The part of the commit to import, relative to its root ("usr"); "" for the whole tree.
  std::string subdir = "usr";
  bool progress = false;  // a progress line on stderr when it is a terminal
  // Called after each file entry with the running stats (for a caller's own progress
  // display, or a test that changes the repository mid-import).
  std::function<void(const struct OstreeImportStats&)> on_file = {};
  // Files whose content is served from elsewhere (the booted deployment): called with the
  // path (relative to `subdir`) and the OSTree content checksum; when it returns an id, the
  // entry takes it and the content is neither read, checked nor stored.
  std::function<std::optional<ObjectId>(std::string_view path, std::string_view checksum)>
      content_id = {};
};

// The id a file of the booted deployment gets in its manifest: derived from its OSTree
// content checksum (which covers content, mode, owner and xattrs), so that equal files of
// two commits have equal ids without reading either. Such ids name no store object: the
// booted tree is served from its checkout.
ObjectId booted_content_id(std::string_view ostree_checksum);

struct OstreeImportStats {
  uint64_t files = 0;         // regular files in the imported tree
  uint64_t dirs = 0;          // directories
  uint64_t symlinks = 0;      // symlinks
  uint64_t files_read = 0;    // distinct file objects read from the repository and stored
  uint64_t files_reused = 0;  // distinct file objects found in the index (not read)
  uint64_t files_given = 0;   // files whose id came from OstreeImportOptions::content_id
  uint64_t bytes_read = 0;    // content bytes read from the repository
  double seconds = 0;
};

// The entries of a commit's tree (sorted by path, root first) and the commit's checksum.
struct CommitContents {
  std::string checksum;
  std::vector<Entry> entries;
  OstreeImportStats stats;
  // Keeps gc off the objects just stored (and those reused) until the caller has rooted
  // the tree: see ImportResult::lock.
  StoreLock lock;
};

struct OstreeImportResult {
  std::string checksum;
  Tree tree;
  OstreeImportStats stats;
  StoreLock lock;  // as CommitContents::lock
};

// Reads the tree of `rev` (a ref, "remote:ref", a checksum or a unique prefix) in the repo
// at `repo_path` through libostree and stores the content of its files in `store`. Every
// object read is checked against its OSTree checksum; a mismatch is EIO naming the object,
// and then nothing is added to the index (objects already written are unreferenced cache
// content that gc frees). The index lives in the store directory as `ostree-index`.
Result<CommitContents> read_commit(const std::filesystem::path& repo_path, const std::string& rev,
                                   ObjectStore& store, const OstreeImportOptions& options = {});

// As read_commit, returning the tree as a manifest.
inline Result<OstreeImportResult> import_commit(const std::filesystem::path& repo_path,
                                                const std::string& rev, ObjectStore& store,
                                                const OstreeImportOptions& options = {}) {
  auto contents = read_commit(repo_path, rev, store, options);
  if (!contents) return std::unexpected(contents.error());
  auto tree = Tree::build(std::move(contents->entries));
  if (!tree) return std::unexpected(tree.error());
  return OstreeImportResult{contents->checksum, std::move(*tree), contents->stats,
                            std::move(contents->lock)};
}

// Where a pull counts its objects while it runs (libostree's progress): fetched so far and
// requested so far (which grows as metadata arrives). Either may be null.
struct PullCounters {
  std::atomic<uint64_t>* fetched = nullptr;
  std::atomic<uint64_t>* requested = nullptr;
};

// Fetches `ref` from the configured `remote` of the repo at `repo_path` (libostree pull;
// HTTP for archive repositories). Returns the pulled commit's checksum.
Result<std::string> pull(const std::filesystem::path& repo_path, const std::string& remote,
                         const std::string& ref, PullCounters counters = {});

// The checksum `rev` resolves to in the repo (ENOENT naming it when it does not).
Result<std::string> resolve_rev(const std::filesystem::path& repo_path, const std::string& rev);

}  // namespace livefs::ostree
