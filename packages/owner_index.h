// Which packages own a path, for the dpkg and RPM databases: built once from every file
// list, then read-only (so lookups need no lock).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <utility>
#include <vector>

namespace livefs::packages {

// Most paths have one owner: the value is its index in the database's package list, or, for
// a path several packages list (directories), kShared | its index in shared_. `Key` is
// std::string, or std::string_view into lists the database keeps.
template <class Key>
class OwnerIndex {
 public:
  // Packages are added in the order of the database's list, each with all its paths.
  void add(Key path, uint32_t package) {
    auto [it, inserted] = index_.try_emplace(std::move(path), package);
    if (inserted || it->second == package) return;
    if (it->second & kShared) {
      std::vector<uint32_t>& owners = shared_[it->second & ~kShared];
      if (owners.back() != package) owners.push_back(package);
    } else {
      shared_.push_back({it->second, package});
      it->second = kShared | static_cast<uint32_t>(shared_.size() - 1);
    }
  }

  // The owners' indices in the order they were added; empty: none.
  std::vector<uint32_t> owners(const Key& path) const {
    auto it = index_.find(path);
    if (it == index_.end()) return {};
    if (it->second & kShared) return shared_[it->second & ~kShared];
    return {it->second};
  }

  size_t size() const { return index_.size(); }

 private:
  static constexpr uint32_t kShared = 0x80000000u;
  std::unordered_map<Key, uint32_t> index_;
  std::vector<std::vector<uint32_t>> shared_;
};

}  // namespace livefs::packages
