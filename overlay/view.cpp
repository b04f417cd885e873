// Resolution of paths, listings, content and xattrs in one merged View.
#include "overlay/view.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <linux/openat2.h>
#include <sys/syscall.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

namespace livefs::overlay {
namespace {

// Layer inode numbers live in the upper half of the range so they never meet the booted
// file system's (which are served as they are, so hard links keep matching).
constexpr ino_t kLayerInoBit = ino_t{1} << 63;

ino_t layer_ino(const store::EntryRef& e) {
  store::Hasher h;
  if (e.type() == store::EntryType::dir) {
    // A directory's number depends on its path only: it stays one directory to find and tar
    // while files below it change (its digest covers its subtree).
    h.update("d", 1);
    h.update(e.path().data(), e.path().size());
  } else if (e.type() == store::EntryType::file && e.link_group() != 0) {
    // Hard links of one group share an inode number.
    uint32_t group = e.link_group();
    h.update(&group, sizeof group);
    h.update(e.object().bytes.data(), e.object().bytes.size());
  } else {
    h.update(e.path().data(), e.path().size());
    h.update(e.digest().bytes.data(), e.digest().bytes.size());
  }
  ino_t ino;
  std::memcpy(&ino, h.finish().bytes.data(), sizeof ino);
  return ino | kLayerInoBit;
}

// Errors that mean "nothing is there" for a booted path: a symlink (ELOOP) or a
// non-directory (ENOTDIR) as an ancestor, or a path leaving the booted tree (EXDEV).
bool absent_in_booted(int err) {
  return err == ENOENT || err == ELOOP || err == ENOTDIR || err == EXDEV;
}

mode_t dtype_to_mode(unsigned char d_type) {
  switch (d_type) {
    case DT_DIR:
      return S_IFDIR;
    case DT_LNK:
      return S_IFLNK;
    case DT_CHR:
      return S_IFCHR;
    case DT_BLK:
      return S_IFBLK;
    case DT_FIFO:
      return S_IFIFO;
    case DT_SOCK:
      return S_IFSOCK;
    case DT_REG:
      return S_IFREG;
    default:
      return 0;
  }
}

// Reads a whole xattr-style value: probe the size, read, and again when it grew meanwhile.
template <class Call>
Result<std::string> read_sized(Call&& call, const std::string& what) {
  for (;;) {
    ssize_t len = call(nullptr, 0);
    if (len < 0) return fail_errno(what);
    std::string out(static_cast<size_t>(len), '\0');
    len = call(out.data(), out.size());
    if (len < 0 && errno == ERANGE) continue;
    if (len < 0) return fail_errno(what);
    out.resize(static_cast<size_t>(len));
    return out;
  }
}

std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

}  // namespace

uint64_t dir_cookie(std::string_view name) {
  uint64_t cookie = XXH3_64bits(name.data(), name.size()) >> 1;
  return cookie < 3 ? cookie + 3 : cookie;
}

std::string join_path(std::string_view dir, std::string_view name) {
  std::string out;
  out.reserve(dir.size() + 1 + name.size());
  out.append(dir);
  if (!dir.empty()) out.push_back('/');
  out.append(name);
  return out;
}

std::shared_ptr<const View> View::create(UniqueFd booted_dir,
                                         std::shared_ptr<const store::ObjectStore> store,
                                         store::Tree layer, uint64_t generation) {
  auto booted = std::make_shared<BootedDir>();
  booted->fd = std::move(booted_dir);
  std::shared_ptr<View> view(new View());
  view->booted_ = std::move(booted);
  view->store_ = std::move(store);
  view->layer_ = std::move(layer);
  view->generation_ = generation;
  return view;
}

std::shared_ptr<const View> View::with_layer(store::Tree layer, uint64_t generation) const {
  std::shared_ptr<View> view(new View());
  view->booted_ = booted_;
  view->store_ = store_;
  view->layer_ = std::move(layer);
  view->generation_ = generation;
  return view;
}

Resolved View::from_layer(const store::EntryRef& e) {
  Resolved r;
  r.source = Source::layer;
  r.path = std::string(e.path());
  r.entry = std::make_shared<const store::Entry>(e.to_entry());
  struct stat& st = r.st;
  st.st_mode = store::type_bits(e.type()) | e.mode();
  st.st_uid = e.uid();
  st.st_gid = e.gid();
  st.st_size = static_cast<off_t>(e.size());
  st.st_nlink = e.nlink();
  st.st_rdev = e.rdev();
  st.st_mtim.tv_sec = e.mtime_sec();
  st.st_mtim.tv_nsec = e.mtime_nsec();
  st.st_atim = st.st_ctim = st.st_mtim;
  st.st_blksize = 4096;
  st.st_blocks = static_cast<blkcnt_t>((e.size() + 511) / 512);
  st.st_ino = layer_ino(e);
  if (e.type() == store::EntryType::dir) {
    r.identity = Identity::dir();
  } else {
    r.identity.kind = Identity::Kind::layer;
    static_assert(sizeof(e.digest().bytes) == sizeof(r.identity.bytes));
    std::memcpy(r.identity.bytes.data(), e.digest().bytes.data(), r.identity.bytes.size());
  }
  return r;
}

namespace {

Identity booted_identity(const struct stat& st) {
  if (S_ISDIR(st.st_mode)) return Identity::dir();
  Identity id{Identity::Kind::booted, {}};
  uint64_t dev = st.st_dev, ino = st.st_ino;
  std::memcpy(id.bytes.data(), &dev, sizeof dev);
  std::memcpy(id.bytes.data() + sizeof dev, &ino, sizeof ino);
  return id;
}

}  // namespace

Result<UniqueFd> View::open_booted(std::string_view path, int flags) const {
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  std::string rel = path.empty() ? std::string(".") : std::string(path);
  for (int attempt = 0;; ++attempt) {
    int fd = static_cast<int>(::syscall(SYS_openat2, booted_fd(), rel.c_str(), &how, sizeof how));
    if (fd >= 0) return UniqueFd(fd);
    // EAGAIN: a rename raced with the walk; the kernel asks to try again.
    if (errno != EAGAIN || attempt == 8) return fail_errno("openat2(booted:" + rel + ")");
  }
}

Result<std::shared_ptr<const UniqueFd>> View::booted_dir(std::string_view path) const {
  // The root is the booted directory's own descriptor, shared with the BootedDir.
  if (path.empty()) return std::shared_ptr<const UniqueFd>(booted_, &booted_->fd);
  {
    std::shared_lock lock(booted_dirs_mutex_);
    if (auto it = booted_dirs_.find(path); it != booted_dirs_.end()) {
      it->second.used.store(true, std::memory_order_relaxed);
      return it->second.fd;
    }
  }
  auto fd = open_booted(path, O_PATH | O_DIRECTORY);
  if (!fd) return std::unexpected(fd.error());
  auto shared = std::make_shared<const UniqueFd>(std::move(*fd));
  constexpr size_t kMaxBootedDirs = 256;
  std::unique_lock lock(booted_dirs_mutex_);
  if (booted_dirs_.size() >= kMaxBootedDirs) {
    std::erase_if(booted_dirs_, [](auto& entry) {
      return !entry.second.used.exchange(false, std::memory_order_relaxed);
    });
    if (booted_dirs_.size() >= kMaxBootedDirs) booted_dirs_.clear();  // all in use: start over
  }
  auto [it, inserted] = booted_dirs_.try_emplace(std::string(path));
  if (inserted) it->second.fd = std::move(shared);
  return it->second.fd;
}

namespace {

// `path` split at its last '/': ("a/b", "c") for "a/b/c", ("", "c") for "c".
std::pair<std::string_view, std::string_view> split_last(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return {std::string_view(), path};
  return {path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace

Result<UniqueFd> View::open_booted_entry(std::string_view path, int flags) const {
  if (path.empty()) return open_booted(path, flags);
  auto [parent_path, name] = split_last(path);
  if (name.empty() || name == "." || name == "..")
    return fail(ENOENT, "open(booted:" + std::string(path) + ")");
  auto parent = booted_dir(parent_path);
  if (!parent) return std::unexpected(parent.error());
  std::string last(name);
  UniqueFd fd(::openat((*parent)->get(), last.c_str(), flags | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("openat(booted:" + std::string(path) + ")");
  return fd;
}

Result<Resolved> View::resolve_booted(std::string_view path) const {
  Resolved r;
  r.source = Source::booted;
  r.path = std::string(path);
  if (path.empty()) {
    if (::fstat(booted_fd(), &r.st) < 0) return fail_errno("fstat(booted)");
    r.identity = booted_identity(r.st);
    return r;
  }
  // Hot path (every lookup): the parent, opened beneath the booted directory with no symlink
  // followed (and kept), then the last component stat'ed without following it.
  auto [parent_path, name] = split_last(path);
  if (name.empty() || name == "." || name == "..")
    return fail(ENOENT, "resolve(booted:" + r.path + ")");
  auto parent = booted_dir(parent_path);
  if (!parent) {
    if (absent_in_booted(parent.error().code))
      return fail(ENOENT, "resolve(booted:" + r.path + "): " + parent.error().message());
    return std::unexpected(parent.error());
  }
  const char* last = r.path.c_str() + (r.path.size() - name.size());
  if (::fstatat((*parent)->get(), last, &r.st, AT_SYMLINK_NOFOLLOW) < 0)
    return fail_errno("fstatat(booted:" + r.path + ")");
  r.identity = booted_identity(r.st);
  return r;
}

Result<Resolved> View::resolve_listed(std::string_view dir_path, const DirEntry& entry) const {
  std::string path = join_path(dir_path, entry.name);
  // A listed booted name is one the layer neither replaces nor hides (list() dropped or
  // replaced those), in a directory served from the booted tree: resolve() would stat it.
  if (!entry.booted) return resolve(path);
  return resolve_booted(path);
}

Result<Resolved> View::resolve(std::string_view path) const {
  // Ancestors, from the top: a whiteout or a non-directory hides everything below it, an
  // opaque directory hides the booted tree below it.
  bool booted_hidden = false;
  for (size_t slash = path.find('/'); slash != std::string_view::npos;
       slash = path.find('/', slash + 1)) {
    auto e = layer_.find(path.substr(0, slash));
    if (!e) continue;
    if (e->type() != store::EntryType::dir)
      return fail(ENOENT, "resolve(" + std::string(path) + ")");
    if (e->opaque()) booted_hidden = true;
  }
  if (auto root = layer_.root(); root.opaque()) booted_hidden = true;

  if (auto e = layer_.find(path)) {
    if (e->type() == store::EntryType::whiteout)
      return fail(ENOENT, "resolve(" + std::string(path) + ")");
    if (e->type() == store::EntryType::dir && !e->opaque() && !booted_hidden) {
      // Over a booted directory: merged with it, and numbered as it is (the listing of the
      // parent gives the booted number). A structural directory shows the booted
      // directory's attributes, any other its own (a change of a directory's mode, owner,
      // times or xattrs goes live).
      auto booted = resolve_booted(path);
      if (booted && booted->is_dir()) {
        if (e->structural()) return booted;
        booted->st.st_mode = S_IFDIR | e->mode();
        booted->st.st_uid = e->uid();
        booted->st.st_gid = e->gid();
        booted->st.st_mtim.tv_sec = e->mtime_sec();
        booted->st.st_mtim.tv_nsec = e->mtime_nsec();
        booted->entry = std::make_shared<const store::Entry>(e->to_entry());
        return booted;
      }
    }
    return from_layer(*e);
  }
  if (booted_hidden) return fail(ENOENT, "resolve(" + std::string(path) + ")");
  return resolve_booted(path);
}

Result<std::vector<DirEntry>> View::list(const Resolved& dir) const {
  std::vector<DirEntry> out;
  std::unordered_map<std::string, size_t> index;
  auto layer_dir = layer_.find(dir.path);
  bool merge_booted = dir.source == Source::booted;
  if (merge_booted) {
    auto at = booted_dir(dir.path);
    if (!at) return std::unexpected(at.error());
    UniqueFd fd(::openat((*at)->get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return fail_errno("opendir(booted:" + dir.path + ")");
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return fail_errno("fdopendir(booted:" + dir.path + ")");
    (void)fd.release();
    errno = 0;
    while (dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      mode_t type = dtype_to_mode(de->d_type);
      if (type == 0) {
        // A file system that does not fill d_type: stat it (gone meanwhile or unreadable:
        // typeless here, and resolve() says which when asked).
        struct stat st;
        if (::fstatat(::dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
          type = st.st_mode & S_IFMT;
      }
      index.emplace(de->d_name, out.size());
      out.push_back(DirEntry{de->d_name, type, de->d_ino, true});
      errno = 0;
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) return std::unexpected(make_error(err, "readdir(booted:" + dir.path + ")"));
  }
  if (layer_dir && layer_dir->type() == store::EntryType::dir) {
    for (const store::EntryRef& child : layer_.children(layer_dir->index())) {
      std::string name(child.name());
      auto it = index.find(name);
      if (child.type() == store::EntryType::whiteout) {
        if (it != index.end()) out[it->second].name.clear();  // dropped below
        continue;
      }
      bool merged = child.type() == store::EntryType::dir && !child.opaque();
      if (it != index.end()) {
        if (merged && out[it->second].type == S_IFDIR) {
          // The booted directory, with the layer's attributes unless structural: then
          // resolve() is asked for them, not a stat of the booted name.
          if (!child.structural()) out[it->second].booted = false;
          continue;
        }
        out[it->second] =
            DirEntry{name, store::type_bits(child.type()), from_layer(child).st.st_ino};
      } else {
        index.emplace(name, out.size());
        out.push_back(DirEntry{name, store::type_bits(child.type()), from_layer(child).st.st_ino});
      }
    }
  }
  std::erase_if(out, [](const DirEntry& e) { return e.name.empty(); });
  for (DirEntry& e : out) e.cookie = dir_cookie(e.name);
  // Equal cookies (a 63-bit hash collision) are ordered by name: still one order for all.
  std::ranges::sort(out, [](const DirEntry& a, const DirEntry& b) {
    return a.cookie != b.cookie ? a.cookie < b.cookie : a.name < b.name;
  });
  return out;
}

Result<std::shared_ptr<const std::vector<DirEntry>>> View::cached_list(const Resolved& dir) const {
  {
    std::lock_guard lock(listings_mutex_);
    if (auto it = listings_.find(dir.path); it != listings_.end()) {
      it->second.used = true;
      return it->second.entries;
    }
  }
  auto listing = list(dir);  // outside the lock: two threads may both compute it once
  if (!listing) return std::unexpected(listing.error());
  auto shared = std::make_shared<const std::vector<DirEntry>>(std::move(*listing));
  std::lock_guard lock(listings_mutex_);
  if (listed_entries_ + shared->size() > listing_cache_limit_) {
    // Full: the listings not used since the last sweep go; when all were, all go (the new
    // one stays, even alone over the bound: it is being read).
    auto sweep = [&](bool all) {
      for (auto it = listings_.begin(); it != listings_.end();) {
        if (all || !std::exchange(it->second.used, false)) {
          listed_entries_ -= it->second.entries->size();
          it = listings_.erase(it);
        } else {
          ++it;
        }
      }
    };
    sweep(false);
    if (listed_entries_ + shared->size() > listing_cache_limit_) sweep(true);
  }
  auto [it, inserted] = listings_.try_emplace(dir.path, CachedListing{std::move(shared)});
  if (inserted) listed_entries_ += it->second.entries->size();
  it->second.used = true;
  return it->second.entries;
}

std::shared_ptr<const std::vector<DirEntry>> View::cached_listing(std::string_view path) const {
  std::lock_guard lock(listings_mutex_);
  auto it = listings_.find(std::string(path));
  return it == listings_.end() ? nullptr : it->second.entries;
}

size_t View::cached_listing_entries() const {
  std::lock_guard lock(listings_mutex_);
  return listed_entries_;
}

void View::set_listing_cache_limit(size_t names) const {
  std::lock_guard lock(listings_mutex_);
  listing_cache_limit_ = names;
}

Result<UniqueFd> View::open(const Resolved& r) const {
  if (r.source == Source::layer) {
    if (!r.entry || r.entry->type != store::EntryType::file)
      return fail(EINVAL, "open(" + r.path + "): not a regular file");
    // New metadata over the booted file's content: read from the booted file, like any
    // booted path (the booted tree is immutable; the manifest says the content is equal).
    if (r.entry->content_booted) return open_booted_entry(r.path, O_RDONLY);
    // Verified on its first open in this process (invariant 4: a corrupt object is EIO,
    // never wrong bytes); the store logs a mismatch once, with this path.
    auto fd = store_->open_verified(r.entry->object, r.path);
    if (!fd) return std::unexpected(with_context(fd.error(), "open(" + r.path + ")"));
    return fd;
  }
  // Beneath the booted root like every booted path (no symlink in any component).
  return open_booted_entry(r.path, O_RDONLY);
}

Result<std::string> View::readlink(const Resolved& r) const {
  if (r.source == Source::layer) {
    if (!r.entry || r.entry->type != store::EntryType::symlink)
      return fail(EINVAL, "readlink(" + r.path + ")");
    return r.entry->target;
  }
  auto link = open_booted_entry(r.path, O_PATH);
  if (!link) return std::unexpected(link.error());
  // The snapshot's size is only a first guess: the link may have been replaced by a longer
  // one since. A result that fills the buffer may be cut, so grow until it does not.
  std::string buf(std::max<size_t>(static_cast<size_t>(r.st.st_size) + 1, 64), '\0');
  for (;;) {
    ssize_t n = ::readlinkat(link->get(), "", buf.data(), buf.size());
    if (n < 0) return fail_errno("readlinkat(booted:" + r.path + ")");
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

// Booted xattrs are read through /proc/self/fd/N of an O_PATH descriptor of the entry opened
// beneath the booted directory: the magic link names exactly that file (a symlink itself
// included), and nothing on the way to it is a followed symlink.
Result<std::vector<std::string>> View::xattr_names(const Resolved& r) const {
  std::vector<std::string> names;
  // A layer entry's xattrs (a layer directory over a booted one has its entry too).
  if (r.entry) {
    for (const auto& x : r.entry->xattrs) names.push_back(x.name);
    return names;
  }
  auto fd = open_booted_entry(r.path, O_PATH);
  if (!fd) return std::unexpected(fd.error());
  std::string p = proc_fd_path(fd->get());
  auto raw = read_sized([&](char* buf, size_t size) { return ::listxattr(p.c_str(), buf, size); },
                        "listxattr(booted:" + r.path + ")");
  if (!raw) {
    if (raw.error().code == ENOTSUP) return names;
    return std::unexpected(raw.error());
  }
  for (size_t pos = 0; pos < raw->size();) {
    names.emplace_back(raw->data() + pos);
    pos += names.back().size() + 1;
  }
  return names;
}

Result<std::string> View::xattr(const Resolved& r, const std::string& name) const {
  if (r.entry) {
    for (const auto& x : r.entry->xattrs)
      if (x.name == name) return x.value;
    return fail(ENODATA, "getxattr(" + r.path + ", " + name + ")");
  }
  auto fd = open_booted_entry(r.path, O_PATH);
  if (!fd) return std::unexpected(fd.error());
  std::string p = proc_fd_path(fd->get());
  return read_sized(
      [&](char* buf, size_t size) { return ::getxattr(p.c_str(), name.c_str(), buf, size); },
      "getxattr(booted:" + r.path + ", " + name + ")");
}

}  // namespace livefs::overlay
