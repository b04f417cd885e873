// The TreeReaders: a directory on disk and an imported manifest read through the store with
// a prefix, symlinks resolved inside the tree, and a PackageDb opened through each.
#include "packages/tree_reader.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "dpkg_fixture.h"
#include "packages/package_db.h"
#include "store/import.h"
#include "store/object_store.h"
#include "store_import.h"
#include "support/temp_dir.h"

namespace livefs::packages {
namespace {

using livefs::testing::TempDir;
using livefs::testing::write_file;
using Names = std::vector<std::string>;
namespace fs = std::filesystem;

// What both readers must agree on, for a tree holding usr/ (whole or as the prefix).
void write_usr(const fs::path& root) {
  write_file(root / "usr/lib/os-release", "ID=test\n");
  write_file(root / "usr/share/a", "a");
  fs::create_directories(root / "usr/empty");
  fs::create_symlink("/usr/lib/os-release", root / "usr/share/absolute");
  fs::create_symlink("../lib/os-release", root / "usr/share/relative");
  fs::create_symlink("../../../../../usr/lib/os-release", root / "usr/share/escaping");
  fs::create_directory_symlink("/usr/lib", root / "usr/lib64");
  fs::create_symlink("loop2", root / "usr/share/loop1");
  fs::create_symlink("loop1", root / "usr/share/loop2");
}

void expect_usr_reads(const TreeReader& reader) {
  auto file = reader.read_file("usr/lib/os-release");
  ASSERT_TRUE(file) << file.error().message();
  EXPECT_EQ(*file, "ID=test\n");
  // Absolute targets start at the tree's root, never the host's; ".." stops at the root.
  EXPECT_EQ(reader.read_file("usr/share/absolute").value(), "ID=test\n");
  EXPECT_EQ(reader.read_file("usr/share/relative").value(), "ID=test\n");
  EXPECT_EQ(reader.read_file("usr/share/escaping").value(), "ID=test\n");
  EXPECT_EQ(reader.read_file("usr/lib64/os-release").value(), "ID=test\n");
  EXPECT_EQ(reader.read_file("/usr/share/a").value(), "a");
  EXPECT_EQ(reader.read_file("usr/share/missing").value(), std::nullopt);
  EXPECT_EQ(reader.read_file("usr/share/a/below-a-file").value(), std::nullopt);
  auto dir = reader.read_file("usr/share");
  ASSERT_FALSE(dir);
  EXPECT_EQ(dir.error().code, EISDIR);
  auto loop = reader.read_file("usr/share/loop1");
  ASSERT_FALSE(loop);
  EXPECT_EQ(loop.error().code, ELOOP);

  EXPECT_EQ(reader.read_link("usr/share/absolute").value(), "/usr/lib/os-release");
  EXPECT_EQ(reader.read_link("usr/lib64").value(), "/usr/lib");
  EXPECT_EQ(reader.read_link("usr/share/a").value(), std::nullopt);
  EXPECT_EQ(reader.read_link("usr/share/missing").value(), std::nullopt);
  EXPECT_EQ(reader.read_link("usr").value(), std::nullopt);

  EXPECT_EQ(reader.list("usr/share").value(),
            (Names{"a", "absolute", "escaping", "loop1", "loop2", "relative"}));
  EXPECT_EQ(reader.list("usr/lib64").value(), Names{"os-release"});
  EXPECT_EQ(reader.list("usr/empty").value(), Names{});
  auto missing = reader.list("usr/nothing");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  auto not_dir = reader.list("usr/share/a");
  ASSERT_FALSE(not_dir);
  EXPECT_EQ(not_dir.error().code, ENOTDIR);
}

TEST(DirectoryReader, ReadsInsideTheRoot) {
  TempDir tmp;
  write_usr(tmp.path());
  write_file(tmp / "etc/hostname", "box\n");
  auto reader = directory_reader(tmp.path());
  expect_usr_reads(*reader);
  EXPECT_EQ(reader->list("").value(), (Names{"etc", "usr"}));
  EXPECT_EQ(reader->read_file("etc/hostname").value(), "box\n");
}

TEST(DirectoryReader, MissingRootFailsEveryCall) {
  TempDir tmp;
  auto reader = directory_reader(tmp / "nothing");
  auto file = reader->read_file("a");
  ASSERT_FALSE(file);
  EXPECT_EQ(file.error().code, ENOENT);
  EXPECT_FALSE(reader->list(""));
  EXPECT_FALSE(reader->read_link("a"));
}

using testing::import;
using testing::Imported;

TEST(ManifestReader, ReadsThroughAPrefix) {
  TempDir tmp;
  write_usr(tmp / "os");
  write_file(tmp / "os/etc/hostname", "box\n");
  Imported usr = import(tmp / "os/usr", tmp / "store");
  ASSERT_TRUE(usr.tree);
  auto reader = manifest_reader(*usr.tree, usr.store, "usr");
  expect_usr_reads(*reader);
  // Outside the prefix nothing exists; the root holds only the way to it.
  EXPECT_EQ(reader->read_file("etc/hostname").value(), std::nullopt);
  EXPECT_EQ(reader->read_link("etc").value(), std::nullopt);
  EXPECT_EQ(reader->list("").value(), Names{"usr"});
  EXPECT_FALSE(reader->list("etc"));
}

TEST(ManifestReader, WholeTreeAndDeepPrefix) {
  TempDir tmp;
  write_usr(tmp / "os");
  Imported whole = import(tmp / "os", tmp / "store");
  ASSERT_TRUE(whole.tree);
  expect_usr_reads(*manifest_reader(*whole.tree, whole.store, ""));

  Imported share = import(tmp / "os/usr/share", tmp / "store");
  ASSERT_TRUE(share.tree);
  auto reader = manifest_reader(*share.tree, share.store, "usr/share/");
  EXPECT_EQ(reader->list("").value(), Names{"usr"});
  EXPECT_EQ(reader->list("usr").value(), Names{"share"});
  EXPECT_EQ(reader->read_file("usr/share/a").value(), "a");
  // The target is outside what the manifest holds.
  EXPECT_EQ(reader->read_file("usr/share/absolute").value(), std::nullopt);
}

TEST(ManifestReader, CorruptObjectIsAnError) {
  TempDir tmp;
  write_usr(tmp / "os");
  Imported usr = import(tmp / "os/usr", tmp / "store");
  ASSERT_TRUE(usr.tree);
  auto entry = usr.tree->find("share/a");
  ASSERT_TRUE(entry);
  fs::path object = tmp / "store" / store::ObjectStore::relative_path(entry->object());
  ::chmod(object.c_str(), 0644);
  write_file(object, "b");
  auto reader = manifest_reader(*usr.tree, usr.store, "usr");
  auto read = reader->read_file("usr/share/a");
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, EIO);
  EXPECT_NE(read.error().context.find("usr/share/a"), std::string::npos) << read.error().context;
}

// The staged deployment's database, read from its manifest of usr/ alone: the db under
// usr/var/lib/dpkg is found, and without the top-level symlinks in sight, "/bin/ls" still
// maps to usr/bin/ls (no /bin exists in what the reader sees).
TEST(ManifestReader, PackageDbOfAServedUsrManifest) {
  TempDir tmp;
  fixture::FixtureOptions options;
  options.db_dir = "usr/var/lib/dpkg";
  fixture::write_os_tree(tmp / "os", options);
  Imported usr = import(tmp / "os/usr", tmp / "store");
  ASSERT_TRUE(usr.tree);
  std::shared_ptr<const TreeReader> reader = manifest_reader(*usr.tree, usr.store, "usr");
  auto db = open_package_db(reader, "usr");
  ASSERT_TRUE(db) << db.error().message();
  ASSERT_TRUE(*db);
  EXPECT_EQ((*db)->location(), "usr/var/lib/dpkg");
  auto on_disk_reader = directory_reader(tmp / "os");
  auto on_disk = open_package_db(*on_disk_reader, "usr");
  ASSERT_TRUE(on_disk && *on_disk);
  EXPECT_EQ((*db)->packages(), (*on_disk)->packages());
  for (const PackageInfo& p : (*db)->packages()) {
    auto from_manifest = (*db)->files(p.name);
    auto from_disk = (*on_disk)->files(p.name);
    ASSERT_TRUE(from_manifest && from_disk) << p.name;
    EXPECT_EQ(*from_manifest, *from_disk) << p.name;
  }
  EXPECT_EQ((*db)->owners("bin/ls"), Names{"coreutils"});
  EXPECT_EQ((*db)->owners("lib/i386-linux-gnu/libc.so.6"), Names{"libc6:i386"});
}

}  // namespace
}  // namespace livefs::packages
