// The control protocol as the daemon reads it: one line from a peer, parsed and decoded
// (parse_wire_line), typed (parse_request), and the byte <-> UTF-8 mapping every string
// crosses (to_wire/from_wire); and as the CLI reads the daemon's answer (parse_reply).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/wire_text.h"
#include "fuzz_support.h"
#include "livefs/control.h"
#include "livefs/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  livefs::fuzz::quiet_logs();
  std::string_view input(reinterpret_cast<const char*>(data), size);

  // Any bytes: the wire form is UTF-8 and maps back exactly.
  std::string wire = livefs::to_wire(input);
  FUZZ_CHECK(livefs::is_utf8(wire));
  FUZZ_CHECK(livefs::from_wire(wire) == input);

  // A request line: parsed or refused, never thrown; what parses survives a round trip
  // through the daemon's answer path (wire_line never throws, and it parses back the same).
  auto request = livefs::cli::parse_wire_line(input);
  if (request) {
    std::string line = livefs::cli::wire_line(*request);
    FUZZ_CHECK(line.find('\n') == std::string::npos);
    auto again = livefs::cli::parse_wire_line(line);
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(*again == *request);

    // Typed: a request or an Error, never an exception; a request prints as JSON that parses
    // back to the same request.
    auto typed = livefs::protocol::parse_request(*request);
    if (typed) {
      auto back = livefs::protocol::parse_request(livefs::protocol::to_json(*typed));
      FUZZ_CHECK(back.has_value());
      FUZZ_CHECK(*back == *typed);
    } else {
      FUZZ_CHECK(typed.error().code == EINVAL || typed.error().code == ENOMEM);
    }
    // The same line as an answer of the daemon: parsed or an Error.
    auto status = livefs::protocol::parse_reply<livefs::protocol::StatusReply>(*request);
    if (status) {
      auto back = livefs::protocol::from_json<livefs::protocol::StatusReply>(
          livefs::protocol::to_json(*status));
      FUZZ_CHECK(back.has_value() && *back == *status);
    }
    (void)livefs::protocol::parse_reply<livefs::protocol::ApplyReply>(*request);
    (void)livefs::protocol::parse_reply<livefs::protocol::DiffReply>(*request);
    auto plan = livefs::protocol::parse_reply<livefs::protocol::RestartPlanReply>(*request);
    if (plan) {
      auto back = livefs::protocol::from_json<livefs::protocol::RestartPlanReply>(
          livefs::protocol::to_json(*plan));
      FUZZ_CHECK(back.has_value() && *back == *plan);
    }
  }
  return 0;
}
