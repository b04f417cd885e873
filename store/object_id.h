// Object ids: the XXH3-128 of an object's bytes, in binary and in hex form.
#pragma once

#include <xxhash.h>

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace livefs::store {

struct ObjectId {
  std::array<uint8_t, 16> bytes{};  // canonical (big-endian) XXH3-128

  static ObjectId of(std::span<const std::byte> data);
  static ObjectId of(std::string_view data);
  static std::optional<ObjectId> parse_hex(std::string_view hex);

  std::string hex() const;  // 32 lowercase hex digits
  bool is_zero() const;

  auto operator<=>(const ObjectId&) const = default;
};

// Streaming XXH3-128, for content read in pieces.
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const void* data, size_t size);
  ObjectId finish() const;

 private:
  XXH3_state_t* state_;
};

struct ObjectIdHash {
  size_t operator()(const ObjectId& id) const {
    uint64_t v;
    static_assert(sizeof(v) <= sizeof(id.bytes));
    __builtin_memcpy(&v, id.bytes.data(), sizeof(v));
    return static_cast<size_t>(v);
  }
};

}  // namespace livefs::store
