#include "cookie_proof.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace macula {
namespace {

std::vector<uint8_t> exporter_bytes(uint8_t first) {
  std::vector<uint8_t> e(32);
  for (size_t i = 0; i < e.size(); ++i) e[i] = uint8_t(first + i);
  return e;
}

Proof proof(const std::vector<uint8_t>& exporter, char role = 'C',
            const std::string& node = "a@127.0.0.1",
            const std::string& cookie = "secret") {
  return make_cookie_proof(exporter, role, node, cookie);
}

TEST(CookieProof, IsHmacSha256OfExporterRoleAndNode) {
  // Computed independently: HMAC-SHA256(key "secret",
  // bytes 0..31 || "C" || "a@127.0.0.1"). Pins the message layout, which
  // both ends must agree on.
  const Proof expected = {
      0x5c, 0xd8, 0x16, 0x1a, 0xc3, 0x9c, 0xe1, 0xf2, 0x63, 0x66, 0x1b,
      0x2c, 0xbe, 0x81, 0x23, 0x9d, 0xd6, 0xd5, 0x00, 0x18, 0xc4, 0x95,
      0xec, 0x18, 0xa8, 0xf0, 0x6b, 0xe7, 0x30, 0xd4, 0x7c, 0x01};
  EXPECT_EQ(proof(exporter_bytes(0)), expected);
}

TEST(CookieProof, SameInputsSameProof) {
  EXPECT_EQ(proof(exporter_bytes(0)), proof(exporter_bytes(0)));
}

TEST(CookieProof, EveryInputChangesTheProof) {
  const Proof base = proof(exporter_bytes(0));
  EXPECT_NE(proof(exporter_bytes(1)), base) << "exporter";
  EXPECT_NE(proof(exporter_bytes(0), 'S'), base) << "role";
  EXPECT_NE(proof(exporter_bytes(0), 'C', "b@127.0.0.1"), base) << "node";
  EXPECT_NE(proof(exporter_bytes(0), 'C', "a@127.0.0.1", "secreT"), base) << "cookie";
}

TEST(CookieProof, ClientAndServerProofsOfOneSessionDiffer) {
  // Otherwise a peer could reflect our own proof back at us.
  std::vector<uint8_t> e = exporter_bytes(9);
  EXPECT_NE(proof(e, 'C', "n@h"), proof(e, 'S', "n@h"));
}

TEST(ProofMatches, AcceptsTheExactProof) {
  Proof p = proof(exporter_bytes(0));
  EXPECT_TRUE(proof_matches(p, p));
}

TEST(ProofMatches, RejectsWrongLengths) {
  Proof p = proof(exporter_bytes(0));
  std::vector<uint8_t> longer(p.begin(), p.end());
  longer.push_back(0);
  std::vector<uint8_t> shorter(p.begin(), p.end() - 1);
  EXPECT_FALSE(proof_matches(p, longer));
  EXPECT_FALSE(proof_matches(p, shorter));
  EXPECT_FALSE(proof_matches(p, std::span<const uint8_t>()));
}

TEST(ProofMatches, RejectsEverySingleFlippedBit) {
  Proof p = proof(exporter_bytes(0));
  for (size_t bit = 0; bit < p.size() * 8; ++bit) {
    Proof bad = p;
    bad[bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_FALSE(proof_matches(p, bad)) << "bit " << bit;
  }
}

TEST(ProofFrame, RoundTripsAndRefusesWhatAPeerCouldSendInstead) {
  Proof p = proof(exporter_bytes(0));
  std::vector<uint8_t> frame = encode_proof_frame(p, "4433@127.0.0.1");
  ProofFrame parsed;
  ASSERT_TRUE(parse_proof_frame(frame, parsed));
  EXPECT_EQ(parsed.proof, p);
  EXPECT_EQ(parsed.node, "4433@127.0.0.1");
  auto refused = [&](std::vector<uint8_t> f) {
    ProofFrame out;
    return !parse_proof_frame(f, out);
  };
  EXPECT_TRUE(refused({}));
  EXPECT_TRUE(refused(std::vector<uint8_t>(frame.begin(), frame.begin() + 36)));  // no name
  EXPECT_TRUE(refused(encode_proof_frame(p, "no at sign")));
  EXPECT_TRUE(refused(encode_proof_frame(p, "a@b@c")));
  EXPECT_TRUE(refused(encode_proof_frame(p, "a@" + std::string(300, 'x'))));
  std::vector<uint8_t> bad_tag = frame;
  bad_tag[0] = 'X';
  EXPECT_TRUE(refused(bad_tag));
}

}  // namespace
}  // namespace macula
