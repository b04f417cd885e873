// Resolution of paths, listings, content and xattrs in one merged View.
#include "overlay/view.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>

namespace livefs::overlay {
namespace {

// Layer inode numbers live in the upper half of the range so they never meet the booted
// file system's (which are served as they are, so hard links keep matching).
constexpr ino_t kLayerInoBit = ino_t{1} << 63;

ino_t layer_ino(const store::EntryRef& e) {
  store::Hasher h;
  if (e.type() == store::EntryType::file && e.link_group() != 0) {
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

const char* rel_or_dot(const std::string& path) { return path.empty() ? "." : path.c_str(); }

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

// Reads a whole xattr-style value with the usual size probe and ERANGE retry.
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

}  // namespace

std::string BootedDir::proc_path() const { return "/proc/self/fd/" + std::to_string(fd.get()); }

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
  r.entry = e.to_entry();
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
  r.identity = e.type() == store::EntryType::dir ? "d" : "l:" + e.digest().hex();
  return r;
}

namespace {

std::string booted_identity(const struct stat& st) {
  return S_ISDIR(st.st_mode) ? "d"
                             : "b:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

}  // namespace

Result<Resolved> View::resolve_booted(std::string_view path) const {
  Resolved r;
  r.source = Source::booted;
  r.path = std::string(path);
  int rc = path.empty() ? ::fstatat(booted_fd(), "", &r.st, AT_EMPTY_PATH)
                        : ::fstatat(booted_fd(), r.path.c_str(), &r.st, AT_SYMLINK_NOFOLLOW);
  if (rc < 0) return fail_errno("fstatat(booted:" + r.path + ")");
  r.identity = booted_identity(r.st);
  return r;
}

Result<Resolved> View::resolve_listed(std::string_view dir_path, const DirEntry& entry) const {
  std::string path = dir_path.empty() ? entry.name : std::string(dir_path) + "/" + entry.name;
  // A listed booted name is one the layer neither replaces nor hides (list() dropped or
  // replaced those), in a directory served from the booted tree: resolve() would stat it.
  if (!entry.booted_st) return resolve(path);
  Resolved r;
  r.source = Source::booted;
  r.path = std::move(path);
  r.st = *entry.booted_st;
  r.identity = booted_identity(r.st);
  return r;
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
      // Structure only: the booted directory's attributes where there is one.
      auto booted = resolve_booted(path);
      if (booted && booted->is_dir()) return booted;
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
    UniqueFd fd(::openat(booted_fd(), rel_or_dot(dir.path), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return fail_errno("opendir(booted:" + dir.path + ")");
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return fail_errno("fdopendir(booted:" + dir.path + ")");
    fd.release();
    errno = 0;
    while (dirent* de = ::readdir(d)) {
      if (std::strcmp(de->d_name, ".") == 0 || std::strcmp(de->d_name, "..") == 0) continue;
      mode_t type = dtype_to_mode(de->d_type);
      // Stat'ed relative to the directory now, not by a path walk from the top later.
      std::optional<struct stat> st;
      st.emplace();
      if (::fstatat(::dirfd(d), de->d_name, &*st, AT_SYMLINK_NOFOLLOW) == 0)
        type = st->st_mode & S_IFMT;
      else
        st.reset();  // gone meanwhile, or unreadable: resolve() says which when asked
      index.emplace(de->d_name, out.size());
      out.push_back(DirEntry{de->d_name, type, de->d_ino, st});
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
      bool structural = child.type() == store::EntryType::dir && !child.opaque();
      if (it != index.end()) {
        if (structural && out[it->second].type == S_IFDIR) continue;  // booted dir serves
        out[it->second] =
            DirEntry{name, store::type_bits(child.type()), from_layer(child).st.st_ino};
      } else {
        index.emplace(name, out.size());
        out.push_back(DirEntry{name, store::type_bits(child.type()), from_layer(child).st.st_ino});
      }
    }
  }
  std::erase_if(out, [](const DirEntry& e) { return e.name.empty(); });
  return out;
}

Result<std::shared_ptr<const std::vector<DirEntry>>> View::cached_list(const Resolved& dir) const {
  {
    std::lock_guard lock(listings_mutex_);
    if (auto it = listings_.find(dir.path); it != listings_.end()) return it->second;
  }
  auto listing = list(dir);  // outside the lock: two threads may both compute it once
  if (!listing) return std::unexpected(listing.error());
  auto shared = std::make_shared<const std::vector<DirEntry>>(std::move(*listing));
  std::lock_guard lock(listings_mutex_);
  return listings_.try_emplace(dir.path, std::move(shared)).first->second;
}

Result<UniqueFd> View::open(const Resolved& r) const {
  if (r.source == Source::layer) {
    if (!r.entry || r.entry->type != store::EntryType::file)
      return fail(EINVAL, "open(" + r.path + "): not a regular file");
    // Verified on its first open in this process (invariant 4: a corrupt object is EIO,
    // never wrong bytes); the store logs a mismatch once, with this path.
    auto fd = store_->open_verified(r.entry->object, r.path);
    if (!fd) return std::unexpected(with_context(fd.error(), "open(" + r.path + ")"));
    return fd;
  }
  UniqueFd fd(::openat(booted_fd(), rel_or_dot(r.path), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return fail_errno("openat(booted:" + r.path + ")");
  return fd;
}

Result<std::string> View::readlink(const Resolved& r) const {
  if (r.source == Source::layer) {
    if (!r.entry || r.entry->type != store::EntryType::symlink)
      return fail(EINVAL, "readlink(" + r.path + ")");
    return r.entry->target;
  }
  return read_sized(
      [&](char* buf, size_t size) -> ssize_t {
        if (buf == nullptr) return static_cast<ssize_t>(r.st.st_size) + 1;
        ssize_t n = ::readlinkat(booted_fd(), r.path.c_str(), buf, size);
        if (n >= 0 && static_cast<size_t>(n) == size) {
          errno = ERANGE;  // may have been cut: retry larger
          return -1;
        }
        return n;
      },
      "readlinkat(booted:" + r.path + ")");
}

Result<std::vector<std::string>> View::xattr_names(const Resolved& r) const {
  std::vector<std::string> names;
  if (r.source == Source::layer) {
    for (const auto& x : r.entry->xattrs) names.push_back(x.name);
    return names;
  }
  std::string p = booted_->proc_path() + (r.path.empty() ? "" : "/" + r.path);
  auto raw = read_sized([&](char* buf, size_t size) { return ::llistxattr(p.c_str(), buf, size); },
                        "llistxattr(booted:" + r.path + ")");
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
  if (r.source == Source::layer) {
    for (const auto& x : r.entry->xattrs)
      if (x.name == name) return x.value;
    return fail(ENODATA, "getxattr(" + r.path + ", " + name + ")");
  }
  std::string p = booted_->proc_path() + (r.path.empty() ? "" : "/" + r.path);
  return read_sized(
      [&](char* buf, size_t size) { return ::lgetxattr(p.c_str(), name.c_str(), buf, size); },
      "lgetxattr(booted:" + r.path + ", " + name + ")");
}

}  // namespace livefs::overlay
