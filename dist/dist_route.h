// The ordering key (transport/order_key.h) of a distribution frame: Erlang
// promises that signals from one process to another arrive in order,
// nothing more. The distribution header names the sending process in most
// control messages, so each sender is a flow, a fragmented message is a
// sequence its sender opens, and a frame whose sender is unknown is a
// barrier. Pure parsing, no state; any thread.
//
// The parser assumes the atom cache is off (macula rejects
// DFLAG_DIST_HDR_ATOM_CACHE in the handshake): frames start with
// 131 'D' 0 (no cache refs), 131 'E' (first fragment) or 131 'F'
// (continuation), or the pass-through byte 'p'.
//
// Priority: OTP 28's priority signals (EEP 76: ALTACT_SIG_SEND, op 37,
// with the priority flag) are flows that ask for the priority stream
// (OrderKey::priority). The binding marks the flows of processes marked
// high priority on this node the same way (pid_key()).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "order_key.h"

namespace macula {

// Reads the ordering key of one distribution frame from its first bytes. Returns
// kBarrier for anything it does not understand (always safe, only slower).
OrderKey route_of(std::span<const uint8_t> head);

// The flow key route_of() gives a frame sent by the pid `ext` (the
// pid in external term format, 131 first, as term_to_binary makes it);
// nullopt if `ext` is not that.
std::optional<uint64_t> pid_key(std::span<const uint8_t> ext);

// The same for a frame given as iovecs (payload only, without the macula
// frame header); fills in `size`.
OrderKey route_of(std::span<const iovec> frame);

}  // namespace macula
