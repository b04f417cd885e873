// Which processes still use a mount, found from /proc without touching the mount itself: the
// daemon asks about the view it serves (a stat through it could wait on the daemon), and a
// detached mount has no path to look at any more.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace livefs::host {

// One line of /proc/PID/mountinfo.
struct MountInfo {
  int id = 0;                 // the mount id (as in /proc/PID/fdinfo/N "mnt_id:")
  int parent_id = 0;          // the mount it sits on
  dev_t dev = 0;              // st_dev of the files on it (as in /proc/PID/maps)
  std::string mount_point;    // unescaped: the bytes of the path
  std::string options;        // per-mount options: "ro,nosuid,relatime", ...
  std::string fstype;         // "ext4", "fuse.livefs", ...
  std::string super_options;  // the file system's: "user_id=0,allow_other", ...
};

// The lines of a mountinfo text that parse; others are skipped.
std::vector<MountInfo> parse_mountinfo(std::string_view text);

// The mount on top at `mount_point` (absolute and as the kernel shows it: no symlinks, no
// "." or "..") in `mountinfo`: of the mounts at that path, the one no other mount there sits
// on. Reads the table only, never the path. ENOENT when nothing is mounted there.
Result<MountInfo> find_mount(const std::filesystem::path& mount_point,
                             const std::filesystem::path& mountinfo = "/proc/self/mountinfo");

// Processes that use the mount `mount_id` (files of device `dev`): a descriptor on it
// (/proc/PID/fdinfo/N "mnt_id:"), a mapping of one of its files (the device column of
// /proc/PID/maps, which also covers an executable running from it), or a working or root
// directory in it. Nothing is stat'ed or opened through the mount: a process's cwd and root
// are opened with O_PATH through /proc (no request reaches the file system) and their mount
// read from this process's fdinfo. Works on a detached mount too.
//
// Sorted by pid, each once. This process is included when it uses the mount. Processes that
// exit or deny access while being read are skipped; the error case is an unreadable `proc`.
// Per-thread working directories (threads that unshared CLONE_FS) are not looked at.
Result<std::vector<pid_t>> processes_using_mount(int mount_id, dev_t dev,
                                                 const std::filesystem::path& proc = "/proc");

}  // namespace livefs::host
