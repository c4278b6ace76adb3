// What orders one frame of a connection's data channel relative to the
// others. The transport does not know what a key means: the layer above
// (for Erlang distribution, dist/dist_route.h) derives it from the frame.
// Frames with the same flow key arrive in the order they were sent;
// frames of different flows may overtake one another. A flow may open a
// sequence whose continuation frames carry only the sequence id and
// follow that flow. A barrier follows every earlier frame. A flow may ask
// for the connection's priority stream (`priority`): a placement wish,
// never a licence to overtake the flow's own earlier frames. Plain value;
// any thread.
#pragma once

#include <cstdint>

namespace macula {

struct OrderKey {
  enum class Kind : uint8_t {
    kFlow,          // key: the flow
    kContinuation,  // key: the id of a sequence a flow opened
    kBarrier,       // must follow every earlier frame
  };
  Kind kind = Kind::kBarrier;
  uint64_t key = 0;
  // kFlow: this frame opens a sequence whose continuations carry
  // `sequence`. kContinuation: whether this is the sequence's last frame.
  bool opens_sequence = false;
  bool closes_sequence = false;
  uint64_t sequence = 0;
  uint64_t size = 0;  // bytes on the stream: frame header + payload
  // kFlow: the flow's frames go on the priority stream, which the
  // transport serves before the others (stream_router.h). Continuations
  // follow their flow's choice.
  bool priority = false;
};

}  // namespace macula
