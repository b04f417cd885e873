// What the fuzz targets share: a broken invariant is a crash (libFuzzer keeps the input),
// and several named files travel in one input in the format `head` prints for several files.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "common/log.h"

namespace livefs::fuzz {

// Not assert(): the fuzz build defines NDEBUG (RelWithDebInfo), and an invariant must hold
// there too. Aborting is what makes libFuzzer save the input as crash-<sha1>.
[[noreturn]] inline void invariant_broken(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: invariant broken: %s\n", file, line, what);
  std::abort();
}
#define FUZZ_CHECK(cond) \
  ((cond) ? (void)0 : ::livefs::fuzz::invariant_broken(#cond, __FILE__, __LINE__))

// Once per process: the libraries' loggers would write a line per rejected input.
inline void quiet_logs() { set_log_level(spdlog::level::off); }

// Splits an input into files. A line "==> NAME <==" starts the file NAME, which holds the
// bytes up to the next such line (its last '\n' included); bytes before the first header
// belong to the file "". A name given twice keeps its last content. So a seed is written
// with `head -n 20 status info/bash.list`, and a target that reads one file takes any
// input as is.
inline std::map<std::string, std::string> split_files(std::string_view input) {
  constexpr std::string_view kOpen = "==> ", kClose = " <==";
  std::map<std::string, std::string> files;
  std::string* current = &files[""];
  while (!input.empty()) {
    size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    std::string_view with_nl = input.substr(0, nl == std::string_view::npos ? nl : nl + 1);
    input.remove_prefix(with_nl.size());
    if (line.size() >= kOpen.size() + kClose.size() && line.starts_with(kOpen) &&
        line.ends_with(kClose)) {
      std::string name(line.substr(kOpen.size(), line.size() - kOpen.size() - kClose.size()));
      current = &files[name];
      current->clear();
      continue;
    }
    current->append(with_nl);
  }
  if (files[""].empty()) files.erase("");
  return files;
}

}  // namespace livefs::fuzz
