// Fuzz target for everything the relay parses from the network: CBOR
// (under the control limits and under looser ones), control messages and
// tunnel frames. Built as a libFuzzer target when clang is available, else
// linked with standalone_driver.cc (random and mutated inputs).
//
// Properties checked, beyond "no crash, no sanitizer report":
// - what decodes re-encodes to the very same bytes (one encoding per value);
// - what parses as a message re-encodes to something that parses as the
//   same kind of message.
#include <cstdint>
#include <cstdlib>

#include "cbor.h"
#include "relay_protocol.h"

using namespace macula;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

void cbor_round_trip(std::span<const uint8_t> in, const cbor::Limits& limits) {
  cbor::DecodeResult r = cbor::decode(in, limits);
  check(r.offset <= in.size());
  if (r.error != cbor::Error::kNone) return;
  cbor::Encoder e;
  e.value(r.value);
  check(e.out().size() == in.size() &&
        std::equal(e.out().begin(), e.out().end(), in.begin()));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  cbor_round_trip(in, relay::kControlLimits);
  cbor_round_trip(in, cbor::Limits{1 << 16, 16, 1024, 4096});
  relay::ParseResult p = relay::parse(in);
  if (p.ok()) {
    relay::ParseResult again = relay::parse(relay::encode(p.message));
    check(again.ok() && again.message.index() == p.message.index());
  }
  uint32_t tunnel;
  std::span<const uint8_t> packet;
  if (relay::parse_tunnel_frame(in, tunnel, packet))
    check(packet.size() + relay::kTunnelHeaderSize == size);
  return 0;
}
