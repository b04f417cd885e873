// Package selection end to end: dependency checks of `apply --package` on dpkg trees in
// directory mode (the trees' /usr served, the package database beside it), and the same flow
// on RPM-built trees (real RPMs installed with `rpm --root`) in directory mode and from an
// OSTree sysroot; the bash completion's package names.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "live_support.h"
#include "ostree_support.h"
#include "packages/rpm_fixture.h"
#include "support/temp_dir.h"

namespace livefs::e2e {
namespace {

using livefs::testing::read_file;
using livefs::testing::write_file;
using json = nlohmann::json;

std::string stanza(const std::string& name, const std::string& version,
                   const std::string& fields = "") {
  return "Package: " + name + "\nStatus: install ok installed\nVersion: " + version +
         "\nArchitecture: amd64\n" + fields + "\n";
}

// booted: libdemo 1.0 and demo 1.0; staged: both 2.0, and demo 2.0 needs libdemo >= 2.0.
void write_dpkg_roots(const fs::path& booted, const fs::path& staged,
                      const std::string& staged_demo_fields) {
  for (const auto& [root, version] : {std::pair{booted, "1.0"}, std::pair{staged, "2.0"}}) {
    write_file(root / "usr/bin/demo", std::string("demo ") + version + "\n", 0755);
    write_file(root / "usr/lib/libdemo.so.1", std::string("libdemo ") + version + "\n");
    write_file(root / "var/lib/dpkg/info/demo.list", "/usr\n/usr/bin\n/usr/bin/demo\n");
    write_file(root / "var/lib/dpkg/info/libdemo.list", "/usr\n/usr/lib\n/usr/lib/libdemo.so.1\n");
  }
  write_file(booted / "var/lib/dpkg/status",
             stanza("demo", "1.0", "Depends: libdemo (>= 1.0)\n") + stanza("libdemo", "1.0"));
  write_file(staged / "var/lib/dpkg/status",
             stanza("demo", "2.0", staged_demo_fields) + stanza("libdemo", "2.0"));
}

struct DpkgWorld : LiveWorld {
  explicit DpkgWorld(const std::string& staged_demo_fields) {
    write_dpkg_roots(booted, staged, staged_demo_fields);
    settle();
  }
  Ran mount_usr() {
    mounted_at = mnt;
    return livefs("mount --booted " + quote((booted / "usr").string()) + " --staged " +
                  quote((staged / "usr").string()) + " " + state_arg() + " " + quote(mnt.string()));
  }
};

TEST(PackagesE2e, DpkgRefusesAProgramWithoutTheLibraryItNeeds) {
  DpkgWorld w("Depends: libdemo (>= 2.0)\n");
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran refused = w.cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("demo 2.0 needs libdemo (>= 2.0); live has 1.0"), std::string::npos)
      << refused.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 1.0\n");
  Ran with = w.cmd("apply", "--package demo --with-deps --allow-replace");
  ASSERT_EQ(with.status, 0) << with.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 2.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/libdemo.so.1"), "libdemo 2.0\n");
}

TEST(PackagesE2e, AnUnreadableDependencyFieldRefusesUnlessIgnored) {
  DpkgWorld w("Depends: libdemo (>= \n");
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran refused = w.cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("demo Depends"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("--ignore-deps"), std::string::npos) << refused.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 1.0\n");
  // diff --by-package still groups (without what goes together).
  Ran diff = w.cmd("diff", "--by-package --json");
  ASSERT_EQ(diff.status, 0) << diff.out;
  Ran forced = w.cmd("apply", "--package demo --allow-replace --ignore-deps");
  ASSERT_EQ(forced.status, 0) << forced.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 2.0\n");
  EXPECT_EQ(read_file(w.mnt / "lib/libdemo.so.1"), "libdemo 1.0\n");
}

// A staged database that cannot be read: the booted one would stand in for it and every
// requirement would look met, so the check refuses rather than pass.
TEST(PackagesE2e, AnUnreadableStagedDatabaseRefusesTheCheck) {
  DpkgWorld w("Depends: libdemo (>= 2.0)\n");
  write_file(w.staged / "var/lib/dpkg/status", "this is not a status file\n");
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  Ran refused = w.cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("dependencies cannot be checked"), std::string::npos) << refused.out;
  EXPECT_NE(refused.out.find("staged:"), std::string::npos) << refused.out;
  EXPECT_EQ(read_file(w.mnt / "bin/demo"), "demo 1.0\n");
}

namespace rpmfx = livefs::packages::rpm_fixture;

bool lists_holder(const json& holders, pid_t pid, const std::string& path) {
  for (const auto& h : holders) {
    if (h.value("pid", 0) == pid && h.value("path", "") == path) return true;
  }
  return false;
}

// The RPM flow, through any mounted view: diff --by-package names the versions and what goes
// together, demo 2.0 alone is refused for want of libdemo 2.0, --with-deps applies both, and
// a process holding the old library is listed. `cmd` runs a livefs command on the view.
template <class Cmd>
void check_rpm_flow(const fs::path& mnt, Cmd&& cmd) {
  EXPECT_EQ(read_file(mnt / "lib64/libdemo.so.1"), "libdemo 1.0\n");
  Ran diff = cmd("diff", "--by-package --json");
  ASSERT_EQ(diff.status, 0) << diff.out;
  json d = json::parse(diff.out, nullptr, false);
  std::map<std::string, json> groups;
  for (const auto& g : d["packages"]) groups[g["package"]] = g;
  ASSERT_TRUE(groups.contains("demo")) << d.dump(2);
  EXPECT_EQ(groups["demo"]["old_version"], "1.0-1");
  EXPECT_EQ(groups["demo"]["new_version"], "2.0-1");
  EXPECT_EQ(groups["demo"]["paths"], json({"bin/demo"}));
  EXPECT_EQ(groups["demo"]["goes_with"], json({"libdemo"})) << d.dump(2);
  ASSERT_TRUE(groups.contains("libdemo")) << d.dump(2);
  EXPECT_FALSE(groups["libdemo"].contains("goes_with")) << d.dump(2);

  Ran refused = cmd("apply", "--package demo --allow-replace");
  EXPECT_EQ(refused.status, 1) << refused.out;
  EXPECT_NE(refused.out.find("demo 2.0-1 needs libdemo (>= 2.0); live has 1.0-1"),
            std::string::npos)
      << refused.out;
  EXPECT_NE(refused.out.find("--package libdemo"), std::string::npos) << refused.out;

  Holder holder(mnt / "lib64/libdemo.so.1");
  ASSERT_TRUE(holder.wait_holding());
  Ran with = cmd("apply", "--package demo --with-deps --allow-replace --json");
  ASSERT_EQ(with.status, 0) << with.out;
  json applied = json::parse(with.out, nullptr, false);
  ASSERT_EQ(applied["added_packages"].size(), 1u) << with.out;
  EXPECT_EQ(applied["added_packages"][0]["package"], "libdemo");
  EXPECT_EQ(applied["added_packages"][0]["because"], "demo 2.0-1 needs libdemo (>= 2.0)");
  EXPECT_EQ(read_file(mnt / "lib64/libdemo.so.1"), "libdemo 2.0\n");
  std::string out;
  EXPECT_EQ(livefs::testing::run(quote((mnt / "bin/demo").string()), &out), 0);
  EXPECT_EQ(out, "demo 2.0\n");
  // The holder report works the same on an RPM tree.
  json st;
  EXPECT_TRUE(eventually([&] {
    Ran r = cmd("status", "--json");
    st = json::parse(r.out, nullptr, false);
    return !st.is_discarded() && st["holders_scan"]["current"] == true &&
           lists_holder(st["holders"], holder.pid(), "lib64/libdemo.so.1");
  })) << st.dump(2);
}

TEST(PackagesE2e, RpmTreeInDirectoryMode) {
  if (!rpmfx::have_rpm_tools()) GTEST_SKIP() << "rpm/rpmbuild not installed";
  LiveWorld w;
  ASSERT_EQ(rpmfx::write_rpm_root(w.booted, rpmfx::Version::v1), "");
  ASSERT_EQ(rpmfx::write_rpm_root(w.staged, rpmfx::Version::v2), "");
  w.settle();
  w.mounted_at = w.mnt;
  Ran mounted = livefs("mount --booted " + quote((w.booted / "usr").string()) + " --staged " +
                       quote((w.staged / "usr").string()) + " " + w.state_arg() + " " +
                       quote(w.mnt.string()));
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  check_rpm_flow(w.mnt, [&](const std::string& c, const std::string& a) { return w.cmd(c, a); });
}

// An rpm-ostree-like tree (the database in usr/share/rpm), committed and deployed.
void make_rpm_commit(const fs::path& root, rpmfx::Version v) {
  std::string error = rpmfx::write_rpm_root(root, v, rpmfx::DbLayout::usr_share);
  ASSERT_EQ(error, "");
  write_file(root / "usr/etc/os-release", "ID=livefs-rpm-test\n");
  write_file(root / "usr/lib/modules/6.1.0/vmlinuz", "kernel\n");
  // A deployment holds usr (and the top-level links into it); /var is the machine's.
  fs::remove_all(root / "var");
}

TEST(PackagesE2e, RpmTreeFromAnOstreeSysroot) {
  if (!rpmfx::have_rpm_tools()) GTEST_SKIP() << "rpm/rpmbuild not installed";
  OstreeSysroot s(
      "livefs-rpm-ostree", [](const fs::path& r) { make_rpm_commit(r, rpmfx::Version::v1); },
      [](const fs::path& r) { make_rpm_commit(r, rpmfx::Version::v2); });
  OstreeMount m;
  Ran mounted = m.mount(s);
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  check_rpm_flow(m.mnt, [&](const std::string& c, const std::string& a) { return m.cmd(c, a); });
}

// What the generated bash completion offers for COMP_WORDS = `words` (the last one is being
// completed), with the build's livefs first on PATH.
std::vector<std::string> complete(const std::vector<std::string>& words) {
  fs::path binary = LIVEFS_BINARY;
  fs::path script = binary.parent_path() / "doc/bash-completion/livefs";
  std::string array;
  for (const std::string& w : words) array += " " + quote(w);
  std::string command = "PATH=" + quote(binary.parent_path().string()) +
                        ":$PATH bash -c 'source \"$0\"; COMP_WORDS=(\"$@\"); "
                        "COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _livefs; "
                        "printf \"%s\\n\" \"${COMPREPLY[@]}\"' " +
                        quote(script.string()) + array;
  std::string out;
  EXPECT_EQ(livefs::testing::run(command, &out), 0) << command;
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end());
  return lines;
}

using Words = std::vector<std::string>;

TEST(Completion, CommandsOptionsAndWhatTheDaemonHasPending) {
  EXPECT_EQ(complete({"livefs", "ap"}), Words{"apply"});
  EXPECT_EQ(complete({"livefs", "apply", "--wi"}), Words{"--with-deps"});
  EXPECT_EQ(complete({"livefs", "store", ""}),
            (Words{"--help", "gc", "import", "stats", "verify"}));
  EXPECT_EQ(complete({"livefs", "store", "gc", "--w"}), Words{"--wait"});
  DpkgWorld w("Depends: libdemo (>= 2.0)\n");
  // A directory option takes directories.
  EXPECT_EQ(complete({"livefs", "mount", "--booted", (w.dir / "boo").string()}),
            Words{(w.dir / "booted").string()});
  Ran mounted = w.mount_usr();
  ASSERT_EQ(mounted.status, 0) << mounted.out;
  std::string state = w.state.string();
  // The pending packages and paths, asked of the daemon named by --state on the line.
  EXPECT_EQ(complete({"livefs", "apply", "--state", state, "--package", ""}),
            (Words{"demo", "libdemo"}));
  EXPECT_EQ(complete({"livefs", "apply", "--state", state, "--allow-replace", "b"}),
            Words{"bin/demo"});
  EXPECT_EQ(complete({"livefs", "apply", "--state", state, ""}),
            (Words{"bin/demo", "lib/libdemo.so.1"}));
}

}  // namespace
}  // namespace livefs::e2e
