// ObjectId: XXH3-128 of content, hex round trip, streaming equals one-shot.
#include "store/object_id.h"

#include <gtest/gtest.h>

#include <string>

namespace livefs::store {
namespace {

TEST(ObjectId, HexRoundTrip) {
  ObjectId id = ObjectId::of(std::string_view("hello"));
  std::string hex = id.hex();
  ASSERT_EQ(hex.size(), 32u);
  auto parsed = ObjectId::parse_hex(hex);
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, id);
  EXPECT_FALSE(ObjectId::parse_hex("zz"));
  EXPECT_FALSE(ObjectId::parse_hex(std::string(32, 'g')));
}

TEST(ObjectId, KnownVectorOfEmptyInput) {
  // XXH3-128 of the empty input, canonical form (from xxhash's reference).
  EXPECT_EQ(ObjectId::of(std::string_view()).hex(), "99aa06d3014798d86001c324468d497f");
}

TEST(ObjectId, StreamingEqualsOneShot) {
  std::string data(1 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + 7);
  Hasher h;
  for (size_t off = 0; off < data.size(); off += 4093)
    h.update(data.data() + off, std::min<size_t>(4093, data.size() - off));
  EXPECT_EQ(h.finish(), ObjectId::of(data));
  EXPECT_NE(ObjectId::of(data), ObjectId::of(std::string_view("x")));
}

}  // namespace
}  // namespace livefs::store
