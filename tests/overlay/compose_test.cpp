// compose_layers: a hotfix layer stacked on the applied layer, folded into one layer that
// resolve_merged serves as the stack would. Hand-written cases, then a randomized
// differential test against a naive stacked resolution.
#include "overlay/compose.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <string>
#include <vector>

#include "overlay/selection.h"
#include "support/entries.h"

namespace livefs::overlay {
namespace {

using livefs::testing::build_tree;
using livefs::testing::dir;
using livefs::testing::file;
using store::Entry;
using store::EntryType;
using store::Tree;

Entry whiteout(std::string path) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::whiteout;
  return e;
}

Entry opaque_dir(std::string path, uint32_t mode = 0755) {
  Entry e = dir(std::move(path), mode);
  e.opaque = true;
  return e;
}

Entry symlink_entry(std::string path, std::string target) {
  Entry e;
  e.path = std::move(path);
  e.type = EntryType::symlink;
  e.mode = 0777;
  e.size = target.size();
  e.target = std::move(target);
  return e;
}

Tree compose(const Tree& booted, const Tree& lower, const Tree& upper) {
  auto t = compose_layers(booted, lower, upper);
  EXPECT_TRUE(t) << t.error().message();
  return std::move(*t);
}

// "a/b/c" → "a", "a/b" (the root left out: it is a directory everywhere).
std::vector<std::string> proper_ancestors(const std::string& path) {
  std::vector<std::string> out;
  for (size_t pos = path.find('/'); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    out.push_back(path.substr(0, pos));
  }
  return out;
}

// The stack resolved naively, upper first: an upper non-directory at an ancestor hides the
// path; an upper entry at the path shows (a directory with the attributes of the directory
// lower and booted show there, if any); otherwise lower over booted decides. The root is
// lower's (upper's root is ignored).
std::optional<Entry> stacked(const Tree& booted, const Tree& lower, const Tree& upper,
                             const std::string& path) {
  if (path.empty()) return resolve_merged(booted, lower, path);
  for (const auto& a : proper_ancestors(path)) {
    if (auto u = upper.find(a); u && u->type() != EntryType::dir) return std::nullopt;
  }
  auto below = resolve_merged(booted, lower, path);
  if (auto u = upper.find(path)) {
    if (u->type() == EntryType::dir && below && below->type == EntryType::dir) return below;
    return u->to_entry();
  }
  return below;
}

std::string describe(const std::optional<Entry>& e) {
  if (!e) return "absent";
  std::string s = store::type_name(e->type);
  s += " mode " + std::to_string(e->mode);
  if (e->type == EntryType::file) s += " object " + e->object.hex();
  if (e->type == EntryType::symlink) s += " -> " + e->target;
  return s;
}

void expect_same_view(const std::optional<Entry>& got, const std::optional<Entry>& want,
                      const std::string& path) {
  ASSERT_EQ(got.has_value(), want.has_value())
      << "path '" << path << "': got " << describe(got) << ", want " << describe(want);
  if (got) {
    EXPECT_TRUE(same_entry(*got, *want))
        << "path '" << path << "': got " << describe(got) << ", want " << describe(want);
  }
}

TEST(ComposeLayers, FileOverLowerWhiteoutShows) {
  Tree booted = build_tree({dir(""), dir("etc"), file("etc/x", "booted")});
  Tree lower = build_tree({dir(""), dir("etc"), whiteout("etc/x")});
  Tree upper = build_tree({dir(""), dir("etc"), file("etc/x", "hotfix")});
  Tree result = compose(booted, lower, upper);
  auto x = resolve_merged(booted, result, "etc/x");
  ASSERT_TRUE(x);
  EXPECT_EQ(x->object, store::ObjectId::of("hotfix"));
}

TEST(ComposeLayers, DirectoryOverLowerWhiteoutHidesTheBootedSubtree) {
  Tree booted = build_tree({dir(""), dir("d", 0700), file("d/old", "o")});
  Tree lower = build_tree({dir(""), whiteout("d")});
  Tree upper = build_tree({dir(""), dir("d", 0750), file("d/new", "n")});
  Tree result = compose(booted, lower, upper);
  auto d = result.find("d");
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->opaque());
  auto shown = resolve_merged(booted, result, "d");
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->mode, 0750u);
  EXPECT_TRUE(resolve_merged(booted, result, "d/new"));
  EXPECT_FALSE(resolve_merged(booted, result, "d/old"));
}

TEST(ComposeLayers, DirectoryOverLowerFileIsOpaque) {
  Tree booted = build_tree({dir(""), file("opt", "booted")});
  Tree lower = build_tree({dir(""), file("opt", "applied")});
  Tree upper = build_tree({dir(""), dir("opt", 0711), file("opt/y", "y")});
  Tree result = compose(booted, lower, upper);
  auto opt = result.find("opt");
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->type(), EntryType::dir);
  EXPECT_TRUE(opt->opaque());
  auto shown = resolve_merged(booted, result, "opt");
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->type, EntryType::dir);
  EXPECT_EQ(shown->mode, 0711u);
  auto y = resolve_merged(booted, result, "opt/y");
  ASSERT_TRUE(y);
  EXPECT_EQ(y->object, store::ObjectId::of("y"));
}

TEST(ComposeLayers, DirectoryOverLowerOpaqueDirectoryKeepsItOpaque) {
  Tree booted =
      build_tree({dir(""), dir("share"), dir("share/doc", 0755), file("share/doc/readme", "r")});
  Tree lower = build_tree(
      {dir(""), dir("share"), opaque_dir("share/doc", 0700), file("share/doc/new", "n")});
  Tree upper =
      build_tree({dir(""), dir("share"), dir("share/doc", 0777), file("share/doc/hot", "h")});
  Tree result = compose(booted, lower, upper);
  auto doc = result.find("share/doc");
  ASSERT_TRUE(doc);
  EXPECT_TRUE(doc->opaque());
  EXPECT_EQ(doc->mode(), 0700u);
  EXPECT_FALSE(resolve_merged(booted, result, "share/doc/readme"));
  EXPECT_TRUE(resolve_merged(booted, result, "share/doc/new"));
  EXPECT_TRUE(resolve_merged(booted, result, "share/doc/hot"));
}

TEST(ComposeLayers, DirectoryOverBootedDirectoryMerges) {
  Tree booted =
      build_tree({dir(""), dir("usr", 0755), dir("usr/bin", 0755), file("usr/bin/ls", "ls")});
  Tree lower = build_tree({dir("")});
  Tree upper =
      build_tree({dir(""), dir("usr", 0700), dir("usr/bin", 0700), file("usr/bin/tool", "t")});
  Tree result = compose(booted, lower, upper);
  EXPECT_FALSE(result.find("usr/bin")->opaque());
  auto bin = resolve_merged(booted, result, "usr/bin");
  ASSERT_TRUE(bin);
  EXPECT_EQ(bin->mode, 0755u);  // the booted directory's attributes
  EXPECT_TRUE(resolve_merged(booted, result, "usr/bin/ls"));
  EXPECT_TRUE(resolve_merged(booted, result, "usr/bin/tool"));
}

TEST(ComposeLayers, FileReplacesALowerDirectorySubtree) {
  Tree booted = build_tree({dir(""), dir("d"), file("d/b", "b")});
  Tree lower =
      build_tree({dir(""), opaque_dir("d"), file("d/x", "x"), dir("d/sub"), file("d/sub/y", "y")});
  Tree upper = build_tree({dir(""), symlink_entry("d", "elsewhere")});
  Tree result = compose(booted, lower, upper);
  EXPECT_FALSE(result.find("d/x"));
  EXPECT_FALSE(result.find("d/sub"));
  EXPECT_FALSE(result.find("d/sub/y"));
  auto d = resolve_merged(booted, result, "d");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->type, EntryType::symlink);
  EXPECT_EQ(d->target, "elsewhere");
  EXPECT_FALSE(resolve_merged(booted, result, "d/x"));
  EXPECT_FALSE(resolve_merged(booted, result, "d/b"));
}

TEST(ComposeLayers, HardLinkGroupsOfTheTwoLayersStayApart) {
  auto linked = [](std::string path, std::string_view content, uint32_t group) {
    Entry e = file(std::move(path), content);
    e.link_group = group;
    return e;
  };
  Tree booted = build_tree({dir("")});
  Tree lower = build_tree({dir(""), linked("a1", "a", 1), linked("a2", "a", 1)});
  Tree upper = build_tree({dir(""), linked("b1", "b", 1), linked("b2", "b", 1)});
  Tree result = compose(booted, lower, upper);
  for (const char* p : {"a1", "a2", "b1", "b2"}) EXPECT_EQ(result.find(p)->nlink(), 2u) << p;
  EXPECT_NE(result.find("a1")->link_group(), result.find("b1")->link_group());
}

TEST(ComposeLayers, RejectsWhiteoutsAndOpaqueDirectoriesInUpper) {
  Tree booted = build_tree({dir(""), file("x", "x")});
  Tree lower = build_tree({dir("")});
  auto w = compose_layers(booted, lower, build_tree({dir(""), whiteout("x")}));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, EINVAL);
  auto o = compose_layers(booted, lower, build_tree({dir(""), opaque_dir("d")}));
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().code, EINVAL);
}

// Random trees over a three-letter alphabet, three levels deep, so that the three trees
// collide often: directories, files, symlinks, whiteouts and opaque directories at the same
// paths and at each other's ancestors.
class RandomTrees {
 public:
  explicit RandomTrees(uint32_t seed) : rng_(seed) {}

  enum class Kind { booted, lower, upper };

  Tree make(Kind kind) {
    std::vector<Entry> entries{dir("", pick_mode())};
    if (kind == Kind::lower && chance(5)) entries.front().opaque = true;
    grow(kind, "", 0, entries);
    return build_tree(std::move(entries));
  }

 private:
  static constexpr const char* kNames[] = {"a", "b", "c"};
  static constexpr int kDepth = 3;

  bool chance(int percent) { return std::uniform_int_distribution<int>(0, 99)(rng_) < percent; }
  uint32_t pick_mode() { return chance(50) ? 0755 : 0700; }

  void grow(Kind kind, const std::string& parent, int depth, std::vector<Entry>& entries) {
    if (depth == kDepth) return;
    for (const char* name : kNames) {
      std::string path = parent.empty() ? name : parent + "/" + name;
      if (!chance(kind == Kind::booted ? 70 : 45)) continue;
      int roll = std::uniform_int_distribution<int>(0, 99)(rng_);
      if (kind == Kind::lower && roll < 15) {
        entries.push_back(whiteout(path));
      } else if (roll < 60) {
        Entry d = dir(path, pick_mode());
        if (kind == Kind::lower && chance(30)) d.opaque = true;
        entries.push_back(std::move(d));
        grow(kind, path, depth + 1, entries);
      } else if (roll < 85) {
        const char* contents[] = {"x", "y"};
        entries.push_back(file(path, contents[std::uniform_int_distribution<int>(0, 1)(rng_)],
                               chance(50) ? 0644 : 0600));
      } else {
        entries.push_back(symlink_entry(path, chance(50) ? "t1" : "t2"));
      }
    }
  }

  std::mt19937 rng_;
};

// Every path over the alphabet one level deeper than the trees go.
std::vector<std::string> all_paths() {
  std::vector<std::string> out{""};
  std::vector<std::string> level{""};
  for (int depth = 0; depth < 4; ++depth) {
    std::vector<std::string> next;
    for (const auto& p : level) {
      for (const char* name : {"a", "b", "c"}) next.push_back(p.empty() ? name : p + "/" + name);
    }
    out.insert(out.end(), next.begin(), next.end());
    level = std::move(next);
  }
  return out;
}

TEST(ComposeLayers, MatchesTheStackedResolutionOnRandomTrees) {
  const std::vector<std::string> paths = all_paths();
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    RandomTrees random(seed);
    for (int round = 0; round < 200; ++round) {
      Tree booted = random.make(RandomTrees::Kind::booted);
      Tree lower = random.make(RandomTrees::Kind::lower);
      Tree upper = random.make(RandomTrees::Kind::upper);
      auto result = compose_layers(booted, lower, upper);
      ASSERT_TRUE(result) << result.error().message();
      std::set<std::string> checked(paths.begin(), paths.end());
      for (const Tree* t : {&booted, &lower, &upper, &*result}) {
        for (size_t i = 0; i < t->size(); ++i) checked.emplace(t->entry(i).path());
      }
      for (const auto& p : checked) {
        SCOPED_TRACE("seed " + std::to_string(seed) + " round " + std::to_string(round));
        expect_same_view(resolve_merged(booted, *result, p), stacked(booted, lower, upper, p), p);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

}  // namespace
}  // namespace livefs::overlay
