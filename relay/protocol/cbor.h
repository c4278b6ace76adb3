// A deliberately small CBOR (RFC 8949) subset for the relay's control
// messages: maps with text keys, unsigned integers, text strings and byte
// strings, definite lengths only, shortest-form heads only. Anything else
// is refused with a named error rather than guessed at, and every decode
// runs under explicit limits (input size, depth, item count, string size),
// so hostile input costs bounded time and memory.
// Pure functions and plain values: any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace macula::cbor {

struct Limits {
  size_t max_input = 4096;   // bytes of the whole encoded item
  size_t max_depth = 4;      // nested maps; the top-level map is depth 1
  size_t max_items = 64;     // keys and values counted together
  size_t max_string = 1024;  // bytes of one text or byte string
};

enum class Error {
  kNone,
  kEmpty,             // no input at all
  kInputTooLarge,     // more than max_input bytes
  kTruncated,         // the input ends inside an item
  kTrailingBytes,     // bytes left after the top-level item
  kUnsupportedType,   // negative int, array, tag, float, simple value
  kIndefiniteLength,  // streaming strings/maps (additional info 31)
  kReservedInfo,      // additional info 28-30
  kNonMinimal,        // a head not in its shortest form
  kTooDeep,
  kTooManyItems,
  kStringTooLong,
  kBadUtf8,           // a text string that is not valid UTF-8
  kKeyNotText,        // a map key of another type
  kDuplicateKey,
};

// A stable lowercase token ("truncated", "too_deep"...), for logs and
// metric labels.
const char* error_name(Error e);

// A decoded value. Map entries keep their wire order.
struct Value {
  enum class Type { kUint, kText, kBytes, kMap };
  struct Entry;  // complete below: a Value holds Values
  Type type = Type::kUint;
  uint64_t uint = 0;
  std::string str;  // text or bytes
  std::vector<Entry> map;

  // The entry with `key` in a map; null if absent or not a map.
  const Value* find(std::string_view key) const;
};

struct Value::Entry {
  std::string key;
  Value value;
};

struct DecodeResult {
  Error error = Error::kNone;
  size_t offset = 0;  // where decoding stopped (the error's position)
  Value value;
};

// Decodes exactly one item filling the whole of `in`.
DecodeResult decode(std::span<const uint8_t> in, const Limits& limits);

// Appends items to a buffer. The caller writes a map head with its entry
// count, then that many key/value pairs; nothing checks the count, which
// is why the encoder is used only through relay_protocol's typed messages.
class Encoder {
 public:
  void map(size_t entries) { head(5, entries); }
  void uint(uint64_t v) { head(0, v); }
  void text(std::string_view s);
  void bytes(std::span<const uint8_t> b);
  void key(std::string_view k) { text(k); }
  // Any decodable value, maps included (entries in their stored order).
  void value(const Value& v);

  const std::vector<uint8_t>& out() const { return out_; }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  void head(uint8_t major, uint64_t v);
  std::vector<uint8_t> out_;
};

}  // namespace macula::cbor
