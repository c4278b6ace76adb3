#include "node_name.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace macula {
namespace {

constexpr uint16_t kDefaultPort = 9999;

NameError parse(const std::string& text) {
  NodeName out;
  return parse_node_name(text, kDefaultPort, out);
}

TEST(NodeName, ExplicitPortAndIpv4) {
  NodeName n;
  ASSERT_EQ(parse_node_name("4433@127.0.0.1", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.name, "4433");
  EXPECT_EQ(n.host, "127.0.0.1");
  EXPECT_EQ(n.host_kind, HostKind::kIpv4);
  EXPECT_EQ(n.port, 4433);
  EXPECT_TRUE(n.explicit_port);
}

TEST(NodeName, NamedNodeGetsTheDefaultPort) {
  NodeName n;
  ASSERT_EQ(parse_node_name("name@host.example", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.name, "name");
  EXPECT_EQ(n.host, "host.example");
  EXPECT_EQ(n.host_kind, HostKind::kDns);
  EXPECT_EQ(n.port, kDefaultPort);
  EXPECT_FALSE(n.explicit_port);
}

TEST(NodeName, BareIpv6) {
  NodeName n;
  ASSERT_EQ(parse_node_name("a@::1", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.host, "::1");
  EXPECT_EQ(n.host_kind, HostKind::kIpv6);
}

TEST(NodeName, BracketedIpv6LosesItsBrackets) {
  NodeName n;
  ASSERT_EQ(parse_node_name("a@[::1]", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.host, "::1");
  EXPECT_EQ(n.host_kind, HostKind::kIpv6);
  EXPECT_EQ(n.port, kDefaultPort);
}

TEST(NodeName, ExplicitPortWithIpv6) {
  NodeName n;
  ASSERT_EQ(parse_node_name("65535@[fe80::1:2]", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.port, 65535);
  EXPECT_EQ(n.host, "fe80::1:2");
  EXPECT_EQ(n.host_kind, HostKind::kIpv6);
}

TEST(NodeName, PortBoundaries) {
  NodeName n;
  ASSERT_EQ(parse_node_name("1@h", kDefaultPort, n), NameError::kNone);
  EXPECT_EQ(n.port, 1);
  EXPECT_EQ(parse("0@h"), NameError::kBadPort);
  EXPECT_EQ(parse("65536@h"), NameError::kBadPort);
  EXPECT_EQ(parse("70000@h"), NameError::kBadPort);
  EXPECT_EQ(parse("123456@h"), NameError::kBadPort);
  EXPECT_EQ(parse("99999999999999999999999@h"), NameError::kBadPort);
}

TEST(NodeName, NeedsExactlyOneAt) {
  EXPECT_EQ(parse("nohost"), NameError::kNoAt);
  EXPECT_EQ(parse("a@b@c"), NameError::kNoAt);
  EXPECT_EQ(parse("@@"), NameError::kNoAt);
  EXPECT_EQ(parse(""), NameError::kNoAt);
}

TEST(NodeName, BadNames) {
  EXPECT_EQ(parse("@host"), NameError::kBadName);
  EXPECT_EQ(parse("a b@host"), NameError::kBadName);
  EXPECT_EQ(parse("a.b@host"), NameError::kBadName);
  EXPECT_EQ(parse("a:b@host"), NameError::kBadName);
  EXPECT_EQ(parse("\xc3\xa9@host"), NameError::kBadName);  // é
  EXPECT_EQ(parse(std::string(256, 'n') + "@host"), NameError::kBadName);
  EXPECT_EQ(parse(std::string(255, 'n') + "@host"), NameError::kNone);
  EXPECT_EQ(parse("under_score-dash9@host"), NameError::kNone);
}

TEST(NodeName, BadHosts) {
  EXPECT_EQ(parse("a@-bad-"), NameError::kBadHost);
  EXPECT_EQ(parse("a@"), NameError::kBadHost);
  EXPECT_EQ(parse("a@1234"), NameError::kBadHost);  // all digits: not a name
  EXPECT_EQ(parse("a@host_x"), NameError::kBadHost);
  EXPECT_EQ(parse("a@a..b"), NameError::kBadHost);
  EXPECT_EQ(parse("a@host."), NameError::kBadHost);
  EXPECT_EQ(parse("a@[::1"), NameError::kBadHost);
  EXPECT_EQ(parse("a@[]"), NameError::kBadHost);
  EXPECT_EQ(parse("a@" + std::string(64, 'l') + ".example"), NameError::kBadHost);
  EXPECT_EQ(parse("a@" + std::string(63, 'l') + ".example"), NameError::kNone);
}

// Found by the node_name fuzzer: "0433@h" was port 433 under a second
// name, and "a@17550.1" a DNS name that resolvers read as an IPv4 address.
TEST(NodeName, OneSpellingPerPortAndHost) {
  EXPECT_EQ(parse("0433@127.0.0.1"), NameError::kBadPort);
  EXPECT_EQ(parse("00@127.0.0.1"), NameError::kBadPort);
  EXPECT_EQ(parse("433@127.0.0.1"), NameError::kNone);
  EXPECT_EQ(parse("a@17550.1"), NameError::kBadHost);
  EXPECT_EQ(parse("a@host.example.1"), NameError::kBadHost);
  EXPECT_EQ(parse("a@10.0.0.1"), NameError::kNone);
  EXPECT_EQ(parse("a@1host.example"), NameError::kNone);
  EXPECT_EQ(parse("a@host.1x"), NameError::kNone);
}

TEST(NodeName, ErrorsLeaveTheOutputUntouched) {
  NodeName n;
  n.name = "kept";
  EXPECT_EQ(parse_node_name("0@h", kDefaultPort, n), NameError::kBadPort);
  EXPECT_EQ(parse_node_name("a@-bad-", kDefaultPort, n), NameError::kBadHost);
  EXPECT_EQ(n.name, "kept");
}

TEST(NodeName, EveryErrorHasItsOwnText) {
  std::set<std::string> texts;
  for (NameError e : {NameError::kNone, NameError::kNoAt, NameError::kBadName,
                      NameError::kBadPort, NameError::kBadHost})
    texts.insert(name_error_text(e));
  EXPECT_EQ(texts.size(), 5u);
}

}  // namespace
}  // namespace macula
