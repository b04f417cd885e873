// Small state files (config.json, hotfix.json, …) replaced whole and durably, and read
// back without following a planted symlink or reading an unbounded file.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "common/error.h"
#include "common/sys.h"

namespace livefs {

// Replaces the file `name` (one path component) in the directory `dirfd` with `data`, so
// that every reader sees either the old file or the new one, whole. The data goes to a
// temporary of its own (an O_TMPFILE inode linked under a random name once written, or,
// where the file system has no O_TMPFILE, a random name created O_EXCL|O_NOFOLLOW): two
// writers of the same name never share a temporary. The temporary is fsync'd, renamed over
// `name`, and the directory fsync'd. On a failure before the rename the temporary is
// removed and the old file is untouched; a failure of the final directory fsync is
// returned although the new file is in place (it may not survive a crash). `mode` is set
// exactly (the umask does not apply). `dirfd` may be an O_PATH descriptor.
Status write_file_atomic(int dirfd, const std::string& name, std::string_view data,
                         mode_t mode = 0600, Sys& sys = Sys::real());
// The same for a path: its parent directory is opened (following symlinks, as any path
// does), its last component is replaced.
Status write_file_atomic(const std::filesystem::path& path, std::string_view data,
                         mode_t mode = 0600, Sys& sys = Sys::real());

// Reads the regular file `name` (one path component) in `dirfd`, refusing a symlink
// (ELOOP), anything but a regular file (EINVAL, and a FIFO never blocks the reader) and a
// file larger than `limit` bytes (EFBIG). A missing file is an error with code ENOENT.
Result<std::string> read_file_limited(int dirfd, const std::string& name, size_t limit,
                                      Sys& sys = Sys::real());
Result<std::string> read_file_limited(const std::filesystem::path& path, size_t limit,
                                      Sys& sys = Sys::real());

}  // namespace livefs
