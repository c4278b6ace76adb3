// Fuzz target for the CBOR subset (cbor.h) on its own, under the relay's
// control limits, loose limits and tiny ones (every limit reachable).
//
// Properties, beyond "no crash, no sanitizer report":
// - the error offset never passes the input;
// - what decodes re-encodes to the very same bytes (one encoding per value);
// - what decodes under tight limits decodes the same under looser ones.
#include <cstdint>
#include <cstdlib>

#include "cbor.h"

using namespace macula;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

bool same(const cbor::Value& a, const cbor::Value& b) {
  if (a.type != b.type || a.uint != b.uint || a.str != b.str || a.map.size() != b.map.size())
    return false;
  for (size_t i = 0; i < a.map.size(); ++i)
    if (a.map[i].key != b.map[i].key || !same(a.map[i].value, b.map[i].value)) return false;
  return true;
}

cbor::DecodeResult decode_checked(std::span<const uint8_t> in, const cbor::Limits& limits) {
  cbor::DecodeResult r = cbor::decode(in, limits);
  check(r.offset <= in.size());
  check(cbor::error_name(r.error) != nullptr);
  if (r.error == cbor::Error::kNone) {
    cbor::Encoder e;
    e.value(r.value);
    check(e.out().size() == in.size() && std::equal(e.out().begin(), e.out().end(), in.begin()));
  }
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  cbor::DecodeResult tiny = decode_checked(in, cbor::Limits{64, 2, 6, 8});
  cbor::DecodeResult control = decode_checked(in, cbor::Limits{});
  cbor::DecodeResult loose = decode_checked(in, cbor::Limits{1 << 20, 64, 1 << 16, 1 << 20});
  if (tiny.error == cbor::Error::kNone) check(control.error == cbor::Error::kNone);
  if (control.error == cbor::Error::kNone)
    check(loose.error == cbor::Error::kNone && same(control.value, loose.value));
  return 0;
}
