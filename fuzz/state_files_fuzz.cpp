// The daemon's state files as read before mounting: config.json and hotfix.json. Parsed or
// refused with EBADMSG, never thrown; a hotfix.json that parses is written back by the
// daemon's own writer into text that parses to the same watches and adds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "livefs/state_files.h"

namespace {

bool same(const std::vector<livefs::cli::HotfixPlace>& a,
          const std::vector<livefs::cli::HotfixPlace>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].source != b[i].source || a[i].at != b[i].at) return false;
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  livefs::fuzz::quiet_logs();
  std::string_view input(reinterpret_cast<const char*>(data), size);

  auto config = livefs::cli::parse_daemon_config(input, "config.json");
  if (!config) FUZZ_CHECK(config.error().code == EBADMSG);

  auto hotfix = livefs::cli::parse_hotfix_config(input, "hotfix.json");
  if (!hotfix) {
    FUZZ_CHECK(hotfix.error().code == EBADMSG);
    return 0;
  }
  std::string text = livefs::cli::hotfix_config_text(*hotfix);
  auto again = livefs::cli::parse_hotfix_config(text, "hotfix.json");
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(same(again->watches, hotfix->watches));
  FUZZ_CHECK(same(again->adds, hotfix->adds));
  return 0;
}
