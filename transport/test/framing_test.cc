#include "framing.h"

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace macula {
namespace {

iovec iov(const std::string& s) {
  return {const_cast<char*>(s.data()), s.size()};
}

std::string str(const Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data.get()), b.size);
}

std::vector<std::string> strings(const std::vector<Bytes>& frames) {
  std::vector<std::string> out;
  for (const Bytes& f : frames) out.push_back(str(f));
  return out;
}

// Frames, each given as its list of iovec pieces, encoded in one buffer.
Bytes encode(const std::vector<std::vector<std::string>>& pieces) {
  std::vector<std::vector<iovec>> vecs;
  for (const auto& frame : pieces) {
    vecs.emplace_back();
    for (const std::string& p : frame) vecs.back().push_back(iov(p));
  }
  std::vector<std::span<const iovec>> frames(vecs.begin(), vecs.end());
  return encode_frames(frames);
}

// A mix that exercises every decoder state: ticks, tiny frames, frames
// larger than the decoder's first allocation, back-to-back ticks.
std::vector<std::string> sample_payloads() {
  std::mt19937 rng(7);
  std::vector<std::string> out = {"", "a", "", "", "hello world"};
  for (size_t size : {3u, 4u, 5u, 4095u, 4096u, 4097u, 100000u, 17u}) {
    std::string s(size, '\0');
    for (char& c : s) c = char(rng());
    out.push_back(s);
    out.push_back("");
  }
  return out;
}

Bytes encode_payloads(const std::vector<std::string>& payloads) {
  std::vector<std::vector<std::string>> pieces;
  for (const std::string& p : payloads) pieces.push_back({p});
  return encode(pieces);
}

TEST(EncodeFrames, WritesBigEndianHeaderBeforeEachFrame) {
  Bytes out = encode({{"hello"}, {}, {"wor", "ld!"}});
  std::string expected("\0\0\0\5hello\0\0\0\0\0\0\0\6world!", 4 + 5 + 4 + 4 + 6);
  EXPECT_EQ(str(out), expected);
}

TEST(EncodeFrames, JoinsEveryIovecOfAFrame) {
  std::string big(70000, 'x');  // 0x00011170: every header byte matters
  Bytes out = encode({{"ab", "", big, "cd"}});
  ASSERT_EQ(out.size, 4 + 70004u);
  EXPECT_EQ(str(out).substr(0, 4), std::string("\x00\x01\x11\x74", 4));
  EXPECT_EQ(str(out).substr(4), "ab" + big + "cd");
}

TEST(EncodeFrames, OnlyTicksAreOnlyHeaders) {
  Bytes out = encode({{}, {}, {""}});
  EXPECT_EQ(str(out), std::string(12, '\0'));
}

TEST(EncodeFrames, NoFramesIsAnEmptyBuffer) {
  Bytes out = encode({});
  EXPECT_EQ(out.size, 0u);
}

// Frames as frame_chunk() sees them: spans of iovecs over `pieces`.
struct Spans {
  explicit Spans(const std::vector<std::vector<std::string>>& pieces) {
    for (const auto& frame : pieces) {
      vecs.emplace_back();
      for (const std::string& p : frame) vecs.back().push_back(iov(p));
    }
    spans.assign(vecs.begin(), vecs.end());
  }
  std::vector<std::vector<iovec>> vecs;
  std::vector<std::span<const iovec>> spans;
};

std::string flatten(const OutChunk& c) {
  std::string out;
  for (const iovec& v : c.iov) out.append(static_cast<const char*>(v.iov_base), v.iov_len);
  return out;
}

TEST(FrameChunk, HoldsTheSameBytesAsEncodeFrames) {
  auto payloads = std::make_shared<std::vector<std::vector<std::string>>>(
      std::vector<std::vector<std::string>>{
          {"hello"}, {}, {"wor", "", "ld!"}, {std::string(70000, 'z')}, {""}});
  OutChunk chunk;
  {
    Spans in(*payloads);
    chunk = frame_chunk(in.spans, payloads);
  }  // the iovec lists are gone; headers must live in the chunk's owner
  Bytes expected = encode(*payloads);
  EXPECT_EQ(chunk.size, expected.size);
  EXPECT_EQ(flatten(chunk), str(expected));
}

TEST(FrameChunk, PointsIntoThePayloadsAndSkipsEmptySpans) {
  std::vector<std::vector<std::string>> pieces = {{"abc", ""}, {}, {"", "de"}};
  Spans in(pieces);
  OutChunk chunk = frame_chunk(in.spans, nullptr);
  // header, "abc", header, header, "de": no copies, no empty entries.
  ASSERT_EQ(chunk.iov.size(), 5u);
  EXPECT_EQ(chunk.iov[1].iov_base, pieces[0][0].data());
  EXPECT_EQ(chunk.iov[4].iov_base, pieces[2][1].data());
  for (const iovec& v : chunk.iov) EXPECT_GT(v.iov_len, 0u);
}

TEST(FrameChunk, KeepsThePayloadOwnerAliveUntilDropped) {
  auto payload = std::make_shared<std::string>("payload");
  std::weak_ptr<std::string> alive = payload;
  iovec v = iov(*payload);
  std::span<const iovec> one(&v, 1);
  std::optional<OutChunk> chunk =
      frame_chunk(std::span<const std::span<const iovec>>(&one, 1), std::move(payload));
  EXPECT_FALSE(alive.expired());
  EXPECT_EQ(flatten(*chunk).substr(4), "payload");
  chunk.reset();
  EXPECT_TRUE(alive.expired());
}

TEST(FrameDecoder, DecodesAWholeBufferAtOnce) {
  std::vector<std::string> payloads = sample_payloads();
  Bytes wire = encode_payloads(payloads);
  FrameDecoder decoder(1 << 20);
  std::vector<Bytes> out;
  ASSERT_EQ(decoder.feed(wire.data.get(), wire.size, out), FrameDecoder::Status::kOk);
  EXPECT_EQ(strings(out), payloads);
  EXPECT_EQ(decoder.partial_bytes(), 0u);
}

TEST(FrameDecoder, ByteByByteGivesTheSameFrames) {
  std::vector<std::string> payloads = sample_payloads();
  Bytes wire = encode_payloads(payloads);
  FrameDecoder decoder(1 << 20);
  std::vector<Bytes> out;
  for (size_t i = 0; i < wire.size; ++i)
    ASSERT_EQ(decoder.feed(wire.data.get() + i, 1, out), FrameDecoder::Status::kOk);
  EXPECT_EQ(strings(out), payloads);
  EXPECT_EQ(decoder.partial_bytes(), 0u);
}

TEST(FrameDecoder, RandomChunksGiveTheSameFrames) {
  std::vector<std::string> payloads = sample_payloads();
  Bytes wire = encode_payloads(payloads);
  for (unsigned seed = 1; seed <= 20; ++seed) {
    std::mt19937 rng(seed);
    // Small chunks split headers; large ones span several frames.
    size_t max_chunk = seed % 2 ? 9 : 20000;
    FrameDecoder decoder(1 << 20);
    std::vector<Bytes> out;
    for (size_t off = 0; off < wire.size;) {
      size_t n = std::min<size_t>(1 + rng() % max_chunk, wire.size - off);
      ASSERT_EQ(decoder.feed(wire.data.get() + off, n, out), FrameDecoder::Status::kOk);
      off += n;
    }
    EXPECT_EQ(strings(out), payloads) << "seed " << seed;
  }
}

TEST(FrameDecoder, TicksComeOutAsEmptyFrames) {
  Bytes wire = encode({{}, {"x"}, {}});
  FrameDecoder decoder(16);
  std::vector<Bytes> out;
  ASSERT_EQ(decoder.feed(wire.data.get(), wire.size, out), FrameDecoder::Status::kOk);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].size, 0u);
  EXPECT_EQ(str(out[1]), "x");
  EXPECT_EQ(out[2].size, 0u);
}

TEST(FrameDecoder, FrameOfExactlyMaxIsAccepted) {
  Bytes wire = encode({{std::string(10, 'm')}});
  FrameDecoder decoder(10);
  std::vector<Bytes> out;
  EXPECT_EQ(decoder.feed(wire.data.get(), wire.size, out), FrameDecoder::Status::kOk);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(str(out[0]), std::string(10, 'm'));
}

TEST(FrameDecoder, HeaderAboveMaxIsTooLarge) {
  // A good frame, then a header announcing 11 bytes with max 10.
  Bytes wire = encode({{"ok"}, {std::string(11, 'x')}});
  FrameDecoder decoder(10);
  std::vector<Bytes> out;
  EXPECT_EQ(decoder.feed(wire.data.get(), wire.size, out),
            FrameDecoder::Status::kTooLarge);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(str(out[0]), "ok");
}

TEST(FrameDecoder, SplitHeaderAboveMaxIsTooLarge) {
  // The verdict must not depend on how the header was split.
  const uint8_t header[] = {0xff, 0xff, 0xff, 0xff};
  FrameDecoder decoder(1 << 20);
  std::vector<Bytes> out;
  ASSERT_EQ(decoder.feed(header, 3, out), FrameDecoder::Status::kOk);
  EXPECT_EQ(decoder.feed(header + 3, 1, out), FrameDecoder::Status::kTooLarge);
  EXPECT_TRUE(out.empty());
}

TEST(FrameDecoder, PartialBytesCountsAnIncompleteHeader) {
  Bytes wire = encode({{"0123456789"}});
  FrameDecoder decoder(64);
  std::vector<Bytes> out;
  EXPECT_EQ(decoder.partial_bytes(), 0u);
  decoder.feed(wire.data.get(), 2, out);
  EXPECT_EQ(decoder.partial_bytes(), 2u);
  EXPECT_TRUE(out.empty());
}

// framing.h: "Bytes of a frame received but not yet complete (header
// included)". Once the header is complete it still counts.
TEST(FrameDecoder, PartialBytesIncludesTheHeaderOnceTheBodyStarts) {
  Bytes wire = encode({{"0123456789"}});
  FrameDecoder decoder(64);
  std::vector<Bytes> out;
  decoder.feed(wire.data.get(), 4, out);
  EXPECT_EQ(decoder.partial_bytes(), 4u) << "complete header, no body yet";
  decoder.feed(wire.data.get() + 4, 3, out);
  EXPECT_EQ(decoder.partial_bytes(), 7u) << "header and 3 body bytes";
  decoder.feed(wire.data.get() + 7, wire.size - 7, out);
  EXPECT_EQ(decoder.partial_bytes(), 0u);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(str(out[0]), "0123456789");
}

}  // namespace
}  // namespace macula
