// Tree manifests: building, serializing, parsing and querying.
//
// Format (version 2, little-endian, as the records are read in place on x86-64/aarch64):
//   Header  (64 bytes): magic "LVFSTREE", u32 version, u32 record size, u64 entry count,
//           u64 string-table size, 16-byte XXH3-128 of everything after the header, padding.
//   Records (entry count × sizeof(Record)), sorted by path_less; index 0 is the root ("").
//   String table: paths, symlink targets and xattr blobs, referenced by (offset, length).
//   An xattr blob is a sequence of [u32 name length][u32 value length][name][value],
//   sorted by name.
// Record flags (u16): bit 0 structural, bit 1 content_booted (layers only).
// Digests: an entry's digest hashes its type, opaque and structural flags, mode, owner,
// rdev, mtime, target, xattrs, object id and (for non-directories) size and link count. A
// directory's digest also hashes each child's name and digest, so equal digests mean equal
// subtrees, times included (version 1 left a directory's own mtime out: a change of it alone
// was not seen). Versions 1 and 2 have the same layout; both are read.
#include "store/tree.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "common/unique_fd.h"
#include "store/object_store.h"

namespace livefs::store {
namespace {

constexpr char kMagic[8] = {'L', 'V', 'F', 'S', 'T', 'R', 'E', 'E'};
constexpr uint32_t kVersion = 2;
constexpr uint32_t kOldestVersion = 1;
constexpr uint16_t kFlagStructural = 1;
constexpr uint16_t kFlagContentBooted = 2;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t record_size;
  uint64_t entry_count;
  uint64_t strings_size;
  uint8_t checksum[16];
  uint8_t reserved[16];
};
static_assert(sizeof(Header) == 64);

struct Record {
  uint64_t path_off;
  uint32_t path_len;
  uint32_t name_off;  // offset of the last component within the path
  uint64_t target_off;
  uint32_t target_len;
  uint32_t xattr_len;
  uint64_t xattr_off;
  uint32_t parent;  // the root's parent is itself (0)
  uint32_t subtree_end;
  uint8_t type;
  uint8_t opaque;
  uint16_t flags;  // kFlag*
  uint32_t mode;
  uint32_t uid;
  uint32_t gid;
  uint64_t size;
  int64_t mtime_sec;
  uint32_t mtime_nsec;
  uint32_t nlink;
  uint64_t rdev;
  uint32_t link_group;
  uint32_t reserved1;
  uint8_t object[16];
  uint8_t digest[16];
};
static_assert(sizeof(Record) == 136);
static_assert(alignof(Record) == 8);

std::unexpected<Error> bad_manifest(const std::string& what) {
  return fail(EBADMSG, "tree manifest: " + what);
}

bool valid_path(std::string_view path) {
  if (path.empty()) return true;  // the root
  if (path.front() == '/' || path.back() == '/') return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view comp = path.substr(start, end - start);
    if (comp.empty() || comp == "." || comp == ".." || comp.find('\0') != std::string_view::npos)
      return false;
    start = end + 1;
  }
  return true;
}

std::string_view parent_of(std::string_view path) {
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

void put_u32(std::string& out, uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); }

std::string encode_xattrs(const std::vector<Xattr>& xattrs) {
  std::vector<const Xattr*> sorted;
  for (const Xattr& x : xattrs) sorted.push_back(&x);
  std::sort(sorted.begin(), sorted.end(),
            [](const Xattr* a, const Xattr* b) { return a->name < b->name; });
  std::string out;
  for (const Xattr* x : sorted) {
    put_u32(out, static_cast<uint32_t>(x->name.size()));
    put_u32(out, static_cast<uint32_t>(x->value.size()));
    out += x->name;
    out += x->value;
  }
  return out;
}

// Walks an xattr blob; calls fn(name, value) until it returns false. False if malformed.
template <class Fn>
bool walk_xattrs(std::string_view blob, Fn&& fn) {
  size_t pos = 0;
  while (pos < blob.size()) {
    if (blob.size() - pos < 8) return false;
    uint32_t nlen, vlen;
    std::memcpy(&nlen, blob.data() + pos, 4);
    std::memcpy(&vlen, blob.data() + pos + 4, 4);
    pos += 8;
    if (blob.size() - pos < static_cast<uint64_t>(nlen) + vlen) return false;
    if (!fn(blob.substr(pos, nlen), blob.substr(pos + nlen, vlen))) return true;
    pos += nlen + vlen;
  }
  return true;
}

}  // namespace

struct Tree::Impl {
  std::shared_ptr<const void> keeper;  // owns the bytes: a string, or a file mapping
  std::string_view bytes;
  const Record* records = nullptr;
  const char* strings = nullptr;
  size_t count = 0;
  size_t strings_size = 0;
  uint32_t version = kVersion;

  const Record& rec(size_t i) const { return records[i]; }
  std::string_view str(uint64_t off, uint64_t len) const { return {strings + off, len}; }
  std::string_view path(size_t i) const { return str(rec(i).path_off, rec(i).path_len); }
};

const char* type_name(EntryType type) {
  switch (type) {
    case EntryType::file:
      return "file";
    case EntryType::dir:
      return "dir";
    case EntryType::symlink:
      return "symlink";
    case EntryType::chardev:
      return "chardev";
    case EntryType::blockdev:
      return "blockdev";
    case EntryType::fifo:
      return "fifo";
    case EntryType::socket:
      return "socket";
    case EntryType::whiteout:
      return "whiteout";
  }
  return "unknown";
}

mode_t type_bits(EntryType type) {
  switch (type) {
    case EntryType::file:
      return S_IFREG;
    case EntryType::dir:
      return S_IFDIR;
    case EntryType::symlink:
      return S_IFLNK;
    case EntryType::chardev:
      return S_IFCHR;
    case EntryType::blockdev:
      return S_IFBLK;
    case EntryType::fifo:
      return S_IFIFO;
    case EntryType::socket:
      return S_IFSOCK;
    case EntryType::whiteout:
      return 0;
  }
  return 0;
}

int path_compare(std::string_view a, std::string_view b) {
  size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    // '/' sorts below every byte a name can hold, so a directory's subtree is contiguous.
    unsigned char ca = a[i] == '/' ? 0 : static_cast<unsigned char>(a[i]);
    unsigned char cb = b[i] == '/' ? 0 : static_cast<unsigned char>(b[i]);
    if (ca != cb) return ca < cb ? -1 : 1;
  }
  if (a.size() == b.size()) return 0;
  return a.size() < b.size() ? -1 : 1;
}

bool path_less(std::string_view a, std::string_view b) { return path_compare(a, b) < 0; }

// ---- EntryRef ------------------------------------------------------------------------------

#define LIVEFS_REC (tree_->impl_->rec(index_))
std::string_view EntryRef::path() const { return tree_->impl_->path(index_); }
std::string_view EntryRef::name() const { return path().substr(LIVEFS_REC.name_off); }
EntryType EntryRef::type() const { return static_cast<EntryType>(LIVEFS_REC.type); }
uint32_t EntryRef::mode() const { return LIVEFS_REC.mode; }
uint32_t EntryRef::uid() const { return LIVEFS_REC.uid; }
uint32_t EntryRef::gid() const { return LIVEFS_REC.gid; }
uint64_t EntryRef::size() const { return LIVEFS_REC.size; }
int64_t EntryRef::mtime_sec() const { return LIVEFS_REC.mtime_sec; }
uint32_t EntryRef::mtime_nsec() const { return LIVEFS_REC.mtime_nsec; }
uint64_t EntryRef::rdev() const { return LIVEFS_REC.rdev; }
uint32_t EntryRef::nlink() const { return LIVEFS_REC.nlink; }
uint32_t EntryRef::link_group() const { return LIVEFS_REC.link_group; }
bool EntryRef::opaque() const { return LIVEFS_REC.opaque != 0; }
bool EntryRef::structural() const {
  // Version 1 served every non-opaque layer directory over a booted one with the booted
  // directory's attributes: a layer journalled then keeps being served that way.
  if (tree_->impl_->version < 2)
    return LIVEFS_REC.type == static_cast<uint8_t>(EntryType::dir) && LIVEFS_REC.opaque == 0;
  return (LIVEFS_REC.flags & kFlagStructural) != 0;
}
bool EntryRef::content_booted() const { return (LIVEFS_REC.flags & kFlagContentBooted) != 0; }
std::string_view EntryRef::target() const {
  return tree_->impl_->str(LIVEFS_REC.target_off, LIVEFS_REC.target_len);
}
const ObjectId& EntryRef::object() const {
  static_assert(sizeof(ObjectId) == 16 && alignof(ObjectId) == 1);
  return *reinterpret_cast<const ObjectId*>(LIVEFS_REC.object);
}
const ObjectId& EntryRef::digest() const {
  return *reinterpret_cast<const ObjectId*>(LIVEFS_REC.digest);
}
std::optional<size_t> EntryRef::parent() const {
  if (index_ == 0) return std::nullopt;
  return LIVEFS_REC.parent;
}
size_t EntryRef::subtree_end() const { return LIVEFS_REC.subtree_end; }

std::vector<Xattr> EntryRef::xattrs() const {
  std::vector<Xattr> out;
  walk_xattrs(tree_->impl_->str(LIVEFS_REC.xattr_off, LIVEFS_REC.xattr_len),
              [&](std::string_view n, std::string_view v) {
                out.push_back(Xattr{std::string(n), std::string(v)});
                return true;
              });
  return out;
}

std::optional<std::string> EntryRef::xattr(std::string_view wanted) const {
  std::optional<std::string> found;
  walk_xattrs(tree_->impl_->str(LIVEFS_REC.xattr_off, LIVEFS_REC.xattr_len),
              [&](std::string_view n, std::string_view v) {
                if (n != wanted) return true;
                found = std::string(v);
                return false;
              });
  return found;
}
#undef LIVEFS_REC

Entry EntryRef::to_entry() const {
  Entry e;
  e.path = std::string(path());
  e.type = type();
  e.mode = mode();
  e.uid = uid();
  e.gid = gid();
  e.size = size();
  e.mtime_sec = mtime_sec();
  e.mtime_nsec = mtime_nsec();
  e.rdev = rdev();
  e.nlink = nlink();
  e.link_group = link_group();
  e.opaque = opaque();
  e.structural = structural();
  e.content_booted = content_booted();
  e.target = std::string(target());
  e.xattrs = xattrs();
  e.object = object();
  return e;
}

// ---- Tree queries --------------------------------------------------------------------------

size_t Tree::size() const { return impl_->count; }
std::string_view Tree::bytes() const { return impl_->bytes; }
uint32_t Tree::version() const { return impl_->version; }

ObjectId Tree::root_digest_v1() const {
  const Impl& t = *impl_;
  std::vector<ObjectId> digest(t.count);
  for (size_t i = t.count; i-- > 0;) {
    const Record& r = t.rec(i);
    bool dir = r.type == static_cast<uint8_t>(EntryType::dir);
    Hasher h;
    auto add = [&](const void* p, size_t len) { h.update(p, len); };
    add(&r.type, 1);
    add(&r.opaque, 1);
    add(&r.mode, 4);
    add(&r.uid, 4);
    add(&r.gid, 4);
    add(&r.rdev, 8);
    if (!dir) {
      add(&r.size, 8);
      add(&r.nlink, 4);
      add(&r.mtime_sec, 8);
      add(&r.mtime_nsec, 4);
    }
    uint64_t tlen = r.target_len;
    add(&tlen, 8);
    add(t.strings + r.target_off, r.target_len);
    uint64_t xlen = r.xattr_len;
    add(&xlen, 8);
    add(t.strings + r.xattr_off, r.xattr_len);
    add(r.object, 16);
    if (dir) {
      for (size_t j = i + 1; j < r.subtree_end; j = t.rec(j).subtree_end) {
        std::string_view name = t.path(j).substr(t.rec(j).name_off);
        uint64_t len = name.size();
        add(&len, 8);
        add(name.data(), name.size());
        add(digest[j].bytes.data(), 16);
      }
    }
    digest[i] = h.finish();
  }
  return digest[0];
}

std::optional<EntryRef> Tree::find(std::string_view path) const {
  size_t lo = 0, hi = impl_->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = path_compare(impl_->path(mid), path);
    if (c == 0) return entry(mid);
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return std::nullopt;
}

std::vector<EntryRef> Tree::children(size_t dir_index) const {
  std::vector<EntryRef> out;
  size_t end = impl_->rec(dir_index).subtree_end;
  for (size_t j = dir_index + 1; j < end; j = impl_->rec(j).subtree_end) out.push_back(entry(j));
  return out;
}

std::optional<EntryRef> Tree::child(size_t dir_index, std::string_view name) const {
  std::string_view dir = impl_->path(dir_index);
  std::string path;
  path.reserve(dir.size() + 1 + name.size());
  path.append(dir);
  if (!dir.empty()) path.push_back('/');
  path.append(name);
  auto found = find(path);
  if (found && found->parent() == dir_index) return found;
  return std::nullopt;
}

// ---- parsing -------------------------------------------------------------------------------

Result<Tree> Tree::parse(std::shared_ptr<const std::string> bytes) {
  std::string_view b = *bytes;
  return parse_bytes(std::move(bytes), b);
}

Result<Tree> Tree::parse_bytes(std::shared_ptr<const void> keeper, std::string_view b) {
  if (b.size() < sizeof(Header)) return bad_manifest("truncated (no header)");
  Header h;
  std::memcpy(&h, b.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0) return bad_manifest("bad magic");
  if (h.version < kOldestVersion || h.version > kVersion)
    return bad_manifest("unsupported version " + std::to_string(h.version) + " (expected " +
                        std::to_string(kOldestVersion) + " to " + std::to_string(kVersion) + ")");
  if (h.record_size != sizeof(Record)) return bad_manifest("unexpected record size");
  if (h.entry_count == 0 || h.entry_count > (b.size() - sizeof(Header)) / sizeof(Record))
    return bad_manifest("truncated (entry count " + std::to_string(h.entry_count) + ")");
  uint64_t expected = sizeof(Header) + h.entry_count * sizeof(Record) + h.strings_size;
  if (b.size() != expected)
    return bad_manifest(b.size() < expected ? "truncated" : "trailing bytes");
  XXH128_hash_t sum = XXH3_128bits(b.data() + sizeof(Header), b.size() - sizeof(Header));
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, sum);
  if (std::memcmp(canon.digest, h.checksum, sizeof h.checksum) != 0)
    return bad_manifest("checksum mismatch");
  if (reinterpret_cast<uintptr_t>(b.data()) % alignof(Record) != 0)
    return fail(EINVAL, "tree manifest: misaligned buffer");

  auto impl = std::make_shared<Impl>();
  impl->keeper = std::move(keeper);
  impl->bytes = b;
  impl->records = reinterpret_cast<const Record*>(b.data() + sizeof(Header));
  impl->count = h.entry_count;
  impl->strings = b.data() + sizeof(Header) + h.entry_count * sizeof(Record);
  impl->strings_size = h.strings_size;
  impl->version = h.version;
  // Bounds are checked once here so that queries never read outside the buffer, whatever
  // the manifest says (the checksum guards against corruption, not against a bad writer).
  for (size_t i = 0; i < impl->count; ++i) {
    const Record& r = impl->rec(i);
    auto in = [&](uint64_t off, uint64_t len) {
      return off <= h.strings_size && len <= h.strings_size - off;
    };
    if (!in(r.path_off, r.path_len) || !in(r.target_off, r.target_len) ||
        !in(r.xattr_off, r.xattr_len) || r.name_off > r.path_len || r.subtree_end <= i ||
        r.subtree_end > impl->count || (i > 0 && r.parent >= i) ||
        r.type < static_cast<uint8_t>(EntryType::file) ||
        r.type > static_cast<uint8_t>(EntryType::whiteout))
      return bad_manifest("entry " + std::to_string(i) + " out of bounds");
  }
  if (!impl->path(0).empty() || impl->rec(0).type != static_cast<uint8_t>(EntryType::dir))
    return bad_manifest("first entry is not the root directory");
  Tree tree;
  tree.impl_ = std::move(impl);
  return tree;
}

Result<Tree> Tree::load(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return fail_errno("open(" + path.string() + ")");
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return fail_errno("fstat(" + path.string() + ")");
  auto size = static_cast<size_t>(st.st_size);
  if (size == 0)
    return std::unexpected(
        with_context(bad_manifest("truncated (no header)").error(), path.string()));
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (map == MAP_FAILED) return fail_errno("mmap(" + path.string() + ")");
  std::shared_ptr<const void> keeper(
      map, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  auto tree = parse_bytes(keeper, std::string_view(static_cast<const char*>(map), size));
  if (!tree) return std::unexpected(with_context(tree.error(), path.string()));
  // Checked: the pages go back to the page cache (a 157k-entry manifest is 31 MB), and what
  // a query reads is mapped again from there. Manifest files are only ever replaced by a
  // rename (write_file), so the mapped file never changes under the checked bounds.
  ::madvise(map, size, MADV_DONTNEED);
  return tree;
}

Result<Tree> Tree::load(const ObjectStore& store, const ObjectId& id) {
  auto bytes = store.read_verified(id);
  if (!bytes) return std::unexpected(bytes.error());
  auto tree = parse(std::make_shared<const std::string>(std::move(*bytes)));
  if (!tree) return std::unexpected(with_context(tree.error(), "tree " + id.hex()));
  return tree;
}

// ---- building ------------------------------------------------------------------------------

Result<Tree> Tree::build(std::vector<Entry> entries) {
  // Validate, find duplicates, and add missing parents (0755, root-owned directories).
  std::map<std::string, size_t,
           decltype([](const std::string& a, const std::string& b) { return path_less(a, b); })>
      by_path;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (!valid_path(entries[i].path))
      return fail(EINVAL, "tree: malformed path '" + entries[i].path + "'");
    if (!by_path.emplace(entries[i].path, i).second)
      return fail(EINVAL, "tree: duplicate path '" + entries[i].path + "'");
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    // A copy: adding a parent reallocates `entries`, which moves a short path's bytes.
    const std::string path = entries[i].path;
    std::string_view p = path;
    while (!p.empty()) {
      p = parent_of(p);
      auto it = by_path.find(std::string(p));
      if (it != by_path.end()) {
        if (entries[it->second].type != EntryType::dir)
          return fail(EINVAL, "tree: '" + entries[i].path + "' is below a non-directory");
        break;
      }
      Entry dir;
      dir.path = std::string(p);
      dir.type = EntryType::dir;
      dir.mode = 0755;
      dir.structural = true;  // made up: in a layer, what is below shows through
      by_path.emplace(dir.path, entries.size());
      entries.push_back(std::move(dir));
    }
  }
  if (!by_path.contains("")) {
    Entry root;
    root.type = EntryType::dir;
    root.mode = 0755;
    root.structural = true;
    by_path.emplace("", entries.size());
    entries.push_back(std::move(root));
  }
  if (entries[by_path.at("")].type != EntryType::dir)
    return fail(EINVAL, "tree: the root is not a directory");

  std::vector<size_t> order;
  order.reserve(by_path.size());
  for (auto& [path, idx] : by_path) order.push_back(idx);
  const size_t n = order.size();

  // Structure: parents and subtree ends from a stack of open directories.
  std::vector<uint32_t> parent(n, 0), subtree_end(n, static_cast<uint32_t>(n));
  std::vector<size_t> stack;  // indices (in sorted order) of open ancestors
  for (size_t i = 0; i < n; ++i) {
    std::string_view p = entries[order[i]].path;
    while (!stack.empty() && i > 0) {
      std::string_view top = entries[order[stack.back()]].path;
      bool is_ancestor =
          top.empty() || (p.size() > top.size() && p.starts_with(top) && p[top.size()] == '/');
      if (is_ancestor) break;
      subtree_end[stack.back()] = static_cast<uint32_t>(i);
      stack.pop_back();
    }
    parent[i] = stack.empty() ? 0 : static_cast<uint32_t>(stack.back());
    if (entries[order[i]].type == EntryType::dir) stack.push_back(i);
  }
  for (size_t i = 0; i < n; ++i)
    if (entries[order[i]].type != EntryType::dir) subtree_end[i] = static_cast<uint32_t>(i + 1);

  // Link counts: files by hard-link group, directories as 2 + subdirectories.
  std::map<uint32_t, uint32_t> group_size;
  for (const Entry& e : entries)
    if (e.type == EntryType::file && e.link_group != 0) ++group_size[e.link_group];
  std::vector<uint32_t> nlink(n, 1);
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries[order[i]];
    if (e.type == EntryType::dir) nlink[i] = 2;
    if (e.type == EntryType::file && e.link_group != 0) nlink[i] = group_size[e.link_group];
  }
  for (size_t i = 1; i < n; ++i)
    if (entries[order[i]].type == EntryType::dir) ++nlink[parent[i]];

  // Strings and records.
  std::string strings;
  std::vector<Record> records(n);
  std::vector<std::string> xattr_blobs(n);
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries[order[i]];
    Record& r = records[i];
    std::memset(&r, 0, sizeof r);
    r.path_off = strings.size();
    r.path_len = static_cast<uint32_t>(e.path.size());
    size_t slash = e.path.rfind('/');
    r.name_off = slash == std::string::npos ? 0 : static_cast<uint32_t>(slash + 1);
    strings += e.path;
    r.target_off = strings.size();
    r.target_len = static_cast<uint32_t>(e.target.size());
    strings += e.target;
    xattr_blobs[i] = encode_xattrs(e.xattrs);
    r.xattr_off = strings.size();
    r.xattr_len = static_cast<uint32_t>(xattr_blobs[i].size());
    strings += xattr_blobs[i];
    r.parent = parent[i];
    r.subtree_end = subtree_end[i];
    r.type = static_cast<uint8_t>(e.type);
    r.opaque = e.opaque ? 1 : 0;
    r.flags = static_cast<uint16_t>((e.structural ? kFlagStructural : 0) |
                                    (e.content_booted ? kFlagContentBooted : 0));
    r.mode = e.mode & 07777;
    r.uid = e.uid;
    r.gid = e.gid;
    r.size = e.type == EntryType::symlink ? e.target.size() : e.size;
    r.mtime_sec = e.mtime_sec;
    r.mtime_nsec = e.mtime_nsec;
    r.nlink = nlink[i];
    r.rdev = e.rdev;
    r.link_group = e.link_group;
    std::memcpy(r.object, e.object.bytes.data(), 16);
  }

  // Digests bottom-up: children come after their parent, so walk backwards.
  for (size_t i = n; i-- > 0;) {
    const Entry& e = entries[order[i]];
    Record& r = records[i];
    Hasher h;
    auto add = [&](const void* p, size_t len) { h.update(p, len); };
    add(&r.type, 1);
    add(&r.opaque, 1);
    uint8_t structural = e.structural ? 1 : 0;
    add(&structural, 1);
    add(&r.mode, 4);
    add(&r.uid, 4);
    add(&r.gid, 4);
    add(&r.rdev, 8);
    add(&r.mtime_sec, 8);
    add(&r.mtime_nsec, 4);
    if (e.type != EntryType::dir) {
      add(&r.size, 8);
      add(&r.nlink, 4);
    }
    uint64_t tlen = e.target.size();
    add(&tlen, 8);
    add(e.target.data(), e.target.size());
    uint64_t xlen = xattr_blobs[i].size();
    add(&xlen, 8);
    add(xattr_blobs[i].data(), xattr_blobs[i].size());
    add(r.object, 16);
    if (e.type == EntryType::dir) {
      for (size_t j = i + 1; j < r.subtree_end; j = records[j].subtree_end) {
        std::string_view name =
            std::string_view(entries[order[j]].path).substr(records[j].name_off);
        uint64_t len = name.size();
        add(&len, 8);
        add(name.data(), name.size());
        add(records[j].digest, 16);
      }
    }
    ObjectId d = h.finish();
    std::memcpy(r.digest, d.bytes.data(), 16);
  }

  auto bytes = std::make_shared<std::string>();
  bytes->resize(sizeof(Header) + n * sizeof(Record));
  std::memcpy(bytes->data() + sizeof(Header), records.data(), n * sizeof(Record));
  bytes->append(strings);
  Header h;
  std::memset(&h, 0, sizeof h);
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.record_size = sizeof(Record);
  h.entry_count = n;
  h.strings_size = strings.size();
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(
      &canon, XXH3_128bits(bytes->data() + sizeof(Header), bytes->size() - sizeof(Header)));
  std::memcpy(h.checksum, canon.digest, sizeof h.checksum);
  std::memcpy(bytes->data(), &h, sizeof h);
  return parse(std::move(bytes));
}

Result<ObjectId> Tree::save(ObjectStore& store) const { return store.put_bytes(bytes()); }

Result<ObjectId> Tree::save_rooted(ObjectStore& store) const {
  ObjectStore::Batch batch(store);  // its lock spans the root
  auto id = batch.put_bytes(bytes());
  if (!id) return id;
  if (auto st = batch.commit(); !st) return std::unexpected(st.error());
  if (auto st = store.add_tree_root(*id); !st) return std::unexpected(st.error());
  return id;
}

Status Tree::write_file(const std::filesystem::path& path) const {
  // A fresh name (O_EXCL, no symlink followed): a leftover of a crash, or a link planted
  // where the temp file goes, is never written through.
  static std::atomic<uint64_t> counter{0};
  std::string tmp =
      path.string() + ".tmp." + std::to_string(getpid()) + "." + std::to_string(counter++);
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd && errno == EEXIST) {
    ::unlink(tmp.c_str());
    fd.reset(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  }
  if (!fd) return fail_errno("open(" + tmp + ")");
  std::string_view b = bytes();
  while (!b.empty()) {
    ssize_t n = ::write(fd.get(), b.data(), b.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      auto err = errno_error("write(" + tmp + ")");
      ::unlink(tmp.c_str());
      return std::unexpected(err);
    }
    b.remove_prefix(static_cast<size_t>(n));
  }
  if (::fsync(fd.get()) < 0 || ::rename(tmp.c_str(), path.c_str()) < 0) {
    auto err = errno_error("write(" + path.string() + ")");
    ::unlink(tmp.c_str());
    return std::unexpected(err);
  }
  UniqueFd dir(::open(path.parent_path().empty() ? "." : path.parent_path().c_str(),
                      O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir) ::fsync(dir.get());
  return {};
}

}  // namespace livefs::store
