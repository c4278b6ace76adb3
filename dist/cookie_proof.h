// Channel binding of the Erlang cookie: each end proves it knows the
// cookie with a session proof (transport/session_proof.h) whose secret is
// the cookie, role 'C' for the dialling node and 'S' for the accepting
// one, and name the node making the proof. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "session_proof.h"

namespace macula {

// `role` is 'C' for the dialling node, 'S' for the accepting one; `node`
// is the name of the node making the proof.
Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie);

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
