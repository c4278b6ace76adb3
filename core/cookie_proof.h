// Channel binding of the Erlang cookie: each end proves it knows the
// cookie by sending HMAC-SHA256(cookie, exporter || role || node name),
// where exporter is a TLS exporter value unique to this session. A man in
// the middle terminates two different TLS sessions, so it cannot forward
// proofs, and without the cookie it cannot make them. Pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace macula {

using Proof = std::array<uint8_t, 32>;

// `role` is 'C' for the dialling node, 'S' for the accepting one; `node`
// is the name of the node making the proof.
Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie);

// Constant-time comparison of a received proof with the expected one.
bool proof_matches(const Proof& expected, std::span<const uint8_t> received);

// The first frame of each side on the control stream, sent before anything
// is proven: "MCP1", the proof, the sender's node name.
inline constexpr std::string_view kProofTag = "MCP1";

struct ProofFrame {
  Proof proof{};
  std::string node;  // a valid node name (node_name.h)
};

// Parses a proof frame from an unauthenticated peer. False unless it has
// the tag, a whole proof and a node name that parse_node_name() accepts.
bool parse_proof_frame(std::span<const uint8_t> frame, ProofFrame& out);

std::vector<uint8_t> encode_proof_frame(const Proof& proof, std::string_view node);

}  // namespace macula
