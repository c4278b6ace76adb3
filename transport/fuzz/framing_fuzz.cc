// Fuzz target for the stream framing (framing.h): every byte a peer sends
// on a macula stream goes through a FrameDecoder.
//
// Input: one byte choosing the decoder's frame limit, then the stream.
// Properties, beyond "no crash, no sanitizer report":
// - feeding the stream in pieces (cut where its bytes say) gives the same
//   frames, status and partial count as feeding it at once;
// - re-encoding the frames gives back the stream up to the partial frame:
//   encode_frames(frames) + partial_bytes() == bytes consumed;
// - frame_chunk() describes the same bytes as encode_frames().
#include <sys/uio.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "framing.h"

using namespace macula;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

struct Decoded {
  FrameDecoder::Status status = FrameDecoder::Status::kOk;
  std::vector<Bytes> frames;
  size_t partial = 0;
};

Decoded decode(size_t max_frame, const uint8_t* data, size_t size, bool in_pieces) {
  FrameDecoder d(max_frame);
  Decoded out;
  size_t at = 0;
  while (at < size && out.status == FrameDecoder::Status::kOk) {
    size_t len = in_pieces ? 1 + data[at] % 7 : size;
    len = std::min(len, size - at);
    out.status = d.feed(data + at, len, out.frames);
    at += len;
  }
  out.partial = d.partial_bytes();
  return out;
}

bool same_bytes(const Bytes& a, const Bytes& b) {
  return a.size == b.size && (a.size == 0 || std::memcmp(a.data.get(), b.data.get(), a.size) == 0);
}

std::vector<uint8_t> flatten(const OutChunk& c) {
  std::vector<uint8_t> out;
  for (const iovec& v : c.iov) {
    auto* p = static_cast<const uint8_t*>(v.iov_base);
    out.insert(out.end(), p, p + v.iov_len);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // Limits from tiny to the real ones (16 MB), so kTooLarge is reached.
  static const size_t kLimits[] = {0, 1, 7, 64, 300, 4096, 1 << 16, 16 << 20};
  size_t max_frame = kLimits[data[0] % 8];
  ++data, --size;
  Decoded once = decode(max_frame, data, size, false);
  Decoded pieces = decode(max_frame, data, size, true);
  check(once.status == pieces.status);
  check(once.frames.size() == pieces.frames.size());
  for (size_t i = 0; i < once.frames.size(); ++i)
    check(same_bytes(once.frames[i], pieces.frames[i]));
  if (once.status != FrameDecoder::Status::kOk) return 0;
  check(once.partial == pieces.partial);
  std::vector<std::vector<iovec>> iovs;
  for (const Bytes& f : once.frames) iovs.push_back({{f.data.get(), f.size}});
  std::vector<std::span<const iovec>> spans(iovs.begin(), iovs.end());
  Bytes encoded = encode_frames(spans);
  check(encoded.size + once.partial == size);
  check(encoded.size == 0 || std::memcmp(encoded.data.get(), data, encoded.size) == 0);
  std::vector<uint8_t> chunk = flatten(frame_chunk(spans, nullptr));
  check(chunk.size() == encoded.size &&
        (chunk.empty() || std::memcmp(chunk.data(), encoded.data.get(), chunk.size()) == 0));
  return 0;
}
