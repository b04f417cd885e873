// Reading /proc files, shared by the scans of host/ (holders and mount users).
#pragma once

#include <cerrno>
#include <optional>
#include <string>

namespace livefs::host {

// Whole contents of a file whose size is not known before reading (/proc files report 0):
// `name` relative to `dirfd` (or AT_FDCWD). On failure, nullopt with the errno in *err.
std::optional<std::string> read_all_at(int dirfd, const char* name, int* err);

// Errors that mean a process exited, is a kernel thread or is not ours to read: a scan skips
// it.
inline bool expected_while_scanning(int err) {
  return err == ENOENT || err == ESRCH || err == EACCES || err == EPERM;
}

}  // namespace livefs::host
