// A sysroot as livefs uses it: which deployment is booted and which one the next boot
// would use, the booted commit's manifest, and a staged commit imported against the
// booted tree.
#pragma once

#include <atomic>
#include <filesystem>
#include <optional>
#include <string>

#include "common/error.h"
#include "ostree/repo.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::ostree {

// The deployments of a sysroot: the booted one (the running one, else `booted_spec`) and the
// one the next boot would use when it is another commit (nullopt: nothing staged).
struct SysrootDeployments {
  Deployment booted;
  std::optional<Deployment> pending;
  // The kernel arguments (the bootloader entry's "options") of the booted deployment and of
  // the one the next boot would use (the staged one, else the first), whatever its commit:
  // `ostree admin deploy --karg=...` of the booted commit changes only these. "" when a
  // deployment has none.
  std::string booted_kernel_args = {};
  std::string next_kernel_args = {};
};
Result<SysrootDeployments> find_deployments(const std::filesystem::path& sysroot,
                                            const std::string& os,
                                            const std::optional<std::string>& booted_spec);

// The manifest of a booted commit without reading file contents (see booted_content_id).
Result<store::Tree> booted_commit_manifest(const std::filesystem::path& repo,
                                           const std::string& checksum, const std::string& subdir,
                                           store::ObjectStore& store);

// Stages `rev` of `repo`: its manifest, with the content of every file that differs from the
// booted tree (at the same path) stored, through the OSTree-checksum index. `files_done`,
// when given, counts the files read so far (for a status while it runs).
Result<OstreeImportResult> stage_commit(const std::filesystem::path& repo, const std::string& rev,
                                        const std::string& subdir, const store::Tree& booted,
                                        store::ObjectStore& store, bool progress,
                                        std::atomic<uint64_t>* files_done = nullptr);

}  // namespace livefs::ostree
