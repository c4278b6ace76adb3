#include "send_buffer.h"

#include <algorithm>

namespace macula {

OutChunk ChunkCutter::take(size_t bytes) {
  OutChunk out;
  out.owner = chunk_.owner;
  while (bytes > 0 && iov_ < chunk_.iov.size()) {
    const iovec& v = chunk_.iov[iov_];
    size_t n = std::min(bytes, v.iov_len - off_);
    out.iov.push_back({static_cast<uint8_t*>(v.iov_base) + off_, n});
    out.size += n;
    bytes -= n;
    off_ += n;
    if (off_ == v.iov_len) {
      off_ = 0;
      ++iov_;
    }
  }
  taken_ += out.size;
  return out;
}

void SendBuffer::append(OutChunk chunk) {
  if (chunk.size == 0) return;
  end_offset_ += chunk.size;
  chunks_.push_back(std::move(chunk));
}

size_t SendBuffer::unsent(ngtcp2_vec* vecs, size_t max) const {
  size_t n = 0, off = cur_off_, iov = cur_iov_;
  for (size_t c = cur_chunk_; c < chunks_.size() && n < max; ++c, iov = 0) {
    const std::vector<iovec>& v = chunks_[c].iov;
    for (; iov < v.size() && n < max; ++iov, off = 0) {
      vecs[n].base = static_cast<uint8_t*>(v[iov].iov_base) + off;
      vecs[n].len = v[iov].iov_len - off;
      ++n;
    }
  }
  return n;
}

void SendBuffer::mark_sent(size_t n) {
  sent_offset_ += n;
  while (n > 0) {
    const iovec& v = chunks_[cur_chunk_].iov[cur_iov_];
    size_t take = std::min(n, v.iov_len - cur_off_);
    cur_off_ += take;
    n -= take;
    if (cur_off_ < v.iov_len) break;
    cur_off_ = 0;
    if (++cur_iov_ == chunks_[cur_chunk_].iov.size()) {
      cur_iov_ = 0;
      ++cur_chunk_;
    }
  }
}

size_t SendBuffer::acknowledge(uint64_t offset, uint64_t len) {
  acked_offset_ = std::max(acked_offset_, offset + len);
  size_t freed = 0;
  while (!chunks_.empty() && cur_chunk_ > 0 &&
         base_offset_ + chunks_.front().size <= acked_offset_) {
    base_offset_ += chunks_.front().size;
    freed += chunks_.front().size;
    chunks_.pop_front();
    --cur_chunk_;
  }
  return freed;
}

}  // namespace macula
