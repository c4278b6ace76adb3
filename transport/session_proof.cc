#include "session_proof.h"

#include <gnutls/crypto.h>

#include <vector>

namespace macula {

Proof make_session_proof(std::span<const uint8_t> exporter, std::string_view role,
                         std::string_view name, std::string_view secret) {
  std::vector<uint8_t> msg(exporter.begin(), exporter.end());
  msg.insert(msg.end(), role.begin(), role.end());
  msg.insert(msg.end(), name.begin(), name.end());
  Proof out{};
  gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret.data(), secret.size(), msg.data(),
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
