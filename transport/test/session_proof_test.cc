#include "session_proof.h"

#include <gtest/gtest.h>

#include <vector>

namespace macula {
namespace {

std::vector<uint8_t> exporter_bytes() {
  std::vector<uint8_t> e(32);
  for (size_t i = 0; i < e.size(); ++i) e[i] = uint8_t(i);
  return e;
}

TEST(SessionProof, IsHmacSha256OfExporterRoleAndName) {
  // HMAC-SHA256(key "secret", bytes 0..31 || "C" || "a@127.0.0.1"),
  // computed independently (the cookie proof's pinned vector).
  const Proof expected = {
      0x5c, 0xd8, 0x16, 0x1a, 0xc3, 0x9c, 0xe1, 0xf2, 0x63, 0x66, 0x1b,
      0x2c, 0xbe, 0x81, 0x23, 0x9d, 0xd6, 0xd5, 0x00, 0x18, 0xc4, 0x95,
      0xec, 0x18, 0xa8, 0xf0, 0x6b, 0xe7, 0x30, 0xd4, 0x7c, 0x01};
  EXPECT_EQ(make_session_proof(exporter_bytes(), "C", "a@127.0.0.1", "secret"), expected);
}

TEST(SessionProof, RoleAndNameAreNotInterchangeable) {
  auto e = exporter_bytes();
  EXPECT_NE(make_session_proof(e, "C", "a", "s"), make_session_proof(e, "S", "a", "s"));
  EXPECT_NE(make_session_proof(e, "C", "a", "s"), make_session_proof(e, "C", "b", "s"));
  EXPECT_NE(make_session_proof(e, "C", "a", "s"), make_session_proof(e, "C", "a", "t"));
}

}  // namespace
}  // namespace macula
