// Test support: tree dumps (see tree_dump.h).
#include "support/tree_dump.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <vector>

namespace livefs::testing {
namespace {

namespace fs = std::filesystem;

std::string hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string content_hash(const fs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return "unreadable:" + std::to_string(errno);
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0)
    XXH3_64bits_update(state, buf, static_cast<size_t>(n));
  int err = n < 0 ? errno : 0;
  ::close(fd);
  uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  if (err != 0) return "read-error:" + std::to_string(err);
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

std::string xattrs_of(const fs::path& path) {
  ssize_t size = ::llistxattr(path.c_str(), nullptr, 0);
  if (size < 0) return errno == ENOTSUP ? "" : "listxattr-error:" + std::to_string(errno);
  std::string names(static_cast<size_t>(size), '\0');
  size = ::llistxattr(path.c_str(), names.data(), names.size());
  if (size < 0) return "listxattr-error:" + std::to_string(errno);
  names.resize(static_cast<size_t>(size));
  std::vector<std::string> sorted;
  for (size_t pos = 0; pos < names.size();) {
    sorted.emplace_back(names.data() + pos);
    pos += sorted.back().size() + 1;
  }
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const std::string& name : sorted) {
    ssize_t vsize = ::lgetxattr(path.c_str(), name.c_str(), nullptr, 0);
    std::string value(vsize > 0 ? static_cast<size_t>(vsize) : 0, '\0');
    if (vsize > 0) vsize = ::lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    out += " " + name + "=" + (vsize < 0 ? "error:" + std::to_string(errno) : hex(value));
  }
  return out;
}

struct Walk {
  explicit Walk(const DumpOptions& o) : options(o) {}
  const DumpOptions& options;
  dev_t dev = 0;
  std::map<std::string, std::string> lines;
  std::map<std::pair<dev_t, ino_t>, std::string> first_of_inode;
  std::map<std::string, std::pair<dev_t, ino_t>> inode_of;

  void visit(const fs::path& root, const std::string& rel) {
    if (std::find(options.skip.begin(), options.skip.end(), rel) != options.skip.end()) return;
    fs::path path = rel.empty() ? root : root / rel;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
      lines[rel] = "lstat-error:" + std::to_string(errno);
      return;
    }
    if (rel.empty()) dev = st.st_dev;
    char head[256];
    bool dir = S_ISDIR(st.st_mode);
    long long mtime_ns =
        (dir || S_ISLNK(st.st_mode)) && !options.dir_and_symlink_mtimes
            ? 0
            : static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    std::snprintf(head, sizeof head, "%06o %u:%u size=%lld mtime=%lld rdev=%u,%u nlink=%lu",
                  static_cast<unsigned>(st.st_mode), st.st_uid, st.st_gid,
                  static_cast<long long>(dir ? 0 : st.st_size), mtime_ns, major(st.st_rdev),
                  minor(st.st_rdev), static_cast<unsigned long>(options.nlink ? st.st_nlink : 0));
    std::string line = head;
    if (S_ISLNK(st.st_mode)) {
      std::string target(static_cast<size_t>(st.st_size) + 1, '\0');
      ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
      target.resize(n < 0 ? 0 : static_cast<size_t>(n));
      line += " -> " + hex(target);
    } else if (S_ISREG(st.st_mode)) {
      line += " content=" + content_hash(path);
    }
    line += xattrs_of(path);
    lines[rel] = line;
    if (!dir && options.nlink) {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      first_of_inode.emplace(key, rel);  // the walk is in path order: the first stays
      inode_of[rel] = key;
    }
    if (!dir || st.st_dev != dev) return;
    std::vector<std::string> names;
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) {
      lines[rel] += " opendir-error:" + std::to_string(errno);
      return;
    }
    while (dirent* de = ::readdir(d)) {
      std::string name = de->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) visit(root, rel.empty() ? name : rel + "/" + name);
  }
};

}  // namespace

std::map<std::string, std::string> dump_tree(const fs::path& root, const DumpOptions& options) {
  Walk walk(options);
  walk.visit(root, "");
  for (const auto& [rel, key] : walk.inode_of)
    walk.lines[rel] += " inode-of=" + hex(walk.first_of_inode.at(key));
  return std::move(walk.lines);
}

std::string compare_dumps(const std::map<std::string, std::string>& want,
                          const std::map<std::string, std::string>& got, size_t limit) {
  std::string out;
  size_t shown = 0, differing = 0;
  auto note = [&](const std::string& path, const std::string& w, const std::string& g) {
    ++differing;
    if (shown++ >= limit) return;
    out += "/" + path + "\n  want: " + w + "\n  got:  " + g + "\n";
  };
  for (const auto& [path, line] : want) {
    auto it = got.find(path);
    if (it == got.end())
      note(path, line, "(absent)");
    else if (it->second != line)
      note(path, line, it->second);
  }
  for (const auto& [path, line] : got)
    if (!want.contains(path)) note(path, "(absent)", line);
  if (differing > limit) out += "... " + std::to_string(differing - limit) + " more\n";
  if (differing > 0) out = std::to_string(differing) + " paths differ:\n" + out;
  return out;
}

}  // namespace livefs::testing
