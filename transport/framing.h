// Length-prefixed frames: a u32 big-endian length, then that many bytes.
// A zero-length frame is a tick. Used on every macula stream.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "bytes.h"

namespace macula {

inline constexpr size_t kFrameHeaderSize = 4;

// An empty frame (a tick): ignored by receivers, acknowledged by QUIC.
Bytes tick_frame();

// Writes `frames` (each a list of iovecs) as consecutive frames into one
// buffer. Returns the buffer; its size is the sum of headers and payloads.
Bytes encode_frames(std::span<const std::span<const iovec>> frames);

// The same frames without copying the payloads: the chunk points into
// them, and `payload_owner` must keep them alive. Empty spans are skipped.
OutChunk frame_chunk(std::span<const std::span<const iovec>> frames,
                     std::shared_ptr<void> payload_owner);

// Incremental decoder for one byte stream. Not thread-safe.
class FrameDecoder {
 public:
  enum class Status { kOk, kTooLarge };

  explicit FrameDecoder(size_t max_frame) : max_frame_(max_frame) {}

  // Consumes `data`; appends each completed frame to `out` (ticks appear as
  // empty frames). kTooLarge: a header announced more than max_frame bytes;
  // the stream is unusable afterwards.
  Status feed(const uint8_t* data, size_t len, std::vector<Bytes>& out);

  // Bytes of a frame received but not yet complete (header included).
  size_t partial_bytes() const {
    return in_body_ ? kFrameHeaderSize + filled_ : header_len_;
  }

 private:
  size_t max_frame_;
  uint8_t header_[kFrameHeaderSize] = {};
  size_t header_len_ = 0;
  bool in_body_ = false;
  Bytes body_;
  size_t filled_ = 0;
  size_t capacity_ = 0;

  void grow_to(size_t need);
};

}  // namespace macula
