// What orders a distribution frame relative to others: Erlang promises
// that signals from one process to another arrive in order, nothing more.
// The distribution header names the sending process in most control
// messages, so frames of different senders may travel on different QUIC
// streams. Pure parsing, no state; any thread.
//
// The parser assumes the atom cache is off (macula rejects
// DFLAG_DIST_HDR_ATOM_CACHE in the handshake): frames start with
// 131 'D' 0 (no cache refs), 131 'E' (first fragment) or 131 'F'
// (continuation), or the pass-through byte 'p'.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace macula {

struct FrameRoute {
  enum class Kind : uint8_t {
    kProcess,       // key: the sending process
    kContinuation,  // key: the sequence id of a fragmented message
    kBarrier,       // sender unknown: must follow every earlier frame
  };
  Kind kind = Kind::kBarrier;
  uint64_t key = 0;
  // kProcess: a first fragment with more to come; its continuations
  // carry this sequence id. kContinuation: whether this is the last one.
  bool opens_sequence = false;
  bool closes_sequence = false;
  uint64_t sequence = 0;
  uint64_t size = 0;  // bytes on the stream: frame header + payload
};

// Reads the route of one distribution frame from its first bytes. Returns
// kBarrier for anything it does not understand (always safe, only slower).
FrameRoute route_of(std::span<const uint8_t> head);

// The same for a frame given as iovecs (payload only, without the macula
// frame header); fills in `size`.
FrameRoute route_of(std::span<const iovec> frame);

}  // namespace macula
