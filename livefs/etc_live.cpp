// The /etc merge's trees, undo directory and reply.
#include "livefs/etc_live.h"

#include <sys/stat.h>

#include "ostree/checkout.h"

namespace livefs::cli {

namespace fs = std::filesystem;

namespace {

bool is_dir(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

// STATE/etc-staged/CHECKSUM: made under a temporary name and renamed, so a directory of
// that name is a whole checkout.
Result<fs::path> staged_commit_etc(const Origin& staged, const fs::path& state,
                                   const fs::path& repo) {
  fs::path root = state / "etc-staged";
  fs::path dest = root / staged.checksum;
  if (is_dir(dest)) return dest;
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST)
    return fail_errno("mkdir(" + root.string() + ")");
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) fs::remove_all(e.path(), ec);
  fs::path tmp = root / (".tmp-" + staged.checksum);
  if (auto st = ostree::checkout_subpath(repo, staged.checksum, "/" + staged.subdir + "/etc", tmp);
      !st) {
    fs::remove_all(tmp, ec);
    return std::unexpected(with_context(st.error(), "apply --etc: the staged commit's usr/etc"));
  }
  if (::rename(tmp.c_str(), dest.c_str()) != 0) return fail_errno("rename(" + dest.string() + ")");
  return dest;
}

Result<EtcTrees> etc_trees(const Origin& booted, const Origin& staged, const fs::path& state,
                           const fs::path& repo) {
  if (booted.subdir.empty())
    return fail(EINVAL,
                "apply --etc: the view serves the whole tree (its /etc included): "
                "select the etc changes as paths instead");
  EtcTrees t{booted.system_root / "usr/etc", staged.system_root / "usr/etc",
             booted.system_root / "etc"};
  if (!is_dir(t.booted_default))
    return fail(ENOENT,
                "apply --etc: the booted tree has no default configuration to merge "
                "from (" +
                    t.booted_default.string() +
                    " is not a directory): /etc is merged only for trees that keep "
                    "their defaults in usr/etc (OSTree deployments)");
  if (staged.kind == "none") return fail(ENOENT, "apply --etc: nothing is staged");
  if (staged.system_root.empty()) {
    if (staged.kind != "commit" || staged.checksum.empty() || repo.empty())
      return fail(ENOTSUP, "apply --etc: the staged " + staged.describe() +
                               " has no checkout to read its default configuration from");
    auto checkout = staged_commit_etc(staged, state, repo);
    if (!checkout) return std::unexpected(checkout.error());
    t.staged_default = *checkout;
  }
  if (!is_dir(t.staged_default))
    return fail(ENOENT, "apply --etc: the staged tree has no default configuration (" +
                            t.staged_default.string() + " is not a directory)");
  if (!is_dir(t.live))
    return fail(ENOENT, "apply --etc: no live configuration directory " + t.live.string());
  return t;
}

Result<fs::path> etc_undo_root(const fs::path& state) {
  fs::path root = state / "etc-undo";
  if (::mkdir(root.c_str(), 0700) != 0 && errno != EEXIST)
    return fail_errno("mkdir(" + root.string() + ")");
  return root;
}

protocol::EtcMerge etc_merge_reply(const etc::Plan& plan) {
  protocol::EtcMerge out;
  for (const auto& a : plan.actions) {
    std::string path = "etc/" + a.path;
    switch (a.kind) {
      case etc::ActionKind::update:
        out.updated.push_back(path);
        break;
      case etc::ActionKind::add:
        out.added.push_back(path);
        break;
      case etc::ActionKind::remove:
        out.removed.push_back(path);
        break;
      case etc::ActionKind::conflict:
        out.conflicts.push_back({path, a.reason});
        break;
    }
  }
  return out;
}

}  // namespace livefs::cli
