// Differential test of the merged view: a seeded random booted tree and random layers
// (modified, added, removed files; removed directories; files replaced by directories and
// the other way round). The expected merged tree is made with plain file operations on a
// copy of the booted tree; the mounted view and the expected tree are dumped (type, mode,
// owner, size, link target, xattrs, content hash) and must be equal, across switches.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "overlay/filesystem.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

// path → one line describing everything the view must serve for it.
std::map<std::string, std::string> dump(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    fs::path p = it->path();
    struct stat st;
    EXPECT_EQ(lstat(p.c_str(), &st), 0) << p;
    std::ostringstream line;
    line << std::oct << st.st_mode << std::dec << " " << st.st_uid << ":" << st.st_gid;
    if (S_ISREG(st.st_mode))
      line << " size=" << st.st_size << " hash=" << store::ObjectId::of(read_file(p)).hex();
    if (S_ISLNK(st.st_mode)) line << " -> " << fs::read_symlink(p).string();
    char names[1024];
    ssize_t n = llistxattr(p.c_str(), names, sizeof names);
    for (ssize_t pos = 0; n > 0 && pos < n;) {
      std::string name(names + pos);
      pos += static_cast<ssize_t>(name.size()) + 1;
      if (!name.starts_with("user.")) continue;
      char value[256];
      ssize_t v = lgetxattr(p.c_str(), name.c_str(), value, sizeof value);
      line << " " << name << "=" << std::string(value, v > 0 ? static_cast<size_t>(v) : 0);
    }
    // lexically: fs::relative resolves symlinks, and a link would take its target's key.
    out[p.lexically_relative(root).string()] = line.str();
  }
  return out;
}

class Differential : public ::testing::TestWithParam<int> {
 protected:
  void TearDown() override {
    if (fs_) {
      fs_->stop();
      server_.join();
    }
    ::umount2((tmp_ / "mnt").c_str(), MNT_DETACH);
  }

  void make_booted(std::mt19937& rng) {
    fs::path b = tmp_ / "booted";
    for (int d = 0; d < 6; ++d) {
      fs::path dir = b / ("d" + std::to_string(d)) / ("s" + std::to_string(d % 3));
      fs::create_directories(dir);
      for (int f = 0; f < 8; ++f) {
        fs::path file = dir / ("f" + std::to_string(f));
        write_file(file, "booted " + file.string() + std::string(rng() % 5000, 'b'),
                   f % 3 == 0 ? 0755 : 0644);
        if (f == 1) setxattr(file.c_str(), "user.tag", "orig", 4, 0);
        if (f == 2) chown(file.c_str(), 10 + d, 20 + d);
      }
      symlink("f0", (dir / "link").c_str());
      if (d == 0) mkfifo((dir / "fifo").c_str(), 0600);
    }
    write_file(b / "top", "top file");
  }

  // One random layer; applies the same changes to `expected`.
  store::Tree random_layer(std::mt19937& rng, const fs::path& expected) {
    std::vector<std::string> paths;
    for (auto& e : fs::recursive_directory_iterator(tmp_ / "booted"))
      paths.push_back(fs::relative(e.path(), tmp_ / "booted").string());
    std::shuffle(paths.begin(), paths.end(), rng);
    std::vector<store::Entry> entries;
    std::vector<std::string> touched;
    auto related = [&](const std::string& p) {
      for (const std::string& t : touched)
        if (p == t || p.starts_with(t + "/") || t.starts_with(p + "/")) return true;
      return false;
    };
    auto file_entry = [&](const std::string& path, const std::string& content, uint32_t mode) {
      store::Entry e;
      e.path = path;
      e.type = store::EntryType::file;
      e.mode = mode;
      e.size = content.size();
      e.object = *store_->put_bytes(std::string_view(content));
      return e;
    };
    int ops = 0;
    for (const std::string& p : paths) {
      if (ops >= 12 || related(p)) continue;
      fs::path exp = expected / p;
      bool is_dir = fs::is_directory(fs::symlink_status(exp));
      bool is_file = fs::is_regular_file(fs::symlink_status(exp));
      int op = static_cast<int>(rng() % 4);
      if (is_file && op == 0) {  // modify
        std::string content = "modified " + p + std::string(rng() % 3000, 'm');
        entries.push_back(file_entry(p, content, 0640));
        fs::remove(exp);
        write_file(exp, content, 0640);
      } else if (op == 1) {  // remove (file or whole directory)
        store::Entry w;
        w.path = p;
        w.type = store::EntryType::whiteout;
        entries.push_back(w);
        fs::remove_all(exp);
      } else if (is_file && op == 2) {  // file → directory with a file in it
        store::Entry d;
        d.path = p;
        d.type = store::EntryType::dir;
        d.mode = 0755;
        d.opaque = true;
        entries.push_back(d);
        entries.push_back(file_entry(p + "/inside", "inside " + p, 0644));
        fs::remove(exp);
        fs::create_directory(exp);
        chmod(exp.c_str(), 0755);
        write_file(exp / "inside", "inside " + p, 0644);
      } else if (is_dir && op == 3) {  // directory → file
        entries.push_back(file_entry(p, "was a directory", 0600));
        fs::remove_all(exp);
        write_file(exp, "was a directory", 0600);
      } else {
        continue;
      }
      touched.push_back(p);
      ++ops;
    }
    // Additions in a new directory and in an existing one.
    std::string added = "new" + std::to_string(rng() % 1000) + "/deep/file";
    entries.push_back(file_entry(added, "added " + added, 0644));
    write_file(expected / added, "added " + added, 0644);
    for (fs::path d = (expected / added).parent_path(); d != expected; d = d.parent_path())
      chmod(d.c_str(), 0755);
    if (!related("top") && !related("extra")) {
      entries.push_back(file_entry("extra", "extra", 0644));
      write_file(expected / "extra", "extra", 0644);
    }
    auto tree = store::Tree::build(std::move(entries));
    EXPECT_TRUE(tree) << tree.error().message();
    return std::move(*tree);
  }

  TempDir tmp_;
  std::shared_ptr<store::ObjectStore> store_;
  std::unique_ptr<Filesystem> fs_;
  std::thread server_;
};

TEST_P(Differential, MountedViewEqualsTheExpectedTree) {
  std::mt19937 rng(static_cast<unsigned>(GetParam()));
  make_booted(rng);
  store_ = std::make_shared<store::ObjectStore>(*store::ObjectStore::open(tmp_ / "store"));
  fs::create_directories(tmp_ / "mnt");
  UniqueFd fd(::open((tmp_ / "booted").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  auto view = View::create(std::move(fd), store_, *store::Tree::build({}), 0);
  auto mounted = Filesystem::mount({.mountpoint = tmp_ / "mnt"}, view);
  ASSERT_TRUE(mounted) << mounted.error().message();
  fs_ = std::move(*mounted);
  server_ = std::thread([this] { (void)fs_->serve(); });

  auto booted_dump = dump(tmp_ / "booted");
  ASSERT_EQ(dump(tmp_ / "mnt"), booted_dump);
  for (int round = 1; round <= 4; ++round) {
    fs::path expected = tmp_ / ("expected" + std::to_string(round));
    ASSERT_EQ(run("cp -a '" + (tmp_ / "booted").string() + "' '" + expected.string() + "'"), 0);
    store::Tree layer = random_layer(rng, expected);
    ASSERT_TRUE(fs_->switch_to(fs_->current()->with_layer(layer, round)));
    auto got = dump(tmp_ / "mnt");
    auto want = dump(expected);
    for (const auto& [path, line] : want)
      EXPECT_EQ(got[path], line) << "round " << round << ": " << path;
    for (const auto& [path, line] : got)
      EXPECT_TRUE(want.contains(path)) << "round " << round << ": unexpected " << path;
  }
  // And back to the booted tree.
  ASSERT_TRUE(fs_->switch_to(fs_->current()->with_layer(*store::Tree::build({}), 99)));
  EXPECT_EQ(dump(tmp_ / "mnt"), booted_dump);
}

INSTANTIATE_TEST_SUITE_P(Seeds, Differential, ::testing::Values(1, 2, 3, 4, 5, 6));

}  // namespace
}  // namespace livefs::overlay
