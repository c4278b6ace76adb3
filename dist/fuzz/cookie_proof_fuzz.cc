// Fuzz target for the cookie proof (cookie_proof.h): the first frame an
// unauthenticated peer sends on the control stream, and the proofs made
// and checked for it.
//
// Input: a role byte, then three length-prefixed fields (TLS exporter,
// node name, cookie), then the rest: a proof frame as a peer sends it.
// Properties, beyond "no crash, no sanitizer report":
// - a proof matches itself, and nothing that differs from it in size or
//   in any byte; the roles give different proofs (no reflection);
// - a proof frame that parses re-encodes to the very same bytes, and its
//   proof is checked like any other.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "cookie_proof.h"

using namespace macula;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

struct Input {
  const uint8_t* p;
  size_t left;

  std::span<const uint8_t> field() {
    size_t n = left ? std::min<size_t>(*p, left - 1) : 0;
    if (left) ++p, --left;
    std::span<const uint8_t> out(p, n);
    p += n, left -= n;
    return out;
  }
};

std::string_view text(std::span<const uint8_t> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  char role = (data[0] & 1) ? 'C' : 'S';
  Input in{data + 1, size - 1};
  std::span<const uint8_t> exporter = in.field();
  std::string_view node = text(in.field());
  std::string_view cookie = text(in.field());
  std::span<const uint8_t> received(in.p, in.left);

  Proof p = make_cookie_proof(exporter, role, node, cookie);
  check(p == make_cookie_proof(exporter, role, node, cookie));
  check(proof_matches(p, p));
  check(p != make_cookie_proof(exporter, role == 'C' ? 'S' : 'C', node, cookie));
  bool equal = received.size() == p.size() &&
               std::memcmp(received.data(), p.data(), p.size()) == 0;
  check(proof_matches(p, received) == equal);
  if (!received.empty()) {
    Proof flipped = p;
    flipped[received[0] % flipped.size()] ^= uint8_t(1 | received[0]);
    check(!proof_matches(p, flipped));
  }
  ProofFrame frame;
  if (parse_proof_frame(received, frame)) {
    std::vector<uint8_t> again = encode_proof_frame(frame.proof, frame.node);
    check(again.size() == received.size() &&
          std::equal(again.begin(), again.end(), received.begin()));
    check(proof_matches(p, frame.proof) == (frame.proof == p));
  }
  return 0;
}
