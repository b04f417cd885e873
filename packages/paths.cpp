#include "packages/paths.h"

#include <algorithm>
#include <cerrno>

namespace livefs::packages {

namespace {

// The top-level directories a merged-/usr system turns into symlinks to usr/X.
constexpr std::string_view kUsrMergeDirs[] = {"bin", "sbin", "lib", "lib32", "lib64", "libx32"};

}  // namespace

Result<std::vector<std::string>> find_usr_aliases(const TreeReader& tree) {
  std::vector<std::string> aliases;
  for (std::string_view dir : kUsrMergeDirs) {
    std::string usr_dir = "usr/" + std::string(dir);
    auto link = tree.read_link(dir);
    if (!link) return std::unexpected(link.error());
    if (*link) {
      auto parts = path_components(**link);
      std::string target;
      for (std::string_view part : parts) target += (target.empty() ? "" : "/") + std::string(part);
      if (target == usr_dir) aliases.emplace_back(dir);
      continue;
    }
    auto listed = tree.list(dir);
    if (listed || listed.error().code != ENOENT) continue;  // a real directory (or a file)
    if (tree.list(usr_dir)) aliases.emplace_back(dir);
  }
  return aliases;
}

std::optional<std::string> served_path(std::string_view listed,
                                       const std::vector<std::string>& usr_aliases,
                                       std::string_view served_subdir) {
  while (!listed.empty() && listed.back() == '\r') listed.remove_suffix(1);
  while (!listed.empty() && listed.front() == '/') listed.remove_prefix(1);
  while (!listed.empty() && listed.back() == '/') listed.remove_suffix(1);
  if (listed.empty() || listed == ".") return std::nullopt;
  std::string_view top = listed.substr(0, listed.find('/'));
  bool aliased = std::find(usr_aliases.begin(), usr_aliases.end(), top) != usr_aliases.end();
  std::string os_path = aliased ? "usr/" + std::string(listed) : std::string(listed);
  if (served_subdir.empty()) return os_path;
  if (os_path.size() <= served_subdir.size() + 1 || !os_path.starts_with(served_subdir) ||
      os_path[served_subdir.size()] != '/') {
    return std::nullopt;  // outside (or the served directory itself)
  }
  return os_path.substr(served_subdir.size() + 1);
}

}  // namespace livefs::packages
