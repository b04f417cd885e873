// Generations and their journal: the durable, append-only record of every switch the
// daemon made (apply, rollback, reset), replayed at start-up to rebuild the generation
// stack. A record is written and fsync'd before the switch it describes takes effect. A
// journal belongs to one booted tree: its generations are layers on top of that tree only.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/sys.h"
#include "common/unique_fd.h"
#include "store/object_id.h"

namespace livefs::overlay {

// hotfix: the developer's hotfix layer (on top of the live generation) changed; it does not
// move the generation stack. booted: names the booted tree the journal belongs to (the
// first record of a new journal; appended to a journal written before identities were
// recorded when it is adopted); it does not move the stack either.
enum class JournalOp : uint8_t { apply = 1, rollback = 2, reset = 3, hotfix = 4, booted = 5 };
const char* op_name(JournalOp op);
std::optional<JournalOp> parse_op(std::string_view name);

// One line of the journal file:
//   "<seq> <op> <generation> <layer-hex> <unix-ns> <npaths> <path>... <xxh3-64-hex>\n"
// Paths are percent-escaped (bytes <= ' ', '%', 0x7f and above), so a record is one line
// of printable words; the last word is the XXH3-64 of everything before it. A booted
// record carries its identity as its one path word.
struct JournalRecord {
  uint64_t seq = 0;
  JournalOp op = JournalOp::apply;
  // apply: the generation created; rollback: the generation returned to (any generation
  // below the live one, every generation above it is popped); reset: 0;
  // hotfix, booted: the live generation.
  uint64_t generation = 0;
  // The layer Tree's id (saved to the store as a tree root); zero for generation 0.
  // hotfix: the whole hotfix layer after the change (zero: no hotfix layer).
  store::ObjectId layer;
  int64_t time_ns = 0;             // wall clock, nanoseconds since the epoch
  std::vector<std::string> paths;  // apply: the changes it selected
  std::string booted_identity;     // booted only: opaque, non-empty
};

std::string encode_record(const JournalRecord& record);
// Parses one line (without its '\n'); EBADMSG with the reason when malformed.
Result<JournalRecord> decode_record(std::string_view line);

// A generation on the stack: what it applied on top of the one below it.
struct Generation {
  uint64_t number = 0;
  store::ObjectId layer;  // zero for generation 0 (the empty layer)
  int64_t time_ns = 0;
  std::vector<std::string> paths;
};

// What replaying the journal gave.
struct JournalState {
  std::vector<Generation> stack;  // stack[0] is generation 0; back() is live
  // The last kHistoryKept records (what `status` shows comes from here): a hotfix loop
  // writes one per edit, and keeping them all made the daemon grow without bound.
  static constexpr size_t kHistoryKept = 1000;
  std::deque<JournalRecord> history;
  uint64_t history_records = 0;  // every record replayed or committed
  uint64_t next_seq = 1;
  uint64_t next_generation = 1;       // generation numbers are never reused
  store::ObjectId hotfix_layer;       // zero: none
  int64_t hotfix_time_ns = 0;         // of the last hotfix record
  std::vector<std::string> warnings;  // e.g. a torn last record that was ignored
  // The booted tree the journal belongs to (from its booted records); empty for a journal
  // written before identities were recorded.
  std::string booted_identity;
  // Set by Journal::open, for the log and `status`, when it set the journal aside for
  // another booted tree or adopted one that named none; empty otherwise.
  std::string note;
  std::filesystem::path set_aside;  // where the previous journal was kept, if it was
  // Set when the journal cannot be trusted (a corrupt record before the last one, or a
  // record that does not fit the stack). The stack is then generation 0 only, and the
  // journal refuses further commits: the operator has to look at it.
  std::optional<Error> error;
};

// Replays a journal's records into a generation stack: a pure function of the contents.
// A record that fails to decode is ignored with a warning when it is the last one (a torn
// append); anywhere else it makes the state an error, as does a second booted identity.
JournalState replay(std::string_view contents);

// What Journal::open does with a journal that names no booted tree (written by a livefs
// from before identities were recorded). The caller decides from what else it knows (e.g.
// whether the booted tree recorded in its config is still the booted one).
enum class UnidentifiedJournal {
  adopt,      // it belongs to this booted tree: stamp it with the identity, keep its stack
  set_aside,  // it may be another tree's: keep it aside, start at generation 0
};

class Journal {
 public:
  // Opens the journal at `path` for the booted tree `booted_identity` (opaque, e.g.
  // "ostree:<commit>:usr" or "dir:<manifest digest>"), creating it (durably) if missing,
  // and replays it. A journal of another booted tree is renamed aside, in the same
  // directory, to "<name>.<UTC time>.<its identity, shortened>", and a new journal for
  // this tree starts at generation 0; state().note says so. A corrupt journal of another
  // tree is set aside as well; a corrupt one of this tree stays, for the operator.
  // `earlier`, when given, is asked about a journal naming another identity: true when that
  // is this booted tree's identity as an earlier livefs computed it (the journal is then
  // kept, under the identity it names).
  static Result<Journal> open(const std::filesystem::path& path, std::string_view booted_identity,
                              UnidentifiedJournal unidentified = UnidentifiedJournal::adopt,
                              Sys& sys = Sys::real(),
                              const std::function<bool(std::string_view)>& earlier = {});
  // Without an identity: the journal is not tied to a booted tree (nothing is checked or
  // stamped). For tools that only read a journal, and for a caller that has none yet.
  static Result<Journal> open(const std::filesystem::path& path) { return open(path, {}); }

  const JournalState& state() const { return state_; }
  const Generation& live() const { return state_.stack.back(); }

  // Appends a record for `op` and fsyncs it; only then is the stack updated. The caller
  // switches the view after this returns. apply: pushes a new generation with `layer`;
  // rollback: pops one (EINVAL at generation 0); reset: back to generation 0; hotfix: sets
  // the hotfix layer (`layer`, zero to drop it) on the live generation. A failed append
  // (short write, ENOSPC, EIO from fdatasync) is cut off the file again and the state is
  // unchanged; if even that fails, every later commit is refused (the file would have
  // garbage before the next record).
  Result<JournalRecord> commit(JournalOp op, const store::ObjectId& layer = {},
                               std::vector<std::string> paths = {});

  // The record that commit() would append (for a dry run / validation), without writing.
  // Fails as commit() would for a corrupt or broken journal.
  Result<JournalRecord> prepare(JournalOp op, const store::ObjectId& layer,
                                std::vector<std::string> paths) const;

  // `rollback --to target`: one rollback record that pops every generation above `target`
  // (EINVAL naming the stack when `target` is not a generation below the live one).
  Result<JournalRecord> prepare_rollback_to(uint64_t target) const;
  Result<JournalRecord> commit_rollback_to(uint64_t target);
  // Appends a record made by prepare*() (nothing committed since) and applies it.
  Result<JournalRecord> commit_prepared(JournalRecord r);

 private:
  // Writes and syncs `line` at the end, or leaves the file as it was.
  Status append(std::string_view line);
  // Appends the booted record that ties the journal to `identity`.
  Status stamp(const std::string& identity);

  std::filesystem::path path_;
  Sys* sys_ = nullptr;
  UniqueFd fd_;
  JournalState state_;
  uint64_t size_ = 0;  // the end of the last good record: where a failed append is cut
  // A failed append that could not be cut off again: the journal takes no more records.
  std::optional<Error> broken_;
};

// Applies one record to a stack: the single definition of what each op means.
Status apply_record(JournalState& state, const JournalRecord& record);

}  // namespace livefs::overlay
