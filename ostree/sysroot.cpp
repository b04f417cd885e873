// Deployments of a sysroot, the booted commit's manifest and staging of a commit.
#include "ostree/sysroot.h"

#include <ostree.h>

#include <memory>
#include <string_view>

namespace livefs::ostree {

namespace fs = std::filesystem;

namespace {

struct Unref {
  void operator()(gpointer p) const { g_object_unref(p); }
};

// The options of a deployment's bootloader entry without "ostree=PATH" (and the
// "init=/ostree/PATH" set when there is no initramfs), which name the deployment itself (each
// has its own), so that two deployments compare by what the operator set.
std::string options_of(OstreeDeployment* d) {
  OstreeBootconfigParser* config = ostree_deployment_get_bootconfig(d);
  if (config == nullptr) return "";
  const char* options = ostree_bootconfig_parser_get(config, "options");
  if (options == nullptr) return "";
  std::string out;
  std::string_view rest = options;
  while (!rest.empty()) {
    size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    size_t end = rest.find(' ', start);
    std::string_view word = rest.substr(start, end == std::string_view::npos ? end : end - start);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    if (word.starts_with("ostree=") || word.starts_with("init=/ostree/")) continue;
    if (!out.empty()) out += ' ';
    out += word;
  }
  return out;
}

// The kernel arguments of `booted` (found by OS, commit and serial) and of the next boot's
// deployment. The sysroot is loaded again: list_deployments keeps no libostree object.
Status read_kernel_args(const fs::path& sysroot_path, const Deployment& booted,
                        SysrootDeployments& out) {
  std::unique_ptr<GFile, Unref> file(g_file_new_for_path(sysroot_path.c_str()));
  std::unique_ptr<OstreeSysroot, Unref> sysroot(ostree_sysroot_new(file.get()));
  GError* error = nullptr;
  if (!ostree_sysroot_load(sysroot.get(), nullptr, &error)) {
    std::string message = error != nullptr ? error->message : "unknown error";
    g_clear_error(&error);
    return fail(EIO, "ostree: load sysroot " + sysroot_path.string() + ": " + message);
  }
  GPtrArray* all = ostree_sysroot_get_deployments(sysroot.get());
  OstreeDeployment* next = ostree_sysroot_get_staged_deployment(sysroot.get());
  if (next == nullptr && all->len > 0) next = static_cast<OstreeDeployment*>(all->pdata[0]);
  for (guint i = 0; i < all->len; ++i) {
    auto* d = static_cast<OstreeDeployment*>(all->pdata[i]);
    if (booted.osname == ostree_deployment_get_osname(d) &&
        booted.checksum == ostree_deployment_get_csum(d) &&
        booted.deployserial == ostree_deployment_get_deployserial(d)) {
      out.booted_kernel_args = options_of(d);
    }
  }
  out.next_kernel_args = next != nullptr ? options_of(next) : out.booted_kernel_args;
  g_ptr_array_unref(all);
  return {};
}

}  // namespace

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
  if (auto st = read_kernel_args(sysroot, *booted, out); !st) return std::unexpected(st.error());
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
