// What the benchmark programs share: running a shell command and dropping the page cache.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

namespace livefs::bench {

// Runs `cmd` with /bin/sh; its exit status, or -1 when it did not exit normally.
inline int sh(const std::string& cmd) {
  int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Cold-cache runs start here: dirty data written, page cache, dentries and inodes dropped.
inline void drop_caches() {
  sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
}

}  // namespace livefs::bench
