// The dependency resolver: every package of both databases as one unit (matched by bare
// name and architecture), with indexes by name, by what is provided and by what is
// required, so one plan costs what the selected packages and their dependents cost.
#include "packages/deps.h"

#include <algorithm>
#include <map>
#include <optional>
#include <unordered_map>

namespace livefs::packages {

namespace {

enum Side : int { kBooted = 0, kStaged = 1 };

std::string_view bare_name(std::string_view name) { return name.substr(0, name.find(':')); }

}  // namespace

struct DependencyResolver::Impl {
  struct Unit {
    std::string name;     // as the staged database names it, else the booted one
    std::string package;  // the bare package name requirements use (Dependencies::package)
    std::optional<PackageInfo> info[2];
    Dependencies deps[2];
    bool pending = false;
  };
  struct Provider {
    size_t unit;
    Side side;
    Relation provide;
  };

  const PackageDb* db[2] = {nullptr, nullptr};
  bool dpkg = false;
  std::string native_arch;
  std::vector<Unit> units;                           // sorted by package and architecture
  std::unordered_map<std::string, size_t> by_id[2];  // a database's PackageInfo::name -> unit
  std::unordered_map<std::string, std::vector<size_t>> by_bare;
  std::unordered_map<std::string, std::vector<Provider>> providers;
  // A name (package or provided) -> the units requiring it on either side.
  std::unordered_map<std::string, std::vector<size_t>> needed_by;

  std::optional<size_t> unit_of(std::string_view name) const {
    for (Side side : {kStaged, kBooted}) {
      if (db[side] == nullptr) continue;
      if (auto info = db[side]->find(name)) {
        auto it = by_id[side].find(info->name);
        if (it != by_id[side].end()) return it->second;
      }
    }
    return std::nullopt;
  }

  // Which side of a unit is live once `selected` is applied.
  Side live_side(size_t u, const std::set<size_t>& selected) const {
    return units[u].pending && !selected.contains(u) ? kBooted : kStaged;
  }

  // dpkg treats Architecture: all as the native architecture.
  std::string_view arch_of(std::string_view arch) const {
    return arch == "all" ? std::string_view(native_arch) : arch;
  }
  std::string_view arch_of(const PackageInfo& info) const { return arch_of(info.arch); }

  // dpkg's multi-arch rules: whether a package of `candidate`'s architecture (with its
  // Multi-Arch) can meet a relation of a package of `depender_arch`. Unqualified: the
  // depender's own architecture, or any for Multi-Arch: foreign; ":any": only Multi-Arch:
  // allowed; ":native" and ":ARCH": that architecture ("all" counting as native throughout).
  bool arch_ok(const Relation& r, std::string_view depender_arch, const PackageInfo& candidate,
               std::string_view candidate_multi_arch) const {
    if (!dpkg) return true;
    std::string_view wanted;
    if (r.arch.empty()) {
      if (candidate_multi_arch == "foreign") return true;
      wanted = depender_arch;
    } else if (r.arch == "any") {
      return candidate_multi_arch == "allowed";
    } else if (r.arch == "native") {
      wanted = native_arch;
    } else {
      wanted = arch_of(std::string_view(r.arch));
    }
    return arch_of(candidate) == wanted;
  }

  // Whether unit `c`, at `side`, meets `r` for a depender of `depender_arch`.
  bool meets(size_t c, Side side, const Relation& r, std::string_view depender_arch) const {
    const Unit& unit = units[c];
    const PackageInfo* info = unit.info[side] ? &*unit.info[side] : nullptr;
    if (info == nullptr) return false;
    const Dependencies& deps = unit.deps[side];
    if (!arch_ok(r, depender_arch, *info, deps.multi_arch)) return false;
    if (r.name.starts_with('/')) {
      // A file requirement: met by the file's owner, or by a package providing the path.
      for (const std::string& owner : db[side]->file_owners(r.name)) {
        auto it = by_id[side].find(owner);
        if (it != by_id[side].end() && it->second == c) return true;
      }
    } else if (unit.package == r.name &&
               version_satisfies(*db[side], info->version, r.op, r.version)) {
      return true;
    }
    for (const Relation& p : deps.provides) {
      if (p.name != r.name) continue;
      if (r.op == VersionOp::any) return true;
      // dpkg: only a versioned provide meets a versioned relation. RPM: an unversioned
      // provide meets any version.
      if (p.op == VersionOp::any) {
        if (!dpkg) return true;
        continue;
      }
      if (version_satisfies(*db[side], p.version, r.op, r.version)) return true;
    }
    return false;
  }

  // The units that could meet `r` on some side (by name, by provide, by owning the file).
  std::vector<size_t> candidates(const Relation& r) const {
    std::vector<size_t> out;
    if (auto it = by_bare.find(r.name); it != by_bare.end()) out = it->second;
    if (auto it = providers.find(r.name); it != providers.end()) {
      for (const Provider& p : it->second) out.push_back(p.unit);
    }
    if (r.name.starts_with('/')) {
      for (Side side : {kBooted, kStaged}) {
        if (db[side] == nullptr) continue;
        for (const std::string& owner : db[side]->file_owners(r.name)) {
          auto it = by_id[side].find(owner);
          if (it != by_id[side].end()) out.push_back(it->second);
        }
      }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  bool met(const Requirement& req, std::string_view depender_arch,
           const std::set<size_t>& selected) const {
    for (const Relation& r : req) {
      for (size_t c : candidates(r)) {
        if (meets(c, live_side(c, selected), r, depender_arch)) return true;
      }
    }
    return false;
  }

  // "2.6.1" (the live version of the first alternative's package), or "none".
  std::string live_text(const Requirement& req, const std::set<size_t>& selected) const {
    for (const Relation& r : req) {
      auto it = by_bare.find(r.name);
      if (it == by_bare.end()) continue;
      for (size_t c : it->second) {
        if (const auto& info = units[c].info[live_side(c, selected)]) return info->version;
      }
    }
    return "none";
  }

  // The names whose meaning changes when `u` goes from one side to the other.
  std::vector<std::string> names_of(size_t u) const {
    std::vector<std::string> names;
    for (Side side : {kBooted, kStaged}) {
      const Unit& unit = units[u];
      if (!unit.info[side]) continue;
      names.push_back(unit.package);
      for (const Relation& p : unit.deps[side].provides) names.push_back(p.name);
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
  }

  std::vector<DependencyProblem> problems(const std::set<size_t>& selected) const {
    static const std::set<size_t> kNone;
    std::set<size_t> dependents;
    for (size_t u : selected) {
      for (const std::string& name : names_of(u)) {
        if (auto it = needed_by.find(name); it != needed_by.end()) {
          for (size_t d : it->second) {
            if (!selected.contains(d)) dependents.insert(d);
          }
        }
      }
    }
    std::vector<DependencyProblem> out;
    auto check = [&](size_t d, bool is_selected) {
      Side side = live_side(d, selected);
      const Unit& unit = units[d];
      if (!unit.info[side]) return;  // removed: needs nothing
      std::string arch(arch_of(*unit.info[side]));
      for (const Requirement& req : unit.deps[side].requirements) {
        if (met(req, arch, selected)) continue;
        // A live package's requirement that is unmet already is not this apply's doing.
        if (!is_selected && !met(req, arch, kNone)) continue;
        DependencyProblem p;
        p.package = unit.name;
        p.version = unit.info[side]->version;
        p.selected = is_selected;
        p.requirement = req;
        p.live = live_text(req, selected);
        if (is_selected) {
          for (const Relation& r : req) {
            for (size_t c : candidates(r)) {
              if (units[c].pending && !selected.contains(c) && meets(c, kStaged, r, arch) &&
                  std::find(p.fixes.begin(), p.fixes.end(), units[c].name) == p.fixes.end())
                p.fixes.push_back(units[c].name);
            }
          }
        } else if (unit.pending && unit.info[kStaged]) {
          p.fixes.push_back(unit.name);  // its staged version goes with the change
        }
        out.push_back(std::move(p));
      }
    };
    for (size_t u : selected) check(u, true);
    for (size_t d : dependents) check(d, false);
    return out;
  }
};

std::string DependencyProblem::text() const {
  if (selected) {
    return package + " " + version + " needs " + requirement_text(requirement) + "; live has " +
           live;
  }
  return "live " + package + " " + version + " needs " + requirement_text(requirement) +
         ", which the apply would change (to " + live + ")";
}

std::vector<std::string> SelectionPlan::packages() const {
  std::vector<std::string> out = requested;
  for (const Added& a : added) out.push_back(a.package);
  return out;
}

DependencyResolver::DependencyResolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DependencyResolver::~DependencyResolver() = default;

Result<std::unique_ptr<DependencyResolver>> DependencyResolver::create(
    const PackageDb* booted, const PackageDb* staged, const std::set<std::string>& pending) {
  auto impl = std::make_unique<Impl>();
  impl->db[kBooted] = booted;
  impl->db[kStaged] = staged;
  const PackageDb* any = staged != nullptr ? staged : booted;
  if (any == nullptr) return fail(ENOENT, "no package database in the booted or staged tree");
  if (booted != nullptr && staged != nullptr && booted->kind() != staged->kind()) {
    return fail(EINVAL, "the booted tree's packages are " + booted->kind() +
                            " and the staged tree's " + staged->kind());
  }
  impl->dpkg = any->kind() == "dpkg";
  impl->native_arch = any->native_arch();

  // One unit per package and architecture, over both databases. A second instance of one
  // name and architecture on one side (RPM: two kernels) is a unit of its own, by its id.
  std::map<std::string, Impl::Unit> units;                 // by key, so the order is stable
  std::unordered_map<std::string, std::string> key_of[2];  // PackageInfo::name -> key
  for (Side side : {kBooted, kStaged}) {
    if (impl->db[side] == nullptr) continue;
    for (PackageInfo& info : impl->db[side]->packages()) {
      auto deps = impl->db[side]->dependencies(info.name);
      if (!deps) return std::unexpected(deps.error());
      std::string package =
          deps->package.empty() ? std::string(bare_name(info.name)) : deps->package;
      std::string key = package + "\n" + info.arch;
      if (auto it = units.find(key); it != units.end() && it->second.info[side])
        key = info.name + "\n" + info.arch + "\n";
      Impl::Unit& unit = units[key];
      if (unit.name.empty() || side == kStaged) unit.name = info.name;
      unit.package = package;
      key_of[side][info.name] = key;
      unit.deps[side] = std::move(*deps);
      unit.info[side] = std::move(info);
    }
  }
  // A package whose architecture changed between the trees (amd64 -> all, x86_64 ->
  // noarch) is one package: its only booted instance and its only staged one are one unit.
  std::map<std::string, std::vector<std::string>> keys_of_package;
  for (const auto& [key, unit] : units) keys_of_package[unit.package].push_back(key);
  for (const auto& [package, keys] : keys_of_package) {
    if (keys.size() != 2) continue;
    auto only = [&](const std::string& key, Side side) {
      const Impl::Unit& u = units.at(key);
      return u.info[side].has_value() && !u.info[1 - side].has_value();
    };
    std::string into, from;
    if (only(keys[0], kBooted) && only(keys[1], kStaged)) {
      into = keys[0];
      from = keys[1];
    } else if (only(keys[1], kBooted) && only(keys[0], kStaged)) {
      into = keys[1];
      from = keys[0];
    } else {
      continue;
    }
    Impl::Unit& target = units.at(into);
    Impl::Unit& source = units.at(from);
    key_of[kStaged][source.info[kStaged]->name] = into;
    target.name = source.name;
    target.deps[kStaged] = std::move(source.deps[kStaged]);
    target.info[kStaged] = std::move(source.info[kStaged]);
    units.erase(from);
  }
  std::unordered_map<std::string, size_t> index_of;
  impl->units.reserve(units.size());
  for (auto& [key, unit] : units) {
    index_of.emplace(key, impl->units.size());
    impl->units.push_back(std::move(unit));
  }
  for (Side side : {kBooted, kStaged}) {
    for (const auto& [id, key] : key_of[side]) impl->by_id[side].emplace(id, index_of.at(key));
  }
  for (size_t u = 0; u < impl->units.size(); ++u) {
    const Impl::Unit& unit = impl->units[u];
    std::set<std::string> required;
    impl->by_bare[unit.package].push_back(u);
    for (Side side : {kBooted, kStaged}) {
      if (!unit.info[side]) continue;
      for (const Relation& p : unit.deps[side].provides)
        impl->providers[p.name].push_back({u, side, p});
      for (const Requirement& req : unit.deps[side].requirements) {
        for (const Relation& r : req) required.insert(r.name);
      }
    }
    for (const std::string& name : required) impl->needed_by[name].push_back(u);
  }
  for (const std::string& name : pending) {
    if (auto u = impl->unit_of(name)) impl->units[*u].pending = true;
  }
  return std::unique_ptr<DependencyResolver>(new DependencyResolver(std::move(impl)));
}

Result<SelectionPlan> DependencyResolver::plan(const std::vector<std::string>& requested,
                                               bool with_deps) const {
  const Impl& impl = *impl_;
  SelectionPlan plan;
  std::set<size_t> selected;
  for (const std::string& name : requested) {
    auto u = impl.unit_of(name);
    if (!u) return fail(ENOENT, "unknown package " + name);
    if (selected.insert(*u).second) plan.requested.push_back(name);
  }
  // One package at a time, the problems worked out again after each: a package added for
  // one requirement often meets others too, and then nothing more is added for them.
  auto finish = [&] {
    std::set<std::string> seen;
    for (const std::string& name : plan.requested) {
      if (seen.insert(name).second) plan.ids.push_back(name);
    }
    for (size_t u : selected) {
      for (Side side : {kStaged, kBooted}) {
        const auto& info = impl.units[u].info[side];
        if (info && seen.insert(info->name).second) plan.ids.push_back(info->name);
      }
    }
    return plan;
  };
  while (true) {
    plan.problems = impl.problems(selected);
    if (!with_deps || plan.problems.empty()) return finish();
    bool added = false;
    for (const DependencyProblem& p : plan.problems) {
      if (p.fixes.empty()) continue;
      auto u = impl.unit_of(p.fixes.front());
      if (!u || !selected.insert(*u).second) continue;
      std::string because =
          p.package + " " + p.version + " needs " + requirement_text(p.requirement);
      plan.added.push_back({impl.units[*u].name, std::move(because)});
      added = true;
      break;
    }
    if (!added) return finish();
  }
}

std::vector<std::pair<std::string, std::vector<std::string>>> DependencyResolver::must_go_together()
    const {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const Impl::Unit& unit : impl_->units) {
    if (!unit.pending || !unit.info[kStaged]) continue;
    auto plan = this->plan({unit.name}, true);
    if (!plan || plan->added.empty()) continue;
    std::vector<std::string> partners;
    for (const SelectionPlan::Added& a : plan->added) partners.push_back(a.package);
    out.emplace_back(unit.name, std::move(partners));
  }
  return out;
}

}  // namespace livefs::packages
