// The tree readers that find and read the package database inside a booted or staged tree,
// following the tree's own symlinks: the manifest reader resolves them by hand the way the
// kernel's RESOLVE_IN_ROOT does, the directory reader asks the kernel (openat2). Both read
// the same tree, made on disk (tmpfs) and imported into a manifest, and must agree on every
// query: what read_file, read_link and list say about each path.
//
// The input is one line per entry, made in order (one that cannot be made is skipped), and
// queries beside the entries' own paths:
//   usr/lib/x          a file
//   usr/lib/           a directory
//   lib -> usr/lib     a symlink
//   ? var/lib/../x     a query
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/text.h"
#include "fuzz_support.h"
#include "packages/tree_reader.h"
#include "store/import.h"

namespace fs = std::filesystem;
using livefs::Result;
using livefs::packages::TreeReader;

namespace {

fs::path g_scratch;  // this process's tmpfs directory
uint64_t g_round = 0;

// A path the kernel takes as a relative name below the root: components that are not empty,
// "." or "..", short enough.
bool makeable(std::string_view path) {
  if (path.empty() || path.size() > 1024 || path.find('\0') != path.npos) return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == path.npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part.empty() || part == "." || part == ".." || part.size() > 255) return false;
    start = slash + 1;
  }
  return true;
}

// What a reader answered, in a form both can give: a file's content becomes "file" (the
// manifest reader has no object store here, so it answers ENOENT "no object store").
template <class T>
std::string outcome(const Result<std::optional<T>>& r, bool manifest) {
  if (!r) {
    if (manifest && r.error().code == ENOENT && r.error().context.ends_with("no object store"))
      return "file";
    return "error " + std::to_string(r.error().code);
  }
  if (!*r) return "absent";
  if constexpr (std::is_same_v<T, std::string>) {
    return "value " + **r;
  }
  return "value";
}

// Whether the kernel meets a non-directory where the path (or its parent) needs a directory.
// Known divergence, reported: the manifest reader takes "file/.." lexically (as the
// directory holding the file) where RESOLVE_IN_ROOT fails with ENOTDIR; such queries are not
// compared.
bool meets_a_non_directory(int root_fd, std::string_view path) {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  size_t slash = path.rfind('/');
  for (std::string_view p :
       {path, slash == path.npos ? std::string_view() : path.substr(0, slash)}) {
    std::string rel = p.empty() ? std::string(".") : std::string(p);
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    int fd = static_cast<int>(::syscall(SYS_openat2, root_fd, rel.c_str(), &how, sizeof how));
    if (fd >= 0) ::close(fd);
    if (fd < 0 && errno == ENOTDIR) return true;
  }
  return false;
}

// Makes one entry below `root` without ever following a symlink: the tree is full of them,
// and a path through one (a link to "/" or to "../../..") would otherwise create files on the
// host. An entry whose parent is not a plain directory of the tree is skipped.
void make_entry(const fs::path& root, std::string_view path, bool is_dir,
                std::optional<std::string_view> link_target) {
  int dir = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  FUZZ_CHECK(dir >= 0);
  std::string_view rest = path;
  for (size_t slash; (slash = rest.find('/')) != rest.npos; rest.remove_prefix(slash + 1)) {
    std::string part(rest.substr(0, slash));
    (void)::mkdirat(dir, part.c_str(), 0755);
    int next = ::openat(dir, part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    ::close(dir);
    if (next < 0) return;  // a file or a symlink on the way
    dir = next;
  }
  std::string name(rest);
  if (link_target) {
    std::string target(*link_target);
    if (!target.empty() && target.size() <= 1024 && target.find('\0') == target.npos)
      (void)::symlinkat(target.c_str(), dir, name.c_str());
  } else if (is_dir) {
    (void)::mkdirat(dir, name.c_str(), 0755);
  } else {
    int fd =
        ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) {
      FUZZ_CHECK(::write(fd, path.data(), path.size()) == static_cast<ssize_t>(path.size()));
      ::close(fd);
    }
  }
  ::close(dir);
}

std::string listing(const Result<std::vector<std::string>>& r) {
  if (!r) return "error " + std::to_string(r.error().code);
  std::string out = "names";
  for (const std::string& n : *r) out += " " + n;
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  std::string dir = fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
  dir += "/livefs-fuzz-tree-XXXXXX";
  FUZZ_CHECK(::mkdtemp(dir.data()) != nullptr);
  g_scratch = dir;
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(g_scratch, ec);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  fs::path root = g_scratch / std::to_string(++g_round);
  fs::create_directory(root);

  std::vector<std::string> queries = {"", "usr", "var/lib/dpkg/status", "usr/var/lib/dpkg"};
  std::string_view rest = input, line;
  while (livefs::next_line(rest, line)) {
    if (line.starts_with("? ")) {
      queries.emplace_back(line.substr(2));
      continue;
    }
    size_t arrow = line.find(" -> ");
    std::string_view path = line.substr(0, arrow);
    bool is_dir = arrow == line.npos && path.ends_with('/');
    if (is_dir) path.remove_suffix(1);
    if (!makeable(path)) continue;
    queries.emplace_back(path);
    make_entry(root, path, is_dir,
               arrow == line.npos ? std::nullopt : std::optional(line.substr(arrow + 4)));
  }

  auto imported = livefs::store::import_directory(root, nullptr, {.store_objects = false});
  FUZZ_CHECK(imported.has_value());
  auto on_disk = livefs::packages::directory_reader(root);
  auto manifest = livefs::packages::manifest_reader(imported->tree, nullptr, "");

  int root_fd = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  FUZZ_CHECK(root_fd >= 0);
  for (const std::string& q : queries) {
    if (q.size() > 2048 || q.find('\0') != q.npos || meets_a_non_directory(root_fd, q)) continue;
    std::string disk_file = outcome(on_disk->read_file(q), false);
    if (disk_file.starts_with("value ")) disk_file = "file";
    std::string manifest_file = outcome(manifest->read_file(q), true);
    if (disk_file != manifest_file) {
      std::fprintf(stderr, "read_file(%s): directory %s, manifest %s\n", q.c_str(),
                   disk_file.c_str(), manifest_file.c_str());
    }
    FUZZ_CHECK(disk_file == manifest_file);
    std::string disk_link = outcome(on_disk->read_link(q), false);
    std::string manifest_link = outcome(manifest->read_link(q), true);
    if (disk_link != manifest_link) {
      std::fprintf(stderr, "read_link(%s): directory %s, manifest %s\n", q.c_str(),
                   disk_link.c_str(), manifest_link.c_str());
    }
    // A last component "." or ".." names no link: the directory reader says so without
    // walking the rest. Known divergence, reported: the manifest reader walks it (and may
    // meet a loop), and drops a last "." ("abs/." answers for the link "abs").
    std::string_view last = q;
    while (last.ends_with('/')) last.remove_suffix(1);
    last = last.substr(last.find_last_of('/') + 1);
    FUZZ_CHECK(disk_link == manifest_link ||
               (disk_link == "absent" && (last == "." || last == "..")));
    std::string disk_list = listing(on_disk->list(q));
    std::string manifest_list = listing(manifest->list(q));
    if (disk_list != manifest_list) {
      std::fprintf(stderr, "list(%s): directory %s, manifest %s\n", q.c_str(), disk_list.c_str(),
                   manifest_list.c_str());
    }
    FUZZ_CHECK(disk_list == manifest_list);
  }

  ::close(root_fd);
  std::error_code ec;
  fs::remove_all(root, ec);
  return 0;
}
