#include "cookie_proof.h"

#include <gnutls/crypto.h>

#include <algorithm>
#include <vector>

#include "node_name.h"

namespace macula {

Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie) {
  std::vector<uint8_t> msg(exporter.begin(), exporter.end());
  msg.push_back(static_cast<uint8_t>(role));
  msg.insert(msg.end(), node.begin(), node.end());
  Proof out{};
  gnutls_hmac_fast(GNUTLS_MAC_SHA256, cookie.data(), cookie.size(), msg.data(),
                   msg.size(), out.data());
  return out;
}

bool proof_matches(const Proof& expected, std::span<const uint8_t> received) {
  if (received.size() != expected.size()) return false;
  uint8_t diff = 0;
  for (size_t i = 0; i < expected.size(); ++i) diff |= expected[i] ^ received[i];
  return diff == 0;
}

bool parse_proof_frame(std::span<const uint8_t> frame, ProofFrame& out) {
  const size_t head = kProofTag.size() + std::tuple_size_v<Proof>;
  if (frame.size() <= head || !std::equal(kProofTag.begin(), kProofTag.end(), frame.begin()))
    return false;
  std::string_view node(reinterpret_cast<const char*>(frame.data()) + head, frame.size() - head);
  NodeName parsed;
  // The port only matters for names without one; any valid value does.
  if (parse_node_name(node, 1, parsed) != NameError::kNone) return false;
  std::copy_n(frame.begin() + long(kProofTag.size()), out.proof.size(), out.proof.begin());
  out.node = std::string(node);
  return true;
}

std::vector<uint8_t> encode_proof_frame(const Proof& proof, std::string_view node) {
  std::vector<uint8_t> out(kProofTag.begin(), kProofTag.end());
  out.insert(out.end(), proof.begin(), proof.end());
  out.insert(out.end(), node.begin(), node.end());
  return out;
}

}  // namespace macula
