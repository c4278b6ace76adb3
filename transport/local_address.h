// Questions about this host's own addresses, answered by the kernel's
// routing table: which source address it would use towards a peer, and
// whether an address is (still) one of ours. Thread-safe (each call uses
// its own short-lived socket); no state.
#pragma once

#include <string>

#include "udp_socket.h"

namespace macula {

// The source address the kernel would choose to reach `remote` (same
// family as `remote`; v4-mapped for a v4-mapped peer), port 0. False, with
// `error` set (e.g. "no route to 10.0.0.1: Network is unreachable"), when
// there is no route.
bool preferred_source(const Address& remote, Address& out, std::string& error);

// True if `ip` (port ignored) is assigned to an interface of this host, so
// that packets can be sent from it.
bool is_local_address(const Address& ip);

}  // namespace macula
