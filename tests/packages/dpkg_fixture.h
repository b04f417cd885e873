// Test trees with a realistic dpkg database (status stanzas with continuation lines, a
// half-configured and a removed package, multi-arch lists, merged-/usr symlinks).
#pragma once

#include <filesystem>
#include <string>

#include "support/temp_dir.h"

namespace livefs::packages::fixture {

struct FixtureOptions {
  std::string db_dir = "var/lib/dpkg";  // or "usr/var/lib/dpkg"
  bool merged_usr = true;
  std::string coreutils_version = "9.1-1";
  bool with_oldpkg = true;   // installed oldpkg 1.0 owning usr/bin/oldtool
  bool with_newpkg = false;  // installed newpkg 2.0 owning usr/bin/newtool
};

// Writes an OS tree under `root`.
inline void write_os_tree(const std::filesystem::path& root, const FixtureOptions& o = {}) {
  using livefs::testing::write_file;
  namespace fs = std::filesystem;
  fs::create_directories(root / "usr/bin");
  fs::create_directories(root / "usr/sbin");
  fs::create_directories(root / "usr/lib");
  if (o.merged_usr) {
    fs::create_directory_symlink("usr/bin", root / "bin");
    fs::create_directory_symlink("usr/sbin", root / "sbin");
    fs::create_directory_symlink("usr/lib", root / "lib");
  } else {
    write_file(root / "bin/ls", "ls (in /bin)");
  }
  write_file(root / "etc/coreutils.conf", "x");
  write_file(root / "usr/bin/ls", "ls " + o.coreutils_version);
  write_file(root / "usr/bin/cat", "cat");
  write_file(root / "usr/bin/dpkg", "dpkg");
  write_file(root / "usr/lib/x86_64-linux-gnu/libc.so.6", "libc amd64");
  write_file(root / "usr/lib/i386-linux-gnu/libc.so.6", "libc i386");
  write_file(root / "usr/share/doc/libc6/copyright", "c");
  write_file(root / "usr/bin/halftool", "half");

  std::string status =
      "Package: coreutils\n"
      "Essential: yes\n"
      "Status: install ok installed\n"
      "Priority: required\n"
      "Section: utils\n"
      "Installed-Size: 18062\n"
      "Maintainer: Michael Stone <mstone@debian.org>\n"
      "Architecture: amd64\n"
      "Multi-Arch: foreign\n"
      "Version: " +
      o.coreutils_version +
      "\n"
      "Pre-Depends: libacl1 (>= 2.2.23), libattr1 (>= 1:2.4.44),\n"
      " libc6 (>= 2.34), libgmp10 (>= 2:6.2.1+dfsg1)\n"
      "Description: GNU core utilities\n"
      " This package contains the basic file, shell and text manipulation\n"
      " utilities which are expected to exist on every operating system.\n"
      " .\n"
      " Specifically: Version: 0 is not a field here.\n"
      "Homepage: https://www.gnu.org/software/coreutils/\n"
      "\n"
      "Package: dpkg\n"
      "Essential: yes\n"
      "Status: install ok installed\n"
      "Priority: required\n"
      "Architecture: amd64\n"
      "Multi-Arch: foreign\n"
      "Version: 1.21.22\n"
      "Conffiles:\n"
      " /etc/alternatives/README 7be88b21f7e386c8d5a8790c2461c92b\n"
      " /etc/dpkg/dpkg.cfg f4413ffb515f8f753624ae3bb365b81b\n"
      "Description: Debian package management system\n"
      " This package provides the low-level infrastructure.\n"
      "\n"
      "Package: libc6\n"
      "Status: install ok installed\n"
      "Architecture: amd64\n"
      "Multi-Arch: same\n"
      "Version: 2.36-9+deb12u4\n"
      "Description: GNU C Library: Shared libraries\n"
      "\n"
      "Package: libc6\n"
      "Status: install ok installed\n"
      "Architecture: i386\n"
      "Multi-Arch: same\n"
      "Version: 2.36-9+deb12u4\n"
      "\n"
      "Package: halfpkg\n"
      "Status: install ok half-configured\n"
      "Architecture: amd64\n"
      "Version: 0.5\n"
      "\n"
      "Package: gonepkg\n"
      "Status: deinstall ok config-files\n"
      "Architecture: amd64\n"
      "Version: 3.0\n"
      "\n"
      "Package: neverpkg\n"
      "Status: purge ok not-installed\n"
      "Architecture: amd64\n";
  write_file(root / "usr/bin/oldtool", "old");
  if (o.with_oldpkg) {
    status +=
        "\n"
        "Package: oldpkg\n"
        "Status: install ok installed\n"
        "Architecture: all\n"
        "Version: 1.0\n";
    write_file(root / o.db_dir / "info/oldpkg.list", "/.\n/usr\n/usr/bin\n/usr/bin/oldtool\n");
  }
  if (o.with_newpkg) {
    status +=
        "\n"
        "Package: newpkg\n"
        "Status: install ok installed\n"
        "Architecture: amd64\n"
        "Version: 2.0\n";
    write_file(root / "usr/bin/newtool", "new");
    write_file(root / o.db_dir / "info/newpkg.list", "/.\n/usr\n/usr/bin\n/usr/bin/newtool\n");
  }
  write_file(root / o.db_dir / "status", status);

  const std::filesystem::path info = root / o.db_dir / "info";
  write_file(info / "coreutils.list",
             "/.\n/bin\n/bin/cat\n/bin/ls\n/etc\n/etc/coreutils.conf\n/usr\n/usr/share\n"
             "/usr/share/doc\n/usr/share/doc/coreutils\n/usr/share/doc/coreutils/copyright\n");
  write_file(info / "coreutils.md5sums", "d41d8cd98f00b204e9800998ecf8427e  usr/bin/ls\n");
  write_file(info / "dpkg.list",
             "/.\n/usr\n/usr/bin\n/usr/bin/dpkg\n/var\n/var/lib\n/var/lib/dpkg\n");
  write_file(info / "libc6:amd64.list",
             "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/usr\n"
             "/usr/share\n/usr/share/doc\n/usr/share/doc/libc6\n/usr/share/doc/libc6/copyright\n");
  write_file(info / "libc6:i386.list",
             "/.\n/lib\n/lib/i386-linux-gnu\n/lib/i386-linux-gnu/libc.so.6\n/usr\n"
             "/usr/share\n/usr/share/doc\n/usr/share/doc/libc6\n/usr/share/doc/libc6/copyright\n");
  write_file(info / "halfpkg.list", "/.\n/usr\n/usr/bin\n/usr/bin/halftool\n");
  write_file(info / "gonepkg.list", "/.\n/etc\n/etc/gone.conf\n");
}

}  // namespace livefs::packages::fixture
