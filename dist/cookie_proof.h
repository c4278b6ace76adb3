// Channel binding of the Erlang cookie: each end proves it knows the
// cookie by sending HMAC-SHA256(cookie, exporter || role || node name),
// where exporter is a TLS exporter value unique to this session. A man in
// the middle terminates two different TLS sessions, so it cannot forward
// proofs, and without the cookie it cannot make them. Pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace macula {

using Proof = std::array<uint8_t, 32>;

// `role` is 'C' for the dialling node, 'S' for the accepting one; `node`
// is the name of the node making the proof.
Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie);

// Constant-time comparison of a received proof with the expected one.
bool proof_matches(const Proof& expected, std::span<const uint8_t> received);

}  // namespace macula
