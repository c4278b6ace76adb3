#include "cookie_proof.h"

#include <gnutls/crypto.h>

#include <vector>

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

}  // namespace macula
