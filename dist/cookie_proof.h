// Channel binding of the Erlang cookie: each end proves it knows the
// cookie with a session proof (transport/session_proof.h) whose secret is
// the cookie, role 'C' for the dialling node and 'S' for the accepting
// one, and name the node making the proof. Pure functions; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "session_proof.h"

namespace macula {

// `role` is 'C' for the dialling node, 'S' for the accepting one; `node`
// is the name of the node making the proof.
Proof make_cookie_proof(std::span<const uint8_t> exporter, char role,
                        std::string_view node, std::string_view cookie);

}  // namespace macula
