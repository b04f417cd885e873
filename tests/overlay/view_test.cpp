// View without a mount: booted paths resolved beneath the booted directory only, readlink of
// a symlink that grew since the snapshot, directory inode numbers, listing cookies.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "overlay/view.h"
#include "support/entries.h"
#include "support/temp_dir.h"

namespace livefs::overlay {
namespace {

using livefs::testing::build_tree;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

class ViewTest : public ::testing::Test {
 protected:
  void SetUp() override {
    booted_ = tmp_ / "booted";
    outside_ = tmp_ / "outside";
    write_file(outside_ / "secret", "host secret\n", 0600);
    ASSERT_EQ(setxattr((outside_ / "secret").c_str(), "user.k", "outside", 7, 0), 0);
    write_file(outside_ / "sub/deeper", "deeper\n");
    write_file(booted_ / "bin/tool", "tool\n", 0755);
    // The escapes: an absolute and a relative symlink to a directory outside the booted tree.
    ASSERT_EQ(symlink(outside_.c_str(), (booted_ / "lnk").c_str()), 0);
    ASSERT_EQ(symlink("../../outside", (booted_ / "bin/rel").c_str()), 0);
  }

  std::shared_ptr<const View> view(store::Tree layer, uint64_t generation = 0) {
    UniqueFd fd(::open(booted_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    EXPECT_TRUE(fd);
    return View::create(std::move(fd), nullptr, std::move(layer), generation);
  }

  static std::set<std::string> names(const std::vector<DirEntry>& listing) {
    std::set<std::string> out;
    for (const DirEntry& e : listing) out.insert(e.name);
    return out;
  }

  TempDir tmp_;
  fs::path booted_, outside_;
};

TEST_F(ViewTest, BootedPathsBelowASymlinkAreAbsent) {
  // A hotfix under the booted symlinks makes non-opaque layer directories there.
  auto v = view(
      build_tree({livefs::testing::dir("lnk"), livefs::testing::file("lnk/hotfix", "h"),
                  livefs::testing::dir("bin/rel"), livefs::testing::file("bin/rel/hotfix", "h")}));
  for (std::string path : {"lnk/secret", "lnk/sub", "lnk/sub/deeper", "bin/rel/secret"}) {
    auto r = v->resolve(path);
    ASSERT_FALSE(r) << path << " resolved to the file outside the booted tree";
    EXPECT_EQ(r.error().code, ENOENT) << path;
  }
  ASSERT_TRUE(v->resolve("lnk/hotfix"));
  auto lnk = v->resolve("lnk");
  ASSERT_TRUE(lnk);
  EXPECT_EQ(lnk->source, Source::layer);
  auto listing = v->list(*lnk);
  ASSERT_TRUE(listing);
  EXPECT_EQ(names(*listing), std::set<std::string>{"hotfix"});

  // Without any layer, the same paths are absent too (the kernel never walks below a
  // symlink, but nothing else may either).
  auto plain = view(build_tree({}));
  EXPECT_FALSE(plain->resolve("lnk/secret"));
  EXPECT_FALSE(plain->resolve("bin/rel/secret"));
  auto link = plain->resolve("lnk");
  ASSERT_TRUE(link);
  EXPECT_TRUE(S_ISLNK(link->st.st_mode));
  EXPECT_EQ(plain->readlink(*link).value(), outside_.string());

  // Content, listings, link targets and xattrs of a booted path below a symlink are refused
  // as well, whoever built the Resolved.
  struct stat st;
  ASSERT_EQ(stat((outside_ / "secret").c_str(), &st), 0);
  auto forge = [](std::string path, const struct stat& attrs) {
    Resolved r;
    r.source = Source::booted;
    r.path = std::move(path);
    r.st = attrs;
    return r;
  };
  Resolved forged = forge("lnk/secret", st);
  EXPECT_FALSE(plain->xattr(forged, "user.k"));
  EXPECT_FALSE(plain->xattr_names(forged));
  ASSERT_EQ(stat(outside_.c_str(), &st), 0);
  Resolved forged_dir = forge("lnk", st);
  EXPECT_FALSE(plain->list(forged_dir));
  ASSERT_EQ(symlink("target", (outside_ / "inner-link").c_str()), 0);
  ASSERT_EQ(lstat((outside_ / "inner-link").c_str(), &st), 0);
  Resolved forged_link = forge("lnk/inner-link", st);
  EXPECT_FALSE(plain->readlink(forged_link));
}

TEST_F(ViewTest, XattrsOfBootedEntriesAreServed) {
  ASSERT_EQ(setxattr((booted_ / "bin/tool").c_str(), "user.k", "v", 1, 0), 0);
  ASSERT_EQ(lsetxattr((booted_ / "lnk").c_str(), "trusted.t", "on-the-link", 11, 0), 0);
  auto v = view(build_tree({}));
  auto tool = v->resolve("bin/tool");
  ASSERT_TRUE(tool);
  EXPECT_EQ(v->xattr(*tool, "user.k").value(), "v");
  auto names = v->xattr_names(*tool);
  ASSERT_TRUE(names);
  EXPECT_TRUE(std::set<std::string>(names->begin(), names->end()).contains("user.k"));
  // A symlink's own xattrs, not its target's.
  auto lnk = v->resolve("lnk");
  ASSERT_TRUE(lnk);
  EXPECT_EQ(v->xattr(*lnk, "trusted.t").value(), "on-the-link");
  auto root = v->resolve("");
  ASSERT_TRUE(root);
  EXPECT_TRUE(v->xattr_names(*root));
}

// The snapshot's st_size was the first guess of the old readlink, which retried with the
// same size forever once the link grew. Run in a child with an alarm so a spin fails the test.
TEST_F(ViewTest, ReadlinkOfASymlinkThatGrewSinceTheSnapshot) {
  ASSERT_EQ(symlink("tool", (booted_ / "bin/alias").c_str()), 0);
  auto v = view(build_tree({}));
  auto r = v->resolve("bin/alias");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->st.st_size, 4);
  std::string longer(300, 'x');
  ASSERT_EQ(unlink((booted_ / "bin/alias").c_str()), 0);
  ASSERT_EQ(symlink(longer.c_str(), (booted_ / "bin/alias").c_str()), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(30);
    auto target = v->readlink(*r);
    _exit(target && *target == longer ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "readlink did not return (signal " << WTERMSIG(status) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "readlink did not return the current target";
}

TEST_F(ViewTest, LayerDirectoryInodeDependsOnItsPathOnly) {
  auto before = view(build_tree({livefs::testing::file("new/deep/file", "one")}));
  auto after = view(build_tree({livefs::testing::file("new/deep/file", "two, longer")}), 1);
  for (std::string path : {"new", "new/deep"}) {
    auto a = before->resolve(path);
    auto b = after->resolve(path);
    ASSERT_TRUE(a && b) << path;
    EXPECT_EQ(a->st.st_ino, b->st.st_ino) << path;
  }
  EXPECT_NE(before->resolve("new")->st.st_ino, before->resolve("new/deep")->st.st_ino);
  EXPECT_NE(before->resolve("new/deep/file")->st.st_ino, after->resolve("new/deep/file")->st.st_ino)
      << "a file whose content changed is another file";
}

TEST_F(ViewTest, ListingsAreInCookieOrder) {
  for (int i = 0; i < 50; ++i) write_file(booted_ / "many" / ("b" + std::to_string(i)), "b");
  std::vector<store::Entry> layer;
  for (int i = 0; i < 50; ++i)
    layer.push_back(livefs::testing::file("many/l" + std::to_string(i), "l"));
  auto v = view(build_tree(std::move(layer)));
  auto dir = v->resolve("many");
  ASSERT_TRUE(dir);
  auto listing = v->list(*dir);
  ASSERT_TRUE(listing);
  ASSERT_EQ(listing->size(), 100u);
  for (size_t i = 0; i < listing->size(); ++i) {
    const DirEntry& e = (*listing)[i];
    EXPECT_EQ(e.cookie, dir_cookie(e.name));
    EXPECT_GT(e.cookie, 2u);
    EXPECT_LT(e.cookie, uint64_t{1} << 63);
    if (i > 0) {
      EXPECT_LT((*listing)[i - 1].cookie, e.cookie);
    }
  }
  EXPECT_GT(dir_cookie(""), 2u);
}

// Listings are cached per View, but the cache does not grow with the tree: past its bound the
// listings not used since the last sweep go, and a listing in use stays valid for its reader.
TEST_F(ViewTest, ListingCacheIsBounded) {
  for (int d = 0; d < 8; ++d)
    for (int i = 0; i < 10; ++i)
      write_file(booted_ / "dirs" / std::to_string(d) / ("f" + std::to_string(i)), "x");
  auto v = view(build_tree({}));
  v->set_listing_cache_limit(25);
  auto first_dir = v->resolve("dirs/0");
  ASSERT_TRUE(first_dir);
  auto held = v->cached_list(*first_dir);
  ASSERT_TRUE(held);
  for (int d = 0; d < 8; ++d) {
    auto dir = v->resolve("dirs/" + std::to_string(d));
    ASSERT_TRUE(dir);
    auto listing = v->cached_list(*dir);
    ASSERT_TRUE(listing);
    EXPECT_EQ((*listing)->size(), 10u);
    EXPECT_LE(v->cached_listing_entries(), 25u) << "after dirs/" << d;
    // The same listing again while it is cached: one computation per View and directory.
    EXPECT_EQ(v->cached_list(*dir)->get(), listing->get());
  }
  EXPECT_EQ((*held)->size(), 10u);
  EXPECT_EQ(names(**held).count("f9"), 1u);
  // Booted names carry no attributes: readdirplus resolves them from the booted tree.
  for (const DirEntry& e : **held) {
    EXPECT_TRUE(e.booted);
    auto r = v->resolve_listed("dirs/0", e);
    ASSERT_TRUE(r) << e.name;
    EXPECT_TRUE(S_ISREG(r->st.st_mode));
    EXPECT_EQ(r->st.st_ino, e.ino);
  }
}

}  // namespace
}  // namespace livefs::overlay
