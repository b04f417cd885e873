// OSTree source tests on real sysroots and repositories built with the `ostree` CLI: listing
// and naming deployments, importing a commit through libostree and comparing it with the
// deployment's checkout, the content index, corrupt objects, unknown refs, and pull over HTTP.
#include "ostree/repo.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <map>

#include "support/http_server.h"
#include "support/temp_dir.h"

namespace livefs::ostree {

using namespace livefs::store;
namespace {

using livefs::testing::free_port;
using livefs::testing::HttpServer;
using livefs::testing::read_file;
using livefs::testing::run;
using livefs::testing::TempDir;
using livefs::testing::write_file;
namespace fs = std::filesystem;

void sh(const std::string& command) {
  std::string out;
  ASSERT_EQ(run(command + " 2>&1", &out), 0) << command << "\n" << out;
}

std::string sh_out(const std::string& command) {
  std::string out;
  EXPECT_EQ(run(command, &out), 0) << command;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// A tree with what `ostree admin deploy` needs (usr/etc/os-release, a kernel) plus some
// programs, a symlink, a set-uid file, duplicate content and a dpkg database under usr/.
void make_os_tree(const fs::path& root, const std::string& hello) {
  write_file(root / "usr/etc/os-release", "ID=livefs-test\nVERSION_ID=1\n");
  write_file(root / "usr/lib/modules/6.1.0/vmlinuz", "not really a kernel\n");
  write_file(root / "usr/bin/hello", hello, 0755);
  write_file(root / "usr/bin/tool", "#!/bin/sh\necho tool\n", 0755);
  write_file(root / "usr/bin/su-ish", "setuid\n", 04755);
  fs::create_symlink("hello", root / "usr/bin/hi");
  write_file(root / "usr/share/doc/hello/copyright", "same content\n");
  write_file(root / "usr/share/doc/tool/copyright", "same content\n");
  write_file(root / "usr/share/dpkg/info/hello.list", "/usr/bin/hello\n/usr/bin/hi\n");
  write_file(root / "usr/share/dpkg/info/tool.list", "/usr/bin/tool\n");
  std::string big(300000, 'x');
  for (size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + i % 26);
  write_file(root / "usr/lib/libbig.so", big, 0644);
}

// A sysroot with OS "testos" and two deployments: 1.0, then 2.0 (index 0, the next boot).
struct Sysroot {
  TempDir dir{"livefs-ostree"};
  fs::path root = dir / "sysroot";
  fs::path repo = root / "ostree/repo";
  std::string commit1, commit2;

  Sysroot() {
    fs::create_directories(root);
    sh("ostree admin init-fs " + root.string());
    sh("ostree admin os-init --sysroot=" + root.string() + " testos");
    make_os_tree(dir / "tree1", "hello 1\n");
    commit1 = commit("tree1", "1.0");
    sh("ostree admin deploy --sysroot=" + root.string() + " --os=testos --karg-none testos/stable");
    make_os_tree(dir / "tree2", "hello 2, rebuilt\n");
    write_file(dir / "tree2/usr/bin/new-tool", "new\n", 0755);
    write_file(dir / "tree2/usr/share/dpkg/info/new-tool.list", "/usr/bin/new-tool\n");
    commit2 = commit("tree2", "2.0");
    sh("ostree admin deploy --sysroot=" + root.string() + " --os=testos --karg-none testos/stable");
  }
  // Deployment directories are immutable (chattr +i): undo that so TempDir can remove them.
  ~Sysroot() { run("chattr -R -i " + root.string() + " 2>/dev/null"); }

  std::string commit(const std::string& tree, const std::string& version) {
    return sh_out("ostree --repo=" + repo.string() +
                  " commit -b testos/stable --tree=dir=" + (dir / tree).string() +
                  " --add-metadata-string=version=" + version + " 2>/dev/null");
  }
};

TEST(OstreeDeployments, ListsBothWithVersionsAndNextBoot) {
  Sysroot s;
  auto list = list_deployments(s.root);
  ASSERT_TRUE(list) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  const Deployment& next = (*list)[0];
  const Deployment& old = (*list)[1];
  EXPECT_EQ(next.index, 0u);
  EXPECT_EQ(next.osname, "testos");
  EXPECT_EQ(next.checksum, s.commit2);
  EXPECT_EQ(next.version, "2.0");
  EXPECT_TRUE(next.pending);
  EXPECT_FALSE(next.booted);
  EXPECT_FALSE(next.staged);
  EXPECT_EQ(old.checksum, s.commit1);
  EXPECT_EQ(old.version, "1.0");
  EXPECT_FALSE(old.pending);
  EXPECT_TRUE(fs::is_regular_file(old.path / "usr/bin/hello"));
  EXPECT_EQ(read_file(old.path / "usr/bin/hello"), "hello 1\n");
  EXPECT_EQ(old.path.filename().string(), s.commit1 + "." + std::to_string(old.deployserial));

  auto other_os = list_deployments(s.root, "otheros");
  ASSERT_TRUE(other_os);
  EXPECT_TRUE(other_os->empty());
}

TEST(OstreeDeployments, ResolveByIndexChecksumAndPrefix) {
  Sysroot s;
  auto list = list_deployments(s.root);
  ASSERT_TRUE(list) << list.error().message();
  auto by_index = resolve_deployment(*list, "1");
  ASSERT_TRUE(by_index) << by_index.error().message();
  EXPECT_EQ(by_index->checksum, s.commit1);
  auto by_sum = resolve_deployment(*list, s.commit2);
  ASSERT_TRUE(by_sum);
  EXPECT_EQ(by_sum->index, 0u);
  auto by_prefix = resolve_deployment(*list, s.commit1.substr(0, 10));
  ASSERT_TRUE(by_prefix);
  EXPECT_EQ(by_prefix->index, 1u);

  auto bad_index = resolve_deployment(*list, "7");
  ASSERT_FALSE(bad_index);
  EXPECT_EQ(bad_index.error().code, ENOENT);
  EXPECT_NE(bad_index.error().context.find("index 7"), std::string::npos);
  auto bad_sum = resolve_deployment(*list, "ffffeeee");
  ASSERT_FALSE(bad_sum);
  EXPECT_EQ(bad_sum.error().code, ENOENT);
  EXPECT_NE(bad_sum.error().context.find("ffffeeee"), std::string::npos);

  // Not booted into this sysroot: the booted deployment must be named.
  auto unnamed = booted_deployment(*list, std::nullopt);
  ASSERT_FALSE(unnamed);
  EXPECT_EQ(unnamed.error().code, EINVAL);
  auto named = booted_deployment(*list, std::string("1"));
  ASSERT_TRUE(named);
  EXPECT_EQ(named->checksum, s.commit1);
}

TEST(OstreeDeployments, NotASysroot) {
  TempDir d;
  auto list = list_deployments(d.path());
  ASSERT_FALSE(list);
  EXPECT_EQ(list.error().code, ENOENT);
  EXPECT_NE(list.error().context.find(d.path().string()), std::string::npos);
}

struct Seen {
  char type;
  unsigned mode;
  std::string target;
  std::string content_id;
};

// What the deployment's checkout holds under `dir`, keyed by relative path ("" = dir).
std::map<std::string, Seen> scan_checkout(const fs::path& dir) {
  std::map<std::string, Seen> out;
  auto add = [&](const fs::path& p, const std::string& rel) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    Seen s{'?', static_cast<unsigned>(st.st_mode & 07777), "", ""};
    if (S_ISDIR(st.st_mode)) s.type = 'd';
    if (S_ISLNK(st.st_mode)) {
      s.type = 'l';
      s.target = fs::read_symlink(p).string();
    }
    if (S_ISREG(st.st_mode)) {
      s.type = 'f';
      s.content_id = ObjectId::of(read_file(p)).hex();
    }
    out[rel] = s;
  };
  add(dir, "");
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator();
       ++it)
    add(it->path(), it->path().lexically_relative(dir).string());
  return out;
}

std::map<std::string, Seen> from_entries(const std::vector<Entry>& entries) {
  std::map<std::string, Seen> out;
  for (const Entry& e : entries) {
    char t = e.type == EntryType::dir ? 'd' : e.type == EntryType::symlink ? 'l' : 'f';
    out[e.path] = Seen{t, e.mode, e.target, t == 'f' ? e.object.hex() : ""};
  }
  return out;
}

void expect_same(const std::map<std::string, Seen>& want, const std::map<std::string, Seen>& got) {
  for (const auto& [path, w] : want) {
    auto it = got.find(path);
    ASSERT_NE(it, got.end()) << "missing " << path;
    EXPECT_EQ(it->second.type, w.type) << path;
    EXPECT_EQ(it->second.mode, w.mode) << path;
    EXPECT_EQ(it->second.target, w.target) << path;
    EXPECT_EQ(it->second.content_id, w.content_id) << path;
  }
  for (const auto& [path, g] : got) EXPECT_TRUE(want.contains(path)) << "extra " << path;
}

TEST(OstreeImport, CommitUsrMatchesTheDeploymentCheckout) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store) << store.error().message();
  auto list = list_deployments(s.root);
  ASSERT_TRUE(list);
  const Deployment& old = (*list)[1];

  auto contents = read_commit(s.repo, old.checksum, *store);
  ASSERT_TRUE(contents) << contents.error().message();
  EXPECT_EQ(contents->checksum, s.commit1);
  expect_same(scan_checkout(old.path / "usr"), from_entries(contents->entries));
  EXPECT_EQ(contents->entries.front().path, "");
  // The content really is in the store.
  for (const Entry& e : contents->entries) {
    if (e.type != EntryType::file) continue;
    auto bytes = store->read_verified(e.object);
    ASSERT_TRUE(bytes) << e.path;
    EXPECT_EQ(bytes->size(), e.size) << e.path;
  }
  // Duplicate content is one hard-linked inode in a checkout.
  std::map<std::string, const Entry*> by_path;
  for (const Entry& e : contents->entries) by_path[e.path] = &e;
  EXPECT_NE(by_path.at("share/doc/hello/copyright")->link_group, 0u);
  EXPECT_EQ(by_path.at("share/doc/hello/copyright")->link_group,
            by_path.at("share/doc/tool/copyright")->link_group);
  EXPECT_EQ(by_path.at("bin/su-ish")->mode, 04755u);
  EXPECT_EQ(by_path.at("bin/hi")->target, "hello");
  EXPECT_EQ(by_path.at("bin/hello")->mtime_sec, 0);

  // The whole commit, by ref.
  auto whole = read_commit(s.repo, "testos/stable", *store, {.subdir = ""});
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(whole->checksum, s.commit2);
  auto got = from_entries(whole->entries);
  EXPECT_TRUE(got.contains("usr/bin/new-tool"));
  EXPECT_TRUE(got.contains("usr/etc/os-release"));
}

TEST(OstreeImport, ImportCommitBuildsATreeManifest) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  auto imported = import_commit(s.repo, s.commit1, *store);
  ASSERT_TRUE(imported) << imported.error().message();
  EXPECT_EQ(imported->checksum, s.commit1);
  const Tree& tree = imported->tree;
  auto hello = tree.find("bin/hello");
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->type(), EntryType::file);
  EXPECT_EQ(hello->mode(), 0755u);
  EXPECT_EQ(hello->object(), ObjectId::of(std::string("hello 1\n")));
  auto hi = tree.find("bin/hi");
  ASSERT_TRUE(hi);
  EXPECT_EQ(hi->type(), EntryType::symlink);
  EXPECT_EQ(hi->target(), "hello");
  auto copyright = tree.find("share/doc/tool/copyright");
  ASSERT_TRUE(copyright);
  EXPECT_EQ(copyright->nlink(), 2u);
  EXPECT_EQ(tree.size(), from_entries(read_commit(s.repo, s.commit1, *store)->entries).size());
  // The manifest round-trips through the store.
  auto id = tree.save(*store);
  ASSERT_TRUE(id) << id.error().message();
  auto loaded = Tree::load(*store, *id);
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->root().digest(), tree.root().digest());
}

TEST(OstreeImport, SecondImportReusesUnchangedObjects) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  auto first = read_commit(s.repo, s.commit1, *store);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->stats.files_reused, 0u);
  EXPECT_GT(first->stats.files_read, 0u);
  // Two copyright files share one object.
  EXPECT_EQ(first->stats.files_read + 1, first->stats.files);
  EXPECT_TRUE(fs::exists(store_dir / "ostree-index"));

  // A fresh store handle: the index is read back from disk.
  auto reopened = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(reopened);
  auto second = read_commit(s.repo, s.commit2, *reopened);
  ASSERT_TRUE(second) << second.error().message();
  // Changed: bin/hello; new: bin/new-tool, its .list file. Everything else is reused.
  EXPECT_EQ(second->stats.files_read, 3u);
  EXPECT_EQ(second->stats.files_reused, first->stats.files_read - 1);
  std::fprintf(stderr,
               "first import: %.4f s (%llu read), second: %.4f s (%llu read, %llu reused)\n",
               first->stats.seconds, static_cast<unsigned long long>(first->stats.files_read),
               second->stats.seconds, static_cast<unsigned long long>(second->stats.files_read),
               static_cast<unsigned long long>(second->stats.files_reused));

  auto list = list_deployments(s.root);
  ASSERT_TRUE(list);
  expect_same(scan_checkout((*list)[0].path / "usr"), from_entries(second->entries));

  // The same commit again: nothing is read.
  auto again = read_commit(s.repo, s.commit2, *reopened);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->stats.files_read, 0u);

  // An indexed object that vanished from the store (gc) is read again, not trusted.
  const Entry* hello = nullptr;
  for (const Entry& e : again->entries)
    if (e.path == "bin/hello") hello = &e;
  ASSERT_NE(hello, nullptr);
  fs::remove(store_dir / ObjectStore::relative_path(hello->object));
  auto after_gc = read_commit(s.repo, s.commit2, *reopened);
  ASSERT_TRUE(after_gc) << after_gc.error().message();
  EXPECT_EQ(after_gc->stats.files_read, 1u);
  EXPECT_TRUE(reopened->has(hello->object));
}

TEST(OstreeImport, UnknownRefIsAClearError) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  auto r = read_commit(s.repo, "no/such-ref", *store);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT) << r.error().message();
  EXPECT_NE(r.error().context.find("no such ref or commit 'no/such-ref' in " + s.repo.string()),
            std::string::npos)
      << r.error().context;

  auto missing = read_commit(s.root / "nope", "testos/stable", *store);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().context.find((s.root / "nope").string()), std::string::npos);

  auto no_subdir = read_commit(s.repo, s.commit1, *store, {.subdir = "opt"});
  ASSERT_FALSE(no_subdir);
}

TEST(OstreeImport, CorruptObjectIsAClearErrorAndNothingIsRegistered) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  // The file object of usr/bin/tool in commit 2 (content shared with commit 1).
  std::string sha = sh_out("ostree --repo=" + s.repo.string() + " ls -C " + s.commit2 +
                           " /usr/bin/tool | awk '{print $5}'");
  ASSERT_EQ(sha.size(), 64u) << sha;
  fs::path object = s.repo / "objects" / sha.substr(0, 2) / (sha.substr(2) + ".file");
  ASSERT_TRUE(fs::exists(object)) << object;
  // Bare objects are hard links into the (immutable) deployments.
  run("chattr -R -i " + s.root.string() + " 2>/dev/null");
  sh("chmod u+w " + object.string());
  {
    std::FILE* f = std::fopen(object.c_str(), "r+");
    ASSERT_NE(f, nullptr);
    std::fputs("#!/bin/sh\necho evil\n", f);
    std::fclose(f);
  }
  auto r = read_commit(s.repo, s.commit2, *store);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, EIO) << r.error().message();
  EXPECT_NE(r.error().context.find(sha), std::string::npos) << r.error().context;
  EXPECT_NE(r.error().context.find("bin/tool"), std::string::npos) << r.error().context;
  EXPECT_FALSE(fs::exists(store_dir / "ostree-index") &&
               fs::file_size(store_dir / "ostree-index") > 0);
}

TEST(OstreeImport, ObjectsGoneFromTheRepositoryAreAClearError) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  std::string sha = sh_out("ostree --repo=" + s.repo.string() + " ls -C " + s.commit2 +
                           " /usr/bin/new-tool | awk '{print $5}'");
  ASSERT_EQ(sha.size(), 64u) << sha;
  fs::path object = s.repo / "objects" / sha.substr(0, 2) / (sha.substr(2) + ".file");
  run("chattr -R -i " + s.root.string() + " 2>/dev/null");
  ASSERT_TRUE(fs::remove(object));
  auto r = read_commit(s.repo, s.commit2, *store);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT) << r.error().message();
  EXPECT_NE(r.error().context.find(sha), std::string::npos) << r.error().context;
  EXPECT_FALSE(fs::exists(store_dir / "ostree-index"));

  // The whole repository gone.
  fs::remove_all(s.repo);
  auto gone = read_commit(s.repo, s.commit2, *store);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, ENOENT);
  EXPECT_NE(gone.error().context.find(s.repo.string()), std::string::npos);
}

TEST(OstreeImport, RepositoryDisappearingMidImportIsAClearError) {
  Sysroot s;
  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  run("chattr -R -i " + s.root.string() + " 2>/dev/null");
  // libostree holds the repository's directory open, so a rename goes unnoticed; removal
  // (what `rm -rf` or a full cleanup does) is what a reader can see.
  bool moved_away = false;
  OstreeImportOptions options;
  options.on_file = [&](const OstreeImportStats& stats) {
    if (stats.files == 2 && !moved_away) {
      fs::remove_all(s.repo);
      moved_away = true;
    }
  };
  auto r = read_commit(s.repo, s.commit2, *store, options);
  ASSERT_TRUE(moved_away);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ENOENT) << r.error().message();
  EXPECT_NE(r.error().context.find(s.repo.string()), std::string::npos) << r.error().context;
  EXPECT_FALSE(fs::exists(store_dir / "ostree-index"));
}

TEST(OstreePull, FromAnArchiveRepositoryOverHttpThenImport) {
  TempDir d{"livefs-ostree-pull"};
  fs::path served = d / "served";
  sh("ostree --repo=" + served.string() + " init --mode=archive");
  make_os_tree(d / "tree", "served hello\n");
  std::string commit = sh_out("ostree --repo=" + served.string() +
                              " commit -b testos/stable --tree=dir=" + (d / "tree").string() +
                              " --add-metadata-string=version=3.0 2>/dev/null");
  ASSERT_EQ(commit.size(), 64u);
  int port = free_port();
  HttpServer server(served, port);
  ASSERT_TRUE(server.wait_ready());

  fs::path local = d / "local";
  sh("ostree --repo=" + local.string() + " init --mode=bare");
  sh("ostree --repo=" + local.string() +
     " remote add --no-gpg-verify origin http://127.0.0.1:" + std::to_string(port) + "/");
  auto pulled = pull(local, "origin", "testos/stable");
  ASSERT_TRUE(pulled) << pulled.error().message();
  EXPECT_EQ(*pulled, commit);

  TempDir store_dir;
  auto store = ObjectStore::open(store_dir.path());
  ASSERT_TRUE(store);
  auto contents = read_commit(local, "origin:testos/stable", *store);
  ASSERT_TRUE(contents) << contents.error().message();
  auto got = from_entries(contents->entries);
  ASSERT_TRUE(got.contains("bin/hello"));
  EXPECT_EQ(got.at("bin/hello").content_id, ObjectId::of(std::string("served hello\n")).hex());

  // The archive repository itself reads too (compressed objects, spooled into the store).
  auto from_archive = read_commit(served, commit, *store, {.subdir = "usr/lib"});
  ASSERT_TRUE(from_archive) << from_archive.error().message();
  EXPECT_EQ(from_archive->stats.files_read, 0u);  // all already known from the pull import

  auto unknown = pull(local, "origin", "no/such-ref");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().context.find("no/such-ref"), std::string::npos);
}

}  // namespace
}  // namespace livefs::ostree
