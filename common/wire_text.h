// Paths are bytes, JSON strings are UTF-8: a lossless, total mapping between the two, used
// wherever a path (or any text that came from the system: a process's command name, an
// error message naming a path) crosses into JSON.
//
// to_wire(bytes): valid UTF-8 passes unchanged, except the code points U+10FF00..U+10FFFF;
// every byte that is not part of valid UTF-8, and each byte of one of those code points,
// becomes the code point U+10FF00 + byte. from_wire() undoes it. The two are inverse on
// every byte string (to_wire is injective and its output is always valid UTF-8), so a file
// named "caf\xe9" survives the control protocol and `--json` exactly, and an ordinary name
// looks the same on the wire as on disk. U+10FF00..U+10FFFF are private-use code points
// that no real name uses; they are escaped too so that the mapping stays one-to-one.
#pragma once

#include <string>
#include <string_view>

namespace livefs {

// True when `s` is valid UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_utf8(std::string_view s);

std::string to_wire(std::string_view bytes);
// Any valid UTF-8 string (bytes that are not UTF-8 pass through unchanged).
std::string from_wire(std::string_view text);

}  // namespace livefs
