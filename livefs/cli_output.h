// Shared output helpers of the livefs commands: one-line errors and JSON that survives
// names that are not UTF-8.
#pragma once

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.h"
#include "livefs/control.h"

namespace livefs::cli {

// "livefs: <context>: <strerror>" on stderr; returns the operational-error exit status.
inline int report(const Error& error) {
  std::fprintf(stderr, "livefs: %s\n", error.message().c_str());
  return 1;
}

// Paths are bytes; JSON strings are UTF-8. JSON output maps every string with to_wire()
// (common/wire_text.h): UTF-8 names print as they are, and any other byte B appears as the
// code point U+10FF00 + B, so the exact bytes can always be recovered (the text output
// prints the bytes as they are).
inline void print_json(const nlohmann::json& j) {
  std::puts(encode_wire(j).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

}  // namespace livefs::cli
