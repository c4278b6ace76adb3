#include "stream_router.h"

#include <algorithm>

namespace macula {

StreamRouter::StreamRouter(size_t streams, bool priority_stream)
    : streams_(std::max<size_t>(streams, 1)),
      bulk_streams_(priority_stream && streams_.size() >= 2 ? streams_.size() - 1
                                                             : streams_.size()) {}

std::optional<size_t> StreamRouter::priority_stream() const {
  if (bulk_streams_ == streams_.size()) return std::nullopt;
  return bulk_streams_;
}

uint64_t StreamRouter::load(size_t stream) const {
  return streams_[stream].end - streams_[stream].acked;
}

void StreamRouter::acked(size_t stream, uint64_t offset) {
  Stream& s = streams_[stream];
  s.acked = std::max(s.acked, std::min(offset, s.end));
  if (priority_stream() != stream) return;
  while (!demoted_.empty() && demoted_.front().first <= s.acked) {
    demoted_unacked_ -= demoted_.front().second;
    demoted_.pop_front();
  }
}

void StreamRouter::note_demoted(uint64_t end, uint64_t bytes) {
  demoted_.emplace_back(end, bytes);
  demoted_unacked_ += bytes;
}

// Ties go round-robin so that idle processes spread over the streams.
size_t StreamRouter::least_loaded() {
  size_t best = next_ % bulk_streams_;
  for (size_t i = 1; i < bulk_streams_; ++i) {
    size_t s = (next_ + i) % bulk_streams_;
    if (load(s) < load(best)) best = s;
  }
  next_ = best + 1;
  return best;
}

size_t StreamRouter::free_stream(bool priority) {
  if (priority && bulk_streams_ < streams_.size()) return bulk_streams_;
  return least_loaded();
}

size_t StreamRouter::commit(size_t stream, uint64_t bytes, Process* p) {
  streams_[stream].end += bytes;
  if (p) *p = {stream, streams_[stream].end};
  return stream;
}

std::optional<size_t> StreamRouter::place(const OrderKey& route) {
  uint64_t key = route.key;
  bool priority = route.priority;
  switch (route.kind) {
    case OrderKey::Kind::kBarrier:
      for (const Stream& s : streams_)
        if (s.acked < s.end) return std::nullopt;
      return commit(least_loaded(), route.size, nullptr);
    case OrderKey::Kind::kContinuation: {
      auto seq = sequences_.find(route.key);
      // A continuation of a sequence we never saw opened: its first
      // fragment was a barrier, so this one is too.
      if (seq == sequences_.end()) {
        OrderKey barrier = route;
        barrier.kind = OrderKey::Kind::kBarrier;
        return place(barrier);
      }
      key = seq->second;
      if (route.closes_sequence) sequences_.erase(seq);
      if (auto p = processes_.find(key); p != processes_.end()) priority = p->second.priority;
      break;
    }
    case OrderKey::Kind::kFlow:
      if (route.opens_sequence) sequences_[route.sequence] = key;
      break;
  }
  auto [it, fresh] = processes_.try_emplace(key);
  Process& p = it->second;
  // Only a flow with nothing unacknowledged may change streams (or class).
  size_t stream = !fresh && !idle(p) ? p.stream : free_stream(priority);
  commit(stream, route.size, &p);
  if (!priority && priority_stream() == stream) note_demoted(p.end, route.size);
  p.priority = priority;
  if (processes_.size() >= prune_at_) prune();
  return stream;
}

// Forgets processes whose frames are all acknowledged: they would be free
// to move anyway. Amortised: runs when the table doubled since last time.
void StreamRouter::prune() {
  std::erase_if(processes_, [&](const auto& kv) { return idle(kv.second); });
  prune_at_ = std::max<size_t>(1024, 2 * processes_.size());
}

}  // namespace macula
