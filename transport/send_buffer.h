// The bytes written to one QUIC stream, kept until the peer acknowledges
// them (ngtcp2 keeps pointers into them for retransmission).
// Owned by one connection: used by whoever holds the endpoint's loop lock
// (loop_owner.h).
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstdint>
#include <deque>

#include "bytes.h"

namespace macula {

// Cuts a chunk into consecutive pieces that share its owner.
class ChunkCutter {
 public:
  explicit ChunkCutter(OutChunk chunk) : chunk_(std::move(chunk)) {}
  // The next `bytes` bytes of the chunk (fewer if fewer remain).
  OutChunk take(size_t bytes);
  size_t remaining() const { return chunk_.size - taken_; }

 private:
  OutChunk chunk_;
  size_t iov_ = 0, off_ = 0, taken_ = 0;
};

class SendBuffer {
 public:
  void append(OutChunk chunk);
  void append(Bytes bytes) { append(OutChunk::from_bytes(std::move(bytes))); }

  // Describes up to `max` iovecs of not-yet-sent bytes; returns the count.
  size_t unsent(ngtcp2_vec* vecs, size_t max) const;

  // ngtcp2 took `n` more bytes from the front of what unsent() described.
  void mark_sent(size_t n);

  // The peer acknowledged stream bytes [offset, offset+len). Frees whole
  // chunks below the acknowledged prefix; returns the bytes freed.
  size_t acknowledge(uint64_t offset, uint64_t len);

  bool has_unsent() const { return sent_offset_ < end_offset_; }
  uint64_t acked_offset() const { return acked_offset_; }
  uint64_t held_bytes() const { return end_offset_ - base_offset_; }

 private:
  std::deque<OutChunk> chunks_;
  // Position of the first unsent byte: chunk, iovec, offset in the iovec.
  size_t cur_chunk_ = 0, cur_iov_ = 0, cur_off_ = 0;
  uint64_t base_offset_ = 0;  // stream offset of chunks_.front()
  uint64_t sent_offset_ = 0;
  uint64_t acked_offset_ = 0;
  uint64_t end_offset_ = 0;
};

}  // namespace macula
