// dpkg's `status` file as read from a booted or staged tree: dpkg::parse_status and
// is_installed on what it accepts.
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "packages/dpkg.h"

namespace dpkg = livefs::packages::dpkg;

namespace {

bool blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

void check_value(const std::string& value) {
  FUZZ_CHECK(value.find('\n') == std::string::npos);
  FUZZ_CHECK(value.find('\0') == std::string::npos);
  if (!value.empty()) FUZZ_CHECK(!blank(value.back()));
}

// The stanza as dpkg would write it.
std::string write_stanza(const dpkg::StatusEntry& e) {
  std::string out = "Package: " + e.package + "\nStatus: " + e.status + "\n";
  if (!e.version.empty()) out += "Version: " + e.version + "\n";
  if (!e.architecture.empty()) out += "Architecture: " + e.architecture + "\n";
  if (!e.multi_arch.empty()) out += "Multi-Arch: " + e.multi_arch + "\n";
  return out + "\n";
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto entries = dpkg::parse_status(text, "status");
  if (!entries) {
    FUZZ_CHECK(entries.error().code == EBADMSG);
    FUZZ_CHECK(entries.error().context.starts_with("status line "));
    return 0;
  }
  std::string rewritten;
  for (const dpkg::StatusEntry& e : *entries) {
    FUZZ_CHECK(!e.package.empty());
    for (const std::string* v : {&e.package, &e.version, &e.architecture, &e.multi_arch, &e.status})
      check_value(*v);
    (void)dpkg::is_installed(e.status);
    rewritten += write_stanza(e);
  }
  // What was read, written back in dpkg's form, reads the same (values that start with a
  // blank, from a continuation of an empty field, are the one thing that does not survive:
  // the writer would have to fold them).
  auto again = dpkg::parse_status(rewritten, "rewritten status");
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->size() == entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    const dpkg::StatusEntry& a = (*entries)[i];
    const dpkg::StatusEntry& b = (*again)[i];
    bool folded = false;
    for (const std::string* v : {&a.package, &a.version, &a.architecture, &a.multi_arch, &a.status})
      folded = folded || (!v->empty() && blank(v->front()));
    if (folded) continue;
    FUZZ_CHECK(a.package == b.package && a.version == b.version && a.status == b.status &&
               a.architecture == b.architecture && a.multi_arch == b.multi_arch);
  }
  return 0;
}
