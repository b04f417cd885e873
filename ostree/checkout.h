// A checkout of one directory of a commit: what `apply --etc` reads the staged default
// configuration (usr/etc) from when the staged side is a commit with no deployment.
#pragma once

#include <filesystem>
#include <string>

#include "common/error.h"

namespace livefs::ostree {

// Checks `subpath` (absolute in the commit, e.g. "/usr/etc") of `commit` out of the
// repository at `repo` to `dest` (which must not exist), with the commit's owners, modes
// and xattrs, as copies (never hard links to the repository's objects).
Status checkout_subpath(const std::filesystem::path& repo, const std::string& commit,
                        const std::string& subpath, const std::filesystem::path& dest);

}  // namespace livefs::ostree
