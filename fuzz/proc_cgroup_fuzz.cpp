// /proc/PID/cgroup as the holder scan reads it (host::unit_from_cgroup) and as the restart plan
// does (host::systemd_cgroup_path).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "host/holders.h"
#include "host/restart_plan.h"

namespace {

constexpr std::string_view kUnitSuffixes[] = {".service", ".scope",    ".socket", ".mount",
                                              ".swap",    ".timer",    ".path",   ".target",
                                              ".device",  ".automount"};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view contents(reinterpret_cast<const char*>(data), size);
  // The restart plan's path is one line's path, whole.
  std::string path = livefs::host::systemd_cgroup_path(contents);
  FUZZ_CHECK(path.find('\n') == std::string::npos);
  FUZZ_CHECK(path.empty() || contents.find(path) != std::string_view::npos);
  std::string unit = livefs::host::unit_from_cgroup(contents);
  if (unit.empty()) return 0;
  // A unit is one path component of one line, with a name before a unit suffix; never a
  // slice (which groups units).
  FUZZ_CHECK(unit.find('/') == std::string::npos && unit.find('\n') == std::string::npos);
  FUZZ_CHECK(contents.find(unit) != std::string_view::npos);
  bool suffixed = false;
  for (std::string_view suffix : kUnitSuffixes)
    suffixed = suffixed || (unit.size() > suffix.size() && unit.ends_with(suffix));
  FUZZ_CHECK(suffixed);
  // The first cgroup v2 line naming a unit decides; v1 lines only count without one.
  std::string v2 = std::string(contents) + "\n0::/system.slice/fuzz.service\n";
  std::string with_v2 = livefs::host::unit_from_cgroup(v2);
  FUZZ_CHECK(with_v2 == unit || with_v2 == "fuzz.service");
  return 0;
}
