#include "cbor.h"

#include <gtest/gtest.h>

#include <random>

namespace macula::cbor {
namespace {

std::vector<uint8_t> hex(std::initializer_list<int> b) {
  return std::vector<uint8_t>(b.begin(), b.end());
}

Error decode_error(const std::vector<uint8_t>& in, const Limits& l = Limits{}) {
  return decode(in, l).error;
}

TEST(RelayCbor, UintsUseTheShortestHeadAndRoundTrip) {
  const std::pair<uint64_t, size_t> cases[] = {
      {0, 1}, {23, 1}, {24, 2}, {255, 2}, {256, 3}, {65535, 3},
      {65536, 5}, {0xffffffffull, 5}, {0x100000000ull, 9}, {UINT64_MAX, 9}};
  for (auto [v, size] : cases) {
    Encoder e;
    e.uint(v);
    ASSERT_EQ(e.out().size(), size) << v;
    DecodeResult r = decode(e.out(), Limits{});
    ASSERT_EQ(r.error, Error::kNone) << v;
    EXPECT_EQ(r.value.type, Value::Type::kUint);
    EXPECT_EQ(r.value.uint, v);
  }
}

TEST(RelayCbor, MapWithTextBytesAndNestedMapRoundTrips) {
  Encoder e;
  e.map(4);
  e.key("t");
  e.text("identify");
  e.key("n");
  e.uint(1000);
  e.key("b");
  const uint8_t raw[] = {0, 0xff, 0x80};
  e.bytes(raw);
  e.key("m");
  e.map(1);
  e.key("x");
  e.text("h\xc3\xa9llo");
  DecodeResult r = decode(e.out(), Limits{});
  ASSERT_EQ(r.error, Error::kNone);
  ASSERT_EQ(r.value.type, Value::Type::kMap);
  ASSERT_EQ(r.value.map.size(), 4u);
  EXPECT_EQ(r.value.find("t")->str, "identify");
  EXPECT_EQ(r.value.find("n")->uint, 1000u);
  EXPECT_EQ(r.value.find("b")->type, Value::Type::kBytes);
  EXPECT_EQ(r.value.find("b")->str, std::string("\0\xff\x80", 3));
  EXPECT_EQ(r.value.find("m")->find("x")->str, "h\xc3\xa9llo");
  EXPECT_EQ(r.value.find("absent"), nullptr);
  Encoder again;
  again.value(r.value);
  EXPECT_EQ(again.out(), e.out());
}

TEST(RelayCbor, KnownEncodingIsByteExact) {
  // {"a": 1, "b": h'02'} per RFC 8949 appendix A style.
  Encoder e;
  e.map(2);
  e.key("a");
  e.uint(1);
  e.key("b");
  const uint8_t two[] = {2};
  e.bytes(two);
  EXPECT_EQ(e.out(), hex({0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x41, 0x02}));
}

TEST(RelayCbor, RefusesWhatIsOutsideTheSubset) {
  EXPECT_EQ(decode_error({}), Error::kEmpty);
  EXPECT_EQ(decode_error(hex({0x20})), Error::kUnsupportedType);        // -1
  EXPECT_EQ(decode_error(hex({0x80})), Error::kUnsupportedType);        // []
  EXPECT_EQ(decode_error(hex({0xc0, 0x00})), Error::kUnsupportedType);  // tag
  EXPECT_EQ(decode_error(hex({0xf5})), Error::kUnsupportedType);        // true
  EXPECT_EQ(decode_error(hex({0xfb, 0, 0, 0, 0, 0, 0, 0, 0})), Error::kUnsupportedType);
  EXPECT_EQ(decode_error(hex({0x5f, 0xff})), Error::kIndefiniteLength);
  EXPECT_EQ(decode_error(hex({0xbf, 0xff})), Error::kIndefiniteLength);
  EXPECT_EQ(decode_error(hex({0x1c})), Error::kReservedInfo);
  EXPECT_EQ(decode_error(hex({0x18, 0x17})), Error::kNonMinimal);
  EXPECT_EQ(decode_error(hex({0x19, 0x00, 0xff})), Error::kNonMinimal);
  EXPECT_EQ(decode_error(hex({0x1a, 0x00, 0x00, 0xff, 0xff})), Error::kNonMinimal);
  EXPECT_EQ(decode_error(hex({0x1b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})), Error::kNonMinimal);
  EXPECT_EQ(decode_error(hex({0xa1, 0x01, 0x01})), Error::kKeyNotText);
  EXPECT_EQ(decode_error(hex({0xa1, 0x41, 0x61, 0x01})), Error::kKeyNotText);
  EXPECT_EQ(decode_error(hex({0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02})), Error::kDuplicateKey);
  EXPECT_EQ(decode_error(hex({0x01, 0x02})), Error::kTrailingBytes);
}

TEST(RelayCbor, RefusesInvalidUtf8InTextButNotInBytes) {
  EXPECT_EQ(decode_error(hex({0x61, 0xff})), Error::kBadUtf8);
  EXPECT_EQ(decode_error(hex({0x62, 0xc3, 0x28})), Error::kBadUtf8);   // bad continuation
  EXPECT_EQ(decode_error(hex({0x61, 0xc3})), Error::kBadUtf8);         // cut sequence
  EXPECT_EQ(decode_error(hex({0x62, 0xc0, 0x80})), Error::kBadUtf8);   // overlong NUL
  EXPECT_EQ(decode_error(hex({0x63, 0xed, 0xa0, 0x80})), Error::kBadUtf8);  // surrogate
  EXPECT_EQ(decode_error(hex({0x64, 0xf4, 0x90, 0x80, 0x80})), Error::kBadUtf8);  // > U+10FFFF
  EXPECT_EQ(decode_error(hex({0x64, 0xf0, 0x9f, 0x98, 0x80})), Error::kNone);  // emoji
  EXPECT_EQ(decode_error(hex({0x41, 0xff})), Error::kNone);
}

TEST(RelayCbor, EveryTruncationOfAValidItemIsTruncated) {
  Encoder e;
  e.map(3);
  e.key("name");
  e.text("alice@host");
  e.key("id");
  e.uint(0x12345678);
  e.key("proof");
  e.bytes(std::vector<uint8_t>(32, 7));
  const std::vector<uint8_t>& full = e.out();
  for (size_t n = 1; n < full.size(); ++n) {
    std::vector<uint8_t> cut(full.begin(), full.begin() + n);
    EXPECT_EQ(decode_error(cut), Error::kTruncated) << n;
  }
  EXPECT_EQ(decode_error(full), Error::kNone);
}

TEST(RelayCbor, LimitsAreEnforced) {
  Limits l;
  l.max_input = 16;
  EXPECT_EQ(decode_error(std::vector<uint8_t>(17, 0), l), Error::kInputTooLarge);

  l = Limits{};
  l.max_string = 3;
  EXPECT_EQ(decode_error(hex({0x63, 'a', 'b', 'c'}), l), Error::kNone);
  EXPECT_EQ(decode_error(hex({0x64, 'a', 'b', 'c', 'd'}), l), Error::kStringTooLong);
  EXPECT_EQ(decode_error(hex({0x44, 1, 2, 3, 4}), l), Error::kStringTooLong);
  // A huge announced length is refused before any allocation.
  EXPECT_EQ(decode_error(hex({0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), l),
            Error::kStringTooLong);

  l = Limits{};
  l.max_depth = 2;
  EXPECT_EQ(decode_error(hex({0xa1, 0x61, 0x61, 0xa1, 0x61, 0x62, 0x01}), l), Error::kNone);
  EXPECT_EQ(decode_error(hex({0xa1, 0x61, 0x61, 0xa1, 0x61, 0x62, 0xa0}), l), Error::kTooDeep);

  l = Limits{};
  l.max_items = 5;  // the map, then key/value pairs
  EXPECT_EQ(decode_error(hex({0xa2, 0x61, 0x61, 0x01, 0x61, 0x62, 0x02}), l), Error::kNone);
  EXPECT_EQ(decode_error(hex({0xa3, 0x61, 0x61, 0x01, 0x61, 0x62, 0x02, 0x61, 0x63, 0x03}), l),
            Error::kTooManyItems);
  // A map announcing 2^32 entries in a few bytes.
  EXPECT_EQ(decode_error(hex({0xba, 0xff, 0xff, 0xff, 0xff, 0x61, 0x61})), Error::kTooManyItems);
}

TEST(RelayCbor, DeepNestingWithinTheInputBoundFailsCleanly) {
  std::vector<uint8_t> deep;
  for (int i = 0; i < 1000; ++i) {
    deep.push_back(0xa1);
    deep.push_back(0x61);
    deep.push_back('k');
  }
  deep.push_back(0x00);
  Limits l;
  l.max_input = deep.size();
  l.max_items = 100000;
  DecodeResult r = decode(deep, l);
  EXPECT_EQ(r.error, Error::kTooDeep);
  EXPECT_EQ(r.value.type, Value::Type::kUint);  // reset on error
}

TEST(RelayCbor, ErrorsHaveStableNames) {
  EXPECT_STREQ(error_name(Error::kTruncated), "truncated");
  EXPECT_STREQ(error_name(Error::kTooDeep), "too_deep");
  EXPECT_STREQ(error_name(Error::kDuplicateKey), "duplicate_key");
}

// Random bytes and random mutations of valid maps: the decoder either
// succeeds or names an error, stays inside the input, and never crashes.
TEST(RelayCbor, RandomInputNeverEscapes) {
  std::mt19937_64 rng(20261124);
  Encoder e;
  e.map(2);
  e.key("t");
  e.text("tunnel_request");
  e.key("target");
  e.text("bob@example");
  const std::vector<uint8_t> seed = e.out();
  size_t ok = 0;
  for (int i = 0; i < 200000; ++i) {
    std::vector<uint8_t> in;
    if (i % 2) {
      in.resize(rng() % 64);
      for (auto& b : in) b = uint8_t(rng());
    } else {
      in = seed;
      for (int k = 0, n = 1 + int(rng() % 4); k < n; ++k)
        in[rng() % in.size()] = uint8_t(rng());
      if (rng() % 4 == 0) in.resize(rng() % (in.size() + 1));
    }
    DecodeResult r = decode(in, Limits{});
    ASSERT_LE(r.offset, in.size());
    if (r.error == Error::kNone) {
      ++ok;
      Encoder again;
      again.value(r.value);
      ASSERT_EQ(again.out(), in);  // the subset has one encoding per value
    }
  }
  EXPECT_GT(ok, 0u);
}

}  // namespace
}  // namespace macula::cbor
