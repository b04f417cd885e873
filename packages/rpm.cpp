// The RPM PackageDb: everything read once, at open, from a private copy of the database
// through librpm; later calls are lookups in plain structures.
#include "packages/rpm.h"

#include <fcntl.h>
#include <rpm/header.h>
#include <rpm/rpmdb.h>
#include <rpm/rpmds.h>
#include <rpm/rpmfiles.h>
#include <rpm/rpmlib.h>
#include <rpm/rpmlog.h>
#include <rpm/rpmmacro.h>
#include <rpm/rpmtag.h>
#include <rpm/rpmts.h>
#include <rpm/rpmver.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "common/log.h"
#include "common/unique_fd.h"
#include "packages/owner_index.h"
#include "packages/paths.h"
#include "store/tree.h"

namespace livefs::packages::rpm {

namespace {

// librpm keeps its configuration, macros and log callback in process-wide state that is not
// thread safe: every use of it, from any database, holds this.
std::mutex& librpm_mutex() {
  static std::mutex m;
  return m;
}

// librpm's log messages while a database is read (under librpm_mutex): errors make the open
// fail with them; nothing goes to stderr, which belongs to the daemon's log.
std::vector<std::string>* g_captured_errors = nullptr;

int log_callback_unguarded(rpmlogRec rec);

// Called from librpm's C code: no exception may cross it (an allocation failure loses the
// message, and the open still fails on what librpm returns).
int log_callback(rpmlogRec rec, rpmlogCallbackData) {
  try {
    return log_callback_unguarded(rec);
  } catch (...) {
    return 0;
  }
}

int log_callback_unguarded(rpmlogRec rec) {
  const char* text = rpmlogRecMessage(rec);
  std::string message = text ? text : "";
  while (!message.empty() && message.back() == '\n') message.pop_back();
  rpmlogLvl level = rpmlogRecPriority(rec);
  // A backend this librpm was built without (Debian's has no ndb) is replaced by an empty
  // "dummy" database with only a warning: for a reader that is a database it cannot read.
  bool unreadable = level <= RPMLOG_ERR || (level <= RPMLOG_WARNING &&
                                            message.find("dummy database") != std::string::npos);
  if (unreadable) {
    if (g_captured_errors) g_captured_errors->push_back(message);
    logger("packages")->debug("librpm: {}", message);
  } else if (level <= RPMLOG_WARNING) {
    logger("packages")->warn("librpm: {}", message);
  } else {
    logger("packages")->debug("librpm: {}", message);
  }
  return 0;  // handled: neither printed nor (for RPMLOG_EXIT) exiting
}

// Reads librpm's configuration (rpmrc, macros) once per process; under librpm_mutex.
Status configure_librpm() {
  static bool configured = false;
  if (configured) return {};
  rpmlogSetCallback(log_callback, nullptr);
  // The host's /usr/lib/rpm: in a daemon over /usr, a read through its own view, served by
  // its FUSE threads (which take none of the locks held here: librpm's, the package slots').
  if (rpmReadConfigFiles(nullptr, nullptr) != 0) {
    return fail(EIO, "librpm: cannot read its configuration (rpmrc, macros)");
  }
  configured = true;
  return {};
}

// A directory of our own for the copy of the database, removed with everything in it.
class PrivateDir {
 public:
  static Result<PrivateDir> create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/livefs-rpmdb-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {  // mode 0700
      return fail_errno("creating a directory for a copy of the rpm database (" + pattern + ")");
    }
    return PrivateDir(std::move(pattern));
  }
  PrivateDir(PrivateDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  PrivateDir& operator=(PrivateDir&&) = delete;
  ~PrivateDir() {
    if (path_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::string& path() const { return path_; }

 private:
  explicit PrivateDir(std::string path) : path_(std::move(path)) {}
  std::string path_;
};

Status write_new_file(const std::string& path, std::string_view content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) return fail_errno("creating " + path);
  while (!content.empty()) {
    ssize_t n = ::write(fd.get(), content.data(), content.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("writing " + path);
    }
    content.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// Whether a file of the database directory is part of the database. Berkeley DB's
// environment (__db.*), sqlite's shared-memory index (-shm, rebuilt from the WAL) and lock
// files belong to the machine that wrote them, not to the data.
bool is_data_file(std::string_view name) {
  return !name.empty() && name.front() != '.' && !name.starts_with("__db") &&
         !name.ends_with("-shm");
}

VersionOp op_of(rpmsenseFlags flags) {
  switch (flags & RPMSENSE_SENSEMASK) {
    case RPMSENSE_LESS:
      return VersionOp::lt;
    case RPMSENSE_LESS | RPMSENSE_EQUAL:
      return VersionOp::le;
    case RPMSENSE_EQUAL:
      return VersionOp::eq;
    case RPMSENSE_GREATER | RPMSENSE_EQUAL:
      return VersionOp::ge;
    case RPMSENSE_GREATER:
      return VersionOp::gt;
    default:
      return VersionOp::any;  // none, or "<>" which no spec syntax writes
  }
}

Relation relation_of(std::string name, const char* evr, rpmsenseFlags flags) {
  Relation r;
  r.name = std::move(name);
  r.op = op_of(flags);
  if (r.op != VersionOp::any) r.version = evr ? evr : "";
  if (r.version.empty()) r.op = VersionOp::any;
  return r;
}

// A rich dependency ("(a or b)", "(a and (b or c))") as rpmrichParse reports it.
struct RichNode {
  bool leaf = false;
  Relation relation;  // of a leaf
  rpmrichOp op = RPMRICHOP_SINGLE;
  bool mixed = false;  // more than one operator at one level ("(a if b else c)")
  std::vector<std::unique_ptr<RichNode>> children;
};

struct RichParse {
  RichNode root;
  std::vector<RichNode*> stack{&root};
};

rpmRC rich_callback_unguarded(void* data, rpmrichParseType type, const char* n, int nl,
                              const char* e, int el, rpmsenseFlags sense, rpmrichOp op);

// Called from librpm's C code: no exception may cross it; an allocation failure fails the
// parse (the requirement is then skipped, as an unparsable one is).
rpmRC rich_callback(void* data, rpmrichParseType type, const char* n, int nl, const char* e, int el,
                    rpmsenseFlags sense, rpmrichOp op, char**) {
  try {
    return rich_callback_unguarded(data, type, n, nl, e, el, sense, op);
  } catch (...) {
    return RPMRC_FAIL;
  }
}

rpmRC rich_callback_unguarded(void* data, rpmrichParseType type, const char* n, int nl,
                              const char* e, int el, rpmsenseFlags sense, rpmrichOp op) {
  auto* parse = static_cast<RichParse*>(data);
  RichNode* current = parse->stack.back();
  switch (type) {
    case RPMRICH_PARSE_ENTER: {
      current->children.push_back(std::make_unique<RichNode>());
      parse->stack.push_back(current->children.back().get());
      break;
    }
    case RPMRICH_PARSE_LEAVE:
      if (parse->stack.size() > 1) parse->stack.pop_back();
      break;
    case RPMRICH_PARSE_SIMPLE: {
      auto leaf = std::make_unique<RichNode>();
      leaf->leaf = true;
      std::string evr = e && el > 0 ? std::string(e, static_cast<size_t>(el)) : "";
      leaf->relation =
          relation_of(std::string(n, static_cast<size_t>(std::max(nl, 0))), evr.c_str(), sense);
      current->children.push_back(std::move(leaf));
      break;
    }
    case RPMRICH_PARSE_OP:
      if (current->op != RPMRICHOP_SINGLE && current->op != op) current->mixed = true;
      current->op = op;
      break;
  }
  return RPMRC_OK;
}

// The requirements a rich dependency stands for, when it is made of "and" and "or" only:
// "and" gives one requirement per operand, "or" one requirement of alternatives. nullopt for
// the conditional forms ("if", "unless", "with", "without", "else"): whether they require
// anything depends on what else is installed, which a plain requirement cannot say.
std::optional<std::vector<Requirement>> rich_requirements(const RichNode& node) {
  if (node.leaf) return std::vector<Requirement>{{node.relation}};
  if (node.mixed || node.children.empty()) return std::nullopt;
  std::vector<Requirement> out;
  switch (node.op) {
    case RPMRICHOP_SINGLE:
    case RPMRICHOP_AND:
      for (const auto& child : node.children) {
        auto sub = rich_requirements(*child);
        if (!sub) return std::nullopt;
        for (Requirement& r : *sub) out.push_back(std::move(r));
      }
      return out;
    case RPMRICHOP_OR: {
      Requirement alternatives;
      for (const auto& child : node.children) {
        auto sub = rich_requirements(*child);
        if (!sub || sub->size() != 1) return std::nullopt;  // "a or (b and c)"
        for (Relation& r : sub->front()) alternatives.push_back(std::move(r));
      }
      out.push_back(std::move(alternatives));
      return out;
    }
    default:
      return std::nullopt;
  }
}

std::optional<std::vector<Requirement>> parse_rich(const char* text) {
  RichParse parse;
  const char* cursor = text;
  char* message = nullptr;
  rpmRC rc = rpmrichParse(&cursor, &message, rich_callback, &parse);
  std::free(message);
  if (rc != RPMRC_OK) return std::nullopt;
  return rich_requirements(parse.root);
}

struct Package {
  PackageInfo info;  // info.name is the id (see rpm.h)
  std::string name;  // the bare package name
  std::string version, release;
  // OS paths without the leading '/', merged-/usr aliases resolved ("usr/bin/sh"), sorted,
  // unique.
  std::vector<std::string> files;
  Dependencies dependencies;
};

// Requirements that only a scriptlet has (Requires(pre), (post), (preun), (postun),
// (pretrans), (posttrans), (verify), (interp), and PreReq, which rpmbuild writes as
// Requires(pre,preun)): they must be present while rpm runs that scriptlet during an install
// or an erase. livefs runs no scriptlets, and a package that needs the same thing at run
// time says so with a plain Requires, which rpmbuild keeps as an entry of its own.
constexpr rpmsenseFlags kScriptletOnly =
    RPMSENSE_INTERP | RPMSENSE_SCRIPT_PRE | RPMSENSE_SCRIPT_POST | RPMSENSE_SCRIPT_PREUN |
    RPMSENSE_SCRIPT_POSTUN | RPMSENSE_SCRIPT_VERIFY | RPMSENSE_PRETRANS | RPMSENSE_POSTTRANS;

// Reads one header into `p`; `aliases` are the tree's merged-/usr directories.
void read_header(Header h, const std::vector<std::string>& aliases, Package& p) {
  auto string_tag = [&](rpmTagVal tag) {
    const char* s = headerGetString(h, tag);
    return std::string(s ? s : "");
  };
  p.name = string_tag(RPMTAG_NAME);
  p.version = string_tag(RPMTAG_VERSION);
  p.release = string_tag(RPMTAG_RELEASE);
  char* evr = headerGetAsString(h, RPMTAG_EVR);
  p.info = PackageInfo{p.name, evr ? evr : "", string_tag(RPMTAG_ARCH)};
  std::free(evr);

  // Files: ghosts too (rpm owns them, and they are often what a package creates at run
  // time); not those rpm did not install (--excludedocs, %_install_langs, --excludepath),
  // which are not on disk.
  if (rpmfiles files = rpmfilesNew(nullptr, h, RPMTAG_BASENAMES, RPMFI_FLAGS_FILETRIGGER)) {
    rpm_count_t count = rpmfilesFC(files);
    p.files.reserve(count);
    for (rpm_count_t i = 0; i < count; ++i) {
      int ix = static_cast<int>(i);
      if (rpmfilesFState(files, ix) == RPMFILE_STATE_NOTINSTALLED) continue;
      char* fn = rpmfilesFN(files, ix);
      if (fn == nullptr) continue;
      // Normal form ("usr//x" and "usr/./x" are "usr/x"), as owners() looks paths up.
      std::string normal;
      for (std::string_view part : path_components(fn)) normal += "/" + std::string(part);
      if (auto path = served_path(normal, aliases, "")) p.files.push_back(std::move(*path));
      std::free(fn);
    }
    rpmfilesFree(files);
    std::sort(p.files.begin(), p.files.end());
    p.files.erase(std::unique(p.files.begin(), p.files.end()), p.files.end());
  }

  if (rpmds provides = rpmdsNew(h, RPMTAG_PROVIDENAME, 0)) {
    rpmdsInit(provides);
    while (rpmdsNext(provides) >= 0) {
      const char* n = rpmdsN(provides);
      // The package's own name ("demo = 1.0-1", added by rpmbuild) is not "besides" it.
      if (n == nullptr || n == p.name) continue;
      p.dependencies.provides.push_back(relation_of(n, rpmdsEVR(provides), rpmdsFlags(provides)));
    }
    rpmdsFree(provides);
  }

  if (rpmds required = rpmdsNew(h, RPMTAG_REQUIRENAME, 0)) {
    rpmdsInit(required);
    while (rpmdsNext(required) >= 0) {
      const char* n = rpmdsN(required);
      rpmsenseFlags flags = rpmdsFlags(required);
      if (n == nullptr || *n == '\0') continue;
      std::string_view name = n;
      // rpmlib(...) are features of rpm itself, not packages; MISSINGOK ones are hints.
      if ((flags & (RPMSENSE_RPMLIB | RPMSENSE_MISSINGOK)) || name.starts_with("rpmlib(")) {
        continue;
      }
      if (flags & kScriptletOnly) continue;
      if (rpmdsIsRich(required)) {
        auto rich = parse_rich(n);
        if (!rich) {
          logger("packages")
              ->debug("rpm: {}: conditional requirement {} not checked", p.info.name, n);
          continue;
        }
        for (Requirement& r : *rich) p.dependencies.requirements.push_back(std::move(r));
        continue;
      }
      // What the package provides itself (config(NAME), its own sonames and files) needs
      // nothing else.
      if (rpmdsAnyMatchesDep(h, required, 1)) continue;
      if (name.starts_with('/')) {
        auto own = served_path(name, aliases, "");
        if (own && std::binary_search(p.files.begin(), p.files.end(), *own)) continue;
      }
      p.dependencies.requirements.push_back(
          {relation_of(std::string(name), rpmdsEVR(required), flags)});
    }
    rpmdsFree(required);
  }
}

// Reads every package header of the database in `dir` (a copy) written by `backend`.
// Under librpm_mutex.
Result<std::vector<Package>> read_database(const std::string& dir, const std::string& backend,
                                           const std::vector<std::string>& aliases) {
  if (auto configured = configure_librpm(); !configured) return std::unexpected(configured.error());
  std::vector<std::string> errors;
  g_captured_errors = &errors;
  rpmPushMacro(nullptr, "_dbpath", nullptr, dir.c_str(), RMIL_CMDLINE);
  rpmPushMacro(nullptr, "_db_backend", nullptr, backend.c_str(), RMIL_CMDLINE);

  std::vector<Package> packages;
  size_t headers = 0;
  rpmts ts = rpmtsCreate();
  rpmtsSetRootDir(ts, "/");
  // The headers' digests are checked (a damaged header is an error); signatures are not:
  // that would read keys from the host.
  rpmtsSetVSFlags(ts, RPMVSF_MASK_NOSIGNATURES);
  int opened = rpmtsOpenDB(ts, O_RDONLY);
  if (opened == 0) {
    rpmdbMatchIterator mi = rpmtsInitIterator(ts, RPMDBI_PACKAGES, nullptr, 0);
    while (Header h = mi ? rpmdbNextIterator(mi) : nullptr) {
      ++headers;
      const char* name = headerGetString(h, RPMTAG_NAME);
      // Imported signing keys are stored as packages named gpg-pubkey, without files.
      if (name == nullptr || std::string_view(name) == "gpg-pubkey") continue;
      Package p;
      read_header(h, aliases, p);
      packages.push_back(std::move(p));
    }
    rpmdbFreeIterator(mi);
  }
  rpmtsFree(ts);

  rpmPopMacro(nullptr, "_db_backend");
  rpmPopMacro(nullptr, "_dbpath");
  g_captured_errors = nullptr;
  if (opened != 0 || !errors.empty()) {
    bool unsupported = std::any_of(errors.begin(), errors.end(), [](const std::string& e) {
      return e.find("dummy database") != std::string::npos;
    });
    if (unsupported) return fail(ENOTSUP, "this librpm cannot read a " + backend + " database");
    std::string message = opened != 0 ? "librpm cannot open it" : "librpm cannot read it";
    for (size_t i = 0; i < errors.size() && i < 3; ++i) message += (i ? "; " : ": ") + errors[i];
    return fail(EBADMSG, message);
  }
  logger("packages")->debug("rpm: {} headers, {} packages", headers, packages.size());
  return packages;
}

class RpmDb final : public PackageDb {
 public:
  RpmDb(std::string location, std::vector<Package> packages, std::vector<std::string> aliases,
        std::string served_subdir)
      : location_(std::move(location)),
        packages_(std::move(packages)),
        usr_aliases_(std::move(aliases)),
        served_subdir_(std::move(served_subdir)) {
    name_ids();
    std::sort(packages_.begin(), packages_.end(),
              [](const Package& a, const Package& b) { return a.info.name < b.info.name; });
    find_native_arch();
    index_names();
  }

  std::string kind() const override { return "rpm"; }
  std::string location() const override { return location_; }

  std::vector<PackageInfo> packages() const override {
    std::vector<PackageInfo> out;
    out.reserve(packages_.size());
    for (const Package& p : packages_) out.push_back(p.info);
    return out;
  }

  std::optional<PackageInfo> find(std::string_view name) const override {
    const Package* p = lookup(name);
    if (!p) return std::nullopt;
    return p->info;
  }

  Result<std::vector<std::string>> files(std::string_view name) const override {
    const Package* p = lookup(name);
    if (!p) return fail(ENOENT, unknown_package(name));
    std::vector<std::string> out;
    out.reserve(p->files.size());
    for (const std::string& os_path : p->files) {
      if (auto served = served_path(os_path, {}, served_subdir_)) out.push_back(std::move(*served));
    }
    std::sort(out.begin(), out.end(), store::path_less);
    return out;
  }

  std::vector<std::string> owners(std::string_view served) const override {
    while (!served.empty() && served.front() == '/') served.remove_prefix(1);
    while (!served.empty() && served.back() == '/') served.remove_suffix(1);
    if (served.empty()) return {};
    if (served_subdir_.empty()) return owners_of_os_path(served);
    return owners_of_os_path(served_subdir_ + "/" + std::string(served));
  }

  std::vector<std::string> file_owners(std::string_view absolute_path) const override {
    auto os_path = served_path(absolute_path, usr_aliases_, "");
    if (!os_path) return {};
    return owners_of_os_path(*os_path);
  }

  Result<Dependencies> dependencies(std::string_view name) const override {
    const Package* p = lookup(name);
    if (!p) return fail(ENOENT, unknown_package(name));
    Dependencies deps = p->dependencies;
    deps.package = p->name;
    return deps;
  }

  int compare_versions(std::string_view a, std::string_view b) const override {
    return rpm::compare_versions(a, b);
  }

  std::string native_arch() const override { return native_arch_; }

 private:
  // Gives each package its id (see rpm.h); packages_ is in database order.
  void name_ids() {
    std::map<std::string, std::vector<size_t>> by_name;
    for (size_t i = 0; i < packages_.size(); ++i) by_name[packages_[i].name].push_back(i);
    for (auto& [name, indices] : by_name) {
      if (indices.size() < 2) continue;
      std::set<std::string> arches, versions;
      for (size_t i : indices) {
        arches.insert(packages_[i].info.arch);
        versions.insert(packages_[i].info.version);
      }
      for (size_t i : indices) {
        Package& p = packages_[i];
        std::string id = name;
        if (versions.size() > 1) id += "-" + p.version + "-" + p.release;
        if (arches.size() > 1) id += "." + p.info.arch;
        p.info.name = std::move(id);
      }
    }
    // The same name, version, release and architecture twice: rpm never writes that; keep
    // the first.
    std::unordered_set<std::string> seen;
    std::erase_if(packages_, [&](const Package& p) {
      if (seen.insert(p.info.name).second) return false;
      logger("packages")
          ->warn("rpm: {}: {} {} {} installed twice", location_, p.name, p.info.version,
                 p.info.arch);
      return true;
    });
  }

  // The rpm package's architecture, else the most common one that is not noarch.
  void find_native_arch() {
    std::map<std::string, size_t> counts;
    for (const Package& p : packages_) {
      if (p.name == "rpm" && !p.info.arch.empty() && p.info.arch != "noarch") {
        native_arch_ = p.info.arch;
        return;
      }
      if (!p.info.arch.empty() && p.info.arch != "noarch") ++counts[p.info.arch];
    }
    size_t best = 0;
    for (const auto& [arch, count] : counts) {
      if (count > best) {
        best = count;
        native_arch_ = arch;
      }
    }
  }

  // Which instance a name that several packages answer to means: the native architecture's,
  // else noarch, else any; of those, the highest version.
  bool preferred(const Package& a, const Package& b) const {
    auto rank = [&](const Package& p) {
      return p.info.arch == native_arch_ ? 0 : p.info.arch == "noarch" ? 1 : 2;
    };
    if (rank(a) != rank(b)) return rank(a) < rank(b);
    return rpm::compare_versions(a.info.version, b.info.version) > 0;
  }

  void index_names() {
    // Ids first: an id always means its own package.
    for (uint32_t i = 0; i < packages_.size(); ++i) ids_.emplace(packages_[i].info.name, i);
    std::unordered_map<std::string, std::vector<uint32_t>> others;
    for (uint32_t i = 0; i < packages_.size(); ++i) {
      const Package& p = packages_[i];
      std::string nvr = p.name + "-" + p.version + "-" + p.release;
      for (std::string key : {p.name, p.name + "." + p.info.arch, nvr, nvr + "." + p.info.arch}) {
        if (!ids_.contains(key)) others[key].push_back(i);
      }
    }
    for (auto& [key, candidates] : others) {
      uint32_t best = candidates.front();
      for (uint32_t i : candidates) {
        if (preferred(packages_[i], packages_[best])) best = i;
      }
      ids_.emplace(key, best);
    }
  }

  const Package* lookup(std::string_view name) const {
    auto it = ids_.find(std::string(name));
    return it == ids_.end() ? nullptr : &packages_[it->second];
  }

  std::string unknown_package(std::string_view name) const {
    std::vector<std::pair<std::string_view, std::string_view>> candidates;
    candidates.reserve(packages_.size());
    for (const Package& p : packages_) candidates.emplace_back(p.name, p.info.name);
    return unknown_package_message(name, name, candidates);
  }

  std::vector<std::string> owners_of_os_path(std::string_view os_path) const {
    std::call_once(index_built_, [this] { build_owner_index(); });
    std::vector<std::string> out;
    for (uint32_t i : owner_index_.owners(os_path)) out.push_back(packages_[i].info.name);
    return out;  // packages_ is sorted by id and indices were added in order
  }

  void build_owner_index() const {
    for (uint32_t i = 0; i < packages_.size(); ++i) {
      for (const std::string& path : packages_[i].files) owner_index_.add(path, i);
    }
    logger("packages")
        ->debug("rpm: owner index of {} paths from {} packages", owner_index_.size(),
                packages_.size());
  }

  std::string location_;
  std::vector<Package> packages_;                  // sorted by id; never changed after construction
  std::unordered_map<std::string, uint32_t> ids_;  // every name find() accepts
  std::string native_arch_;
  std::vector<std::string> usr_aliases_;
  std::string served_subdir_;

  // OS path (a view into packages_' file lists) -> its owners in packages_. Built once, under
  // index_built_; read-only afterwards.
  mutable std::once_flag index_built_;
  mutable OwnerIndex<std::string_view> owner_index_;
};

}  // namespace

std::string backend_of(const std::vector<std::string>& names) {
  auto has = [&](std::string_view name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  if (has("rpmdb.sqlite")) return "sqlite";
  if (has("Packages.db")) return "ndb";
  if (has("Packages")) return "bdb_ro";
  return "";
}

Result<std::unique_ptr<PackageDb>> open(const TreeReader& tree, std::string location,
                                        const std::vector<std::string>& names,
                                        std::string served_subdir) {
  auto failed = [&](const Error& e) {
    return std::unexpected(with_context(e, "rpm database in " + location));
  };
  std::string backend = backend_of(names);
  if (backend.empty()) return failed(Error{ENOENT, "no rpmdb.sqlite, Packages.db or Packages"});
  auto aliases = find_usr_aliases(tree);
  if (!aliases) return failed(aliases.error());

  auto dir = PrivateDir::create();
  if (!dir) return failed(dir.error());
  size_t copied = 0;
  for (const std::string& name : names) {
    if (!is_data_file(name) || name.find('/') != std::string::npos) continue;
    auto content = tree.read_file(location + "/" + name);
    if (!content) {
      if (content.error().code == EISDIR) continue;
      return failed(content.error());
    }
    if (!*content) continue;  // a dangling symlink
    if (auto written = write_new_file(dir->path() + "/" + name, **content); !written) {
      return failed(written.error());
    }
    copied += (*content)->size();
  }

  std::vector<Package> packages;
  {
    std::lock_guard lock(librpm_mutex());
    auto read = read_database(dir->path(), backend, *aliases);
    if (!read) return failed(read.error());
    packages = std::move(*read);
  }
  logger("packages")
      ->debug("rpm: {} packages in {} ({} database, {} bytes)", packages.size(), location, backend,
              copied);
  return std::make_unique<RpmDb>(std::move(location), std::move(packages), std::move(*aliases),
                                 std::move(served_subdir));
}

int compare_versions(std::string_view a, std::string_view b) {
  std::string sa(a), sb(b);
  std::lock_guard lock(librpm_mutex());
  rpmver va = rpmverParse(sa.c_str());
  rpmver vb = rpmverParse(sb.c_str());
  int order = 0;
  if (va == nullptr || vb == nullptr) {
    order = rpmvercmp(sa.c_str(), sb.c_str());
  } else if (rpmverEVal(va) != rpmverEVal(vb)) {
    order = rpmverEVal(va) < rpmverEVal(vb) ? -1 : 1;
  } else {
    order = rpmvercmp(rpmverV(va), rpmverV(vb));
    // As rpm matches dependencies (rpmdsCompare): a release on one side only is not
    // compared, so "libdemo >= 2.0" is met by 2.0-1 and "= 2.0" by every 2.0-N.
    const char* ra = rpmverR(va);
    const char* rb = rpmverR(vb);
    if (order == 0 && ra && *ra && rb && *rb) order = rpmvercmp(ra, rb);
  }
  rpmverFree(va);
  rpmverFree(vb);
  return order < 0 ? -1 : order > 0 ? 1 : 0;
}

}  // namespace livefs::packages::rpm
