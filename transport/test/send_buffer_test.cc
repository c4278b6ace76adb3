#include "send_buffer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace macula {
namespace {

Bytes chunk(const std::string& s) {
  Bytes b(s.size());
  std::memcpy(b.data.get(), s.data(), s.size());
  return b;
}

std::string vec_str(const ngtcp2_vec& v) {
  return std::string(reinterpret_cast<const char*>(v.base), v.len);
}

// Three chunks: stream offsets [0,3) "abc", [3,8) "defgh", [8,10) "ij".
class SendBufferTest : public ::testing::Test {
 protected:
  void SetUp() override {
    buf_.append(chunk("abc"));
    buf_.append(chunk("defgh"));
    buf_.append(chunk("ij"));
  }
  SendBuffer buf_;
};

TEST_F(SendBufferTest, UnsentDescribesEveryChunkInOrder) {
  ngtcp2_vec v[8];
  ASSERT_EQ(buf_.unsent(v, 8), 3u);
  EXPECT_EQ(vec_str(v[0]), "abc");
  EXPECT_EQ(vec_str(v[1]), "defgh");
  EXPECT_EQ(vec_str(v[2]), "ij");
  EXPECT_TRUE(buf_.has_unsent());
  EXPECT_EQ(buf_.held_bytes(), 10u);
}

TEST_F(SendBufferTest, UnsentRespectsMax) {
  ngtcp2_vec v[2];
  ASSERT_EQ(buf_.unsent(v, 2), 2u);
  EXPECT_EQ(vec_str(v[0]), "abc");
  EXPECT_EQ(vec_str(v[1]), "defgh");
}

TEST_F(SendBufferTest, MarkSentSkipsIntoTheMiddleOfAChunk) {
  buf_.mark_sent(5);  // "abc" and "de"
  ngtcp2_vec v[8];
  ASSERT_EQ(buf_.unsent(v, 8), 2u);
  EXPECT_EQ(vec_str(v[0]), "fgh");
  EXPECT_EQ(vec_str(v[1]), "ij");
  buf_.mark_sent(5);
  EXPECT_EQ(buf_.unsent(v, 8), 0u);
  EXPECT_FALSE(buf_.has_unsent());
  // Sent is not acknowledged: everything is still held for retransmission.
  EXPECT_EQ(buf_.held_bytes(), 10u);
}

TEST_F(SendBufferTest, ChunksAreFreedOnlyWhenFullyAcknowledged) {
  buf_.mark_sent(10);
  // ngtcp2 reports acks in increasing, contiguous order.
  EXPECT_EQ(buf_.acknowledge(0, 2), 0u);  // "ab": "abc" still needed
  EXPECT_EQ(buf_.held_bytes(), 10u);
  EXPECT_EQ(buf_.acknowledge(2, 2), 3u);  // "c", "d": frees "abc" only
  EXPECT_EQ(buf_.held_bytes(), 7u);
  EXPECT_EQ(buf_.acknowledge(4, 3), 0u);  // "efg": "defgh" ends at 8
  EXPECT_EQ(buf_.held_bytes(), 7u);
  EXPECT_EQ(buf_.acknowledge(7, 3), 7u);  // "h", "ij": frees both
  EXPECT_EQ(buf_.held_bytes(), 0u);
}

TEST_F(SendBufferTest, OneAckCanFreeSeveralChunks) {
  buf_.mark_sent(10);
  EXPECT_EQ(buf_.acknowledge(0, 8), 8u);
  EXPECT_EQ(buf_.held_bytes(), 2u);
}

TEST_F(SendBufferTest, AppendAfterAcksContinuesTheStreamOffsets) {
  buf_.mark_sent(10);
  ASSERT_EQ(buf_.acknowledge(0, 10), 10u);
  buf_.append(chunk("klm"));
  ngtcp2_vec v[8];
  ASSERT_EQ(buf_.unsent(v, 8), 1u);
  EXPECT_EQ(vec_str(v[0]), "klm");
  EXPECT_EQ(buf_.held_bytes(), 3u);
  buf_.mark_sent(3);
  EXPECT_EQ(buf_.acknowledge(10, 3), 3u);
  EXPECT_EQ(buf_.held_bytes(), 0u);
}

TEST_F(SendBufferTest, UnsentPointersStayValidWhileUnacknowledged) {
  // ngtcp2 keeps pointers into sent data for retransmission.
  ngtcp2_vec v[8];
  buf_.unsent(v, 8);
  const uint8_t* second = v[1].base;
  buf_.mark_sent(10);
  buf_.acknowledge(0, 3);
  buf_.append(chunk("more"));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(second), 5), "defgh");
}

// A zero-copy chunk over `parts`, owned by a shared vector the test can
// watch (as Erlang binaries are pinned until acknowledged).
OutChunk shared_chunk(std::vector<std::string> parts,
                      std::weak_ptr<void>* watch = nullptr) {
  auto owner = std::make_shared<std::vector<std::string>>(std::move(parts));
  OutChunk c;
  for (std::string& p : *owner) {
    c.iov.push_back({p.data(), p.size()});
    c.size += p.size();
  }
  if (watch) *watch = owner;
  c.owner = std::move(owner);
  return c;
}

std::vector<std::string> unsent_strings(const SendBuffer& buf, size_t max = 16) {
  ngtcp2_vec v[16];
  size_t n = buf.unsent(v, max);
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) out.push_back(vec_str(v[i]));
  return out;
}

using Strings = std::vector<std::string>;

// Chunks of several iovecs: offsets [0,5) "ab"+"cde", [5,10) "f"+"ghij".
class MultiIovecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    buf_.append(shared_chunk({"ab", "cde"}, &first_));
    buf_.append(shared_chunk({"f", "ghij"}, &second_));
  }
  SendBuffer buf_;
  std::weak_ptr<void> first_, second_;
};

TEST_F(MultiIovecTest, UnsentListsEveryIovec) {
  EXPECT_EQ(unsent_strings(buf_), (Strings{"ab", "cde", "f", "ghij"}));
  EXPECT_EQ(unsent_strings(buf_, 3), (Strings{"ab", "cde", "f"}));
  EXPECT_EQ(buf_.held_bytes(), 10u);
}

TEST_F(MultiIovecTest, MarkSentWalksIovecsAndChunks) {
  buf_.mark_sent(3);  // inside the second iovec
  EXPECT_EQ(unsent_strings(buf_), (Strings{"de", "f", "ghij"}));
  buf_.mark_sent(2);  // exactly at the chunk boundary
  EXPECT_EQ(unsent_strings(buf_), (Strings{"f", "ghij"}));
  buf_.mark_sent(2);  // across an iovec boundary
  EXPECT_EQ(unsent_strings(buf_), (Strings{"hij"}));
  buf_.mark_sent(3);
  EXPECT_TRUE(unsent_strings(buf_).empty());
  EXPECT_FALSE(buf_.has_unsent());
}

TEST_F(MultiIovecTest, OneMarkSentCanSpanSeveralIovecs) {
  buf_.mark_sent(7);  // "ab", "cde", "f" and into "ghij"
  EXPECT_EQ(unsent_strings(buf_), (Strings{"hij"}));
}

TEST_F(MultiIovecTest, OwnerIsReleasedOnlyOnceItsChunkIsAcknowledged) {
  buf_.mark_sent(10);
  EXPECT_EQ(buf_.acknowledge(0, 4), 0u);
  EXPECT_FALSE(first_.expired());
  EXPECT_EQ(buf_.acknowledge(4, 3), 5u);
  EXPECT_TRUE(first_.expired()) << "acknowledged memory stays pinned";
  EXPECT_FALSE(second_.expired()) << "unacknowledged memory was released";
  EXPECT_EQ(buf_.held_bytes(), 5u);
  EXPECT_EQ(buf_.acknowledge(7, 3), 5u);
  EXPECT_TRUE(second_.expired());
  EXPECT_EQ(buf_.held_bytes(), 0u);
}

TEST_F(MultiIovecTest, AppendAfterEverythingWasSentResumesThere) {
  buf_.mark_sent(10);
  buf_.append(shared_chunk({"kl", "m"}));
  EXPECT_EQ(unsent_strings(buf_), (Strings{"kl", "m"}));
  buf_.mark_sent(1);
  EXPECT_EQ(unsent_strings(buf_), (Strings{"l", "m"}));
  EXPECT_EQ(buf_.acknowledge(0, 10), 10u);
  EXPECT_EQ(unsent_strings(buf_), (Strings{"l", "m"}));
  EXPECT_EQ(buf_.held_bytes(), 3u);
}

TEST(SendBuffer, EmptyChunksAreIgnored) {
  SendBuffer buf;
  buf.append(Bytes());
  EXPECT_FALSE(buf.has_unsent());
  EXPECT_EQ(buf.held_bytes(), 0u);
  ngtcp2_vec v[2];
  EXPECT_EQ(buf.unsent(v, 2), 0u);
}

}  // namespace
}  // namespace macula
