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
  std::string path;     // the replaced file: HeldFile::path
  std::string how;      // "exe", "mapped" or "fd N"
  std::string unit;     // systemd unit from /proc/PID/cgroup, "" when none

  bool operator==(const Holder&) const = default;
};

// A file looked for by its identity as the kernel shows it in /proc, so that no path is
// stat'ed or opened: the device and inode columns of /proc/PID/maps, and the "mnt_id:" (the
// mount's device, from mountinfo) and "ino:" lines of /proc/PID/fdinfo/N. `dev` is the
// device of the file's superblock, as mountinfo and maps show it (st_dev of a stat, except on
// file systems that report per-subvolume devices, such as btrfs).
struct HeldFile {
  dev_t dev = 0;
  ino_t ino = 0;
  std::string path;  // what Holder::path says; several files may share one path
};

struct HolderQuery {
  std::vector<HeldFile> files;
  // One more process left out besides this one (the daemon, when a child of it scans: its
  // descriptors of the booted tree are the files looked for).
  pid_t also_skip = 0;
};

// Processes other than this one that execute, map or hold open one of `query.files`. One
// Holder per (pid, path, how): the many mappings of one file collapse into one "mapped", and a
// process executing an old file is reported as "exe" only (its mapping of the same file says
// nothing more). Sorted by pid, then exe / mapped / fd N (ascending), then the order in which
// paths first appear in `query.files`.
//
// Never stats, opens or reads a path of the files looked for: a process's exe is opened with
// O_PATH through /proc (no request reaches its file system) and identified from this process's
// fdinfo; descriptors by their fdinfo, after their link says they name a path (sockets, pipes
// and anonymous inodes are skipped unread). So the daemon can ask about the view it serves
// from its own process. A mount id that this process's mountinfo does not list (another mount
// namespace) is looked up in the holding process's mountinfo.
//
// Two paths of one file (a hard link) are one file here: a process using the other path is
// reported too. Processes that vanish or deny access while being read are skipped silently; the
// error case is an unreadable `proc`.
Result<std::vector<Holder>> find_holders(const HolderQuery& query,
                                         const std::filesystem::path& proc = "/proc");

// The "mnt_id:" and "ino:" of the text of /proc/PID/fdinfo/N (-1 and 0 when missing).
struct FdInfo {
  int mnt_id = -1;
  ino_t ino = 0;
};
FdInfo parse_fdinfo(std::string_view text);

// The device and inode columns of one /proc/PID/maps line ("start-end perms offset MAJ:MIN
// INODE [PATH]"); false for a malformed line. An anonymous mapping has inode 0.
bool parse_maps_line(std::string_view line, dev_t* dev, ino_t* ino);

// The systemd unit named by the contents of /proc/PID/cgroup: the deepest unit-like
// component (".service", ".scope", ".socket", ".mount", ...; not ".slice", which groups units)
// of the cgroup v2 line "0::PATH", else of a cgroup v1 line (name=systemd first).
//   "0::/system.slice/ssh.service"                                    → "ssh.service"
//   "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service" → "x.service"
//   "0::/system.slice/foo.service/payload" (a delegated subtree)      → "foo.service"
//   "0::/" or no unit-like component                                  → ""
std::string unit_from_cgroup(std::string_view cgroup_file_contents);

// The cgroup path of /proc/PID/cgroup's contents that names the process's systemd unit: the
// unified hierarchy's ("0::PATH") when it names a unit, else name=systemd's (cgroup v1 and
// the hybrid layout), else the first that does; "" when none does. unit_from_cgroup takes
// its unit from this path.
std::string systemd_cgroup_path(std::string_view cgroup_file_contents);

// Whether a cgroup path component names a systemd unit (".service", ".scope", ...; not
// ".slice", which groups units).
bool is_unit_name(std::string_view name);

}  // namespace livefs::host
