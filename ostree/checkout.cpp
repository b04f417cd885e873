// checkout_subpath through libostree.
#include "ostree/checkout.h"

#include <fcntl.h>
#include <ostree.h>

#include <memory>

namespace livefs::ostree {

Status checkout_subpath(const std::filesystem::path& repo_path, const std::string& commit,
                        const std::string& subpath, const std::filesystem::path& dest) {
  std::error_code ec;
  if (!std::filesystem::is_directory(repo_path, ec))
    return fail(ENOENT, "ostree: no repository at " + repo_path.string());
  GFile* file = g_file_new_for_path(repo_path.c_str());
  OstreeRepo* repo = ostree_repo_new(file);
  g_object_unref(file);
  std::unique_ptr<OstreeRepo, void (*)(gpointer)> owned(repo, g_object_unref);
  GError* error = nullptr;
  auto gfail = [&](const std::string& what) {
    std::string message = error != nullptr ? error->message : "unknown error";
    g_clear_error(&error);
    return fail(EIO, what + ": " + message);
  };
  if (!ostree_repo_open(repo, nullptr, &error))
    return gfail("ostree: open repository " + repo_path.string());
  OstreeRepoCheckoutAtOptions options{};
  options.mode = OSTREE_REPO_CHECKOUT_MODE_NONE;
  options.overwrite_mode = OSTREE_REPO_CHECKOUT_OVERWRITE_NONE;
  options.subpath = subpath.c_str();
  // A copy: the merge reads it, and the repository's objects must stay as they are.
  options.force_copy = TRUE;
  if (!ostree_repo_checkout_at(repo, &options, AT_FDCWD, dest.c_str(), commit.c_str(), nullptr,
                               &error))
    return gfail("ostree: checkout of " + subpath + " of " + commit);
  return {};
}

}  // namespace livefs::ostree
