// OSTree through libostree: sysroot deployments, commit trees read object by object (dirtree,
// dirmeta and file objects, each checked against its checksum) into the object store, the
// OSTree-checksum → ObjectId index that makes a second import cheap, and pull.
#include "ostree/repo.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <unordered_map>
#include <unordered_set>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wcast-align"
#include <gio/gunixinputstream.h>
#include <ostree.h>
#pragma GCC diagnostic pop

#include "common/unique_fd.h"

namespace livefs::ostree {

using store::EntryType;
using store::path_less;
namespace {

// Where a GError becomes an Error: the code from the GIO error when there is one.
Error gerror_to_error(const GError* error, const std::string& context) {
  int code = EIO;
  if (error != nullptr && error->domain == G_IO_ERROR) {
    switch (error->code) {
      case G_IO_ERROR_NOT_FOUND:
        code = ENOENT;
        break;
      case G_IO_ERROR_PERMISSION_DENIED:
        code = EACCES;
        break;
      case G_IO_ERROR_INVALID_ARGUMENT:
        code = EINVAL;
        break;
      case G_IO_ERROR_NO_SPACE:
        code = ENOSPC;
        break;
      default:
        code = EIO;
    }
  }
  std::string message = error != nullptr ? error->message : "unknown error";
  return make_error(code, context + ": " + message);
}

std::unexpected<Error> gfail(const GError* error, const std::string& context) {
  return std::unexpected(gerror_to_error(error, context));
}

struct GObjectDeleter {
  void operator()(gpointer p) const {
    if (p != nullptr) g_object_unref(p);
  }
};
template <class T>
using GPtr = std::unique_ptr<T, GObjectDeleter>;

struct GVariantDeleter {
  void operator()(GVariant* v) const {
    if (v != nullptr) g_variant_unref(v);
  }
};
using VariantPtr = std::unique_ptr<GVariant, GVariantDeleter>;

struct GErrorHolder {
  GError* error = nullptr;
  ~GErrorHolder() { g_clear_error(&error); }
  GError** out() {
    g_clear_error(&error);
    return &error;
  }
};

Result<GPtr<OstreeRepo>> open_repo(const std::filesystem::path& repo_path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(repo_path, ec))
    return fail(ENOENT, "ostree: no repository at " + repo_path.string());
  GPtr<GFile> file(g_file_new_for_path(repo_path.c_str()));
  GPtr<OstreeRepo> repo(ostree_repo_new(file.get()));
  GErrorHolder err;
  if (!ostree_repo_open(repo.get(), nullptr, err.out()))
    return gfail(err.error, "ostree: open repository " + repo_path.string());
  return repo;
}

Result<std::string> resolve_in(OstreeRepo* repo, const std::filesystem::path& repo_path,
                               const std::string& rev) {
  char* checksum = nullptr;
  GErrorHolder err;
  if (!ostree_repo_resolve_rev(repo, rev.c_str(), TRUE, &checksum, err.out()))
    return gfail(err.error, "ostree: resolve '" + rev + "' in " + repo_path.string());
  if (checksum == nullptr)
    return fail(ENOENT, "ostree: no such ref or commit '" + rev + "' in " + repo_path.string());
  std::string out(checksum);
  g_free(checksum);
  return out;
}

std::string checksum_of(GVariant* bytes) {
  char* hex = ostree_checksum_from_bytes_v(bytes);
  std::string out(hex);
  g_free(hex);
  return out;
}

std::vector<Xattr> xattrs_of(GVariant* xattrs) {
  std::vector<Xattr> out;
  if (xattrs == nullptr) return out;
  const size_t n = g_variant_n_children(xattrs);
  for (size_t i = 0; i < n; ++i) {
    const char* name = nullptr;
    GVariant* value = nullptr;
    g_variant_get_child(xattrs, i, "(^&ay@ay)", &name, &value);
    gsize len = 0;
    const void* data = g_variant_get_fixed_array(value, &len, 1);
    out.push_back(Xattr{name, std::string(static_cast<const char*>(data), len)});
    g_variant_unref(value);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string join(const std::string& dir, const char* name) {
  return dir.empty() ? std::string(name) : dir + "/" + name;
}

// The index: one line "<ostree sha256> <object id hex>" per file object ever imported;
// append-only, loaded whole at the start of an import. A line that does not parse (a torn
// tail after a crash) is skipped: the object is then simply read again.
class ContentIndex {
 public:
  explicit ContentIndex(std::filesystem::path path) : path_(std::move(path)) {
    std::ifstream in(path_);
    std::string sha, hex;
    while (in >> sha >> hex) {
      auto id = ObjectId::parse_hex(hex);
      if (sha.size() == 64 && id) map_.emplace(sha, *id);
    }
  }
  const ObjectId* find(const std::string& sha) const {
    auto it = map_.find(sha);
    return it == map_.end() ? nullptr : &it->second;
  }
  void add(const std::string& sha, const ObjectId& id) {
    if (map_.emplace(sha, id).second) added_.emplace_back(sha, id);
  }
  // Appends what was added, after the objects themselves are durable.
  Status flush() {
    if (added_.empty()) return {};
    std::string text;
    for (const auto& [sha, id] : added_) text += sha + " " + id.hex() + "\n";
    UniqueFd fd(
        ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) return fail_errno("open(" + path_.string() + ")");
    size_t done = 0;
    while (done < text.size()) {
      ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail_errno("write(" + path_.string() + ")");
      }
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) < 0) return fail_errno("fsync(" + path_.string() + ")");
    added_.clear();
    return {};
  }

 private:
  std::filesystem::path path_;
  std::unordered_map<std::string, ObjectId> map_;
  std::vector<std::pair<std::string, ObjectId>> added_;
};

class CommitReader {
 public:
  // A Batch holds an fd per pending object: publish every so many to stay far below the
  // fd limit.
  static constexpr size_t kBatchLimit = 256;

  CommitReader(OstreeRepo* repo, std::string repo_name, ObjectStore& store,
               const OstreeImportOptions& options)
      : repo_(repo),
        repo_name_(std::move(repo_name)),
        store_(store),
        index_(store.root() / "ostree-index"),
        progress_(options.progress && ::isatty(STDERR_FILENO) == 1),
        on_file_(options.on_file),
        content_id_(options.content_id) {}

  Status walk_dir(const std::string& path, const std::string& tree_csum,
                  const std::string& meta_csum) {
    auto meta = load_verified(OSTREE_OBJECT_TYPE_DIR_META, meta_csum);
    if (!meta) return std::unexpected(meta.error());
    uint32_t uid = 0, gid = 0, mode = 0;
    GVariant* xattrs = nullptr;
    g_variant_get(meta->get(), "(uuu@a(ayay))", &uid, &gid, &mode, &xattrs);
    Entry dir;
    dir.path = path;
    dir.type = EntryType::dir;
    dir.uid = GUINT32_FROM_BE(uid);
    dir.gid = GUINT32_FROM_BE(gid);
    dir.mode = GUINT32_FROM_BE(mode) & 07777;
    dir.xattrs = xattrs_of(xattrs);
    g_variant_unref(xattrs);
    entries_.push_back(std::move(dir));
    file_sha_.resize(entries_.size());
    ++stats_.dirs;

    auto tree = load_verified(OSTREE_OBJECT_TYPE_DIR_TREE, tree_csum);
    if (!tree) return std::unexpected(tree.error());
    VariantPtr files(g_variant_get_child_value(tree->get(), 0));
    const size_t nfiles = g_variant_n_children(files.get());
    for (size_t i = 0; i < nfiles; ++i) {
      const char* name = nullptr;
      GVariant* csum = nullptr;
      g_variant_get_child(files.get(), i, "(&s@ay)", &name, &csum);
      std::string sha = checksum_of(csum);
      g_variant_unref(csum);
      if (auto st = add_file(join(path, name), sha); !st) return st;
    }
    VariantPtr dirs(g_variant_get_child_value(tree->get(), 1));
    const size_t ndirs = g_variant_n_children(dirs.get());
    for (size_t i = 0; i < ndirs; ++i) {
      const char* name = nullptr;
      GVariant* sub_tree = nullptr;
      GVariant* sub_meta = nullptr;
      g_variant_get_child(dirs.get(), i, "(&s@ay@ay)", &name, &sub_tree, &sub_meta);
      std::string t = checksum_of(sub_tree), m = checksum_of(sub_meta);
      g_variant_unref(sub_tree);
      g_variant_unref(sub_meta);
      if (auto st = walk_dir(join(path, name), t, m); !st) return st;
    }
    return {};
  }

  Status finish() {
    if (auto st = batch_.commit(); !st) return st;
    if (auto st = index_.flush(); !st) return st;
    // Files with the same content are one hard-linked inode in an OSTree checkout; keep
    // that in the manifest.
    std::unordered_map<std::string, std::vector<size_t>> by_sha;
    file_sha_.resize(entries_.size());
    for (size_t i = 0; i < entries_.size(); ++i)
      if (!file_sha_[i].empty() && entries_[i].type == EntryType::file)
        by_sha[file_sha_[i]].push_back(i);
    uint32_t group = 0;
    for (auto& [sha, idx] : by_sha) {
      if (idx.size() < 2) continue;
      ++group;
      for (size_t i : idx) entries_[i].link_group = group;
    }
    if (progress_) std::fputs("\n", stderr);
    return {};
  }

  std::vector<Entry> take_entries() { return std::move(entries_); }
  const OstreeImportStats& stats() const { return stats_; }

 private:
  Result<VariantPtr> load_verified(OstreeObjectType type, const std::string& csum) {
    GErrorHolder err;
    // Bare repositories do not check on load: ask libostree to check the object first.
    if (!ostree_repo_fsck_object(repo_, type, csum.c_str(), nullptr, err.out()))
      return gfail(err.error, object_context(type, csum));
    GVariant* v = nullptr;
    if (!ostree_repo_load_variant(repo_, type, csum.c_str(), &v, err.out()))
      return gfail(err.error, object_context(type, csum));
    return VariantPtr(v);
  }

  std::string object_context(OstreeObjectType type, const std::string& csum) const {
    return std::string("ostree: ") + ostree_object_type_to_string(type) + " object " + csum +
           " in " + repo_name_;
  }

  Status add_file(const std::string& path, const std::string& sha) {
    const std::string context = object_context(OSTREE_OBJECT_TYPE_FILE, sha) + " (" + path + ")";
    std::optional<ObjectId> given;
    if (content_id_) given = content_id_(path, sha);
    const ObjectId* known = given ? nullptr : index_.find(sha);
    const bool reuse = given || (known != nullptr && store_.has(*known));
    const bool seen = !given && seen_.contains(sha);
    GErrorHolder err;
    if (!reuse && !seen &&
        !ostree_repo_fsck_object(repo_, OSTREE_OBJECT_TYPE_FILE, sha.c_str(), nullptr, err.out()))
      return gfail(err.error, context);
    GInputStream* in_raw = nullptr;
    GFileInfo* info_raw = nullptr;
    GVariant* xattrs_raw = nullptr;
    const bool need_content = !reuse && !seen;
    if (!ostree_repo_load_file(repo_, sha.c_str(), need_content ? &in_raw : nullptr, &info_raw,
                               &xattrs_raw, nullptr, err.out()))
      return gfail(err.error, context);
    GPtr<GInputStream> in(in_raw);
    GPtr<GFileInfo> info(info_raw);
    VariantPtr xattrs(xattrs_raw);

    Entry e;
    e.path = path;
    e.uid = g_file_info_get_attribute_uint32(info.get(), "unix::uid");
    e.gid = g_file_info_get_attribute_uint32(info.get(), "unix::gid");
    e.mode = g_file_info_get_attribute_uint32(info.get(), "unix::mode") & 07777;
    e.xattrs = xattrs_of(xattrs.get());
    if (g_file_info_get_file_type(info.get()) == G_FILE_TYPE_SYMBOLIC_LINK) {
      e.type = EntryType::symlink;
      e.target = g_file_info_get_symlink_target(info.get());
      e.size = e.target.size();
      ++stats_.symlinks;
      entries_.push_back(std::move(e));
      file_sha_.resize(entries_.size());
      return {};
    }
    e.type = EntryType::file;
    e.size = static_cast<uint64_t>(g_file_info_get_size(info.get()));
    ++stats_.files;
    if (given) {
      e.object = *given;
      ++stats_.files_given;
    } else if (reuse) {
      e.object = *known;
      if (seen_.emplace(sha).second) ++stats_.files_reused;
    } else if (seen) {
      e.object = *index_.find(sha);
    } else {
      auto id = store_content(in.get(), e.size, context);
      if (!id) return std::unexpected(id.error());
      e.object = *id;
      index_.add(sha, *id);
      seen_.insert(sha);
      ++stats_.files_read;
      stats_.bytes_read += e.size;
      if (batch_.pending() >= kBatchLimit) {
        if (auto st = batch_.commit(); !st) return st;
      }
    }
    entries_.push_back(std::move(e));
    file_sha_.resize(entries_.size());
    file_sha_.back() = sha;
    show_progress();
    if (on_file_) on_file_(stats_);
    return {};
  }

  // Bare repositories hand out the object file itself; archive ones a decompressing stream,
  // which is spooled to a memfd so the store can hash and copy it.
  Result<ObjectId> store_content(GInputStream* in, uint64_t size, const std::string& context) {
    if (G_IS_UNIX_INPUT_STREAM(in)) {
      int fd = g_unix_input_stream_get_fd(G_UNIX_INPUT_STREAM(in));
      auto id = batch_.put_fd(fd, nullptr, context);
      if (!id) return std::unexpected(with_context(id.error(), context));
      return id;
    }
    if (size <= (1u << 20)) {
      std::string data(size, '\0');
      gsize got = 0;
      GErrorHolder err;
      if (!g_input_stream_read_all(in, data.data(), data.size(), &got, nullptr, err.out()))
        return gfail(err.error, context);
      if (got != size) return fail(EIO, context + ": short content");
      auto id = batch_.put_bytes(data);
      if (!id) return std::unexpected(with_context(id.error(), context));
      return id;
    }
    UniqueFd spool(::memfd_create("livefs-ostree", MFD_CLOEXEC));
    if (!spool) return fail_errno(context + ": memfd_create");
    std::vector<char> buf(1 << 20);
    for (;;) {
      GErrorHolder err;
      gssize n = g_input_stream_read(in, buf.data(), buf.size(), nullptr, err.out());
      if (n < 0) return gfail(err.error, context);
      if (n == 0) break;
      if (::write(spool.get(), buf.data(), static_cast<size_t>(n)) != n)
        return fail_errno(context + ": write(memfd)");
    }
    auto id = batch_.put_fd(spool.get(), nullptr, context);
    if (!id) return std::unexpected(with_context(id.error(), context));
    return id;
  }

  void show_progress() {
    if (!progress_) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_progress_ < std::chrono::milliseconds(200)) return;
    last_progress_ = now;
    std::fprintf(stderr, "\rostree import: %llu files (%llu read, %llu reused), %.1f MiB read",
                 static_cast<unsigned long long>(stats_.files),
                 static_cast<unsigned long long>(stats_.files_read),
                 static_cast<unsigned long long>(stats_.files_reused),
                 static_cast<double>(stats_.bytes_read) / (1 << 20));
  }

  OstreeRepo* repo_;
  std::string repo_name_;
  ObjectStore& store_;
  ObjectStore::Batch batch_{store_};
  ContentIndex index_;
  bool progress_;
  std::function<void(const OstreeImportStats&)> on_file_;
  std::function<std::optional<ObjectId>(std::string_view, std::string_view)> content_id_;
  std::chrono::steady_clock::time_point last_progress_{};
  std::vector<Entry> entries_;
  std::vector<std::string> file_sha_;  // parallel to entries_: the OSTree content checksum
  std::unordered_set<std::string> seen_;
  OstreeImportStats stats_;
};

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string describe(const std::vector<Deployment>& list) {
  if (list.empty()) return "no deployments";
  std::string out = "deployments:";
  for (const Deployment& d : list)
    out += " " + std::to_string(d.index) + "=" + d.checksum.substr(0, 12) + "." +
           std::to_string(d.deployserial);
  return out;
}

}  // namespace

Result<std::vector<Deployment>> list_deployments(const std::filesystem::path& sysroot_path,
                                                 const std::string& os_name) {
  std::error_code ec;
  if (!std::filesystem::is_directory(sysroot_path / "ostree", ec))
    return fail(ENOENT, "ostree: no sysroot at " + sysroot_path.string());
  GPtr<GFile> file(g_file_new_for_path(sysroot_path.c_str()));
  GPtr<OstreeSysroot> sysroot(ostree_sysroot_new(file.get()));
  GErrorHolder err;
  if (!ostree_sysroot_load(sysroot.get(), nullptr, err.out()))
    return gfail(err.error, "ostree: load sysroot " + sysroot_path.string());
  OstreeRepo* repo = nullptr;
  if (!ostree_sysroot_get_repo(sysroot.get(), &repo, nullptr, err.out()))
    return gfail(err.error, "ostree: repository of sysroot " + sysroot_path.string());
  GPtr<OstreeRepo> repo_owner(repo);

  OstreeDeployment* booted = ostree_sysroot_get_booted_deployment(sysroot.get());
  OstreeDeployment* staged = ostree_sysroot_get_staged_deployment(sysroot.get());
  GPtrArray* all = ostree_sysroot_get_deployments(sysroot.get());
  std::vector<Deployment> out;
  for (guint i = 0; i < all->len; ++i) {
    auto* d = static_cast<OstreeDeployment*>(g_ptr_array_index(all, i));
    Deployment dep;
    dep.index = i;
    dep.osname = ostree_deployment_get_osname(d);
    dep.checksum = ostree_deployment_get_csum(d);
    dep.deployserial = ostree_deployment_get_deployserial(d);
    dep.booted = booted != nullptr && ostree_deployment_equal(d, booted);
    dep.staged = staged != nullptr && ostree_deployment_equal(d, staged);
    dep.pending = staged != nullptr ? dep.staged : (i == 0 && !dep.booted);
    GPtr<GFile> dir(ostree_sysroot_get_deployment_directory(sysroot.get(), d));
    char* p = g_file_get_path(dir.get());
    dep.path = p;
    g_free(p);
    GVariant* commit = nullptr;
    if (ostree_repo_load_variant(repo, OSTREE_OBJECT_TYPE_COMMIT, dep.checksum.c_str(), &commit,
                                 err.out())) {
      VariantPtr commit_owner(commit);
      VariantPtr meta(g_variant_get_child_value(commit, 0));
      const char* version = nullptr;
      if (g_variant_lookup(meta.get(), "version", "&s", &version)) dep.version = version;
    }
    // A deployment whose commit was pruned still lists; its version is unknown ("").
    if (os_name.empty() || dep.osname == os_name) out.push_back(std::move(dep));
  }
  g_ptr_array_unref(all);
  return out;
}

Result<Deployment> resolve_deployment(const std::vector<Deployment>& list, std::string_view spec) {
  if (spec.empty()) return fail(EINVAL, "ostree: empty deployment name (" + describe(list) + ")");
  if (all_digits(spec) && spec.size() <= 3) {
    size_t index = std::stoul(std::string(spec));
    for (const Deployment& d : list)
      if (d.index == index) return d;
    return fail(ENOENT, "ostree: no deployment with index " + std::string(spec) + " (" +
                            describe(list) + ")");
  }
  const Deployment* match = nullptr;
  for (const Deployment& d : list) {
    if (!d.checksum.starts_with(spec)) continue;
    if (match != nullptr && match->checksum != d.checksum)
      return fail(EINVAL, "ostree: checksum prefix '" + std::string(spec) + "' is ambiguous (" +
                              describe(list) + ")");
    if (match == nullptr) match = &d;
  }
  if (match == nullptr)
    return fail(ENOENT, "ostree: no deployment of commit '" + std::string(spec) + "' (" +
                            describe(list) + ")");
  return *match;
}

Result<Deployment> booted_deployment(const std::vector<Deployment>& list,
                                     const std::optional<std::string>& spec) {
  if (spec) return resolve_deployment(list, *spec);
  for (const Deployment& d : list)
    if (d.booted) return d;
  return fail(EINVAL,
              "ostree: not booted into this sysroot; name the booted deployment by checksum or "
              "index (" +
                  describe(list) + ")");
}

Result<std::string> resolve_rev(const std::filesystem::path& repo_path, const std::string& rev) {
  auto repo = open_repo(repo_path);
  if (!repo) return std::unexpected(repo.error());
  return resolve_in(repo->get(), repo_path, rev);
}

ObjectId booted_content_id(std::string_view ostree_checksum) {
  return ObjectId::of("livefs-ostree-booted:" + std::string(ostree_checksum));
}

Result<CommitContents> read_commit(const std::filesystem::path& repo_path, const std::string& rev,
                                   ObjectStore& store, const OstreeImportOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  auto repo = open_repo(repo_path);
  if (!repo) return std::unexpected(repo.error());
  auto checksum = resolve_in(repo->get(), repo_path, rev);
  if (!checksum) return std::unexpected(checksum.error());

  GFile* root_raw = nullptr;
  GErrorHolder err;
  if (!ostree_repo_read_commit(repo->get(), checksum->c_str(), &root_raw, nullptr, nullptr,
                               err.out()))
    return gfail(err.error, "ostree: read commit " + *checksum + " in " + repo_path.string());
  GPtr<GFile> root(root_raw);
  GPtr<GFile> top(options.subdir.empty()
                      ? G_FILE(g_object_ref(root.get()))
                      : g_file_resolve_relative_path(root.get(), options.subdir.c_str()));
  auto* top_file = OSTREE_REPO_FILE(top.get());
  if (!ostree_repo_file_ensure_resolved(top_file, err.out()))
    return gfail(err.error, "ostree: '" + options.subdir + "' in commit " + *checksum);
  if (g_file_query_file_type(top.get(), G_FILE_QUERY_INFO_NOFOLLOW_SYMLINKS, nullptr) !=
      G_FILE_TYPE_DIRECTORY)
    return fail(ENOTDIR,
                "ostree: '" + options.subdir + "' is not a directory in commit " + *checksum);
  const char* tree_csum = ostree_repo_file_tree_get_contents_checksum(top_file);
  const char* meta_csum = ostree_repo_file_tree_get_metadata_checksum(top_file);
  if (tree_csum == nullptr || meta_csum == nullptr)
    return fail(ENOENT, "ostree: no '" + options.subdir + "' in commit " + *checksum);

  // Held past the reader's batch: the objects are referenced by nothing until the caller
  // roots the tree.
  auto lock = store.lock_shared();
  if (!lock) return std::unexpected(lock.error());
  CommitReader reader(repo->get(), repo_path.string(), store, options);
  if (auto st = reader.walk_dir("", tree_csum, meta_csum); !st) return std::unexpected(st.error());
  if (auto st = reader.finish(); !st) return std::unexpected(st.error());
  CommitContents out{*checksum, reader.take_entries(), reader.stats(), std::move(*lock)};
  std::sort(out.entries.begin(), out.entries.end(),
            [](const Entry& a, const Entry& b) { return path_less(a.path, b.path); });
  out.stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

namespace {

// libostree calls this from the pull's own main loop whenever its counts change.
void on_pull_progress(OstreeAsyncProgress* progress, gpointer data) {
  auto* counters = static_cast<PullCounters*>(data);
  if (counters->fetched != nullptr)
    counters->fetched->store(ostree_async_progress_get_uint(progress, "fetched"));
  if (counters->requested != nullptr)
    counters->requested->store(ostree_async_progress_get_uint(progress, "requested"));
}

}  // namespace

Result<std::string> pull(const std::filesystem::path& repo_path, const std::string& remote,
                         const std::string& ref, PullCounters counters) {
  auto repo = open_repo(repo_path);
  if (!repo) return std::unexpected(repo.error());
  const char* refs[] = {ref.c_str(), nullptr};
  GErrorHolder err;
  // The pull runs the thread-default main context; the progress object delivers its
  // "changed" callbacks in the context that was thread-default when it was made: one
  // context of our own for both, so that the counts move while the pull runs.
  GMainContext* context = g_main_context_new();
  g_main_context_push_thread_default(context);
  GPtr<OstreeAsyncProgress> progress(
      counters.fetched != nullptr || counters.requested != nullptr
          ? ostree_async_progress_new_and_connect(on_pull_progress, &counters)
          : nullptr);
  bool pulled = ostree_repo_pull(repo->get(), remote.c_str(), const_cast<char**>(refs),
                                 OSTREE_REPO_PULL_FLAGS_NONE, progress.get(), nullptr, err.out());
  // No callback after this: `counters` goes out of scope.
  if (progress) ostree_async_progress_finish(progress.get());
  progress.reset();
  g_main_context_pop_thread_default(context);
  g_main_context_unref(context);
  if (!pulled)
    return gfail(err.error, "ostree: pull " + remote + ":" + ref + " into " + repo_path.string());
  return resolve_in(repo->get(), repo_path, remote + ":" + ref);
}

}  // namespace livefs::ostree
