// Proof of a shared secret bound to one TLS session: HMAC-SHA256(secret,
// exporter || role || name), where exporter is a TLS exporter value unique
// to the session. A man in the middle terminates two different sessions,
// so it cannot forward proofs, and without the secret it cannot make
// them. The layers above choose the secret and the roles (the Erlang
// cookie in dist/cookie_proof.h, the realm secret in the relay protocol).
// Pure functions; any thread.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace macula {

using Proof = std::array<uint8_t, 32>;

// `role` tells the two directions apart (each end proves something
// different); `name` is who makes the proof.
Proof make_session_proof(std::span<const uint8_t> exporter, std::string_view role,
                         std::string_view name, std::string_view secret);

// Constant-time comparison of a received proof with the expected one.
bool proof_matches(const Proof& expected, std::span<const uint8_t> received);

}  // namespace macula
