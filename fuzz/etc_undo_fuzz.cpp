// The manifest of an /etc undo directory (livefs/etc_merge.h), as undo and start-up recovery
// read it: parsed or refused with EBADMSG, never thrown; what parses re-encodes to text that
// parses to the same manifest, and names nothing outside the live directory.
//
// The input is also read as NUL-separated byte strings made into a manifest's paths and tag
// (any byte but NUL): encoded, they parse back to the same, or are refused exactly when a
// path could leave the live directory.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "livefs/etc_merge.h"

using livefs::etc::ActionKind;
using livefs::etc::UndoManifest;

namespace {

// The fuzzer's own rule (not the parser's): a relative path of names, none "." or "..".
bool stays_below(std::string_view path) {
  if (path.empty() || path.find('\0') != std::string_view::npos) return false;
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    std::string_view name = path.substr(start, slash - start);
    if (name.empty() || name == "." || name == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

void check_parsed(const UndoManifest& m) {
  FUZZ_CHECK(!m.live.empty() && m.live[0] == '/');
  FUZZ_CHECK(m.live.find('\0') == std::string::npos);
  for (const auto& s : m.steps) {
    FUZZ_CHECK(s.kind == ActionKind::update || s.kind == ActionKind::add ||
               s.kind == ActionKind::remove);
    FUZZ_CHECK(stays_below(s.path));
  }
  for (const auto& d : m.dir_times) {
    FUZZ_CHECK(d.path.empty() || stays_below(d.path));
    FUZZ_CHECK(d.nsec >= 0 && d.nsec <= 999'999'999);
  }
  // Re-encoded, it parses to the same manifest, and that encoding is canonical.
  std::string text = livefs::etc::encode_undo_manifest(m);
  auto again = livefs::etc::parse_undo_manifest(text);
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(*again == m);
  FUZZ_CHECK(livefs::etc::encode_undo_manifest(*again) == text);
}

std::vector<std::string> pieces(std::string_view input) {
  std::vector<std::string> out;
  for (;;) {
    size_t nul = input.find('\0');
    out.emplace_back(input.substr(0, nul));
    if (nul == std::string_view::npos) return out;
    input.remove_prefix(nul + 1);
  }
}

// A manifest of the input's byte strings: the tag, the live directory ("/" + the first), a
// step of each kind per string and a directory time for each.
void check_built(std::string_view input) {
  std::vector<std::string> strings = pieces(input);
  UndoManifest m;
  m.tag = strings.front();
  m.live = "/" + strings.front();
  bool all_below = true;
  uint64_t index = input.size();
  for (const auto& s : strings) {
    ActionKind kind =
        std::array{ActionKind::update, ActionKind::add, ActionKind::remove}[index % 3];
    // What was installed: recorded or not, in the form the step's kind takes.
    std::string installed = index % 2 != 0 ? ""
                            : kind == ActionKind::remove
                                ? "none"
                                : std::string(32, "0123456789abcdef"[index % 16]);
    m.steps.push_back({kind, index * 0x9e3779b97f4a7c15ull, s, installed});
    m.dir_times.push_back({static_cast<int64_t>(index * 0xff51afd7ed558ccdull),
                           static_cast<int64_t>(index % 1'000'000'000), s});
    all_below = all_below && stays_below(s);
    ++index;
  }
  auto parsed = livefs::etc::parse_undo_manifest(livefs::etc::encode_undo_manifest(m));
  FUZZ_CHECK(parsed.has_value() == all_below);
  if (!parsed) {
    FUZZ_CHECK(parsed.error().code == EBADMSG);
    return;
  }
  FUZZ_CHECK(*parsed == m);
  check_parsed(*parsed);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  auto m = livefs::etc::parse_undo_manifest(input, "manifest");
  if (m)
    check_parsed(*m);
  else
    FUZZ_CHECK(m.error().code == EBADMSG);
  check_built(input);
  return 0;
}
