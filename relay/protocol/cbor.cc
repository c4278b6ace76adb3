#include "cbor.h"

namespace macula::cbor {
namespace {

constexpr uint8_t kUint = 0, kBytes = 2, kText = 3, kMap = 5;

// One pass over the input; each failure records its error and position
// and unwinds by returning false.
class Decoder {
 public:
  Decoder(std::span<const uint8_t> in, const Limits& limits)
      : in_(in), limits_(limits) {}

  bool item(Value& out, size_t depth);
  bool at_end() const { return pos_ == in_.size(); }
  bool fail(Error e) {
    error_ = e;
    return false;
  }
  Error error() const { return error_; }
  size_t pos() const { return pos_; }

 private:
  bool head(uint8_t& major, uint64_t& arg);
  bool argument(uint8_t info, uint64_t& arg);
  bool string(uint64_t len, bool text, std::string& out);
  bool map(uint64_t entries, Value& out, size_t depth);
  bool count_item() {
    return ++items_ <= limits_.max_items || fail(Error::kTooManyItems);
  }

  std::span<const uint8_t> in_;
  const Limits& limits_;
  size_t pos_ = 0;
  size_t items_ = 0;
  Error error_ = Error::kNone;
};

bool Decoder::argument(uint8_t info, uint64_t& arg) {
  if (info < 24) {
    arg = info;
    return true;
  }
  if (info == 31) return fail(Error::kIndefiniteLength);
  if (info > 27) return fail(Error::kReservedInfo);
  size_t n = size_t(1) << (info - 24);
  if (in_.size() - pos_ < n) return fail(Error::kTruncated);
  arg = 0;
  for (size_t i = 0; i < n; ++i) arg = (arg << 8) | in_[pos_++];
  // Shortest form only: one encoding per value keeps the wire unambiguous.
  uint64_t floor = info == 24 ? 24 : uint64_t(1) << (4 * n);
  return arg >= floor || fail(Error::kNonMinimal);
}

bool Decoder::head(uint8_t& major, uint64_t& arg) {
  if (pos_ == in_.size()) return fail(Error::kTruncated);
  uint8_t b = in_[pos_++];
  major = b >> 5;
  if (major != kUint && major != kBytes && major != kText && major != kMap)
    return fail(Error::kUnsupportedType);
  return argument(b & 0x1f, arg);
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    uint8_t c = uint8_t(s[i]);
    size_t n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 4;
    if (n == 4 || s.size() - i <= n) return false;
    uint32_t cp = n == 0 ? c : c & (0x3f >> n);
    for (size_t k = 1; k <= n; ++k) {
      uint8_t cc = uint8_t(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

bool Decoder::string(uint64_t len, bool text, std::string& out) {
  if (len > limits_.max_string) return fail(Error::kStringTooLong);
  if (in_.size() - pos_ < len) return fail(Error::kTruncated);
  out.assign(reinterpret_cast<const char*>(in_.data() + pos_), size_t(len));
  if (text && !valid_utf8(out)) return fail(Error::kBadUtf8);
  pos_ += size_t(len);
  return true;
}

bool Decoder::map(uint64_t entries, Value& out, size_t depth) {
  if (depth > limits_.max_depth) return fail(Error::kTooDeep);
  // Each entry needs at least two bytes: refuse absurd counts before
  // reserving anything.
  if (entries > limits_.max_items || entries * 2 > in_.size() - pos_)
    return fail(entries > limits_.max_items ? Error::kTooManyItems : Error::kTruncated);
  out.map.reserve(size_t(entries));
  for (uint64_t i = 0; i < entries; ++i) {
    uint8_t major;
    uint64_t len;
    size_t key_pos = pos_;
    if (!count_item() || !head(major, len)) return false;
    if (major != kText) {
      pos_ = key_pos;
      return fail(Error::kKeyNotText);
    }
    std::string key;
    if (!string(len, true, key)) return false;
    if (out.find(key)) {
      pos_ = key_pos;
      return fail(Error::kDuplicateKey);
    }
    Value v;
    if (!item(v, depth)) return false;
    out.map.push_back({std::move(key), std::move(v)});
  }
  return true;
}

bool Decoder::item(Value& out, size_t depth) {
  uint8_t major;
  uint64_t arg;
  if (!count_item() || !head(major, arg)) return false;
  switch (major) {
    case kUint:
      out.type = Value::Type::kUint;
      out.uint = arg;
      return true;
    case kBytes:
      out.type = Value::Type::kBytes;
      return string(arg, false, out.str);
    case kText:
      out.type = Value::Type::kText;
      return string(arg, true, out.str);
    default:
      out.type = Value::Type::kMap;
      return map(arg, out, depth + 1);
  }
}

}  // namespace

const char* error_name(Error e) {
  switch (e) {
    case Error::kNone: return "none";
    case Error::kEmpty: return "empty";
    case Error::kInputTooLarge: return "input_too_large";
    case Error::kTruncated: return "truncated";
    case Error::kTrailingBytes: return "trailing_bytes";
    case Error::kUnsupportedType: return "unsupported_type";
    case Error::kIndefiniteLength: return "indefinite_length";
    case Error::kReservedInfo: return "reserved_info";
    case Error::kNonMinimal: return "non_minimal";
    case Error::kTooDeep: return "too_deep";
    case Error::kTooManyItems: return "too_many_items";
    case Error::kStringTooLong: return "string_too_long";
    case Error::kBadUtf8: return "bad_utf8";
    case Error::kKeyNotText: return "key_not_text";
    case Error::kDuplicateKey: return "duplicate_key";
  }
  return "unknown";
}

const Value* Value::find(std::string_view key) const {
  if (type != Type::kMap) return nullptr;
  for (const auto& [k, v] : map)
    if (k == key) return &v;
  return nullptr;
}

DecodeResult decode(std::span<const uint8_t> in, const Limits& limits) {
  DecodeResult r;
  if (in.empty()) {
    r.error = Error::kEmpty;
    return r;
  }
  if (in.size() > limits.max_input) {
    r.error = Error::kInputTooLarge;
    return r;
  }
  Decoder d(in, limits);
  if (d.item(r.value, 0) && !d.at_end()) d.fail(Error::kTrailingBytes);
  r.error = d.error();
  r.offset = d.pos();
  if (r.error != Error::kNone) r.value = Value{};
  return r;
}

void Encoder::head(uint8_t major, uint64_t v) {
  uint8_t m = uint8_t(major << 5);
  if (v < 24) {
    out_.push_back(m | uint8_t(v));
    return;
  }
  size_t n = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffff ? 4 : 8;
  out_.push_back(m | uint8_t(24 + (n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : 3)));
  for (size_t i = n; i-- > 0;) out_.push_back(uint8_t(v >> (8 * i)));
}

void Encoder::text(std::string_view s) {
  head(kText, s.size());
  out_.insert(out_.end(), s.begin(), s.end());
}

void Encoder::bytes(std::span<const uint8_t> b) {
  head(kBytes, b.size());
  out_.insert(out_.end(), b.begin(), b.end());
}

void Encoder::value(const Value& v) {
  switch (v.type) {
    case Value::Type::kUint: uint(v.uint); return;
    case Value::Type::kText: text(v.str); return;
    case Value::Type::kBytes:
      bytes({reinterpret_cast<const uint8_t*>(v.str.data()), v.str.size()});
      return;
    case Value::Type::kMap:
      map(v.map.size());
      for (const auto& [k, item] : v.map) {
        key(k);
        value(item);
      }
      return;
  }
}

}  // namespace macula::cbor
