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

namespace {

// Edit distance, for suggesting names close to a mistyped one.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string unknown_package_message(
    std::string_view name, std::string_view compared,
    const std::vector<std::pair<std::string_view, std::string_view>>& candidates) {
  std::vector<std::pair<size_t, std::string_view>> close;
  size_t limit = std::max<size_t>(1, compared.size() / 4);
  for (const auto& [candidate, shown] : candidates) {
    size_t distance = edit_distance(compared, candidate);
    bool prefix = candidate.starts_with(compared) || compared.starts_with(candidate);
    if (distance <= limit || (prefix && !compared.empty())) close.emplace_back(distance, shown);
  }
  std::sort(close.begin(), close.end());
  close.erase(std::unique(close.begin(), close.end()), close.end());
  std::string message = "unknown package " + std::string(name);
  if (close.empty()) return message;
  message += " (close: ";
  for (size_t i = 0; i < close.size() && i < 5; ++i) {
    message += (i ? ", " : "") + std::string(close[i].second);
  }
  return message + ")";
}

}  // namespace livefs::packages
