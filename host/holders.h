// Which running processes still hold an old version of files the view replaced: they execute
// it, map it or keep it open, so the operator learns what to restart after `livefs apply`.
// Reads /proc only; the unit a process belongs to comes from its cgroup.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace livefs::host {

struct Holder {
  pid_t pid = 0;
  std::string command;  // /proc/PID/comm, trimmed
  std::string path;     // the replaced file, exactly as given in `paths`
  std::string how;      // "exe", "mapped" or "fd N"
  std::string unit;     // systemd unit from /proc/PID/cgroup, "" when none

  bool operator==(const Holder&) const = default;
};

// Processes other than this one that execute, map or hold open a file that is (or was) at
// root/P for P in `paths` but is not what root/P names now: its (st_dev, st_ino) differ, or
// root/P no longer exists. `root` is the mount point; paths are relative to it.
//
// One Holder per (pid, path, how): the many mappings of one file collapse into one "mapped",
// and a process executing an old file is reported as "exe" only (its mapping of the same
// file says nothing more). Sorted by pid, then exe / mapped / fd N (ascending), then the
// order of `paths`.
//
// Processes that vanish or deny access while being read are skipped silently; the error
// cases are an unreadable `proc` and a root/P that cannot be examined for a reason other
// than not existing.
//
// Paths are matched as the kernel shows them (resolved, in this process's mount namespace and
// root), so a process in another mount namespace or chroot is not seen through this root.
// `also_skip` is one more process left out (the daemon, when a child of it scans: its
// descriptors of the booted tree show the same paths as the view).
Result<std::vector<Holder>> find_stale_holders(const std::filesystem::path& root,
                                               const std::vector<std::string>& paths,
                                               const std::filesystem::path& proc = "/proc",
                                               pid_t also_skip = 0);

// The systemd unit named by the contents of /proc/PID/cgroup: the deepest unit-like
// component (".service", ".scope", ".socket", ".mount", ...; not ".slice", which groups units)
// of the cgroup v2 line "0::PATH", else of a cgroup v1 line (name=systemd first).
//   "0::/system.slice/ssh.service"                                    → "ssh.service"
//   "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service" → "x.service"
//   "0::/system.slice/foo.service/payload" (a delegated subtree)      → "foo.service"
//   "0::/" or no unit-like component                                  → ""
std::string unit_from_cgroup(std::string_view cgroup_file_contents);

}  // namespace livefs::host
