// Test trees with a real RPM database: packages built here with rpmbuild from spec files
// (no network, no compiler: the payload is written by %install) and installed with
// `rpm --root`, as on Fedora (sqlite database, merged /usr).
//
// The packages (x86_64, AutoReqProv off so the dependencies are exactly these):
//   libdemo VERSION-1: usr/lib64/libdemo.so.1 ("libdemo VERSION\n"), usr/bin/libdemo-config,
//     %config usr/etc/libdemo.conf, %ghost usr/lib64/libdemo.cache (not on disk), the
//     directory usr/share/libdemo; Provides: libdemo.so.1()(64bit).
//   demo VERSION-1: usr/bin/demo (a script printing "demo VERSION"); Requires:
//     libdemo >= VERSION, libdemo.so.1()(64bit), /bin/libdemo-config (a file requirement met
//     through the merged /usr: libdemo ships /usr/bin/libdemo-config), and
//     Requires(post): /bin/sh (a scriptlet's, which the database skips).
// VERSION is "1.0" (Version::v1, the booted tree) or "2.0" (Version::v2, the staged one).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "support/temp_dir.h"

namespace livefs::packages::rpm_fixture {

namespace fs = std::filesystem;

enum class Version { v1, v2 };
// Where the database is: rpm >= 4.16's default (Fedora, CentOS Stream, bootc), rpm-ostree's,
// or the traditional one.
enum class DbLayout { sysimage, usr_share, var_lib };

inline const char* version_text(Version v) { return v == Version::v1 ? "1.0" : "2.0"; }

// The database's directory, relative to the root ("usr/lib/sysimage/rpm").
inline std::string db_dir(DbLayout layout) {
  switch (layout) {
    case DbLayout::sysimage:
      return "usr/lib/sysimage/rpm";
    case DbLayout::usr_share:
      return "usr/share/rpm";
    case DbLayout::var_lib:
      return "var/lib/rpm";
  }
  return "";
}

// Whether rpmbuild and rpm are installed (tests GTEST_SKIP without them).
inline bool have_rpm_tools() {
  return ::access("/usr/bin/rpmbuild", X_OK) == 0 && ::access("/usr/bin/rpm", X_OK) == 0;
}

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs a command with its stderr folded into the returned text; "" on success, else the
// command and what it printed.
inline std::string run_or_error(const std::string& command) {
  std::string output;
  int status = livefs::testing::run(command + " 2>&1", &output);
  if (status == 0) return "";
  return "`" + command + "` failed (" + std::to_string(status) + "): " + output;
}

// Builds the binary packages of `spec` (the text of a spec file) with `defines`
// ("--define 'x y' ..."); they land in `topdir`/RPMS/ARCH/. "" or an error message.
inline std::string build_spec(const fs::path& topdir, const std::string& spec_name,
                              const std::string& spec, const std::string& defines = "") {
  fs::create_directories(topdir / "SPECS");
  fs::path spec_path = topdir / "SPECS" / (spec_name + ".spec");
  livefs::testing::write_file(spec_path, spec);
  // No debuginfo and no brp scripts: Debian's rpm lacks some of what Fedora's run.
  return run_or_error("rpmbuild -bb --quiet --define " + quote("_topdir " + topdir.string()) +
                      " --define '_build_id_links none' --define 'debug_package %{nil}'" +
                      " --define '__os_install_post %{nil}' " + defines + " " +
                      quote(spec_path.string()));
}

inline const char* kDemoSpec = R"(Name: demo
Version: %{demo_version}
Release: 1
Summary: a program that needs its library
License: MIT
AutoReqProv: no
Requires: libdemo >= %{demo_version}
Requires: libdemo.so.1()(64bit)
Requires: /bin/libdemo-config
Requires(post): /bin/sh

%description
demo

%package -n libdemo
Summary: the library demo needs
Provides: libdemo.so.1()(64bit)
# Generated provides (config(libdemo)) but no generated requires (libdemo-config's /bin/sh:
# no package here owns it).
AutoReq: no

%description -n libdemo
libdemo

%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/usr/lib64 %{buildroot}/usr/etc %{buildroot}/usr/share/libdemo
printf '#!/bin/sh\necho demo %{demo_version}\n' > %{buildroot}/usr/bin/demo
chmod 755 %{buildroot}/usr/bin/demo
printf 'libdemo %{demo_version}\n' > %{buildroot}/usr/lib64/libdemo.so.1
printf '#!/bin/sh\necho %{demo_version}\n' > %{buildroot}/usr/bin/libdemo-config
chmod 755 %{buildroot}/usr/bin/libdemo-config
printf 'setting=1\n' > %{buildroot}/usr/etc/libdemo.conf

%files
/usr/bin/demo

%files -n libdemo
/usr/lib64/libdemo.so.1
/usr/bin/libdemo-config
%config(noreplace) /usr/etc/libdemo.conf
%ghost /usr/lib64/libdemo.cache
%dir /usr/share/libdemo
)";

struct BuiltRpms {
  std::string error;                          // "" when built
  fs::path libdemo1, demo1, libdemo2, demo2;  // x86_64
  fs::path libdemo1_i686;                     // libdemo 1.0 for i686 (multilib)
};

// The demo packages, built once per process (in a directory removed at exit).
inline const BuiltRpms& built_rpms() {
  static livefs::testing::TempDir dir("livefs-rpms");
  static BuiltRpms built;
  static std::once_flag once;
  std::call_once(once, [] {
    const fs::path top = dir.path();
    for (const char* arch : {"x86_64", "i686"}) {
      for (const char* version : {"1.0", "2.0"}) {
        if (std::string(arch) == "i686" && std::string(version) == "2.0") continue;
        // --target, not BuildArch: rpmbuild builds only for the host's architectures
        // what names one in the spec.
        std::string defines =
            "--define " + quote(std::string("demo_version ") + version) + " --target " + arch;
        if (std::string error = build_spec(top, "demo", kDemoSpec, defines); !error.empty()) {
          built.error = error;
          return;
        }
      }
    }
    built.libdemo1 = top / "RPMS/x86_64/libdemo-1.0-1.x86_64.rpm";
    built.demo1 = top / "RPMS/x86_64/demo-1.0-1.x86_64.rpm";
    built.libdemo2 = top / "RPMS/x86_64/libdemo-2.0-1.x86_64.rpm";
    built.demo2 = top / "RPMS/x86_64/demo-2.0-1.x86_64.rpm";
    built.libdemo1_i686 = top / "RPMS/i686/libdemo-1.0-1.i686.rpm";
    for (const fs::path& p :
         {built.libdemo1, built.demo1, built.libdemo2, built.demo2, built.libdemo1_i686}) {
      if (!fs::exists(p)) built.error = "rpmbuild wrote no " + p.string();
    }
  });
  return built;
}

// Lays out a merged-/usr root under `root` (bin, sbin, lib, lib64 -> usr/...) with an
// os-release (not owned by any package, the same in every version).
inline void write_merged_usr_root(const fs::path& root) {
  for (const char* dir : {"bin", "sbin", "lib", "lib64"}) {
    fs::create_directories(root / "usr" / dir);
    if (!fs::exists(fs::symlink_status(root / dir))) {
      fs::create_directory_symlink(std::string("usr/") + dir, root / dir);
    }
  }
  livefs::testing::write_file(root / "usr/lib/os-release",
                              "NAME=\"livefs RPM test\"\nID=livefs-rpm\nID_LIKE=fedora\n");
}

// Installs `rpms` into `root` with `rpm --root`, the database in `layout` (sqlite, created
// when absent). `extra` are more rpm options ("--replacefiles" to install two versions of
// one package side by side). "" or an error message.
inline std::string install_rpms(const fs::path& root, DbLayout layout,
                                const std::vector<fs::path>& rpms, const std::string& extra = "") {
  std::string command = "rpm --root " + quote(root.string()) + " --dbpath " +
                        quote("/" + db_dir(layout)) +
                        " --define '_db_backend sqlite' -i --nodeps --nosignature --ignorearch"
                        " --ignoreos --noscripts --notriggers " +
                        extra;
  for (const fs::path& rpm : rpms) command += " " + quote(rpm.string());
  return run_or_error(command);
}

// Writes an OS root under `root`: the merged-/usr layout, usr/lib/os-release and libdemo +
// demo of `version` installed with their database in `layout`. "" or an error message (also
// when rpmbuild or rpm is missing: check have_rpm_tools() first to skip).
inline std::string write_rpm_root(const fs::path& root, Version version,
                                  DbLayout layout = DbLayout::sysimage) {
  if (!have_rpm_tools()) return "rpmbuild or rpm is not installed";
  const BuiltRpms& rpms = built_rpms();
  if (!rpms.error.empty()) return rpms.error;
  write_merged_usr_root(root);
  if (version == Version::v1) return install_rpms(root, layout, {rpms.libdemo1, rpms.demo1});
  return install_rpms(root, layout, {rpms.libdemo2, rpms.demo2});
}

}  // namespace livefs::packages::rpm_fixture
