// Tree manifests as read from the store or a state directory: Tree::parse, every query on
// what it accepts, store::diff against a real tree, and Tree::build on the entries read back.
//
// The header's checksum is recomputed before parsing (see below), so mutations reach the
// structural checks instead of all dying at "checksum mismatch"; parse() promises that no
// query reads outside the buffer whatever the records say.
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "fuzz_support.h"
#include "store/diff.h"
#include "store/tree.h"

using livefs::store::Entry;
using livefs::store::EntryRef;
using livefs::store::EntryType;
using livefs::store::Tree;

namespace {

// Header layout (store/tree.cpp): the XXH3-128 of everything after the 64-byte header, in
// canonical form, at offset 32.
constexpr size_t kHeaderSize = 64;
constexpr size_t kChecksumOffset = 32;

void fix_checksum(std::string& bytes) {
  if (bytes.size() < kHeaderSize) return;
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon,
                           XXH3_128bits(bytes.data() + kHeaderSize, bytes.size() - kHeaderSize));
  std::memcpy(bytes.data() + kChecksumOffset, canon.digest, sizeof canon.digest);
}

// A small tree of every kind of entry, to diff the input against.
const Tree& reference_tree() {
  static const Tree tree = [] {
    std::vector<Entry> entries;
    auto add = [&](std::string path, EntryType type) -> Entry& {
      Entry& e = entries.emplace_back();
      e.path = std::move(path);
      e.type = type;
      e.mode = type == EntryType::dir ? 0755 : 0644;
      return e;
    };
    add("bin", EntryType::dir);
    add("bin/ls", EntryType::file).object = livefs::store::ObjectId::of("ls");
    add("bin/sh", EntryType::symlink).target = "dash";
    add("lib", EntryType::dir).opaque = true;
    add("lib/a.so", EntryType::file).xattrs = {{"security.capability", "x"}};
    add("lib/gone", EntryType::whiteout);
    add("dev/null", EntryType::chardev).rdev = 0x103;
    auto built = Tree::build(std::move(entries));
    FUZZ_CHECK(built.has_value());
    return std::move(*built);
  }();
  return tree;
}

std::vector<Entry> entries_of(const Tree& tree) {
  std::vector<Entry> out;
  out.reserve(tree.size());
  for (size_t i = 0; i < tree.size(); ++i) out.push_back(tree.entry(i).to_entry());
  return out;
}

// Whether the records are what Tree::build writes: sorted paths, parents and subtree ends
// that match them. parse() does not check this (only bounds); queries must be safe either
// way, but only a well-formed tree promises that find() finds every entry.
bool well_formed(const Tree& tree) {
  for (size_t i = 1; i < tree.size(); ++i) {
    EntryRef e = tree.entry(i);
    if (!livefs::store::path_less(tree.entry(i - 1).path(), e.path())) return false;
    std::string_view path = e.path();
    size_t slash = path.rfind('/');
    std::string_view parent_path = slash == std::string_view::npos ? "" : path.substr(0, slash);
    EntryRef parent = tree.entry(*e.parent());
    if (parent.path() != parent_path || parent.type() != EntryType::dir) return false;
    if (e.name() != path.substr(slash == std::string_view::npos ? 0 : slash + 1)) return false;
    if (e.subtree_end() > parent.subtree_end()) return false;
  }
  auto below = [](std::string_view path, std::string_view dir) {
    return dir.empty() ||
           (path.size() > dir.size() && path.starts_with(dir) && path[dir.size()] == '/');
  };
  for (size_t i = 0; i < tree.size(); ++i) {
    size_t end = i + 1;
    while (end < tree.size() && below(tree.entry(end).path(), tree.entry(i).path())) ++end;
    if (tree.entry(i).subtree_end() != end) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  livefs::fuzz::quiet_logs();
  reference_tree();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto bytes = std::make_shared<std::string>(reinterpret_cast<const char*>(data), size);
  fix_checksum(*bytes);
  auto parsed = Tree::parse(bytes);
  if (!parsed) return 0;
  const Tree& tree = *parsed;
  FUZZ_CHECK(tree.size() >= 1);
  FUZZ_CHECK(tree.root().path().empty() && tree.root().type() == EntryType::dir);
  FUZZ_CHECK(tree.bytes() == *bytes);

  // Every query on every entry, as the view, diff and the package readers make them.
  for (size_t i = 0; i < tree.size(); ++i) {
    EntryRef e = tree.entry(i);
    FUZZ_CHECK(e.path().ends_with(e.name()));
    FUZZ_CHECK(e.subtree_end() > i && e.subtree_end() <= tree.size());
    if (i > 0) FUZZ_CHECK(*e.parent() < i);
    for (const auto& x : e.xattrs()) FUZZ_CHECK(e.xattr(x.name).has_value());
    Entry copy = e.to_entry();
    FUZZ_CHECK(copy.path == e.path() && copy.target == e.target());
    (void)tree.find(e.path());
    (void)tree.child(i, e.name());
    if (e.type() == EntryType::dir) {
      for (const EntryRef& c : tree.children(i)) FUZZ_CHECK(c.index() > i);
    }
  }
  (void)tree.find("no/such/path");

  // Consumers walk two trees side by side and skip by digest.
  (void)livefs::store::diff(reference_tree(), tree);
  (void)livefs::store::diff(tree, reference_tree());

  if (well_formed(tree)) {
    for (size_t i = 0; i < tree.size(); ++i) {
      auto found = tree.find(tree.entry(i).path());
      FUZZ_CHECK(found && found->index() == i);
    }
    FUZZ_CHECK(livefs::store::diff(tree, tree).empty());
  }

  // What build() makes of the entries read back is its own fixed point: building again from
  // the rebuilt tree gives the same bytes.
  auto rebuilt = Tree::build(entries_of(tree));
  if (rebuilt) {
    FUZZ_CHECK(well_formed(*rebuilt));
    auto again = Tree::build(entries_of(*rebuilt));
    FUZZ_CHECK(again.has_value());
    FUZZ_CHECK(again->bytes() == rebuilt->bytes());
    FUZZ_CHECK(Tree::parse(std::make_shared<const std::string>(rebuilt->bytes())).has_value());
  }
  return 0;
}
