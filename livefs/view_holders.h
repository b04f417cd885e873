// The holder monitor's query for the daemon's view: the view's stale files (nodes the kernel
// still holds on the mount's device, booted files on theirs) as a host::HolderQuery. Nothing
// here touches the mount: its device comes from the mount table.
#pragma once

#include <string>
#include <vector>

#include "host/holder_monitor.h"
#include "host/mount_users.h"
#include "overlay/filesystem.h"

namespace livefs::cli {

// `fs` must outlive the monitor that runs the query.
inline host::HolderQueryFn view_holder_query(const overlay::Filesystem& fs) {
  return [&fs](const std::vector<std::string>& touched) -> Result<host::HolderQuery> {
    host::HolderQuery query;
    std::vector<overlay::StaleFile> stale = fs.stale_files(touched);
    if (stale.empty()) return query;
    auto mount = host::find_mount(fs.mountpoint());
    if (!mount) return std::unexpected(with_context(mount.error(), "holder scan"));
    query.files.reserve(stale.size());
    for (overlay::StaleFile& f : stale) {
      query.files.push_back(
          host::HeldFile{.dev = f.booted ? f.dev : mount->dev, .ino = f.ino, .path = f.path});
    }
    return query;
  };
}

}  // namespace livefs::cli
