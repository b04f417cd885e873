// Deployments of a sysroot, the booted commit's manifest and staging of a commit.
#include "ostree/sysroot.h"

namespace livefs::ostree {

namespace fs = std::filesystem;

Result<SysrootDeployments> find_deployments(const fs::path& sysroot, const std::string& os,
                                            const std::optional<std::string>& booted_spec) {
  auto list = list_deployments(sysroot, os);
  if (!list) return std::unexpected(list.error());
  auto booted = booted_deployment(*list, booted_spec);
  if (!booted) return std::unexpected(booted.error());
  SysrootDeployments out{*booted, std::nullopt};
  for (const auto& d : *list) {
    if (d.pending && d.checksum != booted->checksum) out.pending = d;
  }
  // Outside a booted sysroot nothing is marked pending: the newest other deployment (the
  // first in the list, the next boot's default) is what is staged.
  if (!out.pending && !booted->booted) {
    for (const auto& d : *list) {
      if (d.checksum != booted->checksum && (os.empty() || d.osname == booted->osname)) {
        out.pending = d;
        break;
      }
    }
  }
  return out;
}

Result<store::Tree> booted_commit_manifest(const fs::path& repo, const std::string& checksum,
                                           const std::string& subdir, store::ObjectStore& store) {
  OstreeImportOptions options;
  options.subdir = subdir;
  options.content_id = [](std::string_view, std::string_view csum) {
    return std::optional<store::ObjectId>(booted_content_id(csum));
  };
  auto imported = import_commit(repo, checksum, store, options);
  if (!imported) return std::unexpected(with_context(imported.error(), "booted commit"));
  return std::move(imported->tree);
}

Result<OstreeImportResult> stage_commit(const fs::path& repo, const std::string& rev,
                                        const std::string& subdir, const store::Tree& booted,
                                        store::ObjectStore& store, bool progress,
                                        std::atomic<uint64_t>* files_done) {
  OstreeImportOptions options;
  options.subdir = subdir;
  options.progress = progress;
  if (files_done != nullptr) {
    options.on_file = [files_done](const OstreeImportStats& st) {
      files_done->store(st.files, std::memory_order_relaxed);
    };
  }
  options.content_id = [&booted](std::string_view path,
                                 std::string_view csum) -> std::optional<store::ObjectId> {
    store::ObjectId id = booted_content_id(csum);
    auto e = booted.find(path);
    if (e && e->type() == store::EntryType::file && e->object() == id) return id;
    return std::nullopt;
  };
  return import_commit(repo, rev, store, options);
}

}  // namespace livefs::ostree
