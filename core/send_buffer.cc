#include "send_buffer.h"

#include <algorithm>

namespace macula {

void SendBuffer::append(Bytes chunk) {
  if (chunk.size == 0) return;
  end_offset_ += chunk.size;
  chunks_.push_back(std::move(chunk));
}

size_t SendBuffer::unsent(ngtcp2_vec* vecs, size_t max) const {
  size_t n = 0;
  uint64_t chunk_start = base_offset_;
  for (const Bytes& c : chunks_) {
    if (n == max) break;
    uint64_t chunk_end = chunk_start + c.size;
    if (chunk_end > sent_offset_) {
      size_t skip = sent_offset_ > chunk_start ? sent_offset_ - chunk_start : 0;
      vecs[n].base = c.data.get() + skip;
      vecs[n].len = c.size - skip;
      ++n;
    }
    chunk_start = chunk_end;
  }
  return n;
}

size_t SendBuffer::acknowledge(uint64_t offset, uint64_t len) {
  acked_offset_ = std::max(acked_offset_, offset + len);
  size_t freed = 0;
  while (!chunks_.empty() &&
         base_offset_ + chunks_.front().size <= acked_offset_) {
    base_offset_ += chunks_.front().size;
    freed += chunks_.front().size;
    chunks_.pop_front();
  }
  return freed;
}

}  // namespace macula
