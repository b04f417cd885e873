// The /etc three-way merge, as OSTree does it at deploy, made live and undoable: between the
// booted default configuration (usr/etc of the booted deployment), the staged default
// (usr/etc of the staged one) and the live /etc.
//
// A default that changed takes effect where the administrator never changed the file (live
// equals the booted default in type, content or link target, mode, owner and xattrs);
// where the administrator did change it, the live file is kept and reported as a conflict.
// New defaults are added where nothing is; removed ones go where they were never changed.
//
// Undo: before /etc is touched, every live entry the merge replaces or removes is copied
// (with its mode, owner, xattrs and times) into an undo directory, synced, and a manifest
// naming every step is written atomically; only then is /etc changed, one entry at a time,
// each file atomically (a temporary in the same directory, fsync, rename, fsync of the
// directory). undo() restores every backup and removes what the merge added, in reverse
// order; it is idempotent, so a merge or an undo cut short by a crash is finished by running
// undo() again: a merge that was not committed is undone whole, never left half-applied.
//
// Neither follows a symlink out of /etc: an entry is read or written through its parent
// directory, opened one component at a time without following symlinks, so a directory of
// /etc replaced by a symlink (before the plan, between plan and merge, or after the merge)
// is a conflict or an error, never a way to write elsewhere.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace livefs::etc {

enum class ActionKind : uint8_t { update, add, remove, conflict };
const char* action_name(ActionKind kind);

struct Action {
  ActionKind kind = ActionKind::update;
  std::string path;    // relative to /etc (bytes)
  std::string reason;  // conflict: why the live entry is kept
};

// What merge() will do, in the order it does it (a directory before what it holds, a removed
// directory after its entries). Conflicts are listed where they were found and skipped.
struct Plan {
  std::vector<Action> actions;
  size_t count(ActionKind kind) const;
  // Whether anything but conflicts is planned.
  bool changes() const;
};

// Compares the three trees; reads only. The defaults and `live` must be directories.
Result<Plan> plan(const std::filesystem::path& booted_default,
                  const std::filesystem::path& staged_default, const std::filesystem::path& live);

// Carries out the plan's update/add/remove actions on `live`, from `staged_default`, keeping
// the undo in `undo_dir` (created here, 0700; must not exist). `tag` is stored with it (the
// booted tree it belongs to). A failure part-way undoes what was done and removes
// `undo_dir`; the error is returned.
Status merge(const Plan& plan, const std::filesystem::path& staged_default,
             const std::filesystem::path& live, const std::filesystem::path& undo_dir,
             const std::string& tag);

// Puts /etc back as it was before the merge that wrote `undo_dir`, then removes `undo_dir`.
// An undo directory without a manifest (a merge that crashed before touching /etc) is just
// removed. Restores what it can and returns the first failure (the undo directory is then
// kept, for the next try). A directory the merge added that is no longer empty (the
// administrator put something in it) is left in place with what it holds, and named in
// `kept` ("PATH (why)", PATH relative to /etc) when given; the undo still completes. So is
// an entry the administrator changed after the merge (it no longer matches what the merge
// installed, or something was made where the merge removed an entry): it is left as it is.
Status undo(const std::filesystem::path& undo_dir, std::vector<std::string>* kept = nullptr);

// The tag an undo directory was written with ("" without a manifest).
Result<std::string> undo_tag(const std::filesystem::path& undo_dir);

// Start-up: under `root` (the daemon's etc-undo directory) each undo directory is named by
// the generation whose merge it belongs to. One of a generation not in `live_generations`
// (a merge whose generation was never committed, or a rollback whose undo was cut short)
// is undone now; one of another booted tree (`tag` differs) is renamed aside, untouched.
// Returns the generations undone. One that fails does not stop the others: the error then
// names every failure (EIO), and the failed undo directories are kept for the next start.
Result<std::vector<uint64_t>> recover(const std::filesystem::path& root,
                                      const std::set<uint64_t>& live_generations,
                                      const std::string& tag);

// ---- the undo directory's manifest (exposed for its fuzz target)
//
// Text, one record per line: "livefs-etc-undo 1", "live HEX", "tag HEX", then
// "<update|add|remove> INDEX HEX" per step (INDEX names the backup b/INDEX) and
// "dirtime SEC.NSEC HEX" per directory whose time undo puts back, then "end". HEX is a path
// or tag as lowercase hex bytes, so any byte round-trips. A step may carry a fourth field,
// what the merge left there: for update and add the 32 lowercase hex digits of an XXH3-128
// over the entry's type, mode, owner, xattrs and content or link target; for remove "none".
// Undo leaves an entry that no longer matches it (a step without it is restored as before).
struct UndoStep {
  ActionKind kind = ActionKind::update;  // update, add or remove
  uint64_t index = 0;
  std::string path;       // relative to live: no empty, "." or ".." component, no NUL
  std::string installed;  // "" (not recorded), 32 hex digits (update, add) or "none" (remove)
  bool operator==(const UndoStep&) const = default;
};

struct UndoDirTime {
  int64_t sec = 0;
  int64_t nsec = 0;  // 0 to 999,999,999
  std::string path;  // relative to live as a step's, or "" for live itself
  bool operator==(const UndoDirTime&) const = default;
};

struct UndoManifest {
  std::string live;  // absolute, no NUL
  std::string tag;   // any bytes
  std::vector<UndoStep> steps;
  std::vector<UndoDirTime> dir_times;
  bool operator==(const UndoManifest&) const = default;
};

std::string encode_undo_manifest(const UndoManifest& manifest);
// EBADMSG (naming `where` and the line) for anything encode_undo_manifest would not write,
// in particular a path that could lead out of the live directory.
Result<UndoManifest> parse_undo_manifest(std::string_view text,
                                         std::string_view where = "undo manifest");

}  // namespace livefs::etc
