// Test support: everything a program can see of a directory tree — what stat, readlink,
// listxattr/getxattr, a listing and the content show — as one line per path, so that two
// trees (the view and the tree it should equal) are compared attribute for attribute.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace livefs::testing {

struct DumpOptions {
  // OSTree records no times of directories and symlinks: a checkout's carry the time of
  // the checkout, which no other tree can equal.
  bool dir_and_symlink_mtimes = true;
  // An OSTree deployment's files are hard links into the repository: their link counts
  // say how many deployments share an object, not what the tree is.
  bool nlink = true;
  // Paths (relative, "" for the root) left out with everything below them.
  std::vector<std::string> skip;
};

// path ("" for the root) → "type mode uid:gid size mtime.ns rdev nlink target content
// xattrs hardlink-group". Inode numbers are not shown (two file systems never share them);
// hard links are: each non-directory names the first path (in path order) of its inode.
// Paths are bytes; the walk follows no symlink and stays on one file system.
std::map<std::string, std::string> dump_tree(const std::filesystem::path& root,
                                             const DumpOptions& options = {});

// "" when equal, else one line per differing path (at most `limit`), each with both sides.
std::string compare_dumps(const std::map<std::string, std::string>& want,
                          const std::map<std::string, std::string>& got, size_t limit = 30);

}  // namespace livefs::testing
