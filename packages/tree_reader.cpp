// The two TreeReaders: a directory on disk (resolved with openat2 RESOLVE_IN_ROOT, so the
// tree's absolute symlinks stay inside it) and a manifest plus the object store (symlinks
// resolved by walking the manifest the same way).
#include "packages/tree_reader.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <deque>

#include "common/unique_fd.h"

namespace livefs::packages {

TreeReader::~TreeReader() = default;

std::vector<std::string_view> path_components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(pos, slash - pos);
    if (!part.empty() && part != ".") out.push_back(part);
    pos = slash + 1;
  }
  return out;
}

namespace {

std::string_view strip_slashes(std::string_view path) {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  return path;
}

// The state of a walk inside an OS tree that follows symlinks as RESOLVE_IN_ROOT does: the
// components still to walk and those walked (from the tree's root).
struct RootedWalk {
  static constexpr int kMaxSymlinks = 40;  // the kernel's limit

  explicit RootedWalk(std::string_view path) {
    for (std::string_view part : path_components(path)) pending.emplace_back(part);
  }
  std::string take() {
    std::string part = std::move(pending.front());
    pending.pop_front();
    return part;
  }
  // Counts one more symlink followed: ELOOP past the kernel's limit.
  Status count_symlink(std::string_view what) {
    if (++followed > kMaxSymlinks) return fail(ELOOP, std::string(what));
    return {};
  }
  // Puts a symlink's target (met in the directory `current`) in front of what is left:
  // an absolute target restarts at the root.
  void follow(std::string_view target) {
    if (target.starts_with('/')) current.clear();
    auto parts = path_components(target);
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) pending.emplace_front(*it);
  }

  std::deque<std::string> pending;
  std::vector<std::string> current;
  int followed = 0;
};

// ---- directory on disk ------------------------------------------------------------------

class DirectoryReader final : public TreeReader {
 public:
  explicit DirectoryReader(std::filesystem::path root) : root_(std::move(root)) {
    root_fd_.reset(::open(root_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd_) root_error_ = errno_error("open(" + root_.string() + ")");
  }

  Result<std::optional<std::string>> read_file(std::string_view path) const override {
    path = strip_slashes(path);
    // O_NONBLOCK: a fifo in the tree must not hang the open; it is refused below.
    auto fd = open_in_root(path, O_RDONLY | O_NONBLOCK | O_NOCTTY);
    if (!fd) return std::unexpected(fd.error());
    if (!*fd) return std::nullopt;
    struct stat st;
    if (::fstat((*fd)->get(), &st) != 0) return fail_errno("fstat(" + shown(path) + ")");
    if (S_ISDIR(st.st_mode)) return fail(EISDIR, "read(" + shown(path) + ")");
    if (!S_ISREG(st.st_mode)) return fail(EINVAL, "read(" + shown(path) + "): not a regular file");
    std::string content;
    content.reserve(static_cast<size_t>(st.st_size));
    char buf[65536];
    for (;;) {
      ssize_t n = ::read((*fd)->get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("read(" + shown(path) + ")");
      }
      if (n == 0) break;
      content.append(buf, static_cast<size_t>(n));
    }
    return content;
  }

  Result<std::optional<std::string>> read_link(std::string_view path) const override {
    path = strip_slashes(path);
    if (path.empty()) return std::nullopt;  // the root is a directory
    size_t slash = path.rfind('/');
    std::string_view parent = slash == std::string_view::npos ? "" : path.substr(0, slash);
    std::string name(slash == std::string_view::npos ? path : path.substr(slash + 1));
    if (name == "." || name == "..") return std::nullopt;
    auto dir = open_in_root(parent, O_PATH | O_DIRECTORY);
    if (!dir) return std::unexpected(dir.error());
    if (!*dir) return std::nullopt;
    std::string target(256, '\0');
    for (;;) {
      ssize_t n = ::readlinkat((*dir)->get(), name.c_str(), target.data(), target.size());
      if (n < 0) {
        if (errno == EINVAL || errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        return fail_errno("readlink(" + shown(path) + ")");
      }
      if (static_cast<size_t>(n) < target.size()) {
        target.resize(static_cast<size_t>(n));
        return target;
      }
      target.resize(target.size() * 2);
    }
  }

  Result<std::vector<std::string>> list(std::string_view dir) const override {
    dir = strip_slashes(dir);
    // O_PATH first, so that a last component that is not a directory is ENOTDIR rather
    // than absent (open_in_root takes ENOTDIR on the way for absence).
    auto path_fd = open_in_root(dir, O_PATH);
    if (!path_fd) return std::unexpected(path_fd.error());
    if (!*path_fd) return fail(ENOENT, "opendir(" + shown(dir) + ")");
    struct stat st;
    if (::fstat((*path_fd)->get(), &st) != 0) return fail_errno("fstat(" + shown(dir) + ")");
    if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, "opendir(" + shown(dir) + ")");
    UniqueFd fd(::openat((*path_fd)->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return fail_errno("opendir(" + shown(dir) + ")");
    DIR* stream = ::fdopendir(fd.get());
    if (stream == nullptr) return fail_errno("opendir(" + shown(dir) + ")");
    fd.release();  // the DIR owns it now
    std::vector<std::string> names;
    errno = 0;
    while (dirent* ent = ::readdir(stream)) {
      std::string_view name = ent->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    int err = errno;
    ::closedir(stream);
    if (err != 0) return std::unexpected(make_error(err, "readdir(" + shown(dir) + ")"));
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string shown(std::string_view path) const { return (root_ / path).string(); }

  // Opens `path` (relative, "" for the root) below the root; nullopt when it does
  // not exist (ENOENT, or ENOTDIR for a component that is not a directory).
  Result<std::optional<UniqueFd>> open_in_root(std::string_view path, int flags) const {
    if (!root_fd_) return std::unexpected(root_error_);
    std::string rel = path.empty() ? std::string(".") : std::string(path);
    open_how how{};
    how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int fd =
        static_cast<int>(::syscall(SYS_openat2, root_fd_.get(), rel.c_str(), &how, sizeof how));
    if (fd < 0 && errno == ENOSYS) {
      // Kernels before 5.6 (and valgrind): resolve the symlinks here, then open the
      // symlink-free path.
      auto resolved = resolve_in_root(path);
      if (!resolved) return std::unexpected(resolved.error());
      if (!*resolved) return std::optional<UniqueFd>();
      std::string walked = (*resolved)->empty() ? std::string(".") : std::move(**resolved);
      fd = ::openat(root_fd_.get(), walked.c_str(), flags | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::optional<UniqueFd>();
      return fail_errno("open(" + shown(path) + ")");
    }
    return std::optional<UniqueFd>(UniqueFd(fd));
  }

  // What RESOLVE_IN_ROOT does, by hand: a path below the root with every symlink on the way
  // (the last component's too) replaced by its target, absolute targets starting at the
  // root and ".." stopping there. nullopt when a component does not exist.
  Result<std::optional<std::string>> resolve_in_root(std::string_view path) const {
    RootedWalk walk(path);
    auto joined = [&walk](std::string_view extra) {
      std::string out;
      for (const std::string& part : walk.current) out += part + "/";
      out += extra;
      if (out.ends_with('/')) out.pop_back();
      return out;
    };
    while (!walk.pending.empty()) {
      std::string part = walk.take();
      if (part == "..") {
        if (!walk.current.empty()) walk.current.pop_back();
        continue;
      }
      std::string candidate = joined(part);
      struct stat st;
      if (::fstatat(root_fd_.get(), candidate.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        return fail_errno("stat(" + shown(candidate) + ")");
      }
      if (!S_ISLNK(st.st_mode)) {
        walk.current.push_back(std::move(part));
        continue;
      }
      if (auto counted = walk.count_symlink("open(" + shown(path) + ")"); !counted)
        return std::unexpected(counted.error());
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlinkat(root_fd_.get(), candidate.c_str(), target.data(), target.size());
      if (n < 0) return fail_errno("readlink(" + shown(candidate) + ")");
      target.resize(std::min(static_cast<size_t>(n), target.size()));
      walk.follow(target);
    }
    return joined("");
  }

  std::filesystem::path root_;
  UniqueFd root_fd_;
  Error root_error_;
};

// ---- manifest in the store --------------------------------------------------------------

class ManifestReader final : public TreeReader {
 public:
  ManifestReader(store::Tree tree, std::shared_ptr<const store::ObjectStore> store,
                 std::string prefix)
      : tree_(std::move(tree)), store_(std::move(store)) {
    for (std::string_view part : path_components(prefix)) prefix_.emplace_back(part);
  }

  Result<std::optional<std::string>> read_file(std::string_view path) const override {
    auto found = resolve(path, true);
    if (!found) return std::unexpected(found.error());
    if (!*found) return std::nullopt;
    const Location& at = **found;
    if (!at.entry || at.entry->type() == store::EntryType::dir) {
      return fail(EISDIR, "read(" + std::string(path) + ")");
    }
    if (at.entry->type() != store::EntryType::file) {
      return fail(EINVAL, "read(" + std::string(path) + "): not a regular file");
    }
    if (!store_) return fail(ENOENT, "read(" + std::string(path) + "): no object store");
    auto content = store_->read_verified(at.entry->object());
    if (!content)
      return std::unexpected(with_context(content.error(), "read(" + std::string(path) + ")"));
    return std::move(*content);
  }

  Result<std::optional<std::string>> read_link(std::string_view path) const override {
    auto found = resolve(path, false);
    if (!found) return std::unexpected(found.error());
    if (!*found || !(*found)->entry || (*found)->entry->type() != store::EntryType::symlink) {
      return std::nullopt;
    }
    return std::string((*found)->entry->target());
  }

  Result<std::vector<std::string>> list(std::string_view dir) const override {
    auto found = resolve(dir, true);
    if (!found) return std::unexpected(found.error());
    if (!*found) return fail(ENOENT, "opendir(" + std::string(dir) + ")");
    const Location& at = **found;
    std::vector<std::string> names;
    if (!at.entry) {
      // An ancestor of the prefix: all that is known of it is the way down.
      names.push_back(prefix_[at.os_depth]);
      return names;
    }
    if (at.entry->type() != store::EntryType::dir) {
      return fail(ENOTDIR, "opendir(" + std::string(dir) + ")");
    }
    for (const store::EntryRef& child : tree_.children(at.entry->index())) {
      if (child.type() != store::EntryType::whiteout) names.emplace_back(child.name());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  struct Location {
    std::optional<store::EntryRef> entry;  // empty: an ancestor of the prefix
    size_t os_depth = 0;                   // components of the OS path
  };

  // The manifest entry of an OS path (one of its components as it is in the manifest),
  // nullopt when the OS path is outside the prefix or absent.
  std::optional<Location> lookup(const std::vector<std::string>& os_path) const {
    size_t common = 0;
    while (common < prefix_.size() && common < os_path.size() &&
           os_path[common] == prefix_[common]) {
      ++common;
    }
    if (common < prefix_.size()) {
      if (common < os_path.size()) return std::nullopt;  // leaves the prefix
      return Location{std::nullopt, os_path.size()};
    }
    std::string tree_path;
    for (size_t i = prefix_.size(); i < os_path.size(); ++i) {
      if (!tree_path.empty()) tree_path += '/';
      tree_path += os_path[i];
    }
    auto entry = tree_.find(tree_path);
    if (!entry || entry->type() == store::EntryType::whiteout) return std::nullopt;
    return Location{entry, os_path.size()};
  }

  // Walks `path` component by component, following symlinks inside the OS tree (absolute
  // targets from its root); the last component only when `follow_last`.
  Result<std::optional<Location>> resolve(std::string_view path, bool follow_last) const {
    RootedWalk walk(path);
    // The root is always there: the tree's root, or an ancestor of the prefix.
    Location at = *lookup(walk.current);
    while (!walk.pending.empty()) {
      std::string part = walk.take();
      if (part == "..") {
        if (!walk.current.empty()) walk.current.pop_back();
        auto up = lookup(walk.current);
        if (!up) return std::nullopt;
        at = *up;
        continue;
      }
      if (at.entry && at.entry->type() != store::EntryType::dir) return std::nullopt;
      walk.current.push_back(std::move(part));
      auto next = lookup(walk.current);
      if (!next) return std::nullopt;
      at = *next;
      bool last = walk.pending.empty();
      if (at.entry && at.entry->type() == store::EntryType::symlink && (!last || follow_last)) {
        if (auto counted = walk.count_symlink("resolve(" + std::string(path) + ")"); !counted)
          return std::unexpected(counted.error());
        walk.current.pop_back();
        walk.follow(at.entry->target());
        auto base = lookup(walk.current);
        if (!base) return std::nullopt;
        at = *base;
      }
    }
    return at;
  }

  store::Tree tree_;
  std::shared_ptr<const store::ObjectStore> store_;
  std::vector<std::string> prefix_;
};

}  // namespace

std::unique_ptr<TreeReader> directory_reader(std::filesystem::path root) {
  return std::make_unique<DirectoryReader>(std::move(root));
}

std::unique_ptr<TreeReader> manifest_reader(const store::Tree& tree,
                                            std::shared_ptr<const store::ObjectStore> store,
                                            std::string tree_prefix) {
  return std::make_unique<ManifestReader>(tree, std::move(store), std::move(tree_prefix));
}

}  // namespace livefs::packages
