// Test support: temporary directories, small file helpers, running commands.
#include "support/temp_dir.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace livefs::testing {

TempDir::TempDir(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  // Deployment directories made by ostree are immutable; tests that make them clear the
  // flag themselves, this is the fallback.
  std::filesystem::remove_all(path_, ec);
  if (ec) {
    std::string cmd =
        "chattr -R -i '" + path_.string() + "' 2>/dev/null; rm -rf '" + path_.string() + "'";
    (void)system(cmd.c_str());
  }
}

void write_file(const std::filesystem::path& path, const std::string& content, unsigned mode) {
  std::filesystem::create_directories(path.parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("cannot write " + path.string());
  }
  chmod(path.c_str(), mode);
}

void settle_times(const std::filesystem::path& root) {
  const struct timespec when[2] = {{1'700'000'000, 0}, {1'700'000'000, 0}};
  auto set = [&](const std::filesystem::path& p) {
    if (utimensat(AT_FDCWD, p.c_str(), when, AT_SYMLINK_NOFOLLOW) != 0)
      throw std::runtime_error("utimensat " + p.string());
  };
  // Children first would not matter: setting a time does not change the parent's.
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) set(e.path());
  set(root);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run(const std::string& command, std::string* output) {
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  if (output != nullptr) *output = std::move(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace livefs::testing
