// An open-addressing hash index of pointers: one pointer per slot (no node allocation per
// entry, no stored key: the key lives in the object pointed to). Linear probing, deletion by
// backward shift (no tombstones), capacity a power of two that grows at 3/4 load and shrinks
// below 1/8, so memory follows the number of entries both ways. Not thread-safe.
//
// HashOf(const T*) gives an object's hash; it must not change while the object is indexed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace livefs::overlay {

template <class T, class HashOf>
class PtrIndex {
 public:
  size_t size() const { return size_; }
  size_t capacity() const { return slots_.size(); }

  // The first indexed object with hash `hash` for which pred(object) holds, or null.
  template <class Pred>
  T* find(size_t hash, Pred&& pred) const {
    if (size_ == 0) return nullptr;
    size_t mask = slots_.size() - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
      T* p = slots_[i];
      if (p == nullptr) return nullptr;
      if (pred(p)) return p;
    }
  }

  // Adds `p` (not already indexed).
  void insert(T* p) {
    if ((size_ + 1) * 4 > slots_.size() * 3)
      rehash(slots_.empty() ? kMinCapacity : slots_.size() * 2);
    place(p);
    ++size_;
  }

  // Removes `p`; false when it was not indexed.
  bool erase(const T* p) {
    if (size_ == 0) return false;
    size_t mask = slots_.size() - 1;
    size_t i = HashOf{}(p)&mask;
    while (slots_[i] != p) {
      if (slots_[i] == nullptr) return false;
      i = (i + 1) & mask;
    }
    // Backward shift: each later entry of the cluster that may live at the hole moves there.
    for (size_t j = (i + 1) & mask; slots_[j] != nullptr; j = (j + 1) & mask) {
      size_t home = HashOf{}(slots_[j]) & mask;
      if (((j - home) & mask) >= ((j - i) & mask)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = nullptr;
    --size_;
    if (slots_.size() > kMinCapacity && size_ * 8 < slots_.size()) rehash(slots_.size() / 2);
    return true;
  }

  template <class Fn>
  void for_each(Fn&& fn) const {
    for (T* p : slots_)
      if (p != nullptr) fn(p);
  }

 private:
  static constexpr size_t kMinCapacity = 16;

  void place(T* p) {
    size_t mask = slots_.size() - 1;
    size_t i = HashOf{}(p)&mask;
    while (slots_[i] != nullptr) i = (i + 1) & mask;
    slots_[i] = p;
  }

  void rehash(size_t capacity) {
    std::vector<T*> previous(capacity, nullptr);
    previous.swap(slots_);
    for (T* p : previous)
      if (p != nullptr) place(p);
  }

  std::vector<T*> slots_;
  size_t size_ = 0;
};

}  // namespace livefs::overlay
