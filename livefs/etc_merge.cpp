// The /etc merge: plan (a read-only walk of the two defaults), merge (backups and manifest
// first, then /etc), undo (reverse order, idempotent) and start-up recovery.
#include "livefs/etc_merge.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <map>
#include <optional>

#include "common/atomic_file.h"
#include "common/log.h"
#include "common/unique_fd.h"

// Inline: the fuzz target links this file with the common library only.
#define XXH_INLINE_ALL
#include <xxhash.h>

namespace livefs::etc {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> log() { return livefs::logger("etc"); }

constexpr const char* kTempPrefix = ".livefs-etc-";
constexpr const char* kManifestHeader = "livefs-etc-undo 1";

// ---- reading an entry ----------------------------------------------------------------------

struct Meta {
  struct stat st {};
  std::string target;                         // symlinks
  std::map<std::string, std::string> xattrs;  // name -> value
};

Result<std::map<std::string, std::string>> read_xattrs(const fs::path& p) {
  std::map<std::string, std::string> out;
  std::string names(1024, '\0');
  ssize_t n;
  for (;;) {
    n = ::llistxattr(p.c_str(), names.data(), names.size());
    if (n >= 0) break;
    if (errno == ENOTSUP) return out;
    if (errno != ERANGE) return fail_errno("llistxattr(" + p.string() + ")");
    ssize_t want = ::llistxattr(p.c_str(), nullptr, 0);
    if (want < 0) return fail_errno("llistxattr(" + p.string() + ")");
    names.resize(static_cast<size_t>(want) + 1);
  }
  for (size_t i = 0; i < static_cast<size_t>(n);) {
    std::string name(names.c_str() + i);
    i += name.size() + 1;
    if (name.empty()) continue;
    std::string value(256, '\0');
    for (;;) {
      ssize_t v = ::lgetxattr(p.c_str(), name.c_str(), value.data(), value.size());
      if (v >= 0) {
        value.resize(static_cast<size_t>(v));
        break;
      }
      if (errno == ENODATA) break;
      if (errno != ERANGE) return fail_errno("lgetxattr(" + p.string() + ", " + name + ")");
      ssize_t want = ::lgetxattr(p.c_str(), name.c_str(), nullptr, 0);
      if (want < 0) return fail_errno("lgetxattr(" + p.string() + ", " + name + ")");
      value.resize(static_cast<size_t>(want));
    }
    out[name] = std::move(value);
  }
  return out;
}

// nullopt when nothing is there.
Result<std::optional<Meta>> read_meta(const fs::path& p) {
  Meta m;
  if (::lstat(p.c_str(), &m.st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return std::optional<Meta>();
    return fail_errno("lstat(" + p.string() + ")");
  }
  if (S_ISLNK(m.st.st_mode)) {
    std::string buf(static_cast<size_t>(m.st.st_size) + 1, '\0');
    ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
    if (n < 0) return fail_errno("readlink(" + p.string() + ")");
    buf.resize(static_cast<size_t>(n));
    m.target = std::move(buf);
  }
  auto x = read_xattrs(p);
  if (!x) return std::unexpected(x.error());
  m.xattrs = std::move(*x);
  return std::optional<Meta>(std::move(m));
}

Result<bool> same_content(const fs::path& a, const fs::path& b) {
  UniqueFd fa(::open(a.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fa) return fail_errno("open(" + a.string() + ")");
  UniqueFd fb(::open(b.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fb) return fail_errno("open(" + b.string() + ")");
  std::string ba(1 << 16, '\0'), bb(1 << 16, '\0');
  for (;;) {
    ssize_t na = ::read(fa.get(), ba.data(), ba.size());
    if (na < 0) return fail_errno("read(" + a.string() + ")");
    size_t got = 0;
    while (got < static_cast<size_t>(na)) {
      ssize_t nb = ::read(fb.get(), bb.data() + got, static_cast<size_t>(na) - got);
      if (nb < 0) return fail_errno("read(" + b.string() + ")");
      if (nb == 0) return false;
      got += static_cast<size_t>(nb);
    }
    if (na == 0) {
      char c;
      ssize_t nb = ::read(fb.get(), &c, 1);
      if (nb < 0) return fail_errno("read(" + b.string() + ")");
      return nb == 0;
    }
    if (std::memcmp(ba.data(), bb.data(), static_cast<size_t>(na)) != 0) return false;
  }
}

// Equal as the merge sees them: type, permissions, owner, xattrs, link target, content.
// Times are not compared (a checkout's are not the booted deployment's).
Result<bool> same_entry(const Meta& a, const fs::path& pa, const Meta& b, const fs::path& pb) {
  if (a.st.st_mode != b.st.st_mode || a.st.st_uid != b.st.st_uid || a.st.st_gid != b.st.st_gid ||
      a.xattrs != b.xattrs)
    return false;
  if (S_ISLNK(a.st.st_mode)) return a.target == b.target;
  if (S_ISREG(a.st.st_mode)) {
    if (a.st.st_size != b.st.st_size) return false;
    return same_content(pa, pb);
  }
  if (S_ISCHR(a.st.st_mode) || S_ISBLK(a.st.st_mode)) return a.st.st_rdev == b.st.st_rdev;
  return true;
}

// What undo compares with what the merge installed: an XXH3-128 over type, mode, owner,
// xattrs and content (or link target, device number), as 32 hex digits; "" when nothing is
// there. Times and the inode are left out: undo puts them back itself, and a restore that
// was cut short must still match.
Result<std::string> fingerprint(const fs::path& p) {
  auto m = read_meta(p);
  if (!m) return std::unexpected(m.error());
  if (!*m) return std::string();
  const Meta& meta = **m;
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  if (!state || XXH3_128bits_reset(state.get()) != XXH_OK) return fail(ENOMEM, "XXH3 state");
  auto feed = [&](std::string_view bytes) {
    uint64_t n = bytes.size();
    XXH3_128bits_update(state.get(), &n, sizeof n);
    XXH3_128bits_update(state.get(), bytes.data(), bytes.size());
  };
  feed(std::to_string(meta.st.st_mode) + " " + std::to_string(meta.st.st_uid) + " " +
       std::to_string(meta.st.st_gid));
  for (const auto& [name, value] : meta.xattrs) {
    feed(name);
    feed(value);
  }
  if (S_ISLNK(meta.st.st_mode)) feed(meta.target);
  if (S_ISCHR(meta.st.st_mode) || S_ISBLK(meta.st.st_mode)) feed(std::to_string(meta.st.st_rdev));
  if (S_ISREG(meta.st.st_mode)) {
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) return fail_errno("open(" + p.string() + ")");
    std::string buf(1 << 16, '\0');
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0) return fail_errno("read(" + p.string() + ")");
      if (n == 0) break;
      XXH3_128bits_update(state.get(), buf.data(), static_cast<size_t>(n));
    }
  }
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(state.get()));
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : canon.digest) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Result<std::vector<std::string>> list_dir(const fs::path& p) {
  std::vector<std::string> names;
  DIR* d = ::opendir(p.c_str());
  if (d == nullptr) return fail_errno("opendir(" + p.string() + ")");
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return std::unexpected(make_error(err, "readdir(" + p.string() + ")"));
  std::sort(names.begin(), names.end());
  return names;
}

std::string join(const std::string& rel, const std::string& name) {
  return rel.empty() ? name : rel + "/" + name;
}

fs::path at(const fs::path& root, const std::string& rel) {
  return rel.empty() ? root : root / rel;
}

std::string parent_of(const std::string& rel) {
  size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

// ---- planning ------------------------------------------------------------------------------

struct Planner {
  fs::path b_root, s_root, l_root;
  Plan plan;

  void conflict(const std::string& rel, std::string why) {
    plan.actions.push_back({ActionKind::conflict, rel, std::move(why)});
  }

  // Whether the parent of an entry is a directory in each tree. An entry is read only where
  // its parent is: below a symlink (or anything else) it is not in that tree, and reading
  // the path would follow the symlink out of it. `live_after`: whether the live parent is
  // a directory after the merge (it may be one the merge adds).
  struct Parents {
    bool b = true, s = true, l = true, live_after = true;
  };

  // Returns whether `rel` is gone from /etc after the merge (for a removed directory: all
  // of its entries went).
  Result<bool> visit(const std::string& rel, Parents in) {
    fs::path bp = at(b_root, rel), sp = at(s_root, rel), lp = at(l_root, rel);
    auto read_if = [](bool parent, const fs::path& p) -> Result<std::optional<Meta>> {
      if (!parent) return std::optional<Meta>();
      return read_meta(p);
    };
    auto rb = read_if(in.b, bp);
    if (!rb) return std::unexpected(rb.error());
    auto rs = read_if(in.s, sp);
    if (!rs) return std::unexpected(rs.error());
    auto rl = read_if(in.l, lp);
    if (!rl) return std::unexpected(rl.error());
    std::optional<Meta> b = std::move(*rb), s = std::move(*rs), l = std::move(*rl);
    auto is_dir = [](const std::optional<Meta>& m) { return m && S_ISDIR(m->st.st_mode); };
    auto supported = [](const std::optional<Meta>& m) {
      return !m || S_ISDIR(m->st.st_mode) || S_ISREG(m->st.st_mode) || S_ISLNK(m->st.st_mode);
    };
    auto eq = [&](const std::optional<Meta>& x, const fs::path& px, const std::optional<Meta>& y,
                  const fs::path& py) -> Result<bool> {
      if (!x || !y) return !x && !y;
      return same_entry(*x, px, *y, py);
    };
    auto b_eq_s = eq(b, bp, s, sp);
    if (!b_eq_s) return std::unexpected(b_eq_s.error());
    auto l_eq_b = eq(l, lp, b, bp);
    if (!l_eq_b) return std::unexpected(l_eq_b.error());
    auto l_eq_s = eq(l, lp, s, sp);
    if (!l_eq_s) return std::unexpected(l_eq_s.error());

    // Whether the live entry is a directory once this entry is merged, and what to do.
    bool live_dir = is_dir(l);
    std::optional<Action> act;  // pushed before the children (after them for a removal)
    bool removal = false;
    if (!rel.empty() && !*b_eq_s && !*l_eq_s) {
      if (!supported(b) || !supported(s) || !supported(l)) {
        conflict(rel, "not a file, symlink or directory: not merged");
      } else if (!in.live_after) {
        conflict(rel, "its directory is not a directory in /etc");
      } else if (!*l_eq_b) {
        conflict(rel, !l   ? "removed by the administrator"
                      : !b ? "a new default, but the administrator made this path"
                           : "changed by the administrator");
      } else if (!s) {
        removal = true;  // l equals b: a default that was never changed
      } else if (l && (is_dir(l) != is_dir(s))) {
        conflict(rel, "a directory would replace a file or the reverse: not merged");
      } else {
        act = Action{l ? ActionKind::update : ActionKind::add, rel, ""};
        live_dir = is_dir(s);
      }
    }
    if (act) plan.actions.push_back(*act);

    // The entries of a directory of either default.
    bool all_gone = true;
    if (is_dir(b) || is_dir(s)) {
      std::set<std::string> names;
      for (const auto* side : {&b, &s}) {
        if (!is_dir(*side)) continue;
        auto list = list_dir(side == &b ? bp : sp);
        if (!list) return std::unexpected(list.error());
        names.insert(list->begin(), list->end());
      }
      for (const auto& name : names) {
        auto gone = visit(join(rel, name), {is_dir(b), is_dir(s), is_dir(l), live_dir});
        if (!gone) return std::unexpected(gone.error());
        if (!*gone) all_gone = false;
      }
    }
    if (removal) {
      if (is_dir(l)) {
        // Entries the administrator added (in no default) keep the directory.
        auto list = list_dir(lp);
        if (!list) return std::unexpected(list.error());
        for (const auto& name : *list) {
          auto bm = read_meta(bp / name);
          if (!bm) return std::unexpected(bm.error());
          if (!*bm) all_gone = false;
        }
        if (!all_gone) {
          conflict(rel, "a removed default directory that still holds entries: kept");
          return false;
        }
      }
      plan.actions.push_back({ActionKind::remove, rel, ""});
      return true;
    }
    if (!l) return !act;  // nothing there, and nothing added
    return false;
  }
};

// ---- writing -------------------------------------------------------------------------------

// Exactly what temp_name() makes: an administrator's ".livefs-etc-notes" is not one.
bool is_temp_name(std::string_view name) {
  if (!name.starts_with(kTempPrefix)) return false;
  name.remove_prefix(std::strlen(kTempPrefix));
  size_t dash = name.find('-');
  auto digits = [](std::string_view d) {
    return !d.empty() && d.find_first_not_of("0123456789") == std::string_view::npos;
  };
  return dash != std::string_view::npos && digits(name.substr(0, dash)) &&
         digits(name.substr(dash + 1));
}

std::string temp_name() {
  static std::atomic<uint64_t> counter{0};
  return std::string(kTempPrefix) + std::to_string(::getpid()) + "-" +
         std::to_string(counter.fetch_add(1));
}

Status fsync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("open(" + dir.string() + ")");
  if (::fsync(fd.get()) != 0) return fail_errno("fsync(" + dir.string() + ")");
  return {};
}

// Makes the xattrs of `p` exactly `want` (an entry made here may have been given some, e.g.
// a default ACL's or the file system's SELinux label).
Status set_xattrs(const fs::path& p, const std::map<std::string, std::string>& want) {
  auto have = read_xattrs(p);
  if (!have) return std::unexpected(have.error());
  for (const auto& [name, value] : *have) {
    if (want.contains(name)) continue;
    if (::lremovexattr(p.c_str(), name.c_str()) != 0 && errno != ENODATA) {
      // A label the file system gives every file cannot be taken away: it stays.
      if (name == "security.selinux") continue;
      return fail_errno("lremovexattr(" + p.string() + ", " + name + ")");
    }
  }
  for (const auto& [name, value] : want) {
    auto it = have->find(name);
    if (it != have->end() && it->second == value) continue;
    if (::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0) != 0)
      return fail_errno("lsetxattr(" + p.string() + ", " + name + ")");
  }
  return {};
}

// Owner, then permissions (a chown clears set-id bits), xattrs, times: as `m` has them.
Status set_meta(const fs::path& p, const Meta& m) {
  if (::lchown(p.c_str(), m.st.st_uid, m.st.st_gid) != 0)
    return fail_errno("lchown(" + p.string() + ")");
  // Not following: a directory changed in place may have been replaced by a symlink since.
  if (!S_ISLNK(m.st.st_mode) &&
      ::fchmodat(AT_FDCWD, p.c_str(), m.st.st_mode & 07777, AT_SYMLINK_NOFOLLOW) != 0)
    return fail_errno("chmod(" + p.string() + ")");
  if (auto st = set_xattrs(p, m.xattrs); !st) return st;
  timespec times[2] = {m.st.st_atim, m.st.st_mtim};
  if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    return fail_errno("utimensat(" + p.string() + ")");
  return {};
}

Status copy_data(const fs::path& from, int out, const fs::path& to) {
  UniqueFd in(::open(from.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!in) return fail_errno("open(" + from.string() + ")");
  std::string buf(1 << 16, '\0');
  for (;;) {
    ssize_t n = ::read(in.get(), buf.data(), buf.size());
    if (n < 0) return fail_errno("read(" + from.string() + ")");
    if (n == 0) return {};
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
      if (w < 0) return fail_errno("write(" + to.string() + ")");
      done += w;
    }
  }
}

// Puts a copy of `from` (described by `m`) at `to`: made under a temporary name in the same
// directory with everything set and synced, then renamed over `to` (a directory is renamed
// only onto nothing), and the directory synced.
Status install(const fs::path& from, const Meta& m, const fs::path& to) {
  fs::path dir = to.parent_path();
  fs::path tmp = dir / temp_name();
  auto made = [&]() -> Status {
    if (S_ISREG(m.st.st_mode)) {
      UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!fd) return fail_errno("create(" + tmp.string() + ")");
      if (auto st = copy_data(from, fd.get(), tmp); !st) return st;
      if (auto st = set_meta(tmp, m); !st) return st;
      if (::fsync(fd.get()) != 0) return fail_errno("fsync(" + tmp.string() + ")");
      return {};
    }
    if (S_ISLNK(m.st.st_mode)) {
      if (::symlink(m.target.c_str(), tmp.c_str()) != 0)
        return fail_errno("symlink(" + tmp.string() + ")");
      return set_meta(tmp, m);
    }
    if (S_ISDIR(m.st.st_mode)) {
      if (::mkdir(tmp.c_str(), 0700) != 0) return fail_errno("mkdir(" + tmp.string() + ")");
      if (auto st = set_meta(tmp, m); !st) return st;
      return fsync_dir(tmp);
    }
    return fail(ENOTSUP, from.string() + ": not a file, symlink or directory");
  }();
  if (made && ::rename(tmp.c_str(), to.c_str()) != 0)
    made = fail_errno("rename(" + to.string() + ")");
  if (!made) {
    if (::unlink(tmp.c_str()) != 0 && errno == EISDIR) ::rmdir(tmp.c_str());
    ::rmdir(tmp.c_str());
    return made;
  }
  return fsync_dir(dir);
}

// A directory whose metadata changes in place (its entries stay).
Status update_dir(const fs::path& p, const Meta& m) {
  if (auto st = set_meta(p, m); !st) return st;
  return fsync_dir(p);
}

Status remove_entry(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return fail_errno("lstat(" + p.string() + ")");
  }
  int rc = S_ISDIR(st.st_mode) ? ::rmdir(p.c_str()) : ::unlink(p.c_str());
  if (rc != 0 && errno != ENOENT) return fail_errno("remove(" + p.string() + ")");
  return fsync_dir(p.parent_path());
}

// Makes `to` what `m` (read from `from`) describes, atomically for a file or symlink.
Status put(const fs::path& from, const Meta& m, const fs::path& to) {
  auto now = read_meta(to);
  if (!now) return std::unexpected(now.error());
  if (*now && S_ISDIR((*now)->st.st_mode)) {
    if (S_ISDIR(m.st.st_mode)) return update_dir(to, m);
    if (::rmdir(to.c_str()) != 0) return fail_errno("rmdir(" + to.string() + ")");
  } else if (*now && S_ISDIR(m.st.st_mode)) {
    if (::unlink(to.c_str()) != 0) return fail_errno("unlink(" + to.string() + ")");
  }
  return install(from, m, to);
}

// ---- reaching an entry of /etc without following a symlink --------------------------------

// The directory `rel` below `root` (`root` itself for ""), opened one component at a time
// without following a symlink: one that replaced a directory of /etc (since the plan, or
// since the merge for its undo) is refused, never followed out of /etc.
Result<UniqueFd> open_dir_beneath(const fs::path& root, std::string_view rel) {
  UniqueFd fd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return fail_errno("open(" + root.string() + ")");
  fs::path shown = root;
  for (size_t i = 0; i < rel.size();) {
    size_t slash = std::min(rel.find('/', i), rel.size());
    std::string name(rel.substr(i, slash - i));
    i = slash + 1;
    shown /= name;
    UniqueFd next(::openat(fd.get(), name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      if (errno == ENOTDIR || errno == ELOOP)
        return fail(ENOTDIR, shown.string() + ": not a directory (a symlink is not followed)");
      return fail_errno("open(" + shown.string() + ")");
    }
    fd = std::move(next);
  }
  return fd;
}

// An entry of the live directory: its parent held open, and `path` naming the entry
// through that descriptor, so that the path-based calls on it (none of which writes
// through a final symlink) act on the entry itself in that very directory.
struct Beneath {
  UniqueFd dir;
  fs::path path;   // /proc/self/fd/N/NAME
  fs::path shown;  // root/rel, for messages

  // The error with the descriptor's path replaced by the directory's.
  Error named(Error e) const {
    std::string proc = path.parent_path().string(), real = shown.parent_path().string();
    for (size_t at = 0; (at = e.context.find(proc, at)) != std::string::npos; at += real.size())
      e.context.replace(at, proc.size(), real);
    return e;
  }
};

Result<Beneath> beneath(const fs::path& root, const std::string& rel) {
  size_t slash = rel.rfind('/');
  auto dir =
      open_dir_beneath(root, slash == std::string::npos ? std::string_view()
                                                        : std::string_view(rel).substr(0, slash));
  if (!dir) return std::unexpected(dir.error());
  Beneath b;
  b.path = fs::path("/proc/self/fd") / std::to_string(dir->get()) /
           (slash == std::string::npos ? rel : rel.substr(slash + 1));
  b.dir = std::move(*dir);
  b.shown = root / rel;
  return b;
}

// ---- the manifest: "<op> <backup index> <hex path>" lines ----------------------------------

std::string hex(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

std::optional<std::string> unhex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  std::string out;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < text.size(); i += 2) {
    int a = val(text[i]), b = val(text[i + 1]);
    if (a < 0 || b < 0) return std::nullopt;
    out += static_cast<char>(a * 16 + b);
  }
  return out;
}

// A path the manifest may name under the live directory: relative, and every component a
// name (never empty, "." or ".."), so that live / path stays below live.
bool below(std::string_view path) {
  if (path.empty() || path.find('\0') != std::string_view::npos) return false;
  for (size_t i = 0; i <= path.size();) {
    size_t slash = std::min(path.find('/', i), path.size());
    std::string_view name = path.substr(i, slash - i);
    if (name.empty() || name == "." || name == "..") return false;
    i = slash + 1;
  }
  return true;
}

// A whole field of decimal digits (with a '-' first when `T` is signed).
template <class T>
std::optional<T> number(std::string_view text) {
  T value{};
  if (text.empty() || text[0] == '+') return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

Result<std::optional<UndoManifest>> read_manifest(const fs::path& undo_dir) {
  auto text = read_file_limited(undo_dir / "manifest", size_t{1} << 30);
  if (!text) {
    if (text.error().code == ENOENT) return std::optional<UndoManifest>();
    return std::unexpected(text.error());
  }
  auto m = parse_undo_manifest(*text, (undo_dir / "manifest").string());
  if (!m) return std::unexpected(m.error());
  return std::optional<UndoManifest>(std::move(*m));
}
// Removes an undo directory: the manifest first (durably), so that what is left of a removal
// cut short is never read as an undo to do again.
Status drop_undo_dir(const fs::path& undo_dir) {
  if (::unlink((undo_dir / "manifest").c_str()) != 0 && errno != ENOENT)
    return fail_errno("unlink(" + (undo_dir / "manifest").string() + ")");
  if (auto st = fsync_dir(undo_dir); !st) return st;
  std::error_code ec;
  fs::remove_all(undo_dir, ec);
  if (ec) return fail(ec.value(), "remove(" + undo_dir.string() + ")");
  return fsync_dir(undo_dir.parent_path());
}

// Leftover temporaries of a merge or undo that was cut short.
void sweep_temps(const fs::path& dir) {
  auto names = list_dir(dir);
  if (!names) return;
  for (const auto& n : *names) {
    if (!is_temp_name(n)) continue;
    fs::path p = dir / n;
    if (::unlink(p.c_str()) != 0 && errno == EISDIR) {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  }
}

}  // namespace

const char* action_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::update:
      return "update";
    case ActionKind::add:
      return "add";
    case ActionKind::remove:
      return "remove";
    case ActionKind::conflict:
      return "conflict";
  }
  return "?";
}

std::string encode_undo_manifest(const UndoManifest& m) {
  std::string out =
      std::string(kManifestHeader) + "\nlive " + hex(m.live) + "\ntag " + hex(m.tag) + "\n";
  for (const auto& s : m.steps)
    out += std::string(action_name(s.kind)) + " " + std::to_string(s.index) + " " + hex(s.path) +
           (s.installed.empty() ? "" : " " + s.installed) + "\n";
  for (const auto& d : m.dir_times)
    out += "dirtime " + std::to_string(d.sec) + "." + std::to_string(d.nsec) + " " + hex(d.path) +
           "\n";
  return out + "end\n";
}

Result<UndoManifest> parse_undo_manifest(std::string_view text, std::string_view where) {
  auto bad = [&](const std::string& why) { return fail(EBADMSG, std::string(where) + ": " + why); };
  std::vector<std::string_view> lines;
  for (size_t i = 0; i < text.size();) {
    size_t nl = text.find('\n', i);
    if (nl == std::string_view::npos) return bad("no final newline");
    lines.push_back(text.substr(i, nl - i));
    i = nl + 1;
  }
  if (lines.size() < 4 || lines[0] != kManifestHeader || lines.back() != "end")
    return bad("not an undo manifest");
  auto word = [](std::string_view line, std::string_view key) -> std::optional<std::string> {
    if (!line.starts_with(key) || line.substr(key.size(), 1) != " ") return std::nullopt;
    return unhex(line.substr(key.size() + 1));
  };
  UndoManifest m;
  auto live = word(lines[1], "live");
  auto tag = word(lines[2], "tag");
  if (!live || !tag) return bad("no live directory or tag");
  // Undo writes below it: a relative one would depend on the daemon's working directory.
  if (!live->starts_with('/') || live->find('\0') != std::string::npos)
    return bad("the live directory is not an absolute path");
  m.live = std::move(*live);
  m.tag = std::move(*tag);
  for (size_t i = 3; i + 1 < lines.size(); ++i) {
    std::string_view l = lines[i];
    auto line_bad = [&](const std::string& why) {
      return bad("line " + std::to_string(i + 1) + ": " + why);
    };
    size_t sp1 = l.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : l.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return line_bad("not three fields");
    std::string_view op = l.substr(0, sp1), middle = l.substr(sp1 + 1, sp2 - sp1 - 1);
    // A step's optional fourth field: what the merge installed.
    size_t sp3 = op == "dirtime" ? std::string_view::npos : l.find(' ', sp2 + 1);
    std::string_view installed =
        sp3 == std::string_view::npos ? std::string_view() : l.substr(sp3 + 1);
    auto path = unhex(l.substr(sp2 + 1, sp3 == std::string_view::npos ? sp3 : sp3 - sp2 - 1));
    if (!path) return line_bad("the path is not lowercase hex");
    if (op == "dirtime") {
      size_t dot = middle.find('.');
      auto sec = number<int64_t>(middle.substr(0, dot));
      auto nsec =
          dot == std::string_view::npos ? std::nullopt : number<int64_t>(middle.substr(dot + 1));
      if (!sec || !nsec || *nsec < 0 || *nsec > 999'999'999) return line_bad("bad time");
      if (!path->empty() && !below(*path)) return line_bad("a path that leaves the directory");
      m.dir_times.push_back({*sec, *nsec, std::move(*path)});
      continue;
    }
    UndoStep s;
    if (op == "update")
      s.kind = ActionKind::update;
    else if (op == "add")
      s.kind = ActionKind::add;
    else if (op == "remove")
      s.kind = ActionKind::remove;
    else
      return line_bad("unknown step");
    auto index = number<uint64_t>(middle);
    if (!index) return line_bad("bad backup index");
    s.index = *index;
    if (!below(*path)) return line_bad("a path that leaves the directory");
    s.path = std::move(*path);
    if (sp3 != std::string_view::npos) {
      bool ok = s.kind == ActionKind::remove
                    ? installed == "none"
                    : installed.size() == 32 &&
                          installed.find_first_not_of("0123456789abcdef") == std::string::npos;
      if (!ok) return line_bad("bad record of what was installed");
      s.installed = std::string(installed);
    }
    m.steps.push_back(std::move(s));
  }
  return m;
}

size_t Plan::count(ActionKind kind) const {
  return static_cast<size_t>(std::count_if(actions.begin(), actions.end(),
                                           [&](const Action& a) { return a.kind == kind; }));
}

bool Plan::changes() const { return actions.size() != count(ActionKind::conflict); }

Result<Plan> plan(const fs::path& booted_default, const fs::path& staged_default,
                  const fs::path& live) {
  for (const auto& [p, what] : {std::pair{booted_default, "booted default configuration"},
                                std::pair{staged_default, "staged default configuration"},
                                std::pair{live, "live configuration"}}) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return fail_errno(std::string(what) + " " + p.string());
    if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR, std::string(what) + " " + p.string());
  }
  Planner planner{booted_default, staged_default, live, {}};
  auto done = planner.visit("", {});
  if (!done) return std::unexpected(done.error());
  return std::move(planner.plan);
}

Status merge(const Plan& plan, const fs::path& staged_default, const fs::path& live,
             const fs::path& undo_dir, const std::string& tag) {
  if (::mkdir(undo_dir.c_str(), 0700) != 0) return fail_errno("mkdir(" + undo_dir.string() + ")");
  fs::path backups = undo_dir / "b";
  const fs::path root = fs::absolute(live);
  UndoManifest manifest{root.string(), tag, {}, {}};
  // The backups, then the manifest that names them: durable before /etc is touched.
  auto prepare = [&]() -> Status {
    if (auto st = fsync_dir(undo_dir.parent_path()); !st) return st;
    if (::mkdir(backups.c_str(), 0700) != 0) return fail_errno("mkdir(" + backups.string() + ")");
    uint64_t index = 0;
    for (const auto& a : plan.actions) {
      if (a.kind == ActionKind::conflict) continue;
      // A removal leaves nothing: whatever is there at undo was made by someone else.
      UndoStep step{a.kind, index++, a.path, a.kind == ActionKind::remove ? "none" : ""};
      if (a.kind != ActionKind::add) {
        auto at = beneath(root, a.path);
        if (!at) return std::unexpected(with_context(at.error(), "etc merge"));
        auto m = read_meta(at->path);
        if (!m) return std::unexpected(at->named(m.error()));
        if (!*m)
          return fail(ENOENT, "etc merge: " + at->shown.string() + " went away since the plan");
        if (auto st = install(at->path, **m, backups / std::to_string(step.index)); !st)
          return std::unexpected(at->named(st.error()));
      }
      manifest.steps.push_back(std::move(step));
      std::string parent = parent_of(a.path);
      if (std::none_of(manifest.dir_times.begin(), manifest.dir_times.end(),
                       [&](const UndoDirTime& d) { return d.path == parent; })) {
        struct stat st {};
        auto dir = open_dir_beneath(root, parent);
        // A parent the merge adds has no time to put back.
        if (dir && ::fstat(dir->get(), &st) == 0)
          manifest.dir_times.push_back({st.st_mtim.tv_sec, st.st_mtim.tv_nsec, parent});
      }
    }
    if (auto st = fsync_dir(backups); !st) return st;
    return write_file_atomic(undo_dir / "manifest", encode_undo_manifest(manifest), 0600);
  }();
  if (!prepare) {
    std::error_code ec;
    fs::remove_all(undo_dir, ec);
    return prepare;
  }
  for (auto& s : manifest.steps) {
    auto at = beneath(root, s.path);
    Status done;
    if (!at) {
      done = std::unexpected(at.error());
    } else if (s.kind == ActionKind::remove) {
      done = remove_entry(at->path);
    } else {
      fs::path sp = staged_default / s.path;
      auto m = read_meta(sp);
      if (!m)
        done = std::unexpected(m.error());
      else if (!*m)
        done = fail(ENOENT, "etc merge: " + sp.string() + " went away");
      else
        done = put(sp, **m, at->path);
      if (done) {
        // What this step left, read back from /etc (not assumed from the default), for undo
        // to tell it from a later edit.
        auto fp = fingerprint(at->path);
        if (fp)
          s.installed = std::move(*fp);
        else
          done = std::unexpected(fp.error());
      }
    }
    if (!done) {
      Error e = with_context(at ? at->named(done.error()) : done.error(), "etc merge");
      if (auto st = undo(undo_dir); !st)
        log()->error("undoing the failed merge: {} (kept in {})", st.error().message(),
                     undo_dir.string());
      return std::unexpected(e);
    }
  }
  // A crash before this leaves the manifest without the records: undo then restores every
  // step, as it did before they existed.
  if (auto st = write_file_atomic(undo_dir / "manifest", encode_undo_manifest(manifest), 0600); !st)
    log()->warn("etc merge: recording what was installed: {}", st.error().message());
  return {};
}

Status undo(const fs::path& undo_dir, std::vector<std::string>* kept) {
  auto manifest = read_manifest(undo_dir);
  if (!manifest) return std::unexpected(manifest.error());
  if (!*manifest) return drop_undo_dir(undo_dir);
  const UndoManifest& m = **manifest;
  const fs::path live = m.live;
  Status first;
  std::set<std::string> dirs;  // where a temporary may be left
  for (auto it = m.steps.rbegin(); it != m.steps.rend(); ++it) {
    dirs.insert(parent_of(it->path));
    auto at = beneath(live, it->path);
    Status done;
    fs::path bp = undo_dir / "b" / std::to_string(it->index);
    if (at && !it->installed.empty()) {
      // Left as it is when it is no longer what the merge made: the administrator changed it
      // since (or, for a removal, made something there). One that equals the backup is an
      // earlier undo's work: restored again, for its times.
      auto now = fingerprint(at->path);
      if (!now) {
        done = std::unexpected(now.error());
      } else if (!(it->kind == ActionKind::add && now->empty()) &&
                 *now != (it->kind == ActionKind::remove ? "" : it->installed)) {
        auto before = it->kind == ActionKind::add ? Result<std::string>() : fingerprint(bp);
        if (!before || before->empty() || *before != *now) {
          log()->warn("undo {}: changed since the merge, kept", (live / it->path).string());
          if (kept != nullptr) kept->push_back(it->path + " (changed since the merge)");
          continue;
        }
      }
    }
    if (!done) {
      // The entry could not be read to compare: reported below, never overwritten.
    } else if (!at) {
      // What the merge added went with its directory, removed by an undo before this one.
      if (it->kind == ActionKind::add && at.error().code == ENOENT) continue;
      done = std::unexpected(at.error());
    } else if (it->kind == ActionKind::add) {
      done = remove_entry(at->path);
      // A directory the merge added that now holds what the administrator put there: that
      // stays, and so does the directory; removing it would lose their files, and failing
      // would stop this undo (and every one below it) for good.
      if (!done && (done.error().code == ENOTEMPTY || done.error().code == EEXIST)) {
        log()->warn("undo {}: not empty, kept", (live / it->path).string());
        if (kept != nullptr) kept->push_back(it->path + " (added by the merge, no longer empty)");
        done = {};
      }
    } else {
      auto bm = read_meta(bp);
      if (!bm)
        done = std::unexpected(bm.error());
      else if (!*bm)
        done = fail(ENOENT, "backup " + bp.string() + " is missing");
      else
        done = put(bp, **bm, at->path);
    }
    if (!done) {
      Error e = at ? at->named(done.error()) : done.error();
      log()->error("undo {}: {}", (live / it->path).string(), e.message());
      if (first) first = std::unexpected(with_context(e, "etc undo"));
    }
  }
  for (const auto& d : dirs) {
    if (auto fd = open_dir_beneath(live, d))
      sweep_temps(fs::path("/proc/self/fd") / std::to_string(fd->get()));
  }
  // Times last: restoring entries changed the times of the directories that hold them.
  auto set_mtime = [&](const std::string& rel, timespec mtime) {
    timespec times[2] = {{0, UTIME_OMIT}, mtime};
    auto at = rel.empty() ? Result<Beneath>() : beneath(live, rel);
    if (!at) return;  // gone, or no longer a directory of /etc: nothing to put back
    const fs::path& p = rel.empty() ? live : at->path;
    if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0 && errno != ENOENT)
      log()->warn("undo: time of {}: {}", (live / rel).string(), std::strerror(errno));
  };
  for (const auto& s : m.steps) {
    if (s.kind == ActionKind::add) continue;
    struct stat st {};
    fs::path bp = undo_dir / "b" / std::to_string(s.index);
    if (::lstat(bp.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) set_mtime(s.path, st.st_mtim);
  }
  for (const auto& d : m.dir_times) set_mtime(d.path, timespec{d.sec, d.nsec});
  if (!first) return first;
  return drop_undo_dir(undo_dir);
}

Result<std::string> undo_tag(const fs::path& undo_dir) {
  auto m = read_manifest(undo_dir);
  if (!m) return std::unexpected(m.error());
  return *m ? (*m)->tag : std::string();
}

Result<std::vector<uint64_t>> recover(const fs::path& root,
                                      const std::set<uint64_t>& live_generations,
                                      const std::string& tag) {
  std::vector<uint64_t> undone;
  auto names = list_dir(root);
  if (!names) {
    if (names.error().code == ENOENT) return undone;
    return std::unexpected(names.error());
  }
  // The highest generation first: each merge was made over the ones below it.
  std::vector<std::pair<uint64_t, std::string>> found;
  for (const auto& name : *names) {
    if (name.empty() || name.size() > 19 ||
        name.find_first_not_of("0123456789") != std::string::npos)
      continue;
    found.emplace_back(std::strtoull(name.c_str(), nullptr, 10), name);
  }
  std::sort(found.rbegin(), found.rend());
  // One undo directory that fails does not keep the others from being undone; the failures
  // are returned together.
  std::string failures;
  auto failed = [&](uint64_t generation, const Error& e) {
    log()->error("etc undo of generation {}: {}", generation, e.message());
    failures += (failures.empty() ? "" : "; ") +
                ("generation " + std::to_string(generation) + ": " + e.message());
  };
  for (const auto& [generation, name] : found) {
    fs::path dir = root / name;
    auto manifest = read_manifest(dir);
    if (!manifest) {
      failed(generation, manifest.error());
      continue;
    }
    if (*manifest && (*manifest)->tag != tag) {
      fs::path aside = root / (name + ".aside-" + std::to_string(::time(nullptr)));
      log()->warn("etc undo of generation {} belongs to another booted tree: kept as {}",
                  generation, aside.string());
      if (::rename(dir.c_str(), aside.c_str()) != 0)
        failed(generation, make_error(errno, "rename(" + dir.string() + ")"));
      continue;
    }
    if (live_generations.contains(generation) && *manifest) continue;
    if (*manifest)
      log()->warn("etc: generation {} is not live: its /etc merge is undone", generation);
    if (auto st = undo(dir); !st) {
      failed(generation, st.error());
      continue;
    }
    if (*manifest) undone.push_back(generation);
  }
  if (!failures.empty()) return fail(EIO, "etc undo: " + failures);
  return undone;
}

}  // namespace livefs::etc
