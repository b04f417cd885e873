// The libfuse low-level ops (thin: decode, ask the View and the node table, reply), the
// mount and loop, and switching Views.
//
// Everything served is immutable (the booted tree is read-only, objects are write-once,
// and a node's snapshot never changes), so entries, attributes and file pages may be
// cached by the kernel for as long as it likes: long timeouts, keep_cache, cache_readdir.
// The only source of change is switch_to(), which invalidates exactly what it changed.
#include "overlay/filesystem.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>

#include "common/log.h"
#include "store/diff.h"

namespace livefs::overlay {
namespace {

constexpr double kTimeout = 86400.0;  // a day: nothing served changes behind our back
// FUSE_DEV_IOC_BACKING_OPEN of <linux/fuse.h> (Linux 6.9; Debian 12's headers are older):
// registers a backing file with the connection and returns its id.
struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
constexpr unsigned long kBackingOpen = _IOW(229, 1, BackingMap);

Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

// The one place where an Error becomes an errno for the kernel. Replies even when logging
// fails (it allocates).
void reply_error(fuse_req_t req, const char* op, fuse_ino_t ino, const Error& e) {
  try {
    if (e.code == ENOENT || e.code == ENODATA || e.code == EROFS)
      logger("overlay")->debug("{} ino={}: {} ({})", op, ino, e.message(), e.code_name());
    else
      logger("overlay")->error("{} ino={}: {} ({})", op, ino, e.message(), e.code_name());
  } catch (...) {
  }
  fuse_reply_err(req, e.code != 0 ? e.code : EIO);
}

// Runs an op body; no exception crosses into libfuse (a bad_alloc becomes EIO). Bodies
// reply last, so nothing throws after their reply.
template <class Fn>
void guarded(fuse_req_t req, const char* op, fuse_ino_t ino, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& ex) {
    try {
      reply_error(req, op, ino, make_error(EIO, std::string("exception: ") + ex.what()));
    } catch (...) {
      fuse_reply_err(req, EIO);
    }
  } catch (...) {
    fuse_reply_err(req, EIO);
  }
}

// A node's current attributes: a directory is resolved again in the current view (its
// node outlives generations); anything else is served from its snapshot.
Resolved current_attrs(Filesystem& fs, const Node& node) {
  if (node.is_dir()) {
    auto r = fs.current()->resolve(node.path());
    if (r && r->is_dir()) return std::move(*r);
  }
  return node.snapshot();
}

fuse_entry_param entry_for(fuse_ino_t ino, const struct stat& st) {
  fuse_entry_param e;
  std::memset(&e, 0, sizeof e);
  e.ino = ino;
  e.attr = st;
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  return e;
}

// ---- ops -----------------------------------------------------------------------------------

void op_init(void* userdata, fuse_conn_info* conn) {
  Filesystem& fs = *static_cast<Filesystem*>(userdata);
  // opendir/releasedir need no round trip: listings come from the View, and the kernel
  // then caches readdir results as with keep_cache + cache_readdir.
  if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) fs.set_no_opendir(true);
  // Passthrough: an open names the backing file, and the kernel reads and maps it itself,
  // in its page cache (one copy of each page, read at the backing file system's speed).
  bool passthrough = false;
#ifdef FUSE_CAP_PASSTHROUGH
  if (!fs.options().passthrough) {
    fs.set_passthrough(false, "turned off (--no-passthrough)");
  } else if (!(conn->capable & FUSE_CAP_PASSTHROUGH)) {
    fs.set_passthrough(false, "the kernel offers none (Linux 6.9 or later with FUSE_PASSTHROUGH)");
  } else {
    conn->want |= FUSE_CAP_PASSTHROUGH;
    // The kernel stacks at most two file systems: backing files on overlayfs or FUSE need
    // the second level for themselves (and nothing can then be stacked over this mount).
    conn->max_backing_stack_depth =
        fs.backing_stacked() ? FUSE_BACKING_STACKED_OVER : FUSE_BACKING_STACKED_UNDER;
    fs.set_passthrough(true, "");
    passthrough = true;
  }
#else
  fs.set_passthrough(false, Filesystem::libfuse_description() + " has none (3.16 or later)");
#endif
  // Without passthrough, open/release need no round trip either: reads find the backing
  // descriptor cached in the node, and the kernel keeps the page cache of a file opened
  // without a round trip (as keep_cache). Passthrough is set up in the open reply.
  if (!passthrough && (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT)) fs.set_no_open(true);
  // Replies of file data are spliced from the backing descriptor.
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_CACHE_SYMLINKS) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  // POSIX ACLs (system.posix_acl_access / _default, as served by getxattr) are enforced by
  // the kernel, as on the booted file system; without this, default_permissions checks the
  // mode bits only.
  if (conn->capable & FUSE_CAP_POSIX_ACL) conn->want |= FUSE_CAP_POSIX_ACL;
  // Always plus: in "auto" mode the kernel asks for attributes only in the first chunk of a
  // directory, and a `find` or `ls -l` then costs one LOOKUP round trip per later entry.
  // Attributes cost the daemon next to nothing, round trips do.
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  // Pages are never invalidated by mtime checks: content never changes under a node.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

void release_backing(fuse_req_t req, int backing_id) {
#ifdef FUSE_CAP_PASSTHROUGH
  fuse_passthrough_close(req, backing_id);
#else
  (void)req, (void)backing_id;
#endif
}

// Valid replies: fuse_reply_entry (ino 0 = cached negative entry), fuse_reply_err.
// A positive reply counts one lookup on the node.
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, "lookup", parent, [&] {
    Filesystem& fs = fs_of(req);
    auto dir = fs.nodes().get(parent);
    if (!dir) return reply_error(req, "lookup", parent, make_error(ESTALE, "unknown parent"));
    auto r = fs.current()->resolve(join_path(dir->path(), name));
    if (!r) {
      if (r.error().code != ENOENT) return reply_error(req, "lookup", parent, r.error());
      fuse_entry_param negative = entry_for(0, {});
      fuse_reply_entry(req, &negative);
      return;
    }
    fuse_entry_param e = entry_for(fs.nodes().acquire(*r), r->st);
    fuse_reply_entry(req, &e);
  });
}

// Valid replies: fuse_reply_none.
// A forget that cannot be counted (out of memory building a key) leaves the node alive: a
// leak, never a freed node the kernel still holds.
// A freed node's passthrough backing id is released with it: the kernel holds the backing
// file only while it holds the inode.
void forget_node(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  try {
    if (int backing_id = fs_of(req).nodes().forget(ino, nlookup); backing_id > 0)
      release_backing(req, backing_id);
  } catch (...) {
  }
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  forget_node(req, ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) forget_node(req, forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

// Valid replies: fuse_reply_attr, fuse_reply_err.
// A version a switch replaced or removed is served with link count 0, as the kernel was told
// (see switch_to): an attribute refresh must not give its links back while it is not what
// its path serves. Only nodes a switch marked are checked against the current view.
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guarded(req, "getattr", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "getattr", ino, make_error(ESTALE, "unknown node"));
    Resolved r = current_attrs(fs, *node);
    if (!node->is_dir() && node->maybe_retired()) {
      auto now = fs.current()->resolve(node->path());
      if (!now || now->identity != node->identity()) r.st.st_nlink = 0;
    }
    fuse_reply_attr(req, &r.st, kTimeout);
  });
}

// Valid replies: fuse_reply_readlink, fuse_reply_err.
void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "readlink", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "readlink", ino, make_error(ESTALE, "unknown node"));
    auto target = fs.current()->readlink(node->snapshot());
    if (!target) return reply_error(req, "readlink", ino, target.error());
    fuse_reply_readlink(req, target->c_str());
  });
}

std::string parent_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

// A directory listing of one generation, with the inode numbers its "." and ".." are sent
// with (glibc's readdir drops entries numbered 0). With no-opendir support the kernel sends
// readdir with fh 0 and the listing is the current View's (cached per View).
struct DirHandle {
  std::string path;
  ino_t self_ino = 0;    // ".": the directory's served inode number
  ino_t parent_ino = 0;  // "..": its parent's; the root's own for the root
  std::shared_ptr<const std::vector<DirEntry>> entries;
};

// `with_parent`: look up the parent's inode number for ".." (a readdir past ".." needs none).
Result<DirHandle> open_listing(Filesystem& fs, const Node& node, bool with_parent) {
  auto view = fs.current();
  Resolved dir = current_attrs(fs, node);
  if (!dir.is_dir()) return fail(ENOTDIR, dir.path);
  auto entries = view->cached_list(dir);
  if (!entries) return std::unexpected(entries.error());
  DirHandle handle{dir.path, dir.st.st_ino, dir.st.st_ino, std::move(*entries)};
  if (with_parent) fs.prefetcher().listed(view, dir.path, *handle.entries);  // first chunk
  if (with_parent && !dir.path.empty()) {
    auto parent = view->resolve(parent_of(dir.path));
    if (parent) handle.parent_ino = parent->st.st_ino;
  }
  return handle;
}

// Valid replies: fuse_reply_open, fuse_reply_err.
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "opendir", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "opendir", ino, make_error(ESTALE, "unknown node"));
    if (fs.no_opendir()) return void(fuse_reply_err(req, ENOSYS));  // "success, never ask again"
    auto listing = open_listing(fs, *node, true);
    if (!listing) return reply_error(req, "opendir", ino, listing.error());
    auto handle = std::make_unique<DirHandle>(std::move(*listing));
    fi->fh = reinterpret_cast<uint64_t>(handle.release());
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
    if (fuse_reply_open(req, fi) != 0) delete reinterpret_cast<DirHandle*>(fi->fh);
  });
}

// Offsets: 0 is the start; "." is followed by offset 1, ".." by 2, and every entry by its
// cookie (DirEntry::cookie, above 2; the listing is in cookie order). A call at offset `off`
// sends the entries with a cookie above it, from whichever generation's listing it reads:
// those are the same names in every listing, so a switch between two readdir calls of one
// `ls` neither skips nor repeats a name present in both generations.
template <bool kPlus>
void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  guarded(req, kPlus ? "readdirplus" : "readdir", ino, [&] {
    Filesystem& fs = fs_of(req);
    DirHandle fresh;
    auto* handle = reinterpret_cast<DirHandle*>(fi->fh);
    if (handle == nullptr) {
      auto node = fs.nodes().get(ino);
      if (!node) return reply_error(req, "readdir", ino, make_error(ESTALE, "unknown node"));
      auto listing = open_listing(fs, *node, off < 2);
      if (!listing) return reply_error(req, "readdir", ino, listing.error());
      fresh = std::move(*listing);
      handle = &fresh;
    }
    // One reply buffer per thread, reused: not allocated and zeroed per request.
    thread_local std::vector<char> buf;
    if (buf.size() < size) buf.resize(size);
    size_t used = 0;
    auto view = kPlus ? fs.current() : nullptr;

    // Adds one entry; false when it does not fit (nothing added, no lookup counted).
    auto add = [&](const char* name, const struct stat& st, fuse_ino_t node, off_t next) {
      char* p = buf.data() + used;
      size_t room = size - used;
      size_t need;
      if constexpr (kPlus) {
        fuse_entry_param e = entry_for(node, st);
        need = fuse_add_direntry_plus(req, p, room, name, &e, next);
      } else {
        need = fuse_add_direntry(req, p, room, name, &st, next);
      }
      if (need > room) return false;
      used += need;
      return true;
    };
    // "." and ".." go with node 0: the kernel makes no dentry for them, counts no lookup.
    struct stat dot {};
    dot.st_mode = S_IFDIR;
    if (off < 1) {
      dot.st_ino = handle->self_ino;
      if (!add(".", dot, 0, 1)) return void(fuse_reply_buf(req, buf.data(), used));
    }
    if (off < 2) {
      dot.st_ino = handle->parent_ino;
      if (!add("..", dot, 0, 2)) return void(fuse_reply_buf(req, buf.data(), used));
    }

    const std::vector<DirEntry>& entries = *handle->entries;
    uint64_t after = off < 2 ? 2 : static_cast<uint64_t>(off);
    auto first = std::ranges::upper_bound(entries, after, {}, &DirEntry::cookie);
    for (size_t i = static_cast<size_t>(first - entries.begin()); i < entries.size();) {
      // A run of equal cookies (a 63-bit hash collision) goes out whole or not at all: a
      // resume point inside it would skip its rest. Only a run larger than a whole reply is
      // split (and its rest lost), which no real directory meets.
      size_t run_end = i + 1;
      while (run_end < entries.size() && entries[run_end].cookie == entries[i].cookie) ++run_end;
      if (run_end - i > 1 && used > 0) {
        size_t need = 0;
        for (size_t j = i; j < run_end; ++j) {
          need += kPlus
                      ? fuse_add_direntry_plus(req, nullptr, 0, entries[j].name.c_str(), nullptr, 0)
                      : fuse_add_direntry(req, nullptr, 0, entries[j].name.c_str(), nullptr, 0);
        }
        if (need > size - used) break;
      }
      bool full = false;
      for (; i < run_end && !full; ++i) {
        const DirEntry& d = entries[i];
        off_t next = static_cast<off_t>(d.cookie);
        if constexpr (kPlus) {
          auto r = view->resolve_listed(handle->path, d);
          if (!r) continue;  // gone in the current generation
          fuse_ino_t node = fs.nodes().acquire(*r);
          if (!add(d.name.c_str(), r->st, node, next)) {
            // Not sent: not counted.
            if (int backing_id = fs.nodes().forget(node, 1); backing_id > 0)
              release_backing(req, backing_id);
            full = true;
          }
        } else {
          struct stat st {};
          st.st_mode = d.type;
          st.st_ino = d.ino;
          full = !add(d.name.c_str(), st, 0, next);
        }
      }
      if (full) break;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  readdir_common<false>(req, ino, size, off, fi);
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  readdir_common<true>(req, ino, size, off, fi);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  delete reinterpret_cast<DirHandle*>(fi->fh);
  fuse_reply_err(req, 0);
}

// The node's passthrough backing id, registered on its first open from a verified
// descriptor (a corrupt object is EIO, as without passthrough). 0: this open is served
// through the daemon (the kernel refused the backing file; logged once per reason), as
// every later open of the node is.
int backing_id_for(fuse_req_t req, Filesystem& fs, const Node& node, Status& error) {
#ifdef FUSE_CAP_PASSTHROUGH
  if (int id = node.backing_id(); id != 0) return id > 0 ? id : 0;
  auto fd = fs.current()->open(node.snapshot());
  if (!fd) {
    error = std::unexpected(fd.error());
    return 0;
  }
  // The ioctl itself rather than fuse_passthrough_open, which logs every failure to stderr
  // (and may lose errno doing so).
  BackingMap map{.fd = fd->get(), .flags = 0, .padding = 0};
  int id = ::ioctl(fs.device_fd(), kBackingOpen, &map);
  if (id <= 0) {
    int e = id < 0 ? errno : EIO;
    // This node is served through the daemon for good: the kernel refuses a passthrough
    // open of an inode that has a caching one (EIO), so a later retry could fail opens.
    // Unless another open registered one meanwhile: then that one is the inode's.
    if (!node.adopt_backing_id(-1)) {
      if (int other = node.backing_id(); other > 0) return other;
    }
    static std::atomic<int> logged_errno{0};
    if (logged_errno.exchange(e) != e) {
      logger("overlay")->warn(
          "passthrough of {} refused by the kernel ({}): serving such files "
          "through the daemon",
          std::string(node.path()), strerror(e));
    }
    // Refused for the whole connection (no CAP_SYS_ADMIN in the initial user namespace,
    // e.g. in a container): stop trying, and let the kernel skip opens from now on, as
    // without passthrough (only while no backing file was ever registered: no inode is
    // in passthrough mode then).
    if (e == EPERM && fs.file_io().backing_files == 0) {
      fs.set_passthrough(false,
                         "the kernel refused backing files (EPERM: the daemon needs "
                         "CAP_SYS_ADMIN in the initial user namespace)");
      fs.set_no_open(true);
    }
    return 0;
  }
  if (node.adopt_backing_id(id)) {
    fs.count_backing_file();
    return id;
  }
  release_backing(req, id);  // another open of this node registered one first
  return std::max(node.backing_id(), 0);
#else
  (void)req, (void)fs, (void)node, (void)error;
  return 0;
#endif
}

// Valid replies: fuse_reply_open, fuse_reply_err. With passthrough, the reply names the
// node's backing file. Otherwise reads are spliced from the node's backing descriptor, as
// without opens: an open owns no descriptor (a RELEASE the kernel drops when the connection
// ends would leak it, and keep whatever it is on busy).
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, "open", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "open", ino, make_error(ESTALE, "unknown node"));
    if ((fi->flags & O_ACCMODE) != O_RDONLY)
      return reply_error(req, "open", ino, make_error(EROFS, std::string(node->path())));
    if (node->is_dir())
      return reply_error(req, "open", ino, make_error(EISDIR, std::string(node->path())));
    if (fs.no_open()) return void(fuse_reply_err(req, ENOSYS));  // "success, never ask again"
    // During a switch the kernel may still resolve a path through an entry the switch has
    // not invalidated yet, to the version the new view replaced: a reader would then read
    // this file old after another one new. ESTALE makes the kernel walk the path again with
    // every entry revalidated (the VFS retries an open with LOOKUP_REVAL), which finds what
    // the new view serves. Outside a switch no path leads to a replaced version (its entry
    // is gone), and opening one (/proc/PID/fd/N of a process holding it) is left alone. An
    // opener gets ESTALE once per path: its retry is served whatever it meets.
    if (fs.switching()) {
      auto now = fs.current()->resolve(node->path());
      bool stale = !now || now->identity != node->identity();
      if (fs.stale_open_once(fuse_req_ctx(req)->pid, node->path(), stale))
        return void(fuse_reply_err(req, ESTALE));
    }
    fi->noflush = 1;
    if (fs.passthrough()) {
      Status error;
      int id = backing_id_for(req, fs, *node, error);
      if (!error) return reply_error(req, "open", ino, error.error());
      if (id > 0) {
        // No keep_cache: the kernel refuses a passthrough open with any page-cache flag
        // (EIO to the opener); the pages are the backing file's anyway.
#ifdef FUSE_CAP_PASSTHROUGH
        fi->backing_id = id;
#endif
        fuse_reply_open(req, fi);
        return;
      }
      fs.count_fallback();
    }
    // Opened here, so that a corrupt object fails the open (as it fails a passthrough one);
    // kept in the node for the reads when there is room.
    if (node->backing_fd() < 0) {
      auto fd = fs.current()->open(node->snapshot());
      if (!fd) return reply_error(req, "open", ino, fd.error());
      if (node->adopt_backing_fd(fd->get()) >= 0) (void)fd->release();
    }
    fi->keep_cache = 1;
    fuse_reply_open(req, fi);
  });
}

void reply_spliced(fuse_req_t req, int fd, size_t size, off_t off) {
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = fd;
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

// Valid replies: fuse_reply_data (spliced from the descriptor), fuse_reply_err. The
// descriptor is the node's cached one, opened by the first open or read (a passthrough
// open's reads the kernel does itself).
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Filesystem& fs = fs_of(req);
  guarded(req, "read", ino, [&] {
    auto node = fs.nodes().get(ino);  // held until the reply is sent: the fd stays open
    if (!node) return reply_error(req, "read", ino, make_error(ESTALE, "unknown node"));
    if (int fd = node->backing_fd(); fd >= 0) return reply_spliced(req, fd, size, off);
    auto opened = fs.current()->open(node->snapshot());
    if (!opened) return reply_error(req, "read", ino, opened.error());
    if (int fd = node->adopt_backing_fd(opened->get()); fd >= 0) {
      (void)opened->release();
      return reply_spliced(req, fd, size, off);
    }
    reply_spliced(req, opened->get(), size, off);  // over the cache's limit: this read's own
  });
}

void op_statfs(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, "statfs", ino, [&] {
    struct statvfs sv;
    if (::fstatvfs(fs_of(req).current()->booted_fd(), &sv) < 0)
      return reply_error(req, "statfs", ino, errno_error("fstatvfs(booted)"));
    fuse_reply_statfs(req, &sv);
  });
}

// Valid replies: fuse_reply_buf (size > 0), fuse_reply_xattr (size 0), fuse_reply_err.
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, "getxattr", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "getxattr", ino, make_error(ESTALE, "unknown node"));
    auto value = fs.current()->xattr(current_attrs(fs, *node), name);
    if (!value) return reply_error(req, "getxattr", ino, value.error());
    if (size == 0) return void(fuse_reply_xattr(req, value->size()));
    if (size < value->size()) return void(fuse_reply_err(req, ERANGE));
    fuse_reply_buf(req, value->data(), value->size());
  });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, "listxattr", ino, [&] {
    Filesystem& fs = fs_of(req);
    auto node = fs.nodes().get(ino);
    if (!node) return reply_error(req, "listxattr", ino, make_error(ESTALE, "unknown node"));
    auto names = fs.current()->xattr_names(current_attrs(fs, *node));
    if (!names) return reply_error(req, "listxattr", ino, names.error());
    std::string packed;
    for (const std::string& n : *names) packed.append(n).push_back('\0');
    if (size == 0) return void(fuse_reply_xattr(req, packed.size()));
    if (size < packed.size()) return void(fuse_reply_err(req, ERANGE));
    fuse_reply_buf(req, packed.data(), packed.size());
  });
}

// Permission bits are checked by the kernel (default_permissions); writes never succeed.
void op_access(fuse_req_t req, fuse_ino_t, int mask) {
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

// Every write operation: the view is read-only.
void op_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void op_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
  fuse_reply_err(req, EROFS);
}
void op_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void op_unlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
  fuse_reply_err(req, EROFS);
}
void op_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void op_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void op_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  fuse_reply_err(req, EROFS);
}
void op_removexattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void op_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}

// Unlisted ops stay null: libfuse answers them itself (ENOSYS, or success for flush).
fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.unlink = op_unlink;
  ops.rmdir = op_unlink;
  ops.symlink = op_symlink;
  ops.rename = op_rename;
  ops.link = op_link;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.access = op_access;
  ops.create = op_create;
  ops.forget_multi = op_forget_multi;
  ops.fallocate = op_fallocate;
  ops.readdirplus = op_readdirplus;
  return ops;
}
const fuse_lowlevel_ops kOps = make_ops();

// Whether `fd` is on a file system that itself stacks over others (FUSE passthrough counts
// the levels: see op_init).
bool on_stacked_fs(int fd) {
  struct statfs sf {};
  if (::fstatfs(fd, &sf) != 0) return false;
  constexpr decltype(sf.f_type) kOverlayfs = 0x794c7630, kFuse = 0x65735546, kEcryptfs = 0xf15f;
  return sf.f_type == kOverlayfs || sf.f_type == kFuse || sf.f_type == kEcryptfs;
}

// The signal abort() wakes serve()'s thread with. Its handler does nothing: the point is the
// EINTR of libfuse's sem_wait, after which the loop sees the exit flag.
int wake_signal() { return SIGRTMIN + 3; }

void install_wake_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: the wait must return
    ::sigaction(wake_signal(), &sa, nullptr);
  });
}

}  // namespace

Filesystem::Filesystem(const MountOptions& options, std::shared_ptr<const View> initial,
                       Resolved root)
    : options_(options),
      view_(std::move(initial)),
      nodes_(std::move(root)),
      prefetch_(options.prefetch) {}

Result<std::unique_ptr<Filesystem>> Filesystem::mount(const MountOptions& options,
                                                      std::shared_ptr<const View> initial) {
  auto root = initial->resolve("");
  if (!root) return std::unexpected(root.error());
  MountOptions resolved = options;
  // The path as the kernel will show it in mountinfo, resolved now: once mounted, resolving
  // it would ask this file system, which may not serve yet.
  std::error_code ec;
  std::filesystem::path canonical = std::filesystem::canonical(options.mountpoint, ec);
  if (!ec) resolved.mountpoint = canonical;
  auto no_layer = store::Tree::build({});
  if (!no_layer) return std::unexpected(no_layer.error());
  std::shared_ptr<const View> booted_only = initial->with_layer(std::move(*no_layer), 0);
  std::unique_ptr<Filesystem> fs(new Filesystem(resolved, std::move(initial), std::move(*root)));
  fs->booted_only_ = std::move(booted_only);
  {
    const View& view = *fs->current();
    fs->backing_stacked_ = on_stacked_fs(view.booted_fd());
    if (view.store() != nullptr) {
      UniqueFd store_dir(::open(view.store()->root().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (store_dir.valid() && on_stacked_fs(store_dir.get())) fs->backing_stacked_ = true;
    }
  }

  // Nodes keep their backing descriptors open (see Node): raise the descriptor limit to the
  // system's maximum where allowed (root), else to the hard one, and let the cache use all
  // but a reserve for everything else.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    rlim_t wanted = 1 << 20;
    if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
      unsigned long nr_open = 0;
      if (std::fscanf(f, "%lu", &nr_open) == 1 && nr_open < wanted) wanted = nr_open;
      std::fclose(f);
    }
    rlimit raised{wanted, wanted};
    if (wanted <= nofile.rlim_max || ::setrlimit(RLIMIT_NOFILE, &raised) != 0) {
      nofile.rlim_cur = nofile.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    ::getrlimit(RLIMIT_NOFILE, &nofile);
    // The reserve is for everything else the daemon opens while it serves: the loader's scan
    // of the booted tree and the staged imports keep a descriptor per directory still to be
    // read (a few thousand over /usr), inotify, sockets, the store. With 1024 and a hard
    // limit of 20,000 (a container), a scan of /usr during a full read of the view ran out.
    const rlim_t reserve = std::max<rlim_t>(4096, nofile.rlim_cur / 4);
    set_backing_fd_limit(nofile.rlim_cur > 2 * reserve ? nofile.rlim_cur - reserve
                                                       : nofile.rlim_cur / 2);
  }

  // libfuse mounts nosuid,nodev unless told otherwise; the view serves a system tree whose
  // setuid programs, file capabilities and device nodes must work as in the booted tree.
  std::string opts = "ro,suid,dev,default_permissions,fsname=livefs,subtype=livefs";
  if (options.allow_other) opts += ",allow_other";
  std::vector<std::string> argv = {"livefs", "-o", opts};
  if (options.debug) argv.push_back("-d");
  fuse_args args = FUSE_ARGS_INIT(0, nullptr);
  for (const std::string& a : argv) fuse_opt_add_arg(&args, a.c_str());
  fs->session_ = fuse_session_new(&args, &kOps, sizeof kOps, fs.get());
  fuse_opt_free_args(&args);
  if (fs->session_ == nullptr) return fail(EINVAL, "fuse_session_new");
  const std::string& at = fs->options_.mountpoint.string();
  if (fuse_session_mount(fs->session_, at.c_str()) != 0)
    return fail(EIO, "mount(" + at + "): see the log line above");
  fs->mounted_ = true;
  fs->connected_ = true;
  logger("overlay")->info("mounted {} (generation {})", at, fs->current()->generation());
  return fs;
}

void Filesystem::set_passthrough(bool on, std::string why_not) {
  {
    std::lock_guard lock(why_mutex_);
    why_no_passthrough_ = std::move(why_not);
  }
  passthrough_ = on;
  logger("overlay")->info(
      "file contents: {}",
      on ? "FUSE passthrough" : "through the daemon, no passthrough: " + why_no_passthrough_);
}

int Filesystem::device_fd() const { return fuse_session_fd(session_); }

FileIo Filesystem::file_io() const {
  FileIo io;
  io.libfuse = libfuse_description();
  io.passthrough = passthrough_;
  {
    std::lock_guard lock(why_mutex_);
    io.why_not = why_no_passthrough_;
  }
  io.no_open = no_open_;
  io.backing_files = backing_files_.load(std::memory_order_relaxed);
  io.fallbacks = fallbacks_.load(std::memory_order_relaxed);
  return io;
}

std::string Filesystem::libfuse_description() {
  std::string d = "libfuse ";
  d += fuse_pkgversion();
#ifdef LIVEFS_FUSE3_STATIC
  d += " (built from source, linked statically)";
#else
  d += " (the system's)";
#endif
  return d;
}

Filesystem::~Filesystem() {
  if (session_ == nullptr) return;
  if (mounted_.exchange(false)) fuse_session_unmount(session_);
  // Closing the device ends the connection: anyone still using a detached view gets
  // ENOTCONN from here on.
  fuse_session_destroy(session_);
}

Status Filesystem::serve() {
  install_wake_handler();
  {
    std::lock_guard lock(serve_mutex_);
    serving_ = true;
    serve_thread_ = ::pthread_self();
  }
  // The wake signal must reach this thread whatever the caller blocked (the daemon blocks
  // its termination signals everywhere); the loop's workers inherit this mask.
  sigset_t wake, saved;
  sigemptyset(&wake);
  sigaddset(&wake, wake_signal());
  ::pthread_sigmask(SIG_UNBLOCK, &wake, &saved);

  fuse_loop_config* config = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(config, options_.threads);
  fuse_loop_cfg_set_idle_threads(config, options_.threads);
  // Returns when a worker reads ENODEV from the device (the kernel released the connection:
  // the mount is detached and unused) or after abort().
  int rc = fuse_session_loop_mt(session_, config);
  fuse_loop_cfg_destroy(config);

  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  connected_ = false;
  {
    std::lock_guard lock(serve_mutex_);
    serving_ = false;
  }
  serve_done_.notify_all();
  if (rc < 0 && rc != -ENODEV) return fail(-rc, "fuse loop(" + options_.mountpoint.string() + ")");
  return {};
}

void Filesystem::stop() {
  if (session_ == nullptr || !mounted_.exchange(false)) return;
  // Only the mount point goes: the connection lives on while anything uses the mount, and
  // serve() returns when the kernel releases it.
  if (::umount2(options_.mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
    logger("overlay")->error("umount {}: {}", options_.mountpoint.string(), strerror(errno));
  else
    logger("overlay")->info("detached {}", options_.mountpoint.string());
}

void Filesystem::abort() {
  if (session_ == nullptr) return;
  fuse_session_exit(session_);
  stop();
  std::unique_lock lock(serve_mutex_);
  // The loop may check the exit flag just before it waits: kick until it has returned.
  while (serving_) {
    ::pthread_kill(serve_thread_, wake_signal());
    serve_done_.wait_for(lock, std::chrono::milliseconds(10));
  }
}

Result<SwitchStats> Filesystem::switch_to(std::shared_ptr<const View> next) {
  std::lock_guard lock(switch_mutex_);
  auto start = std::chrono::steady_clock::now();
  // From the publication of the new view until the kernel has dropped every entry the
  // switch changed, opens of replaced versions are sent back (op_open): no reader sees one
  // file new and another old.
  switching_.fetch_add(1, std::memory_order_acq_rel);
  struct Done {
    std::atomic<int>& count;
    ~Done() { count.fetch_sub(1, std::memory_order_acq_rel); }
  } done{switching_};
  std::shared_ptr<const View> old = view_.exchange(next);
  if (switch_hook_) switch_hook_();
  SwitchStats stats;
  stats.from_generation = old->generation();
  stats.to_generation = next->generation();

  // What resolves differently: every path whose layer entry changed. A directory that
  // changed has its own cached children dropped by the kernel with its dentry.
  std::vector<store::Change> changes = store::diff(old->layer(), next->layer());
  stats.changed_paths = changes.size();
  std::set<fuse_ino_t> listings;
  std::vector<std::pair<std::string, fuse_ino_t>> dropped_dirs;  // held, not kept merged
  // A directory that stays a merged (non-opaque) directory keeps its dentry and its cached
  // children: only its listing is invalidated, and changes below it carry their own entries.
  auto stays_merged_dir = [&](const std::string& path) {
    auto opaque_in = [&](const View& v) {
      auto e = v.layer().find(path);
      return e && e->opaque();
    };
    if (opaque_in(*old) || opaque_in(*next)) return false;
    auto before = old->resolve(path);
    auto after = next->resolve(path);
    return before && after && before->is_dir() && after->is_dir();
  };
  for (const store::Change& c : changes) {
    std::string parent = parent_of(c.path);
    if (stays_merged_dir(c.path)) {
      if (fuse_ino_t self = nodes_.dir_at(c.path)) listings.insert(self);
      continue;
    }
    fuse_ino_t replaced = retire(*old, *next, c.path);
    if (fuse_ino_t dir = nodes_.dir_at(parent)) {
      std::string name = c.path.substr(parent.empty() ? 0 : parent.size() + 1);
      if (session_ != nullptr && connected_) {
        // A held old version is deleted as an unlink deletes it: the kernel clears its link
        // count when the name's dentry is still that node, and /proc shows its mappings and
        // descriptors with " (deleted)" (what zypper ps, needrestart and lsof look for). The
        // delete drops the dentry as the invalidation does; where it does not apply (no such
        // dentry, or an older kernel) the plain invalidation is sent.
        if (replaced == 0 ||
            fuse_lowlevel_notify_delete(session_, dir, replaced, name.c_str(), name.size()) != 0)
          fuse_lowlevel_notify_inval_entry(session_, dir, name.c_str(), name.size());
        ++stats.invalidations;
      }
      listings.insert(dir);
    }
    if (fuse_ino_t self = nodes_.dir_at(c.path)) {
      listings.insert(self);
      // Descendants follow their directory in the diff; the top one's walk covers them.
      bool below_last = !dropped_dirs.empty() && c.path.starts_with(dropped_dirs.back().first) &&
                        c.path[dropped_dirs.back().first.size()] == '/';
      if (!below_last) dropped_dirs.emplace_back(c.path, self);
    }
  }
  // Below a directory the switch removed or hid (a whiteout, an opaque directory, a file in
  // its place), the layer diff names only the layer's own entries: held booted ones would
  // stay cached under the old directory, neither deleted nor gone from the kernel's cache.
  // Only directories the kernel holds are listed (a held file pins its parents).
  for (const auto& [path, self] : dropped_dirs)
    stats.invalidations += retire_below(*old, *next, path, self);
  for (fuse_ino_t dir : listings) {
    if (session_ != nullptr && connected_) {
      fuse_lowlevel_notify_inval_inode(session_, dir, 0, 0);
      ++stats.invalidations;
    }
  }
  // Nodes of the old layer's files may stay held (open, mapped, executing): remember which
  // versions they were, for stale_files. Resolving them is left to it: here only the paths.
  Retiring retiring{.old = old, .paths = {}};
  for (store::Change& c : changes) {  // not used below: its paths are moved out
    if (!c.old_index) continue;
    store::EntryType type = old->layer().entry(*c.old_index).type();
    if (type != store::EntryType::dir && type != store::EntryType::whiteout &&
        type != store::EntryType::symlink)
      retiring.paths.push_back(std::move(c.path));
  }
  if (!retiring.paths.empty()) {
    std::optional<Retiring> oldest;
    {
      std::lock_guard retiring_lock(retiring_mutex_);
      retiring_.push_back(std::move(retiring));
      // Nobody asked for stale files for a while: resolve the oldest now rather than keep
      // its View (and the descriptors it caches) alive without bound.
      constexpr size_t kMaxRetiring = 16;
      if (retiring_.size() > kMaxRetiring) {
        oldest = std::move(retiring_.front());
        retiring_.erase(retiring_.begin());
      }
    }
    if (oldest) {
      std::lock_guard retired_lock(retired_mutex_);
      retire_locked(std::move(*oldest));
    }
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  logger("overlay")->info("switched generation {} -> {}: {} paths, {} invalidations, {:.3f} ms",
                          stats.from_generation, stats.to_generation, stats.changed_paths,
                          stats.invalidations, stats.seconds * 1e3);
  return stats;
}

bool Filesystem::stale_open_once(pid_t tid, std::string_view path, bool stale) {
  auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(stale_opens_mutex_);
  if (!stale) {
    // The retry found what the new view serves: the next stale open gets its ESTALE again.
    if (auto it = stale_opens_.find(tid); it != stale_opens_.end() && it->second.path == path)
      stale_opens_.erase(it);
    return false;
  }
  // Old entries go (a thread that died, an open that never came back): the map stays small.
  constexpr auto kRetryWindow = std::chrono::seconds(1);
  if (stale_opens_.size() > 64) {
    std::erase_if(stale_opens_, [&](const auto& e) { return now - e.second.when > kRetryWindow; });
  }
  auto it = stale_opens_.find(tid);
  if (it != stale_opens_.end() && it->second.path == path &&
      now - it->second.when <= kRetryWindow) {
    stale_opens_.erase(it);
    return false;
  }
  stale_opens_[tid] = StaleOpen{std::string(path), now};
  return true;
}

fuse_ino_t Filesystem::retire(const View& old, const View& next, const std::string& path) {
  auto before = old.resolve(path);
  if (!before || before->is_dir()) return 0;  // a directory's node lives on across versions
  if (auto after = next.resolve(path); after && after->identity == before->identity) return 0;
  NodeRef node = nodes_.find(*before);
  if (!node) return 0;
  node->mark_retired();
  return node->id();
}

size_t Filesystem::retire_below(const View& old, const View& next, const std::string& path,
                                fuse_ino_t dir) {
  auto self = old.resolve(path);
  if (!self || !self->is_dir()) return 0;
  auto entries = old.list(*self);
  if (!entries) return 0;
  bool notify = session_ != nullptr && connected_;
  size_t sent = 0;
  for (const DirEntry& e : *entries) {
    std::string child = join_path(path, e.name);
    if (S_ISDIR(e.type)) {
      fuse_ino_t sub = nodes_.dir_at(child);
      if (sub == 0) continue;
      sent += retire_below(old, next, child, sub);
      // Its dentry goes after its children's (a directory node stands for every version of
      // its path, so it is never deleted, only dropped).
      if (auto now = next.resolve(child); notify && !(now && now->is_dir())) {
        fuse_lowlevel_notify_inval_entry(session_, dir, e.name.c_str(), e.name.size());
        ++sent;
      }
    } else if (fuse_ino_t node = retire(old, next, child); node != 0 && notify) {
      fuse_lowlevel_notify_delete(session_, dir, node, e.name.c_str(), e.name.size());
      ++sent;
    }
  }
  return sent;
}

void Filesystem::retire_locked(Retiring r) const {
  for (std::string& path : r.paths) {
    auto version = r.old->resolve(path);
    // Hidden by an ancestor in the old view (served by none), or not a file.
    if (!version || version->source != Source::layer || version->is_dir() ||
        S_ISLNK(version->st.st_mode))
      continue;
    std::vector<Retired>& versions = retired_[path];
    bool known = std::ranges::any_of(
        versions, [&](const Retired& v) { return v.version.identity == version->identity; });
    if (!known)
      versions.push_back(Retired{.version = std::move(*version), .resolved_in = stale_calls_});
  }
}

std::vector<StaleFile> Filesystem::stale_files(
    const std::vector<std::string>& touched_paths) const {
  std::shared_ptr<const View> view = current();
  std::lock_guard lock(retired_mutex_);
  uint64_t call = ++stale_calls_;
  std::vector<Retiring> retiring;
  {
    std::lock_guard retiring_lock(retiring_mutex_);
    retiring.swap(retiring_);
  }
  for (Retiring& r : retiring) retire_locked(std::move(r));

  std::vector<StaleFile> out;
  for (const std::string& path : touched_paths) {
    std::optional<Resolved> now;
    if (auto r = view->resolve(path)) now = std::move(*r);
    std::optional<Resolved> booted;
    if (auto b = booted_only_->resolve(path); b && !b->is_dir() && !S_ISLNK(b->st.st_mode))
      booted = std::move(*b);
    // A version whose content is what the path serves now (its metadata alone changed: a
    // touched or chmod'ed file) is not stale: a process using it has the current content.
    auto same_content = [&](const Resolved& version) {
      if (!now || !now->entry || now->entry->type != store::EntryType::file) return false;
      if (version.source == Source::booted)
        return now->entry->content_booted;  // read from this very booted file
      return version.entry && version.entry->type == store::EntryType::file &&
             version.entry->object == now->entry->object;
    };
    auto is_current = [&](const Resolved& version) {
      return now && (now->identity == version.identity || same_content(version));
    };

    // (a) Nodes of old versions. The kernel shows only the inode number, so a version whose
    // number is the current one's (a metadata change of a hard-linked layer file) cannot be
    // told from it and is left out.
    auto held = [&](const Resolved& version) {
      if (is_current(version)) return true;
      NodeRef node = nodes_.find(version);
      if (!node) return false;
      ino_t ino = node->stat().st_ino;
      if (!(now && !now->is_dir() && ino == now->st.st_ino))
        out.push_back(StaleFile{.path = path, .booted = false, .ino = ino});
      return true;
    };
    if (booted) held(*booted);
    if (auto it = retired_.find(path); it != retired_.end()) {
      // A version no node stands for any more is forgotten, unless it was resolved by this
      // very call: a lookup that began before its switch may still be adding its node.
      std::erase_if(it->second,
                    [&](const Retired& v) { return !held(v.version) && v.resolved_in < call; });
      if (it->second.empty()) retired_.erase(it);
    }

    // (b) The booted file itself, which processes started before the mount use directly.
    if (booted && !is_current(*booted)) {
      out.push_back(StaleFile{
          .path = path, .booted = true, .dev = booted->st.st_dev, .ino = booted->st.st_ino});
    }
  }
  return out;
}

}  // namespace livefs::overlay
