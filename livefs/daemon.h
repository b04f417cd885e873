// The livefs daemon: validates and locks the state directory, imports the staged tree,
// replays the journal, mounts the merged view, then answers the control socket (apply,
// rollback, reset, status, diff, umount) until it is told to stop or gets SIGTERM/SIGINT.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace livefs::cli {

struct MountArgs {
  // Directories: the booted tree (served) and the staged tree.
  std::filesystem::path booted;
  std::filesystem::path staged;
  // Or an OSTree sysroot: the booted deployment (the running one, else `booted_spec`: an
  // index or a checksum prefix) and the pending one; `subdir` of each is served.
  std::optional<std::filesystem::path> sysroot;
  std::string os;
  std::optional<std::string> booted_spec;
  std::string subdir = "usr";
  std::filesystem::path state;
  std::optional<std::filesystem::path> store;  // default STATEDIR/store
  std::filesystem::path mountpoint;
  // A system tree is for every user (the kernel checks modes: default_permissions);
  // --no-allow-other restricts the view to root.
  bool allow_other = true;
  bool foreground = false;
  bool debug = false;
  // FUSE passthrough where the kernel and libfuse have it (overlay::MountOptions).
  bool passthrough = true;
};

// Runs `livefs mount`: returns the process exit status. Without `foreground`, the calling
// process returns (0) once the daemon, a detached child, has the mount ready, or (1) with
// the child's error on stderr.
int run_mount(const MountArgs& args);

}  // namespace livefs::cli
