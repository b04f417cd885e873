// The generations of a view: the journal, the applied layer of the live generation and the
// hotfix layer above it, and the changes between them (apply, rollback, reset, set-hotfix).
// Each change is durable before it is visible: its layer is saved and rooted in the store,
// its journal record is synced, and only then is the switch called, which publishes the
// served layer (the two layers folded into one). The switch is a callback: the daemon's is
// Filesystem::switch_to; tests pass their own, so all of this runs without FUSE.
//
// Thread safety: every member function may be called from any thread. Changes run one at
// a time, in the journal's order, under one mutex that is also held across the switch (a
// switch of a later generation must never overtake an earlier one). Readers take the same
// mutex briefly; a copy of a Tree is a reference count.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "overlay/filesystem.h"
#include "overlay/journal.h"
#include "store/object_store.h"
#include "store/tree.h"

namespace livefs::overlay {

class Generations {
 public:
  // Publishes `served` as generation `generation`; Filesystem::switch_to in the daemon.
  using Switch = std::function<Result<SwitchStats>(store::Tree served, uint64_t generation)>;

  struct Options {
    std::filesystem::path journal;
    std::string booted_identity;
    UnidentifiedJournal unidentified = UnidentifiedJournal::set_aside;
    // Journal::open's `earlier`: whether another identity is this booted tree's as an
    // earlier livefs computed it.
    std::function<bool(std::string_view)> earlier_identity;
  };

  // Opens the journal and loads the live generation's layers. A journal that cannot be
  // trusted, or a live layer that cannot be loaded, is not a failure: generation 0 is
  // served, refusal() says why, and every change is refused (the booted tree is always
  // safe to serve). Fails only when the journal cannot be opened at all.
  // `empty_layer` is generation 0's layer (the booted root only).
  static Result<std::unique_ptr<Generations>> open(std::shared_ptr<store::ObjectStore> store,
                                                   store::Tree empty_layer, const Options& options);

  // Set once, before the first change (the daemon's view exists only after open()).
  void set_switch(Switch fn);
  // Called after each change that went live, with the paths it changed (what processes
  // started earlier may still hold old versions of): the daemon's holder scan. Runs under
  // the generations' mutex, so it must only hand the paths over.
  using ChangedPaths = std::function<void(const std::vector<std::string>& paths)>;
  void set_on_changed(ChangedPaths fn);

  // Switches to what the live generation serves (after open(), when the view was mounted
  // with another layer: generation 0 while the booted manifest was still being read).
  Result<SwitchStats> publish_live();
  // What the live generation serves: the applied layer with the hotfix layer folded in.
  Result<store::Tree> served_layer() const;
  uint64_t live_generation() const;
  store::Tree applied_layer() const;
  std::optional<store::Tree> hotfix_layer() const;
  // Why changes are refused (a corrupt journal, a live layer that could not be loaded);
  // nullopt when they are not.
  std::optional<Error> refusal() const;

  struct Changed {
    uint64_t generation = 0;
    SwitchStats stats;
    // go_back: the generations it popped, the highest first (what the caller undoes
    // outside the view: the /etc merges tied to them).
    std::vector<uint64_t> popped;
  };

  // Runs once the new generation's number is known and its layer is durable, before its
  // journal record is written: a failure commits nothing (and it must leave nothing done).
  // The daemon's /etc merge, which keeps its undo under that number.
  using BeforeCommit = std::function<Status(uint64_t generation)>;
  // A new generation with `layer` (the whole applied layer) that changed `paths`.
  Result<Changed> apply(const store::Tree& layer, const std::vector<std::string>& paths,
                        const BeforeCommit& before_commit = {});
  // rollback (one generation down, or to `to`: any generation below the live one, in one
  // record and one switch) or reset (to generation 0). The hotfix layer stays on top.
  Result<Changed> go_back(JournalOp op, std::optional<uint64_t> to = std::nullopt);
  // The generation numbers on the stack, generation 0 first.
  std::vector<uint64_t> stack_numbers() const;
  // Replaces the hotfix layer (nullopt: none). `id` is the layer's id, already saved and
  // rooted by the caller (zero for none); `changed` are the paths it touched. The layer it
  // replaces is pinned for this process's life (a process may still read an old file of
  // it) and is no longer a durable root.
  Result<Changed> set_hotfix(std::optional<store::Tree> hotfix, const store::ObjectId& id,
                             const std::vector<std::string>& changed);

  // For `status`: the journal as it stands.
  struct Report {
    uint64_t live_generation = 0;
    std::vector<Generation> stack;
    std::vector<JournalRecord> history;  // the last `history_limit` records
    uint64_t history_records = 0;
    std::vector<std::string> warnings;
    std::string note;
    std::filesystem::path set_aside;
    std::optional<std::string> journal_error;
    std::optional<SwitchStats> last_switch;
    size_t hotfix_entries = 0;
  };
  Report report(size_t history_limit) const;

 private:
  Generations(std::shared_ptr<store::ObjectStore> store, store::Tree empty_layer, Journal journal);
  Result<store::Tree> served_locked() const;
  std::optional<Error> refusal_locked() const;
  // Switches to `applied` + `hotfix` as `generation`; on failure nothing changes.
  Result<SwitchStats> publish_locked(store::Tree applied, uint64_t generation,
                                     std::optional<store::Tree> hotfix);

  const std::shared_ptr<store::ObjectStore> store_;
  const store::Tree empty_layer_;
  mutable std::mutex mutex_;  // guards everything below
  Journal journal_;
  Switch switch_;
  ChangedPaths on_changed_;
  std::optional<Error> layer_error_;  // the live generation's layer could not be loaded
  store::Tree applied_;
  std::optional<store::Tree> hotfix_;
  uint64_t live_ = 0;
  std::optional<SwitchStats> last_switch_;
};

}  // namespace livefs::overlay
