// dpkg's `status` file as read from a booted or staged tree: dpkg::parse_status, and on
// what it accepts is_installed, the relation fields (parse_relations, which must read back
// what requirement_text writes) and the version order (antisymmetric, reflexive).
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "packages/dpkg.h"
#include "packages/package_db.h"

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
  if (!e.depends.empty()) out += "Depends: " + e.depends + "\n";
  if (!e.pre_depends.empty()) out += "Pre-Depends: " + e.pre_depends + "\n";
  if (!e.provides.empty()) out += "Provides: " + e.provides + "\n";
  return out + "\n";
}

void check_relations(const std::string& field) {
  auto parsed = dpkg::parse_relations(field, "p Depends");
  if (!parsed) {
    FUZZ_CHECK(parsed.error().code == EBADMSG);
    FUZZ_CHECK(parsed.error().context.starts_with("p Depends: "));
    return;
  }
  std::string written;
  for (const livefs::packages::Requirement& r : *parsed) {
    FUZZ_CHECK(!r.empty());
    for (const livefs::packages::Relation& alternative : r) {
      FUZZ_CHECK(!alternative.name.empty());
      FUZZ_CHECK((alternative.op == livefs::packages::VersionOp::any) ==
                 alternative.version.empty());
    }
    written += (written.empty() ? "" : ", ") + livefs::packages::requirement_text(r);
  }
  auto again = dpkg::parse_relations(written, "rewritten");
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(*again == *parsed);
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
    for (const std::string* v : {&e.package, &e.version, &e.architecture, &e.multi_arch, &e.status,
                                 &e.depends, &e.pre_depends, &e.provides})
      check_value(*v);
    (void)dpkg::is_installed(e.status);
    for (const std::string* field : {&e.depends, &e.pre_depends, &e.provides})
      check_relations(*field);
    FUZZ_CHECK(dpkg::compare_versions(e.version, e.version) == 0);
    rewritten += write_stanza(e);
  }
  // What was read, written back in dpkg's form, reads the same (values that start with a
  // blank, from a continuation of an empty field, are the one thing that does not survive:
  // the writer would have to fold them).
  for (size_t i = 1; i < entries->size(); ++i) {
    const std::string& a = (*entries)[i - 1].version;
    const std::string& b = (*entries)[i].version;
    FUZZ_CHECK(dpkg::compare_versions(a, b) == -dpkg::compare_versions(b, a));
  }
  auto again = dpkg::parse_status(rewritten, "rewritten status");
  FUZZ_CHECK(again.has_value());
  FUZZ_CHECK(again->size() == entries->size());
  for (size_t i = 0; i < entries->size(); ++i) {
    const dpkg::StatusEntry& a = (*entries)[i];
    const dpkg::StatusEntry& b = (*again)[i];
    bool folded = false;
    for (const std::string* v : {&a.package, &a.version, &a.architecture, &a.multi_arch, &a.status,
                                 &a.depends, &a.pre_depends, &a.provides})
      folded = folded || (!v->empty() && blank(v->front()));
    if (folded) continue;
    FUZZ_CHECK(a.package == b.package && a.version == b.version && a.status == b.status &&
               a.architecture == b.architecture && a.multi_arch == b.multi_arch &&
               a.depends == b.depends && a.pre_depends == b.pre_depends &&
               a.provides == b.provides);
  }
  return 0;
}
