// Generations and their journal: the durable, append-only record of every switch the
// daemon made (apply, rollback, reset), replayed at start-up to rebuild the generation
// stack. A record is written and fsync'd before the switch it describes takes effect.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "store/object_id.h"

namespace livefs::overlay {

// hotfix: the developer's hotfix layer (on top of the live generation) changed; it does not
// move the generation stack.
enum class JournalOp : uint8_t { apply = 1, rollback = 2, reset = 3, hotfix = 4 };
const char* op_name(JournalOp op);
std::optional<JournalOp> parse_op(std::string_view name);

// One line of the journal file:
//   "<seq> <op> <generation> <layer-hex> <unix-ns> <npaths> <path>... <xxh3-64-hex>\n"
// Paths are percent-escaped (bytes <= ' ', '%', 0x7f and above), so a record is one line
// of printable words; the last word is the XXH3-64 of everything before it.
struct JournalRecord {
  uint64_t seq = 0;
  JournalOp op = JournalOp::apply;
  // apply: the generation created; rollback: the generation returned to; reset: 0;
  // hotfix: the live generation it sits on.
  uint64_t generation = 0;
  // The layer Tree's id (saved to the store as a tree root); zero for generation 0.
  // hotfix: the whole hotfix layer after the change (zero: no hotfix layer).
  store::ObjectId layer;
  int64_t time_ns = 0;             // wall clock, nanoseconds since the epoch
  std::vector<std::string> paths;  // apply: the changes it selected
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
  std::vector<JournalRecord> history;
  uint64_t next_seq = 1;
  uint64_t next_generation = 1;       // generation numbers are never reused
  store::ObjectId hotfix_layer;       // zero: none
  int64_t hotfix_time_ns = 0;         // of the last hotfix record
  std::vector<std::string> warnings;  // e.g. a torn last record that was ignored
  // Set when the journal cannot be trusted (a corrupt record before the last one, or a
  // record that does not fit the stack). The stack is then generation 0 only, and the
  // journal refuses further commits: the operator has to look at it.
  std::optional<Error> error;
};

// Replays a journal's records into a generation stack. A record that fails to decode is
// ignored with a warning when it is the last one (a torn append); anywhere else it makes
// the state an error.
JournalState replay(std::string_view contents);

class Journal {
 public:
  // Opens (creating if missing; fsyncing the directory when created) and replays.
  static Result<Journal> open(const std::filesystem::path& path);

  const JournalState& state() const { return state_; }
  const Generation& live() const { return state_.stack.back(); }

  // Appends a record for `op` and fsyncs it; only then is the stack updated. The caller
  // switches the view after this returns. apply: pushes a new generation with `layer`;
  // rollback: pops one (EINVAL at generation 0); reset: back to generation 0; hotfix: sets
  // the hotfix layer (`layer`, zero to drop it) on the live generation.
  Result<JournalRecord> commit(JournalOp op, const store::ObjectId& layer = {},
                               std::vector<std::string> paths = {});

  // The record that commit() would append (for a dry run / validation), without writing.
  Result<JournalRecord> prepare(JournalOp op, const store::ObjectId& layer,
                                std::vector<std::string> paths) const;

 private:
  std::filesystem::path path_;
  UniqueFd fd_;
  JournalState state_;
};

// Applies one record to a stack: the single definition of what each op means.
Status apply_record(JournalState& state, const JournalRecord& record);

}  // namespace livefs::overlay
