// The byte <-> UTF-8 mapping of wire_text.h.
#include "common/wire_text.h"

#include <cstdint>

namespace livefs {
namespace {

constexpr uint32_t kEscapeBase = 0x10FF00;  // U+10FF00 + byte

// Length of the valid UTF-8 sequence at the start of `s` and its code point; 0 when the
// first byte does not start one.
size_t utf8_sequence(std::string_view s, uint32_t& cp) {
  auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  auto cont = [&](size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  unsigned char c = b(0);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    if (!cont(1)) return 0;
    cp = (uint32_t{c} & 0x1F) << 6 | (b(1) & 0x3F);
    return 2;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    cp = (uint32_t{c} & 0x0F) << 12 | (uint32_t{b(1)} & 0x3F) << 6 | (b(2) & 0x3F);
    if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;  // overlong, surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    cp = (uint32_t{c} & 0x07) << 18 | (uint32_t{b(1)} & 0x3F) << 12 | (uint32_t{b(2)} & 0x3F) << 6 |
         (b(3) & 0x3F);
    if (cp < 0x10000 || cp > 0x10FFFF) return 0;
    return 4;
  }
  return 0;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

bool is_utf8(std::string_view s) {
  while (!s.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(s, cp);
    if (n == 0) return false;
    s.remove_prefix(n);
  }
  return true;
}

std::string to_wire(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  while (!bytes.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(bytes, cp);
    if (n != 0 && cp < kEscapeBase) {
      out.append(bytes.substr(0, n));
      bytes.remove_prefix(n);
      continue;
    }
    // Not UTF-8 here, or one of the escape code points itself: escape byte by byte.
    size_t count = n == 0 ? 1 : n;
    for (size_t i = 0; i < count; ++i)
      append_utf8(out, kEscapeBase + static_cast<unsigned char>(bytes[i]));
    bytes.remove_prefix(count);
  }
  return out;
}

std::string from_wire(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    uint32_t cp = 0;
    size_t n = utf8_sequence(text, cp);
    if (n == 0) {
      out += text[0];
      text.remove_prefix(1);
      continue;
    }
    if (cp >= kEscapeBase)
      out += static_cast<char>(cp - kEscapeBase);
    else
      out.append(text.substr(0, n));
    text.remove_prefix(n);
  }
  return out;
}

}  // namespace livefs
