// What the benchmark programs share: running a shell command, dropping the page cache,
// timing, and reading what the kernel says about memory.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

namespace livefs::bench {

// Runs `cmd` with /bin/sh; its exit status, or -1 when it did not exit normally.
inline int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// stdout of `cmd` run with /bin/sh (nullopt when it could not start or did not exit 0).
inline std::optional<std::string> sh_out(const std::string& cmd) {
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) return std::nullopt;
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  int rc = ::pclose(f);
  if (!WIFEXITED(rc) || WEXITSTATUS(rc) != 0) return std::nullopt;
  return out;
}

// `s` as one shell word: single-quoted, its own single quotes escaped.
inline std::string shell_word(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  out += '\'';
  return out;
}

// Cold-cache runs start here: dirty data written, page cache, dentries and inodes dropped.
inline void drop_caches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// prefix + n, built by append: g++ 12 at -O3 reports a false -Wrestrict on
// `"literal" + std::to_string(n)`.
inline std::string numbered(const char* prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

// A field of /proc/meminfo in KiB ("Cached", "MemFree", ...); -1 when it is not there.
inline long long meminfo_kib(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  long long kib = 0;
  std::string unit;
  while (in >> name >> kib) {
    std::getline(in, unit);
    if (name == field + ":") return kib;
  }
  return -1;
}

}  // namespace livefs::bench
