// Admission decisions without a network: bounds, Retry, eviction, tokens.
#include "admission.h"

#include <gtest/gtest.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <cstring>

namespace macula {
namespace {

const uint8_t kSecret[32] = {1, 2, 3};
constexpr size_t kRetryTagLen = 16;  // RFC 9001 section 5.8

Address addr(const char* ip, uint16_t port) {
  Address a;
  EXPECT_TRUE(make_address(ip, port, a));
  return a;
}

ngtcp2_pkt_hd initial() {
  ngtcp2_pkt_hd hd{};
  hd.version = NGTCP2_PROTO_VER_V1;
  hd.type = NGTCP2_PKT_INITIAL;
  hd.dcid.datalen = 18;
  std::memset(hd.dcid.data, 7, 18);
  hd.scid.datalen = 17;
  std::memset(hd.scid.data, 9, 17);
  return hd;
}

// The Initial a client sends after `retry` (a Retry packet of `n`
// bytes): to the Retry's connection ID, echoing its token (the bytes
// between the header and the 16-byte integrity tag).
ngtcp2_pkt_hd after_retry(const uint8_t* retry, size_t n) {
  ngtcp2_pkt_hd hd;
  ngtcp2_ssize hdlen = ngtcp2_pkt_decode_hd_long(&hd, retry, n);
  EXPECT_GT(hdlen, 0);
  EXPECT_EQ(hd.type, NGTCP2_PKT_RETRY);
  ngtcp2_pkt_hd again = initial();
  again.dcid = hd.scid;
  again.token.base = const_cast<uint8_t*>(retry + hdlen);
  again.token.len = n - size_t(hdlen) - kRetryTagLen;
  return again;
}

TEST(AdmissionTest, SourceKeyIsTheIpv4AddressOrTheIpv6Slash64) {
  EXPECT_EQ(Admission::source_key(addr("10.0.0.1", 1)), Admission::source_key(addr("10.0.0.1", 2)));
  EXPECT_NE(Admission::source_key(addr("10.0.0.1", 1)), Admission::source_key(addr("10.0.0.2", 1)));
  EXPECT_EQ(Admission::source_key(addr("2001:db8::1", 1)),
            Admission::source_key(addr("2001:db8::ffff:2", 1)));
  EXPECT_NE(Admission::source_key(addr("2001:db8::1", 1)),
            Admission::source_key(addr("2001:db8:0:1::1", 1)));
  EXPECT_EQ(Admission::source_key(addr("::ffff:10.0.0.1", 1)),
            Admission::source_key(addr("10.0.0.1", 1)));
}

TEST(AdmissionTest, RetryOnlyOnceHalfOpenConnectionsPileUp) {
  AdmissionConfig c;
  c.retry_threshold = 2;
  Admission a(c, kSecret);
  ngtcp2_pkt_hd hd = initial();
  Address from = addr("127.0.0.1", 5000);
  EXPECT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kAccept);
  a.opened(1, from);
  EXPECT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kAccept);
  a.opened(2, from);
  EXPECT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kRetry);
  a.settled(1);
  a.settled(1);  // twice is harmless
  EXPECT_EQ(a.half_open(), 1u);
  EXPECT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kAccept);
}

// The token a Retry carries validates the address it was sent to, for
// the connection ID it names, within its lifetime, and nothing else.
TEST(AdmissionTest, RetryTokenValidatesOnlyItsAddressAndConnectionId) {
  AdmissionConfig c;
  c.retry_threshold = 0;
  Admission a(c, kSecret);
  ngtcp2_pkt_hd hd = initial();
  Address from = addr("127.0.0.1", 5000);
  uint64_t now = 1000000000;
  ASSERT_EQ(a.judge(hd, from, now).verdict, Admission::Verdict::kRetry);
  uint8_t buf[256];
  size_t n = a.write_retry(hd, from, 17, now, buf, sizeof buf);
  ASSERT_GT(n, 0u);
  ngtcp2_pkt_hd again = after_retry(buf, n);
  Admission::Decision ok = a.judge(again, from, now + 1000);
  EXPECT_EQ(ok.verdict, Admission::Verdict::kAccept);
  EXPECT_TRUE(ok.validated);
  EXPECT_TRUE(ngtcp2_cid_eq(&ok.odcid, &hd.dcid));
  // From another address, for another CID, or too late: refused.
  EXPECT_EQ(a.judge(again, addr("127.0.0.2", 5000), now).verdict, Admission::Verdict::kDrop);
  ngtcp2_pkt_hd other = again;
  other.dcid.data[0] ^= 1;
  EXPECT_EQ(a.judge(other, from, now).verdict, Admission::Verdict::kDrop);
  EXPECT_EQ(a.judge(again, from, now + c.token_lifetime_ns + 1).verdict,
            Admission::Verdict::kDrop);
  EXPECT_EQ(a.stats().bad_tokens, 3u);
  EXPECT_EQ(a.stats().retries, 1u);
}

// A validated newcomer displaces the oldest half-open connection of its
// source; an unvalidated one is sent a Retry instead.
TEST(AdmissionTest, ValidatedPeerDisplacesTheOldestStrangerOfItsSource) {
  AdmissionConfig c;
  c.max_half_open_per_source = 3;
  c.retry_threshold = 100;
  Admission a(c, kSecret);
  Address from = addr("127.0.0.1", 5000);
  for (uint64_t id = 1; id <= 3; ++id) a.opened(id, from);
  a.opened(4, addr("127.0.0.9", 1));
  ngtcp2_pkt_hd hd = initial();
  EXPECT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kRetry);
  uint8_t buf[256];
  size_t n = a.write_retry(hd, from, 17, 1, buf, sizeof buf);
  ngtcp2_pkt_hd again = after_retry(buf, n);
  Admission::Decision d = a.judge(again, from, 2);
  EXPECT_EQ(d.verdict, Admission::Verdict::kAccept);
  EXPECT_EQ(d.evict, 1u);
  // Another source is not full: nobody is displaced.
  EXPECT_EQ(a.judge(hd, addr("127.0.0.9", 1), 1).evict, 0u);
}

TEST(AdmissionTest, OverallBoundDisplacesTheOldestOfAll) {
  AdmissionConfig c;
  c.max_half_open = 2;
  c.retry_threshold = 100;
  Admission a(c, kSecret);
  a.opened(5, addr("10.0.0.1", 1));
  a.opened(6, addr("10.0.0.2", 1));
  ngtcp2_pkt_hd hd = initial();
  Address from = addr("10.0.0.3", 1);
  ASSERT_EQ(a.judge(hd, from, 1).verdict, Admission::Verdict::kRetry);
  uint8_t buf[256];
  size_t n = a.write_retry(hd, from, 17, 1, buf, sizeof buf);
  ngtcp2_pkt_hd again = after_retry(buf, n);
  EXPECT_EQ(a.judge(again, from, 2).evict, 5u);
}

}  // namespace
}  // namespace macula
