#include "relay_protocol.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

namespace macula::relay {
namespace {

Proof proof_of(uint8_t b) {
  Proof p;
  p.fill(b);
  return p;
}

template <typename T>
T round_trip(const Message& m) {
  std::vector<uint8_t> wire = encode(m);
  EXPECT_LE(wire.size(), kMaxMessageSize);
  ParseResult r = parse(wire);
  EXPECT_TRUE(r.ok()) << r.describe();
  EXPECT_TRUE(std::holds_alternative<T>(r.message));
  return std::get<T>(r.message);
}

std::vector<uint8_t> map_of(std::initializer_list<std::pair<const char*, cbor::Value>> entries) {
  cbor::Value v;
  v.type = cbor::Value::Type::kMap;
  for (auto& [k, x] : entries) v.map.push_back({k, x});
  cbor::Encoder e;
  e.value(v);
  return e.take();
}
cbor::Value text(std::string s) {
  cbor::Value v;
  v.type = cbor::Value::Type::kText;
  v.str = std::move(s);
  return v;
}
cbor::Value bytes(std::string s) {
  cbor::Value v = text(std::move(s));
  v.type = cbor::Value::Type::kBytes;
  return v;
}
cbor::Value num(uint64_t n) {
  cbor::Value v;
  v.uint = n;
  return v;
}

TEST(RelayProtocol, EveryMessageRoundTrips) {
  Identify id = round_trip<Identify>(Identify{7, 1, "alice@host", proof_of(1)});
  EXPECT_EQ(id.id, 7u);
  EXPECT_EQ(id.version, 1u);
  EXPECT_EQ(id.name, "alice@host");
  EXPECT_EQ(id.proof, proof_of(1));

  Identified ok = round_trip<Identified>(Identified{7, "relay-1", proof_of(2), 1500, 64});
  EXPECT_EQ(ok.id, 7u);
  EXPECT_EQ(ok.relay, "relay-1");
  EXPECT_EQ(ok.proof, proof_of(2));
  EXPECT_EQ(ok.max_packet, 1500u);
  EXPECT_EQ(ok.max_tunnels, 64u);

  RequestError err = round_trip<RequestError>(RequestError{9, reason::kNotIdentified, "x"});
  EXPECT_EQ(err.id, 9u);
  EXPECT_EQ(err.reason, "not_identified");
  EXPECT_EQ(err.detail, "x");

  TunnelRequest req = round_trip<TunnelRequest>(TunnelRequest{UINT64_MAX, "bob@h"});
  EXPECT_EQ(req.id, UINT64_MAX);
  EXPECT_EQ(req.target, "bob@h");

  TunnelOk tok = round_trip<TunnelOk>(TunnelOk{3, 0xfffffffe});
  EXPECT_EQ(tok.id, 3u);
  EXPECT_EQ(tok.tunnel, 0xfffffffeu);

  TunnelError terr = round_trip<TunnelError>(TunnelError{4, reason::kUnknownTarget, ""});
  EXPECT_EQ(terr.id, 4u);
  EXPECT_EQ(terr.reason, "unknown_target");
  EXPECT_EQ(terr.detail, "");

  TunnelNotify n = round_trip<TunnelNotify>(TunnelNotify{12, "alice@host"});
  EXPECT_EQ(n.tunnel, 12u);
  EXPECT_EQ(n.source, "alice@host");

  TunnelClose c = round_trip<TunnelClose>(TunnelClose{12, reason::kPeerGone});
  EXPECT_EQ(c.tunnel, 12u);
  EXPECT_EQ(c.reason, "peer_gone");
  EXPECT_EQ(round_trip<TunnelClose>(TunnelClose{12, ""}).reason, "");
}

TEST(RelayProtocol, MeshMessagesRoundTrip) {
  PeerIdentify pi = round_trip<PeerIdentify>(PeerIdentify{1, 1, "r2", proof_of(3)});
  EXPECT_EQ(pi.id, 1u);
  EXPECT_EQ(pi.version, 1u);
  EXPECT_EQ(pi.relay, "r2");
  EXPECT_EQ(pi.proof, proof_of(3));
  PeerIdentified pd = round_trip<PeerIdentified>(PeerIdentified{1, "r1", proof_of(4)});
  EXPECT_EQ(pd.relay, "r1");
  EXPECT_EQ(pd.proof, proof_of(4));
  EXPECT_EQ(round_trip<NodeUp>(NodeUp{"a@h"}).node, "a@h");
  EXPECT_EQ(round_trip<NodeDown>(NodeDown{"a@h"}).node, "a@h");
  PeerTunnel pt = round_trip<PeerTunnel>(PeerTunnel{5, "a@h", "b@h"});
  EXPECT_EQ(pt.tunnel, 5u);
  EXPECT_EQ(pt.source, "a@h");
  EXPECT_EQ(pt.target, "b@h");
  PeerTunnelOk po = round_trip<PeerTunnelOk>(PeerTunnelOk{5, 0xffffffff});
  EXPECT_EQ(po.tunnel, 5u);
  EXPECT_EQ(po.peer_tunnel, 0xffffffffu);
  PeerTunnelError pe = round_trip<PeerTunnelError>(PeerTunnelError{5, "unknown_target", "b@h"});
  EXPECT_EQ(pe.reason, "unknown_target");
  EXPECT_EQ(pe.detail, "b@h");
  // Tunnel ids are never 0, on either side.
  ParseResult r = parse(map_of({{"t", text("peer_tunnel_ok")}, {"tunnel", num(5)},
                                {"peer_tunnel", num(0)}}));
  EXPECT_EQ(r.describe(), "bad_field: peer_tunnel");
  r = parse(map_of({{"t", text("node_up")}, {"node", text("has space")}}));
  EXPECT_EQ(r.describe(), "bad_field: node");
}

TEST(RelayProtocol, WireFormIsAMapWithTypeFirst) {
  std::vector<uint8_t> w = encode(TunnelOk{1, 2});
  // {"t":"tunnel_ok","id":1,"tunnel":2}
  const uint8_t expect[] = {0xa3, 0x61, 't', 0x69, 't', 'u', 'n', 'n', 'e', 'l', '_', 'o', 'k',
                            0x62, 'i', 'd', 0x01, 0x66, 't', 'u', 'n', 'n', 'e', 'l', 0x02};
  EXPECT_EQ(w, std::vector<uint8_t>(std::begin(expect), std::end(expect)));
  Bytes f = encode_frame(TunnelOk{1, 2});
  ASSERT_EQ(f.size, w.size() + 4);
  EXPECT_EQ(f.data[3], w.size());
  EXPECT_EQ(std::memcmp(f.data.get() + 4, w.data(), w.size()), 0);
  EXPECT_STREQ(message_name(Message{TunnelOk{}}), "tunnel_ok");
  EXPECT_STREQ(message_name(Message{RequestError{}}), "error");
}

TEST(RelayProtocol, UnknownKeysAreIgnored) {
  auto w = map_of({{"t", text("tunnel_request")}, {"id", num(5)},
                   {"target", text("b@h")}, {"future", num(1)}});
  ParseResult r = parse(w);
  ASSERT_TRUE(r.ok()) << r.describe();
  EXPECT_EQ(std::get<TunnelRequest>(r.message).target, "b@h");
}

void expect_error(const std::vector<uint8_t>& w, ParseError e, const std::string& detail) {
  ParseResult r = parse(w);
  EXPECT_EQ(r.error, e) << r.describe();
  EXPECT_EQ(r.detail, detail) << r.describe();
}

TEST(RelayProtocol, MalformedMessagesNameTheirFault) {
  expect_error({}, ParseError::kCbor, "empty");
  expect_error({0xff}, ParseError::kCbor, "unsupported_type");
  expect_error({0x01}, ParseError::kNotAMap, "");
  expect_error(map_of({{"id", num(1)}}), ParseError::kMissingField, "t");
  expect_error(map_of({{"t", num(1)}}), ParseError::kBadField, "t");
  expect_error(map_of({{"t", text("launch")}}), ParseError::kUnknownType, "launch");
  expect_error(map_of({{"t", text("tunnel_request")}, {"target", text("b@h")}}),
               ParseError::kMissingField, "id");
  expect_error(map_of({{"t", text("tunnel_request")}, {"id", num(0)}, {"target", text("b@h")}}),
               ParseError::kBadField, "id");
  expect_error(map_of({{"t", text("tunnel_request")}, {"id", num(1)}, {"target", bytes("b@h")}}),
               ParseError::kBadField, "target");
  expect_error(map_of({{"t", text("tunnel_request")}, {"id", num(1)}, {"target", text("b h")}}),
               ParseError::kBadField, "target");
  expect_error(map_of({{"t", text("tunnel_request")}, {"id", num(1)}, {"target", text("")}}),
               ParseError::kBadField, "target");
  expect_error(map_of({{"t", text("tunnel_close")}, {"tunnel", num(0)}}),
               ParseError::kBadField, "tunnel");
  expect_error(map_of({{"t", text("tunnel_close")}, {"tunnel", num(0x100000000ull)}}),
               ParseError::kBadField, "tunnel");
  expect_error(map_of({{"t", text("identify")}, {"id", num(1)}, {"v", num(1)},
                       {"name", text("a@h")}, {"proof", bytes(std::string(31, 'x'))}}),
               ParseError::kBadField, "proof");
  expect_error(map_of({{"t", text("identify")}, {"id", num(1)}, {"v", num(1)},
                       {"name", text("a@h")}}),
               ParseError::kMissingField, "proof");
  expect_error(map_of({{"t", text("error")}, {"id", num(1)},
                       {"reason", text(std::string(kMaxReasonSize + 1, 'r'))}}),
               ParseError::kBadField, "reason");
}

TEST(RelayProtocol, NodeListsRoundTripAndAreBounded) {
  ListNodes ln = round_trip<ListNodes>(ListNodes{3, "bob@h"});
  EXPECT_EQ(ln.id, 3u);
  EXPECT_EQ(ln.after, "bob@h");
  EXPECT_EQ(round_trip<ListNodes>(ListNodes{4, ""}).after, "");

  NodeList page{5, {{"a@h", "r1"}, {"b@h", "r2"}}, true};
  NodeList back = round_trip<NodeList>(page);
  EXPECT_EQ(back.id, 5u);
  EXPECT_TRUE(back.more);
  EXPECT_EQ(back.nodes, page.nodes);
  EXPECT_TRUE(round_trip<NodeList>(NodeList{6, {}, false}).nodes.empty());

  // A full page of the longest names still fits the message limits, when
  // filled by size as a relay does.
  NodeList full{7, {}, true};
  size_t bytes = kNodeListOverhead;
  for (char c = 'a'; full.nodes.size() < kMaxListEntries; ++c) {
    NodeEntry e{std::string(kMaxNameSize - 1, c) + "@", std::string(kMaxNameSize, 'r')};
    if ((bytes += node_entry_size(e)) > kMaxMessageSize) break;
    full.nodes.push_back(e);
  }
  EXPECT_EQ(round_trip<NodeList>(full).nodes.size(), full.nodes.size());
  NodeList many{8, {}, false};
  for (size_t i = 0; i < kMaxListEntries; ++i) many.nodes.push_back({"n" + std::to_string(i) + "@h", "r"});
  EXPECT_EQ(round_trip<NodeList>(many).nodes.size(), kMaxListEntries);

  // One entry too many, a name that is not one, a value that is not text.
  many.nodes.push_back({"x@h", "r"});
  EXPECT_FALSE(parse(encode(many)).ok());
  cbor::Value bad_nodes;
  bad_nodes.type = cbor::Value::Type::kMap;
  bad_nodes.map.push_back({"no spaces@h", text("r")});
  expect_error(map_of({{"t", text("node_list")}, {"id", num(1)}, {"more", num(0)},
                       {"nodes", bad_nodes}}),
               ParseError::kBadField, "nodes");
  bad_nodes.map = {{"a@h", num(1)}};
  expect_error(map_of({{"t", text("node_list")}, {"id", num(1)}, {"more", num(0)},
                       {"nodes", bad_nodes}}),
               ParseError::kBadField, "nodes");
  expect_error(map_of({{"t", text("node_list")}, {"id", num(1)}, {"more", num(2)},
                       {"nodes", cbor::Value{cbor::Value::Type::kMap, 0, {}, {}}}}),
               ParseError::kBadField, "more");
  expect_error(map_of({{"t", text("list_nodes")}, {"id", num(1)},
                       {"after", text(std::string(kMaxNameSize + 1, 'a'))}}),
               ParseError::kBadField, "after");
}

TEST(RelayProtocol, SizeLimits) {
  std::string max_name(kMaxNameSize, 'n');
  EXPECT_TRUE(valid_name(max_name));
  EXPECT_EQ(round_trip<TunnelRequest>(TunnelRequest{1, max_name}).target, max_name);
  expect_error(map_of({{"t", text("tunnel_request")}, {"id", num(1)},
                       {"target", text(max_name + "n")}}),
               ParseError::kBadField, "target");
  // A frame over the message limit is refused before decoding.
  std::vector<uint8_t> huge = map_of({{"t", text("error")}, {"id", num(1)},
                                      {"reason", text("r")}, {"pad", bytes(std::string(500, 'p'))},
                                      {"pad2", bytes(std::string(500, 'p'))}});
  EXPECT_TRUE(parse(huge).ok());
  huge.resize(kMaxMessageSize + 1, 0);
  expect_error(huge, ParseError::kCbor, "input_too_large");
  // Strings over the per-string limit.
  expect_error(map_of({{"t", text("error")}, {"id", num(1)}, {"reason", text("r")},
                       {"pad", bytes(std::string(513, 'p'))}}),
               ParseError::kCbor, "string_too_long");
}

TEST(RelayProtocol, NamesArePrintableAsciiWithoutSpaces) {
  EXPECT_TRUE(valid_name("alice@host.example"));
  EXPECT_TRUE(valid_name("4433@10.0.0.1"));
  EXPECT_FALSE(valid_name(""));
  EXPECT_FALSE(valid_name("a b"));
  EXPECT_FALSE(valid_name("a\nb"));
  EXPECT_FALSE(valid_name("caf\xc3\xa9"));
  EXPECT_FALSE(valid_name(std::string(kMaxNameSize + 1, 'a')));
}

TEST(RelayProtocol, TruncatedMessagesAreRefused) {
  std::vector<uint8_t> w = encode(Identify{1, 1, "alice@host", proof_of(9)});
  for (size_t n = 0; n < w.size(); ++n) {
    std::vector<uint8_t> cut(w.begin(), w.begin() + n);
    EXPECT_FALSE(parse(cut).ok()) << n;
  }
}

TEST(RelayProtocol, TunnelFrames) {
  const uint8_t pkt[] = {0xde, 0xad, 0xbe, 0xef, 0x00};
  Bytes f = encode_tunnel_frame(0x01020304, pkt);
  ASSERT_EQ(f.size, 4 + 4 + sizeof pkt);
  const uint8_t head[] = {0, 0, 0, 9, 1, 2, 3, 4};
  EXPECT_EQ(std::memcmp(f.data.get(), head, sizeof head), 0);
  uint32_t tunnel = 0;
  std::span<const uint8_t> packet;
  ASSERT_TRUE(parse_tunnel_frame({f.data.get() + 4, f.size - 4}, tunnel, packet));
  EXPECT_EQ(tunnel, 0x01020304u);
  EXPECT_EQ(std::vector<uint8_t>(packet.begin(), packet.end()),
            std::vector<uint8_t>(std::begin(pkt), std::end(pkt)));
  const uint8_t bare[4] = {0, 0, 0, 1};
  EXPECT_FALSE(parse_tunnel_frame(bare, tunnel, packet));
  EXPECT_FALSE(parse_tunnel_frame({}, tunnel, packet));
  std::vector<uint8_t> big(kMaxDataFrame + 1, 0);
  EXPECT_FALSE(parse_tunnel_frame(big, tunnel, packet));
  big.pop_back();
  EXPECT_TRUE(parse_tunnel_frame(big, tunnel, packet));
  EXPECT_EQ(packet.size(), kMaxPacketSize);
}

TEST(RelayProtocol, RealmProofBindsSecretRoleNameAndSession) {
  std::vector<uint8_t> ex1(32, 1), ex2(32, 2);
  Proof p = make_realm_proof(ex1, kClientRole, "a@h", "secret");
  EXPECT_TRUE(proof_matches(p, make_realm_proof(ex1, kClientRole, "a@h", "secret")));
  EXPECT_FALSE(proof_matches(p, make_realm_proof(ex2, kClientRole, "a@h", "secret")));
  EXPECT_FALSE(proof_matches(p, make_realm_proof(ex1, kServerRole, "a@h", "secret")));
  EXPECT_FALSE(proof_matches(p, make_realm_proof(ex1, kClientRole, "b@h", "secret")));
  EXPECT_FALSE(proof_matches(p, make_realm_proof(ex1, kClientRole, "a@h", "other")));
}

TEST(RelayProtocol, RandomBytesNeverCrashTheParser) {
  std::mt19937_64 rng(4);
  std::vector<uint8_t> seed = encode(Identify{1, 1, "alice@host", proof_of(3)});
  for (int i = 0; i < 100000; ++i) {
    std::vector<uint8_t> in = seed;
    for (int k = 0, n = 1 + int(rng() % 3); k < n; ++k) in[rng() % in.size()] = uint8_t(rng());
    ParseResult r = parse(in);
    if (r.ok()) {
      // Whatever parses re-encodes to something that parses the same way.
      ParseResult again = parse(encode(r.message));
      ASSERT_TRUE(again.ok()) << again.describe();
      ASSERT_EQ(again.message.index(), r.message.index());
    }
  }
}

}  // namespace
}  // namespace macula::relay
