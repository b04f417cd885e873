// Test support: a temporary directory removed (with everything in it) at scope exit.
#pragma once

#include <filesystem>
#include <string>

namespace livefs::testing {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "livefs-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Writes `content` to `path` (creating parent directories) with `mode`.
void write_file(const std::filesystem::path& path, const std::string& content,
                unsigned mode = 0644);
std::string read_file(const std::filesystem::path& path);
// Sets the mtime (and atime) of `root` and of everything below it, symlinks themselves
// included, to one fixed time: two trees written by a test at different moments then
// differ only where the test made them differ (mtime is an attribute the view serves and
// diff compares, to the nanosecond).
void settle_times(const std::filesystem::path& root);

// Runs a shell command; returns its exit status and (when `output` is given) its stdout.
int run(const std::string& command, std::string* output = nullptr);

}  // namespace livefs::testing
