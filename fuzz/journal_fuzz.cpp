// The generation journal as read at start-up: decode_record on each line, encode_record on
// what it accepts, and replay of the whole file.
//
// Each line's checksum word is replaced by the right one before the structural checks (the
// raw line is decoded too), so mutations reach the field parsing instead of all dying at
// "checksum mismatch".
#include <xxhash.h>

#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/text.h"
#include "fuzz_support.h"
#include "overlay/journal.h"

using livefs::overlay::JournalOp;
using livefs::overlay::JournalRecord;
using livefs::overlay::JournalState;

namespace {

bool same(const JournalRecord& a, const JournalRecord& b) {
  return a.seq == b.seq && a.op == b.op && a.generation == b.generation && a.layer == b.layer &&
         a.time_ns == b.time_ns && a.paths == b.paths;
}

// The line with its last word replaced by the XXH3-64 of what comes before it (the format's
// checksum; overlay/journal.cpp).
std::string with_checksum(std::string_view line) {
  size_t last = line.rfind(' ');
  std::string_view payload = line.substr(0, last == std::string_view::npos ? line.size() : last);
  char sum[17];
  std::snprintf(sum, sizeof sum, "%016" PRIx64, XXH3_64bits(payload.data(), payload.size()));
  return std::string(payload) + ' ' + sum;
}

void check_record(std::string_view line) {
  auto record = livefs::overlay::decode_record(line);
  if (!record) {
    FUZZ_CHECK(record.error().code == EBADMSG);
    return;
  }
  // A decoded record encodes to one line that decodes to the same record, and that encoding
  // is canonical (a second round trip gives the same bytes).
  std::string encoded = livefs::overlay::encode_record(*record);
  FUZZ_CHECK(encoded.find('\n') == std::string::npos);
  auto again = livefs::overlay::decode_record(encoded);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(same(*record, *again));
  FUZZ_CHECK(livefs::overlay::encode_record(*again) == encoded);
  FUZZ_CHECK(livefs::overlay::parse_op(livefs::overlay::op_name(record->op)) == record->op);
}

void check_state(const JournalState& state, size_t lines) {
  FUZZ_CHECK(!state.stack.empty());
  FUZZ_CHECK(state.stack.front().number == 0 && state.stack.front().layer.is_zero());
  FUZZ_CHECK(state.history.size() <= lines);
  if (state.error) {
    // An untrusted journal leaves only generation 0 and refuses commits.
    FUZZ_CHECK(state.stack.size() == 1);
    FUZZ_CHECK(state.error->code == EBADMSG);
    return;
  }
  FUZZ_CHECK(state.warnings.size() <= 1);
  // Generation numbers are never reused: the live stack is increasing, below next_generation.
  for (size_t i = 1; i < state.stack.size(); ++i) {
    FUZZ_CHECK(state.stack[i].number > state.stack[i - 1].number);
    FUZZ_CHECK(!state.stack[i].layer.is_zero());
  }
  FUZZ_CHECK(state.stack.back().number < state.next_generation);
  if (!state.history.empty()) FUZZ_CHECK(state.history.back().seq + 1 == state.next_seq);

  // Replaying what the history re-encodes gives the same state.
  std::string rewritten;
  for (const JournalRecord& r : state.history) rewritten += encode_record(r) + '\n';
  JournalState again = livefs::overlay::replay(rewritten);
  FUZZ_CHECK(!again.error && again.warnings.empty());
  FUZZ_CHECK(again.stack.size() == state.stack.size());
  for (size_t i = 0; i < state.stack.size(); ++i) {
    FUZZ_CHECK(again.stack[i].number == state.stack[i].number);
    FUZZ_CHECK(again.stack[i].layer == state.stack[i].layer);
    FUZZ_CHECK(again.stack[i].paths == state.stack[i].paths);
  }
  FUZZ_CHECK(again.next_seq == state.next_seq && again.next_generation == state.next_generation);
  FUZZ_CHECK(again.hotfix_layer == state.hotfix_layer);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // The file as it is (checksums mostly wrong: the corrupt-record paths).
  livefs::overlay::replay(input);

  // The same lines with valid checksums, each decoded alone and the whole replayed.
  std::string fixed;
  size_t lines = 0;
  std::string_view rest = input, line;
  while (livefs::next_line(rest, line)) {
    check_record(line);
    std::string good = with_checksum(line);
    check_record(good);
    fixed += good;
    ++lines;
    // A torn last line (no '\n') stays torn.
    if (!rest.empty() || input.ends_with('\n')) fixed += '\n';
  }
  check_state(livefs::overlay::replay(fixed), lines);
  return 0;
}
