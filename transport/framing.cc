#include "framing.h"

#include <algorithm>
#include <cstring>

namespace macula {

// Frames up to this size get their whole buffer at once; beyond it the
// buffer doubles as bytes arrive.
constexpr size_t kEagerAllocation = 1 << 20;

namespace {

void put_u32(uint8_t* p, size_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}

struct ChunkOwner {
  std::vector<uint8_t> headers;
  std::shared_ptr<void> payload;
};

}  // namespace

Bytes tick_frame() {
  Bytes tick(kFrameHeaderSize);
  std::memset(tick.data.get(), 0, tick.size);
  return tick;
}

Bytes encode_frames(std::span<const std::span<const iovec>> frames) {
  size_t total = 0;
  for (auto frame : frames) {
    total += kFrameHeaderSize;
    for (const iovec& v : frame) total += v.iov_len;
  }
  Bytes out(total);
  uint8_t* p = out.data.get();
  for (auto frame : frames) {
    size_t len = 0;
    for (const iovec& v : frame) len += v.iov_len;
    put_u32(p, len);
    p += kFrameHeaderSize;
    for (const iovec& v : frame) {
      if (v.iov_len) std::memcpy(p, v.iov_base, v.iov_len);
      p += v.iov_len;
    }
  }
  return out;
}


OutChunk frame_chunk(std::span<const std::span<const iovec>> frames,
                     std::shared_ptr<void> payload_owner) {
  auto owner = std::make_shared<ChunkOwner>();
  owner->headers.resize(frames.size() * kFrameHeaderSize);
  owner->payload = std::move(payload_owner);
  OutChunk out;
  uint8_t* header = owner->headers.data();
  for (auto frame : frames) {
    size_t len = 0;
    for (const iovec& v : frame) len += v.iov_len;
    put_u32(header, len);
    out.iov.push_back({header, kFrameHeaderSize});
    header += kFrameHeaderSize;
    for (const iovec& v : frame)
      if (v.iov_len) out.iov.push_back(v);
    out.size += kFrameHeaderSize + len;
  }
  out.owner = std::move(owner);
  return out;
}

// The body grows with what actually arrives, so a header announcing a huge
// frame costs nothing until the bytes are really sent.
void FrameDecoder::grow_to(size_t need) {
  if (need <= capacity_) return;
  size_t cap = std::max<size_t>(capacity_ * 2, kEagerAllocation);
  cap = std::min(std::max(cap, need), body_.size);
  auto grown = std::unique_ptr<uint8_t[]>(new uint8_t[cap]);
  if (filled_) std::memcpy(grown.get(), body_.data.get(), filled_);
  body_.data = std::move(grown);
  capacity_ = cap;
}

FrameDecoder::Status FrameDecoder::feed(const uint8_t* data, size_t len,
                                        std::vector<Bytes>& out) {
  while (len > 0) {
    if (!in_body_) {
      size_t take = std::min(len, kFrameHeaderSize - header_len_);
      std::memcpy(header_ + header_len_, data, take);
      header_len_ += take;
      data += take;
      len -= take;
      if (header_len_ < kFrameHeaderSize) break;
      size_t size = (size_t(header_[0]) << 24) | (size_t(header_[1]) << 16) |
                    (size_t(header_[2]) << 8) | size_t(header_[3]);
      if (size > max_frame_) return Status::kTooLarge;
      header_len_ = 0;
      if (size == 0) {
        out.emplace_back();
        continue;
      }
      in_body_ = true;
      body_ = Bytes();
      body_.size = size;
      filled_ = capacity_ = 0;
      continue;
    }
    size_t take = std::min(len, body_.size - filled_);
    grow_to(filled_ + take);
    std::memcpy(body_.data.get() + filled_, data, take);
    filled_ += take;
    data += take;
    len -= take;
    if (filled_ == body_.size) {
      in_body_ = false;
      filled_ = capacity_ = 0;
      out.push_back(std::move(body_));
    }
  }
  return Status::kOk;
}

}  // namespace macula
