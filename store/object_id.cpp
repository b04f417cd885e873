// XXH3-128 ids and their hex form.
#include "store/object_id.h"

#include <cstring>
#include <new>

namespace livefs::store {
namespace {

ObjectId from_hash(XXH128_hash_t h) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  ObjectId id;
  std::memcpy(id.bytes.data(), canon.digest, id.bytes.size());
  return id;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

ObjectId ObjectId::of(std::span<const std::byte> data) {
  return from_hash(XXH3_128bits(data.data(), data.size()));
}

ObjectId ObjectId::of(std::string_view data) {
  return from_hash(XXH3_128bits(data.data(), data.size()));
}

std::optional<ObjectId> ObjectId::parse_hex(std::string_view hex) {
  ObjectId id;
  if (hex.size() != id.bytes.size() * 2) return std::nullopt;
  for (size_t i = 0; i < id.bytes.size(); ++i) {
    int hi = hex_value(hex[2 * i]);
    int lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return id;
}

std::string ObjectId::hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool ObjectId::is_zero() const {
  for (uint8_t b : bytes)
    if (b != 0) return false;
  return true;
}

Hasher::Hasher() : state_(XXH3_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH3_128bits_reset(state_);
}

Hasher::~Hasher() { XXH3_freeState(state_); }

void Hasher::update(const void* data, size_t size) { XXH3_128bits_update(state_, data, size); }

ObjectId Hasher::finish() const { return from_hash(XXH3_128bits_digest(state_)); }

}  // namespace livefs::store
