// What the daemon needs around the /etc merge (livefs/etc_merge.h): where the three trees
// are for the sides being served, where the undo of each generation is kept, and the
// merge as the protocol reports it.
#pragma once

#include <filesystem>
#include <string>

#include "common/error.h"
#include "livefs/etc_merge.h"
#include "livefs/protocol.h"
#include "livefs/sources.h"

namespace livefs::cli {

struct EtcTrees {
  std::filesystem::path booted_default;  // usr/etc of the booted side's system root
  std::filesystem::path staged_default;  // usr/etc of the staged side's checkout
  std::filesystem::path live;            // etc of the booted side's system root
};

// The three trees of the merge; a clear refusal when a side has none (a plain root without
// usr/etc, nothing staged, a view of the whole tree). A staged commit with no deployment
// has its usr/etc checked out of `repo` (the sysroot's repository) once, to
// STATE/etc-staged/CHECKSUM (the checkout of an earlier commit is dropped).
Result<EtcTrees> etc_trees(const Origin& booted, const Origin& staged,
                           const std::filesystem::path& state, const std::filesystem::path& repo);

// Where the undo of generation N's merge is kept: STATE/etc-undo/N (0700, like the state
// directory); created when missing.
Result<std::filesystem::path> etc_undo_root(const std::filesystem::path& state);

// The plan as the protocol reports it (paths "etc/...").
protocol::EtcMerge etc_merge_reply(const etc::Plan& plan);

}  // namespace livefs::cli
