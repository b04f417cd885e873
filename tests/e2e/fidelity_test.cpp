// Live equals rebooted: after `apply --all` the view equals the staged tree in everything
// stat, readlink, the xattr calls, a listing and the content show — times to the nanosecond,
// owners, modes, xattrs (security.* and POSIX ACLs included), device numbers, hard-link
// groups and link counts — and after `reset` it equals the booted tree again. The trees are
// random (the seed is printed; LIVEFS_SEED=N repeats one) and differ mostly in metadata.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>

#include "e2e/live_support.h"
#include "support/tree_dump.h"

namespace livefs::e2e {
namespace {

using livefs::testing::compare_dumps;
using livefs::testing::dump_tree;
using livefs::testing::write_file;

// One entry of a tree to write. A hard link names the file it links (`link_to`); its
// attributes are that inode's.
struct Spec {
  enum Kind { dir, file, symlink, fifo, chardev, hardlink } kind = file;
  unsigned mode = 0644;
  uid_t uid = 0;
  gid_t gid = 0;
  int64_t sec = 1'600'000'000;
  long nsec = 0;
  std::string content;  // file: content; symlink: target
  std::string link_to;  // hardlink
  dev_t rdev = 0;
  std::map<std::string, std::string> xattrs;
};
using Specs = std::map<std::string, Spec>;  // path → spec; std::map: parents first

Spec spec(Spec::Kind kind, unsigned mode) {
  Spec s;
  s.kind = kind;
  s.mode = mode;
  return s;
}

// A POSIX ACL as the kernel stores it in system.posix_acl_access (version 2, then
// {u16 tag, u16 perm, u32 id} entries in tag order).
std::string acl(std::initializer_list<std::tuple<uint16_t, uint16_t, uint32_t>> entries) {
  std::string out;
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  uint32_t version = 2;
  put(&version, 4);
  for (auto [tag, perm, id] : entries) {
    put(&tag, 2);
    put(&perm, 2);
    put(&id, 4);
  }
  return out;
}
constexpr uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kMask = 0x10, kOther = 0x20;
constexpr uint32_t kUndefined = 0xffffffff;

// rw- for the owner, nothing for user `who`, r-- for everyone else.
std::string acl_denying(uint32_t who) {
  return acl({{kUserObj, 6, kUndefined},
              {kUser, 0, who},
              {kGroupObj, 4, kUndefined},
              {kMask, 4, kUndefined},
              {kOther, 4, kUndefined}});
}

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what + ": " + std::strerror(errno));
}

void materialize(const fs::path& root, const Specs& specs) {
  fs::create_directories(root);
  for (const auto& [path, s] : specs) {
    fs::path p = path.empty() ? root : root / path;
    switch (s.kind) {
      case Spec::dir:
        if (!path.empty()) check(::mkdir(p.c_str(), 0700) == 0, "mkdir " + path);
        break;
      case Spec::file:
        write_file(p, s.content);
        break;
      case Spec::symlink:
        check(::symlink(s.content.c_str(), p.c_str()) == 0, "symlink " + path);
        break;
      case Spec::fifo:
        check(::mkfifo(p.c_str(), 0600) == 0, "mkfifo " + path);
        break;
      case Spec::chardev:
        check(::mknod(p.c_str(), S_IFCHR | 0600, s.rdev) == 0, "mknod " + path);
        break;
      case Spec::hardlink:
        break;  // below, once what it links exists
    }
  }
  for (const auto& [path, s] : specs)
    if (s.kind == Spec::hardlink)
      check(::link((root / s.link_to).c_str(), (root / path).c_str()) == 0, "link " + path);
  // Attributes once everything exists (times last, deepest first: creating an entry moves
  // its directory's mtime).
  for (const auto& [path, s] : specs) {
    if (s.kind == Spec::hardlink) continue;
    fs::path p = path.empty() ? root : root / path;
    for (const auto& [name, value] : s.xattrs)
      check(::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0) == 0,
            "setxattr " + name + " " + path);
    check(::lchown(p.c_str(), s.uid, s.gid) == 0, "lchown " + path);
    // chmod after chown (chown clears set-id bits); symlinks have no mode of their own.
    // The ACL's group entry follows the mode's group bits, so an ACL is set above first
    // and the mode here is the one the ACL's mask already says.
    if (s.kind != Spec::symlink) check(::chmod(p.c_str(), s.mode) == 0, "chmod " + path);
    for (const auto& [name, value] : s.xattrs)
      if (name.starts_with("system."))
        check(::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0) == 0,
              "setxattr again " + name + " " + path);
  }
  for (auto it = specs.rbegin(); it != specs.rend(); ++it) {
    const auto& [path, s] = *it;
    if (s.kind == Spec::hardlink) continue;
    fs::path p = path.empty() ? root : root / path;
    struct timespec times[2] = {{s.sec, s.nsec}, {s.sec, s.nsec}};
    check(::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) == 0, "utimensat " + path);
  }
}

struct Rng {
  std::mt19937_64 gen;
  explicit Rng(uint64_t seed) : gen(seed) {}
  size_t below(size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(gen); }
  bool chance(int percent) { return below(100) < static_cast<size_t>(percent); }
  template <class T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
};

// A random tree: directories, files (some set-id), symlinks, hard-link groups, a fifo, a
// character device, user.* and security.* xattrs, POSIX ACLs.
Specs random_booted(Rng& rng) {
  Specs specs;
  specs[""] = spec(Spec::dir, 0755);
  std::vector<std::string> dirs = {""};
  auto in_dir = [&](const std::string& name) {
    const std::string& d = rng.pick(dirs);
    return d.empty() ? name : d + "/" + name;
  };
  auto attrs = [&](Spec& s) {
    static const uid_t owners[] = {0, 1000, 65534};
    s.uid = owners[rng.below(3)];
    s.gid = owners[rng.below(3)];
    s.sec = 1'600'000'000 + static_cast<int64_t>(rng.below(100'000'000));
    s.nsec = static_cast<long>(rng.below(1'000'000'000));
    if (rng.chance(20)) s.xattrs["user.livefs"] = "v" + std::to_string(rng.below(1000));
    if (rng.chance(10)) s.xattrs["security.livefs"] = std::string("\0\1", 2) + "label";
  };
  for (int i = 0; i < 12; ++i) {
    Spec d = spec(Spec::dir, rng.chance(80) ? 0755u : 0750u);
    attrs(d);
    std::string path = in_dir("d" + std::to_string(i));
    specs[path] = d;
    dirs.push_back(path);
  }
  std::vector<std::string> files;
  for (int i = 0; i < 50; ++i) {
    static const unsigned modes[] = {0644, 0755, 0600, 0444, 04755, 02755};
    Spec f = spec(Spec::file, modes[rng.below(6)]);
    attrs(f);
    f.content = "file " + std::to_string(i) + " " + std::string(rng.below(3000), 'x');
    if (rng.chance(10)) {
      f.mode = 0644;
      f.xattrs["system.posix_acl_access"] = acl_denying(1000);
    }
    std::string path = in_dir("f" + std::to_string(i));
    specs[path] = f;
    files.push_back(path);
  }
  for (int i = 0; i < 10; ++i) {
    Spec l = spec(Spec::symlink, 0777);
    attrs(l);
    l.xattrs.clear();  // user.* xattrs are not allowed on symlinks
    l.content =
        rng.chance(50) ? "../f" + std::to_string(i) : "/usr/lib/target-" + std::to_string(i);
    specs[in_dir("l" + std::to_string(i))] = l;
  }
  for (int i = 0; i < 8; ++i) {
    Spec h = spec(Spec::hardlink, 0);
    h.link_to = rng.pick(files);
    specs[in_dir("h" + std::to_string(i))] = h;
  }
  Spec fifo = spec(Spec::fifo, 0600);
  attrs(fifo);
  fifo.xattrs.clear();
  specs[in_dir("fifo")] = fifo;
  Spec dev = spec(Spec::chardev, 0666);
  dev.rdev = makedev(1, 3);
  attrs(dev);
  dev.xattrs.clear();
  specs[in_dir("null")] = dev;
  // One directory with a default ACL (what new files in it would inherit).
  Spec acld = spec(Spec::dir, 0755);
  acld.xattrs["system.posix_acl_default"] =
      acl({{kUserObj, 7, kUndefined}, {kGroupObj, 5, kUndefined}, {kOther, 5, kUndefined}});
  specs["acl-dir"] = acld;
  return specs;
}

// The staged tree: the booted one with mostly metadata changed — times (nanoseconds), modes,
// owners, xattrs, ACLs, hard links broken and made — and a few files added, removed and
// rewritten.
Specs random_staged(Rng& rng, Specs specs) {
  std::vector<std::string> paths;
  for (const auto& [path, s] : specs)
    if (s.kind != Spec::hardlink) paths.push_back(path);
  for (int i = 0; i < 40; ++i) {
    Spec& s = specs[rng.pick(paths)];
    switch (rng.below(6)) {
      case 0:
        s.nsec = static_cast<long>(rng.below(1'000'000'000));
        break;
      case 1:
        s.sec += 1 + static_cast<int64_t>(rng.below(1000));
        break;
      case 2:
        if (s.kind == Spec::file || s.kind == Spec::dir)
          s.mode = s.mode == 0755 ? 0750 : (s.mode == 0644 ? 0640 : 0755);
        break;
      case 3:
        // Not the root: a tree owned by another user may not hard-link what that user
        // cannot read (the import refuses it).
        if (&s != &specs[""]) s.uid = s.uid == 0 ? 1000 : 0;
        break;
      case 4:
        if (s.kind == Spec::file || s.kind == Spec::dir) {
          if (s.xattrs.contains("user.livefs"))
            s.xattrs.erase("user.livefs");
          else
            s.xattrs["user.livefs"] = "staged";
        }
        break;
      case 5:
        if (s.kind == Spec::file && !s.xattrs.contains("system.posix_acl_access")) {
          s.mode = 0644;
          s.xattrs["system.posix_acl_access"] = acl_denying(65534);
        }
        break;
    }
  }
  // Hard links: one broken (a copy with the same content), one made.
  for (auto& [path, s] : specs) {
    if (s.kind != Spec::hardlink) continue;
    Spec copy = specs[s.link_to];
    s = copy;
    break;
  }
  // New links to files whose content stays (the last ones: the first is rewritten below).
  std::vector<std::string> targets;
  for (auto it = specs.rbegin(); it != specs.rend() && targets.size() < 3; ++it)
    if (it->second.kind == Spec::file && !it->second.content.empty()) targets.push_back(it->first);
  for (size_t i = 0; i < targets.size(); ++i) {
    Spec h = spec(Spec::hardlink, 0);
    h.link_to = targets[i];
    specs["new-link-" + std::to_string(i)] = h;
  }
  // Content: one rewritten, one added, one removed (that no hard link names).
  for (auto& [path, s] : specs) {
    if (s.kind == Spec::file) {
      s.content += " staged";
      break;
    }
  }
  for (auto it = specs.begin(); it != specs.end(); ++it) {
    if (it->second.kind == Spec::symlink) {
      specs.erase(it);
      break;
    }
  }
  Spec added = spec(Spec::file, 0644);
  added.sec = 1'700'000'000;
  added.nsec = 7;
  added.content = "added\n";
  specs["added"] = added;
  specs[""].sec += 5;
  return specs;
}

// What the test compares: every attribute, except where a tree cannot help differing. The
// root's link count follows its subdirectories, equal here.
std::string differences(const fs::path& want, const fs::path& got) {
  return compare_dumps(dump_tree(want), dump_tree(got));
}

TEST(Fidelity, ApplyAllEqualsTheStagedTreeAndResetTheBootedOne) {
  uint64_t seed =
      std::getenv("LIVEFS_SEED") != nullptr
          ? std::strtoull(std::getenv("LIVEFS_SEED"), nullptr, 10)
          : static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
  SCOPED_TRACE("LIVEFS_SEED=" + std::to_string(seed));
  std::printf("LIVEFS_SEED=%llu\n", static_cast<unsigned long long>(seed));
  Rng rng(seed);
  LiveWorld w;
  Specs booted = random_booted(rng);
  Specs staged = random_staged(rng, booted);
  fs::remove(w.booted);
  fs::remove(w.staged);
  materialize(w.booted, booted);
  materialize(w.staged, staged);
  ASSERT_NE(differences(w.booted, w.staged), "");

  Ran m = w.mount();
  ASSERT_EQ(m.status, 0) << m.out;
  ASSERT_EQ(differences(w.booted, w.mnt), "") << "the view before any apply";

  Ran d = w.cmd("diff", "--json");
  ASSERT_EQ(d.status, 0) << d.out;
  size_t changes = nlohmann::json::parse(d.out)["changes"].size();
  EXPECT_GT(changes, 20u) << d.out;

  Ran a = w.cmd("apply", "--all --allow-replace");
  ASSERT_EQ(a.status, 0) << a.out;
  EXPECT_EQ(differences(w.staged, w.mnt), "") << "after apply --all";
  Ran after = w.cmd("diff", "--json");
  ASSERT_EQ(after.status, 0) << after.out;
  EXPECT_EQ(nlohmann::json::parse(after.out)["changes"].size(), 0u) << after.out;

  Ran r = w.cmd("reset");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(differences(w.booted, w.mnt), "") << "after reset";
}

// The kernel enforces POSIX ACLs through the view as on the booted file system: a user the
// ACL denies cannot read a file whose mode bits alone would let everyone read it.
TEST(Fidelity, PosixAclsAreEnforced) {
  LiveWorld w;
  write_file(w.booted / "acl/secret", "secret\n", 0644);
  write_file(w.booted / "acl/public", "public\n", 0644);
  std::string denied = acl_denying(65534);
  ASSERT_EQ(::setxattr((w.booted / "acl/secret").c_str(), "system.posix_acl_access", denied.data(),
                       denied.size(), 0),
            0)
      << std::strerror(errno);
  ::chmod(w.dir.path().c_str(), 0755);  // reachable by the user below
  ASSERT_EQ(w.mount().status, 0);

  // As the user `nobody`: 0 = read, else the errno of open.
  auto read_as_nobody = [&](const fs::path& path) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
          ::setresuid(65534, 65534, 65534) != 0)
        ::_exit(100);
      int fd = ::open(path.c_str(), O_RDONLY);
      ::_exit(fd >= 0 ? 0 : errno);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  // The booted file system first, so that the test says something about the view.
  ASSERT_EQ(read_as_nobody(w.booted / "acl/secret"), EACCES);
  ASSERT_EQ(read_as_nobody(w.booted / "acl/public"), 0);
  EXPECT_EQ(read_as_nobody(w.mnt / "acl/secret"), EACCES);
  EXPECT_EQ(read_as_nobody(w.mnt / "acl/public"), 0);
}

}  // namespace
}  // namespace livefs::e2e
