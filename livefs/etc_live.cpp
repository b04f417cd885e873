// The /etc merge's trees, undo directory and reply.
#include "livefs/etc_live.h"

#include <sys/stat.h>

namespace livefs::cli {

namespace fs = std::filesystem;

namespace {

bool is_dir(const fs::path& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

Result<EtcTrees> etc_trees(const Origin& booted, const Origin& staged) {
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
  if (staged.system_root.empty())
    return fail(ENOTSUP, "apply --etc: the staged " + staged.describe() +
                             " has no checkout to read its default configuration from "
                             "(deploy it: ostree admin deploy)");
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
