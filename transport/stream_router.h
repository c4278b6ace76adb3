// Chooses the data stream for each frame so that a big message of one
// flow (order_key.h) never holds back another flow's messages, while each
// flow's frames stay in order.
//
// A flow sticks to its stream while any of its frames there is not yet
// acknowledged. Once the peer acknowledged the stream up to its last frame
// (QUIC acknowledges in-order prefixes, and the receiver hands stream
// bytes on as soon as they are in order), the flow may move to the least
// loaded stream. A barrier waits until every stream is acknowledged, then
// goes anywhere.
//
// Priority: with a priority stream (at least 2 streams), the last stream
// carries only flows that ask for it (OrderKey::priority), the others only
// the rest; the connection writes it before them (connection.h). A flow's
// wish takes effect only when it is free to move, so a flow that changes
// class keeps its order: its frames stay behind its earlier ones on the
// old stream until the peer acknowledged those (the per-flow barrier of
// a class change costs one round trip at most).
// A flow that stopped asking for priority but still sticks to the priority
// stream (it never went idle) writes bulk there; once such bytes not yet
// acknowledged exceed kDemotedBudget, priority_favoured() turns false and
// the connection serves the priority stream in turn with the others, so a
// once-marked sender cannot take the strict first place for its bulk.
// Owned by one connection; used by whoever holds the endpoint's loop lock
// (loop_owner.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "order_key.h"

namespace macula {

class StreamRouter {
 public:
  // `streams`: how many data streams there are (at least 1).
  // `priority_stream`: reserve the last one for priority flows (ignored
  // with fewer than 2 streams).
  explicit StreamRouter(size_t streams, bool priority_stream = false);

  // Picks the stream for the next frame and counts its bytes on it.
  // nullopt: a barrier that must wait for acknowledgements; call again
  // after acked() (nothing is recorded meanwhile).
  std::optional<size_t> place(const OrderKey& route);

  // The peer acknowledged stream `stream` up to byte `offset`.
  void acked(size_t stream, uint64_t offset);

  size_t streams() const { return streams_.size(); }
  // Bytes placed on `stream` and not yet acknowledged.
  uint64_t load(size_t stream) const;
  size_t tracked_flows() const { return processes_.size(); }
  // The priority stream's index, if there is one.
  std::optional<size_t> priority_stream() const;
  // Whether the priority stream may be written before the others: false
  // while flows that no longer ask for priority have more than
  // kDemotedBudget unacknowledged bytes on it.
  bool priority_favoured() const { return demoted_unacked_ <= kDemotedBudget; }
  static constexpr uint64_t kDemotedBudget = 64u << 10;

 private:
  struct Stream {
    uint64_t end = 0;    // bytes placed
    uint64_t acked = 0;  // acknowledged prefix
  };
  struct Process {
    size_t stream = 0;
    uint64_t end = 0;  // stream offset just past its last frame
    bool priority = false;  // its latest wish (continuations follow it)
  };

  bool idle(const Process& p) const { return streams_[p.stream].acked >= p.end; }
  size_t least_loaded();  // among the streams of ordinary flows
  size_t free_stream(bool priority);
  size_t commit(size_t stream, uint64_t bytes, Process* p);
  void note_demoted(uint64_t end, uint64_t bytes);
  void prune();

  std::vector<Stream> streams_;
  size_t bulk_streams_;  // streams [0, bulk_streams_) are not the priority one
  std::unordered_map<uint64_t, Process> processes_;
  std::unordered_map<uint64_t, uint64_t> sequences_;  // sequence -> flow
  size_t next_ = 0;  // where the search for the least loaded stream starts
  size_t prune_at_ = 1024;
  // Frames of non-priority wishes on the priority stream, not yet
  // acknowledged: {stream offset just past the frame, its size}, in order.
  std::deque<std::pair<uint64_t, uint64_t>> demoted_;
  uint64_t demoted_unacked_ = 0;  // sum of demoted_'s sizes
};

}  // namespace macula
