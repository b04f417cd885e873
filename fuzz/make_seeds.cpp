// Writes the seed corpora of the formats livefs writes itself, with its own writers: tree
// manifests (an imported directory of every file type, a layer, the smallest tree) into
// CORPUS/tree/ and generation journals (Journal::commit; one torn, one with a corrupt record)
// into CORPUS/journal/, and /etc undo manifests (etc::merge on a made-up /etc) into
// CORPUS/etc_undo/. Run by `scripts/fuzz --make-seeds` after a format change.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "livefs/etc_merge.h"
#include "overlay/journal.h"
#include "store/import.h"
#include "store/tree.h"

namespace fs = std::filesystem;
using namespace livefs;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "make_seeds: %s\n", what.c_str());
  std::exit(1);
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) die("cannot write " + path.string());
}

std::string read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void put(const fs::path& path, std::string_view content, mode_t mode = 0644) {
  fs::create_directories(path.parent_path());
  write(path, content);
  fs::permissions(path, static_cast<fs::perms>(mode));
}

// A directory with one of everything import_directory records.
void make_os_tree(const fs::path& root) {
  put(root / "bin/tool", "#!/bin/sh\necho tool\n", 0755);
  put(root / "bin/su", "setuid\n", 04755);
  fs::create_symlink("tool", root / "bin/alias");
  fs::create_symlink("/usr/lib/x86_64-linux-gnu", root / "lib64");
  put(root / "lib/libdemo.so.1", "library v1\n");
  fs::create_hard_link(root / "lib/libdemo.so.1", root / "lib/libdemo.so");
  put(root / "lib/with space", "x");
  put(root / std::string("lib/caf\xe9"), "not UTF-8");
  put(root / "share/empty", "");
  fs::create_directories(root / "share/doc");
  ::mkfifo((root / "share/fifo").c_str(), 0600);
  ::mknod((root / "share/null").c_str(), S_IFCHR | 0666, makedev(1, 3));
  std::string cap = "cap";
  ::setxattr((root / "bin/tool").c_str(), "user.livefs", cap.data(), cap.size(), 0);
  ::setxattr((root / "bin/tool").c_str(), "security.capability", cap.data(), cap.size(), 0);
}

store::Tree built(std::vector<store::Entry> entries) {
  auto tree = store::Tree::build(std::move(entries));
  if (!tree) die(tree.error().message());
  return std::move(*tree);
}

void tree_seeds(const fs::path& out, const fs::path& scratch) {
  fs::create_directories(out);
  fs::path os = scratch / "os";
  make_os_tree(os);
  auto imported = store::import_directory(os, nullptr, {.store_objects = false});
  if (!imported) die(imported.error().message());
  write(out / "imported", imported->tree.bytes());

  // A layer as apply and hotfix build them: staged files, a whiteout, an opaque directory.
  store::Entry file{.path = "bin/tool", .type = store::EntryType::file, .mode = 0755};
  file.size = 4;
  file.object = store::ObjectId::of("new\n");
  store::Entry gone{.path = "bin/old", .type = store::EntryType::whiteout};
  store::Entry opaque{.path = "share/doc", .type = store::EntryType::dir, .mode = 0755};
  opaque.opaque = true;
  store::Entry link{.path = "share/doc/README", .type = store::EntryType::symlink, .mode = 0777};
  link.target = "../../README";
  write(out / "layer", built({file, gone, opaque, link}).bytes());

  write(out / "root_only", built({}).bytes());
}

void journal_seeds(const fs::path& out, const fs::path& scratch) {
  fs::create_directories(out);
  fs::path path = scratch / "journal";
  {
    auto journal = overlay::Journal::open(path);
    if (!journal) die(journal.error().message());
    auto commit = [&](overlay::JournalOp op, std::string_view layer_content,
                      std::vector<std::string> paths) {
      store::ObjectId layer =
          layer_content.empty() ? store::ObjectId{} : store::ObjectId::of(layer_content);
      if (auto r = journal->commit(op, layer, std::move(paths)); !r) die(r.error().message());
    };
    using overlay::JournalOp;
    commit(JournalOp::apply, "layer 1", {"lib/libdemo.so.2", "bin/hello"});
    // Paths that need escaping: a space, '%', a byte that is not UTF-8, a newline, the root.
    commit(JournalOp::apply, "layer 2",
           {"lib/with space", "100%", std::string("caf\xe9"), "new\nline", ""});
    commit(JournalOp::hotfix, "hotfix 1", {});
    commit(JournalOp::rollback, "layer 1", {});
    commit(JournalOp::hotfix, "", {});
    commit(JournalOp::apply, "layer 3", {"lib"});
    commit(JournalOp::reset, "", {});
  }
  std::string whole = read(path);
  write(out / "history", whole);
  // A torn append: the last record cut short (ignored with a warning).
  write(out / "torn", whole.substr(0, whole.size() - 10));
  // A corrupt record with valid ones after it (the journal is then refused).
  std::string corrupt = whole;
  corrupt[corrupt.find('\n') + 3] ^= 1;
  write(out / "corrupt", corrupt);
}

// The manifest of a merge from `booted` to `staged` over a copy of `booted` as /etc.
std::string etc_manifest(const fs::path& scratch, const fs::path& booted, const fs::path& staged) {
  fs::path live = scratch / "etc";
  fs::copy(booted, live, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  auto plan = etc::plan(booted, staged, live);
  if (!plan) die(plan.error().message());
  fs::path undo = scratch / "undo";
  if (auto st = etc::merge(*plan, staged, live, undo, "booted-tree"); !st)
    die(st.error().message());
  return read(undo / "manifest");
}

void etc_undo_seeds(const fs::path& out, const fs::path& scratch) {
  fs::create_directories(out);
  // Each kind of step, in the live directory and below it, and names that need the hex: a
  // space, a newline, a byte that is not UTF-8.
  fs::path b = scratch / "merge/booted", s = scratch / "merge/staged";
  for (const auto& root : {b, s}) {
    put(root / "same.conf", "same\n");
    put(root / "changed.conf", root == b ? "v1\n" : "v2\n");
    put(root / "ssh/sshd_config", root == b ? "Port 22\n" : "Port 2222\n");
    put(root / "with space.conf", root == b ? "a\n" : "b\n");
  }
  put(b / std::string("caf\xe9.conf"), "gone\n");
  put(b / "gone.d/old.conf", "gone\n");
  put(s / "new\nline.conf", "added\n");
  put(s / "added.d/one.conf", "added\n");
  fs::create_symlink("changed.conf", s / "alias");
  fs::permissions(s / "ssh", static_cast<fs::perms>(0700));
  write(out / "merge", etc_manifest(scratch / "merge", b, s));

  // The smallest: one file updated at the top.
  fs::path b1 = scratch / "one/booted", s1 = scratch / "one/staged";
  put(b1 / "hostname.default", "old\n");
  put(s1 / "hostname.default", "new\n");
  write(out / "one", etc_manifest(scratch / "one", b1, s1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) die("usage: make_seeds CORPUS_DIR");
  fs::path corpus = argv[1];
  char scratch[] = "/tmp/livefs-seeds-XXXXXX";
  if (::mkdtemp(scratch) == nullptr) die("mkdtemp");
  tree_seeds(corpus / "tree", fs::path(scratch) / "tree");
  journal_seeds(corpus / "journal", fs::path(scratch));
  etc_undo_seeds(corpus / "etc_undo", fs::path(scratch) / "etc_undo");
  fs::remove_all(scratch);
  return 0;
}
