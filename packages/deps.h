// Dependency-aware package selection: before `apply --package P` makes P's staged version
// live, check what it needs against what would be live after the apply, and which live
// packages the apply would leave without what they need; with --with-deps, add the staged
// packages that close the gap.
//
// The model of "live" is by package, from two databases (the booted tree's and the staged
// tree's) and the set of packages that still have changes pending (files not yet live):
// a package with nothing pending is live at its staged version (or absent, when the staged
// tree removed it); a pending one is live at its booted version until it is selected.
// Both databases are the same package manager's.
#pragma once

#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "packages/package_db.h"

namespace livefs::packages {

struct DependencyProblem {
  std::string package;    // whose requirement is unmet after the apply
  std::string version;    // its version after the apply
  bool selected = false;  // the package is being applied (else it is live and stays)
  Requirement requirement;
  std::string live;  // what would be live for it: "2.6.1", "none" (for the first alternative)
  // Pending packages whose staged version would meet the requirement.
  std::vector<std::string> fixes;
  // "apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2); live has 2.6.1"
  std::string text() const;
};

struct SelectionPlan {
  std::vector<std::string> requested;
  // Packages added to meet requirements (with_deps), in the order they were added, with
  // the requirement that brought each in ("apt 2.6.2 needs libapt-pkg6.0 (>= 2.6.2)").
  struct Added {
    std::string package;
    std::string because;
  };
  std::vector<Added> added;
  // What stays unmet: empty when the selection is safe.
  std::vector<DependencyProblem> problems;
  // requested + added, as package names the databases accept.
  std::vector<std::string> packages() const;
  // The same packages by every name the two databases know them by (an instance may be
  // named differently in the booted and the staged database: RPM's "name-V-R.arch"), for
  // selecting their files on both sides.
  std::vector<std::string> ids;
};

class DependencyResolver {
 public:
  // `booted` and `staged` may be null (no database on that side). `pending` names the
  // packages (as either database names them) that have changes not live yet. Reads every
  // package's dependencies once (cost grows with the number of packages, not of files).
  static Result<std::unique_ptr<DependencyResolver>> create(const PackageDb* booted,
                                                            const PackageDb* staged,
                                                            const std::set<std::string>& pending);
  ~DependencyResolver();

  // What applying `requested` (package names) does to dependencies. ENOENT for a name
  // neither database knows. With `with_deps`, adds the fewest pending packages it can find,
  // one unmet requirement at a time (each added package was needed when it was added);
  // whatever cannot be met by a pending package stays in `problems`.
  Result<SelectionPlan> plan(const std::vector<std::string>& requested, bool with_deps) const;

  // The pending packages, each with the other pending packages it must go live with (the
  // with_deps closure of it alone, without itself); only packages with such partners.
  std::vector<std::pair<std::string, std::vector<std::string>>> must_go_together() const;

 private:
  struct Impl;
  explicit DependencyResolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace livefs::packages
