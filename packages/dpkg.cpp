// The dpkg PackageDb: installed packages from `status` (read once, at open), file lists
// read on demand (files() reads one .list), and an owner index over every list built the
// first time owners() is asked.
#include "packages/dpkg.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <unordered_map>

#include "common/log.h"
#include "common/text.h"
#include "packages/owner_index.h"
#include "packages/paths.h"
#include "store/tree.h"

namespace livefs::packages::dpkg {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string shorten(std::string_view s) {
  constexpr size_t kMax = 60;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

struct Package {
  PackageInfo info;  // info.name is the id (name or name:arch)
  std::string name;  // the bare package name
  std::string multi_arch;
  std::string depends, pre_depends, provides;  // as in the status file, parsed on demand
};

class DpkgDb final : public PackageDb {
 public:
  DpkgDb(const TreeReader& tree, std::shared_ptr<const TreeReader> keep_alive, std::string location,
         std::vector<Package> packages, std::vector<Diversion> diversions,
         std::vector<std::string> aliases, std::string served_subdir)
      : keep_alive_(std::move(keep_alive)),
        tree_(&tree),
        location_(std::move(location)),
        packages_(std::move(packages)),
        usr_aliases_(std::move(aliases)),
        served_subdir_(std::move(served_subdir)) {
    for (Diversion& d : diversions) {
      std::string from = d.from;
      diversions_.insert_or_assign(std::move(from), std::move(d));
    }
    for (uint32_t i = 0; i < packages_.size(); ++i) {
      const Package& p = packages_[i];
      by_name_[p.name].push_back(i);
      if (p.name == "dpkg") native_arch_ = p.info.arch;
    }
  }

  std::string kind() const override { return "dpkg"; }
  std::string location() const override { return location_; }

  std::vector<PackageInfo> packages() const override {
    std::vector<PackageInfo> out;
    out.reserve(packages_.size());
    for (const Package& p : packages_) out.push_back(p.info);
    return out;
  }

  std::optional<PackageInfo> find(std::string_view name) const override {
    auto index = lookup(name);
    if (!index) return std::nullopt;
    return packages_[*index].info;
  }

  Result<std::vector<std::string>> files(std::string_view name) const override {
    auto index = lookup(name);
    if (!index) return fail(ENOENT, unknown_package(name));
    auto paths = read_list(packages_[*index]);
    if (!paths) return std::unexpected(paths.error());
    std::sort(paths->begin(), paths->end(), store::path_less);
    paths->erase(std::unique(paths->begin(), paths->end()), paths->end());
    return paths;
  }

  std::vector<std::string> owners(std::string_view served) const override {
    std::call_once(index_built_, [this] { build_owner_index(); });
    while (!served.empty() && served.front() == '/') served.remove_prefix(1);
    while (!served.empty() && served.back() == '/') served.remove_suffix(1);
    std::vector<std::string> out;
    for (uint32_t i : owner_index_.owners(std::string(served)))
      out.push_back(packages_[i].info.name);
    return out;  // packages_ is sorted and indices were added in order
  }

  Result<Dependencies> dependencies(std::string_view name) const override {
    auto index = lookup(name);
    if (!index) return fail(ENOENT, unknown_package(name));
    const Package& p = packages_[*index];
    Dependencies deps;
    deps.multi_arch = p.multi_arch;
    deps.package = p.name;
    for (const auto& [field, text] :
         {std::pair<std::string_view, const std::string*>{"Pre-Depends", &p.pre_depends},
          {"Depends", &p.depends}}) {
      auto parsed = parse_relations(*text, p.info.name + " " + std::string(field));
      if (!parsed) return std::unexpected(parsed.error());
      for (Requirement& r : *parsed) deps.requirements.push_back(std::move(r));
    }
    auto provided = parse_relations(p.provides, p.info.name + " Provides");
    if (!provided) return std::unexpected(provided.error());
    for (Requirement& r : *provided) {
      // A provide is one name, at most "(= version)".
      if (r.size() != 1 || (r[0].op != VersionOp::any && r[0].op != VersionOp::eq)) {
        return fail(EBADMSG, p.info.name + " Provides: '" + requirement_text(r) +
                                 "' is not a name with at most an exact version");
      }
      deps.provides.push_back(std::move(r[0]));
    }
    return deps;
  }

  int compare_versions(std::string_view a, std::string_view b) const override {
    return dpkg::compare_versions(a, b);
  }

  std::string native_arch() const override { return native_arch_; }

 private:
  std::optional<size_t> lookup(std::string_view name) const {
    std::string_view arch;
    if (size_t colon = name.find(':'); colon != std::string_view::npos) {
      arch = name.substr(colon + 1);
      name = name.substr(0, colon);
    }
    auto it = by_name_.find(std::string(name));
    if (it == by_name_.end()) return std::nullopt;
    const std::vector<uint32_t>& candidates = it->second;
    if (!arch.empty()) {
      for (uint32_t i : candidates) {
        if (packages_[i].info.arch == arch) return i;
      }
      return std::nullopt;
    }
    for (uint32_t i : candidates) {
      if (packages_[i].info.arch == native_arch_) return i;
    }
    return candidates.front();
  }

  std::string unknown_package(std::string_view name) const {
    std::vector<std::pair<std::string_view, std::string_view>> candidates;
    candidates.reserve(by_name_.size());
    for (const auto& [candidate, indices] : by_name_) candidates.emplace_back(candidate, candidate);
    return unknown_package_message(name, name.substr(0, name.find(':')), candidates);
  }

  // The package's served paths in list order (duplicates possible: "/bin" and "/usr/bin"
  // are one directory on a merged-/usr system). A package without a list owns nothing.
  Result<std::vector<std::string>> read_list(const Package& p) const {
    std::string arch_list = p.name + ":" + p.info.arch + ".list";
    std::string plain_list = p.name + ".list";
    const std::string* order[2] = {&plain_list, &arch_list};
    if (p.multi_arch == "same") std::swap(order[0], order[1]);
    std::optional<std::string> content;
    for (const std::string* list : order) {
      auto read = tree_->read_file(location_ + "/info/" + *list);
      if (!read) {
        return std::unexpected(with_context(read.error(), "file list of " + p.info.name));
      }
      if (*read) {
        content = std::move(*read);
        break;
      }
    }
    std::vector<std::string> paths;
    if (!content) {
      logger("packages")->debug("dpkg: {} has no file list in {}/info", p.info.name, location_);
      return paths;
    }
    std::string_view text = *content;
    std::string_view listed;
    while (next_line(text, listed)) {
      // A file another package (or the admin, ":") diverted is unpacked to the diversion's
      // target; the list keeps the name in the package.
      if (!diversions_.empty()) {
        auto diverted = diversions_.find(std::string(listed));
        if (diverted != diversions_.end() && diverted->second.by != p.name) {
          listed = diverted->second.to;
        }
      }
      if (auto path = served_path(listed, usr_aliases_, served_subdir_)) {
        paths.push_back(std::move(*path));
      }
    }
    return paths;
  }

  void build_owner_index() const {
    size_t unreadable = 0;
    for (uint32_t i = 0; i < packages_.size(); ++i) {
      auto paths = read_list(packages_[i]);
      if (!paths) {
        ++unreadable;
        logger("packages")->warn("dpkg: {}", paths.error().message());
        continue;
      }
      for (std::string& path : *paths) owner_index_.add(std::move(path), i);
    }
    logger("packages")
        ->debug("dpkg: owner index of {} paths from {} lists ({} unreadable)", owner_index_.size(),
                packages_.size(), unreadable);
  }

  std::shared_ptr<const TreeReader> keep_alive_;  // may be null: the caller keeps tree_
  const TreeReader* tree_;
  std::string location_;
  std::vector<Package> packages_;  // sorted by id
  std::unordered_map<std::string, std::vector<uint32_t>> by_name_;
  std::string native_arch_;
  std::unordered_map<std::string, Diversion> diversions_;  // by the path diverted
  std::vector<std::string> usr_aliases_;
  std::string served_subdir_;

  // Built once, under index_built_; read-only afterwards, so owners() needs no lock.
  mutable std::once_flag index_built_;
  mutable OwnerIndex<std::string> owner_index_;
};

}  // namespace

Result<std::vector<StatusEntry>> parse_status(std::string_view text, std::string_view what) {
  std::vector<StatusEntry> entries;
  auto corrupt = [&](size_t line, const std::string& why) {
    return fail(EBADMSG, std::string(what) + " line " + std::to_string(line) + ": " + why);
  };
  if (size_t nul = text.find('\0'); nul != std::string_view::npos) {
    size_t line = 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + nul, '\n'));
    return corrupt(line, "binary data (NUL byte)");
  }
  StatusEntry current;
  bool in_stanza = false;
  size_t stanza_line = 0;
  std::string* last_value = nullptr;  // the field a continuation line extends
  bool has_package = false, has_status = false;

  auto finish = [&]() -> Status {
    if (!in_stanza) return {};
    if (!has_package) return corrupt(stanza_line, "stanza without a Package field");
    if (!has_status) {
      return corrupt(stanza_line, "stanza of " + current.package + " without a Status field");
    }
    entries.push_back(std::move(current));
    current = StatusEntry{};
    in_stanza = has_package = has_status = false;
    last_value = nullptr;
    return {};
  };

  size_t line_number = 0;
  std::string_view line;
  while (next_line(text, line)) {
    ++line_number;
    if (trim(line).empty()) {
      if (auto done = finish(); !done) return std::unexpected(done.error());
      continue;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      if (!in_stanza) return corrupt(line_number, "continuation line outside a field");
      // Multi-line values (Description, Conffiles) are not used; single-line ones that
      // continue are joined with a space.
      if (last_value != nullptr) *last_value += " " + std::string(trim(line));
      continue;
    }
    size_t colon = line.find(':');
    std::string_view field = colon == std::string_view::npos ? "" : trim(line.substr(0, colon));
    if (field.empty() || field.find(' ') != std::string_view::npos) {
      return corrupt(line_number, "expected 'Field: value', got '" + shorten(line) + "'");
    }
    if (!in_stanza) {
      in_stanza = true;
      stanza_line = line_number;
    }
    std::string value(trim(line.substr(colon + 1)));
    last_value = nullptr;
    if (iequals(field, "Package")) {
      current.package = std::move(value);
      has_package = !current.package.empty();
      last_value = &current.package;
    } else if (iequals(field, "Status")) {
      current.status = std::move(value);
      has_status = true;
      last_value = &current.status;
    } else if (iequals(field, "Version")) {
      current.version = std::move(value);
      last_value = &current.version;
    } else if (iequals(field, "Architecture")) {
      current.architecture = std::move(value);
      last_value = &current.architecture;
    } else if (iequals(field, "Multi-Arch")) {
      current.multi_arch = std::move(value);
      last_value = &current.multi_arch;
    } else if (iequals(field, "Depends")) {
      current.depends = std::move(value);
      last_value = &current.depends;
    } else if (iequals(field, "Pre-Depends")) {
      current.pre_depends = std::move(value);
      last_value = &current.pre_depends;
    } else if (iequals(field, "Provides")) {
      current.provides = std::move(value);
      last_value = &current.provides;
    }
  }
  if (auto done = finish(); !done) return std::unexpected(done.error());
  return entries;
}

Result<std::vector<Diversion>> parse_diversions(std::string_view text, std::string_view what) {
  std::vector<std::string_view> lines;
  for (std::string_view line; next_line(text, line);) lines.push_back(line);
  if (lines.size() % 3 != 0) {
    return fail(EBADMSG, std::string(what) + ": " + std::to_string(lines.size()) +
                             " lines, not a whole number of (from, to, package) triples");
  }
  std::vector<Diversion> diversions;
  for (size_t i = 0; i < lines.size(); i += 3) {
    if (!lines[i].starts_with('/') || !lines[i + 1].starts_with('/') || lines[i + 2].empty()) {
      return fail(EBADMSG, std::string(what) + " line " + std::to_string(i + 1) +
                               ": expected two absolute paths and a package");
    }
    diversions.push_back(
        Diversion{std::string(lines[i]), std::string(lines[i + 1]), std::string(lines[i + 2])});
  }
  return diversions;
}

Result<std::vector<Requirement>> parse_relations(std::string_view field, std::string_view what) {
  std::vector<Requirement> out;
  auto bad = [&](std::string_view element, const std::string& why) {
    return fail(EBADMSG, std::string(what) + ": '" + shorten(trim(element)) + "': " + why);
  };
  auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  auto name_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.' ||
           c == '_';
  };
  while (!field.empty()) {
    size_t comma = field.find(',');
    std::string_view element = field.substr(0, comma);
    field = comma == std::string_view::npos ? std::string_view() : field.substr(comma + 1);
    if (trim(element).empty()) {
      // "a, , b" and a trailing comma are tolerated, as dpkg does for the last one.
      continue;
    }
    Requirement requirement;
    while (true) {
      size_t bar = element.find('|');
      std::string_view text = element.substr(0, bar);
      size_t i = 0;
      auto skip_space = [&] {
        while (i < text.size() && is_space(text[i])) ++i;
      };
      skip_space();
      Relation r;
      size_t start = i;
      while (i < text.size() && name_char(text[i])) ++i;
      r.name = std::string(text.substr(start, i - start));
      if (r.name.empty()) return bad(text, "expected a package name");
      if (i < text.size() && text[i] == ':') {
        size_t arch_start = ++i;
        while (i < text.size() && name_char(text[i])) ++i;
        r.arch = std::string(text.substr(arch_start, i - arch_start));
        if (r.arch.empty()) return bad(text, "expected an architecture after ':'");
      }
      skip_space();
      if (i < text.size() && text[i] == '(') {
        ++i;
        skip_space();
        size_t op_start = i;
        while (i < text.size() && (text[i] == '<' || text[i] == '>' || text[i] == '=')) ++i;
        std::string_view op = text.substr(op_start, i - op_start);
        if (op == "<<") {
          r.op = VersionOp::lt;
        } else if (op == "<=" || op == "<") {
          r.op = VersionOp::le;
        } else if (op == "=") {
          r.op = VersionOp::eq;
        } else if (op == ">=" || op == ">") {
          r.op = VersionOp::ge;
        } else if (op == ">>") {
          r.op = VersionOp::gt;
        } else {
          return bad(text, "expected one of << <= = >= >> in the version constraint");
        }
        skip_space();
        size_t version_start = i;
        while (i < text.size() && text[i] != ')' && !is_space(text[i])) ++i;
        r.version = std::string(text.substr(version_start, i - version_start));
        skip_space();
        if (r.version.empty() || i >= text.size() || text[i] != ')') {
          return bad(text, "expected '(OP VERSION)'");
        }
        ++i;
        skip_space();
      }
      if (i != text.size()) return bad(text, "unexpected text after the relation");
      requirement.push_back(std::move(r));
      if (bar == std::string_view::npos) break;
      element = element.substr(bar + 1);
    }
    out.push_back(std::move(requirement));
  }
  return out;
}

namespace {

// dpkg's weight of a character in a non-digit run: the end and digits 0, "~" below them,
// letters by their code, everything else after all letters.
int version_order(char c) {
  if (std::isdigit(static_cast<unsigned char>(c))) return 0;
  if (std::isalpha(static_cast<unsigned char>(c))) return static_cast<unsigned char>(c);
  if (c == '~') return -1;
  return static_cast<unsigned char>(c) + 256;
}

int compare_fragment(std::string_view a, std::string_view b) {
  size_t i = 0, j = 0;
  auto is_digit = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; };
  while (i < a.size() || j < b.size()) {
    while ((i < a.size() && !is_digit(a[i])) || (j < b.size() && !is_digit(b[j]))) {
      int ca = i < a.size() ? version_order(a[i]) : 0;
      int cb = j < b.size() ? version_order(b[j]) : 0;
      if (ca != cb) return ca < cb ? -1 : 1;
      ++i;
      ++j;
    }
    while (i < a.size() && a[i] == '0') ++i;
    while (j < b.size() && b[j] == '0') ++j;
    size_t da = i, db = j;
    while (da < a.size() && is_digit(a[da])) ++da;
    while (db < b.size() && is_digit(b[db])) ++db;
    // Without leading zeros, the longer run is the larger number; equal lengths compare as
    // text.
    if (da - i != db - j) return da - i < db - j ? -1 : 1;
    if (int c = a.substr(i, da - i).compare(b.substr(j, db - j)); c != 0) return c < 0 ? -1 : 1;
    i = da;
    j = db;
  }
  return 0;
}

struct DebianVersion {
  unsigned long long epoch = 0;
  std::string_view upstream, revision;
};

DebianVersion split_version(std::string_view v) {
  DebianVersion out;
  v = trim(v);
  if (size_t colon = v.find(':'); colon != std::string_view::npos) {
    bool digits = colon > 0;
    for (char c : v.substr(0, colon))
      digits = digits && std::isdigit(static_cast<unsigned char>(c));
    if (digits) {
      // An epoch beyond what fits sorts as the largest (such a version is not valid anyway).
      errno = 0;
      out.epoch = std::strtoull(std::string(v.substr(0, colon)).c_str(), nullptr, 10);
      if (errno == ERANGE) out.epoch = ~0ull;
    }
    v = v.substr(colon + 1);
  }
  size_t dash = v.rfind('-');
  out.upstream = v.substr(0, dash);
  if (dash != std::string_view::npos) out.revision = v.substr(dash + 1);
  return out;
}

}  // namespace

int compare_versions(std::string_view a, std::string_view b) {
  DebianVersion va = split_version(a), vb = split_version(b);
  if (va.epoch != vb.epoch) return va.epoch < vb.epoch ? -1 : 1;
  if (int c = compare_fragment(va.upstream, vb.upstream); c != 0) return c;
  return compare_fragment(va.revision, vb.revision);
}

bool is_installed(std::string_view status) {
  // "want flag state": the state is the last word.
  size_t space = status.find_last_of(' ');
  std::string_view state = space == std::string_view::npos ? status : status.substr(space + 1);
  return state == "installed" || state == "triggers-pending" || state == "triggers-awaited";
}

std::optional<std::string> served_path(std::string_view listed,
                                       const std::vector<std::string>& usr_aliases,
                                       std::string_view served_subdir) {
  return packages::served_path(listed, usr_aliases, served_subdir);
}

Result<std::unique_ptr<PackageDb>> open(const TreeReader& tree,
                                        std::shared_ptr<const TreeReader> keep_alive,
                                        std::string location, std::string_view status_text,
                                        std::string served_subdir) {
  std::string what = location + "/status";
  auto entries = parse_status(status_text, what);
  if (!entries) return std::unexpected(entries.error());

  std::vector<Package> packages;
  for (StatusEntry& entry : *entries) {
    if (!is_installed(entry.status)) continue;
    Package p;
    p.name = std::move(entry.package);
    p.info = PackageInfo{p.name, std::move(entry.version), std::move(entry.architecture)};
    p.multi_arch = std::move(entry.multi_arch);
    p.depends = std::move(entry.depends);
    p.pre_depends = std::move(entry.pre_depends);
    p.provides = std::move(entry.provides);
    packages.push_back(std::move(p));
  }
  std::sort(packages.begin(), packages.end(), [](const Package& a, const Package& b) {
    return std::tie(a.name, a.info.arch) < std::tie(b.name, b.info.arch);
  });
  // The same package and architecture twice: dpkg never writes that; keep the first.
  packages.erase(
      std::unique(packages.begin(), packages.end(),
                  [&](const Package& a, const Package& b) {
                    if (a.name != b.name || a.info.arch != b.info.arch) return false;
                    logger("packages")->warn("{}: {}:{} listed twice", what, a.name, a.info.arch);
                    return true;
                  }),
      packages.end());
  // Several architectures of one package: each is named name:arch.
  for (size_t i = 0; i < packages.size(); ++i) {
    bool shared = (i > 0 && packages[i - 1].name == packages[i].name) ||
                  (i + 1 < packages.size() && packages[i + 1].name == packages[i].name);
    if (shared) packages[i].info.name = packages[i].name + ":" + packages[i].info.arch;
  }

  std::vector<Diversion> diversions;
  auto diversions_text = tree.read_file(location + "/diversions");
  if (!diversions_text) return std::unexpected(diversions_text.error());
  if (*diversions_text) {
    auto parsed = parse_diversions(**diversions_text, location + "/diversions");
    if (!parsed) return std::unexpected(parsed.error());
    diversions = std::move(*parsed);
  }

  auto aliases = find_usr_aliases(tree);
  if (!aliases) return std::unexpected(aliases.error());
  logger("packages")
      ->debug("dpkg: {} installed packages in {} (of {} stanzas)", packages.size(), location,
              entries->size());
  return std::make_unique<DpkgDb>(tree, std::move(keep_alive), std::move(location),
                                  std::move(packages), std::move(diversions), std::move(*aliases),
                                  std::move(served_subdir));
}

}  // namespace livefs::packages::dpkg
