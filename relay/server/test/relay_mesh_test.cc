// Relays of a mesh in this process, each on its own endpoint on
// 127.0.0.1, with nodes at different relays (relay_test_fixture.h).
#include "relay_test_fixture.h"

namespace macula::relay::test {
namespace {

class RelayMeshTest : public RelayServerTest {
 protected:
  struct Relay {
    std::shared_ptr<RelayServer> server;
    std::unique_ptr<Endpoint> endpoint;  // declared last: it goes first
    Address addr;
    std::string name;
  };

  void TearDown() override {
    RelayServerTest::TearDown();
    for (auto& r : relays_) r->server->shutdown();
  }

  // `tls`: CA mode settings; by default self-signed in a directory.
  Relay& open_relay(const std::string& name, const std::string& secret = kSecret,
                    const TlsConfig* tls = nullptr) {
    auto r = std::make_unique<Relay>();
    RelayServerConfig c = config_;
    c.realm_secret = secret;
    c.name = name;
    EXPECT_EQ(RelayServer::check_config(c), "");
    r->server = std::make_shared<RelayServer>(c, log_);
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir_.file(name);
    if (tls) ec.tls = *tls;
    std::string error;
    r->endpoint = Endpoint::open(relay_endpoint_config(ec, c), r->server, error);
    EXPECT_TRUE(r->endpoint) << error;
    make_address("127.0.0.1", r->endpoint->port(), r->addr);
    r->name = name;
    relays_.push_back(std::move(r));
    return *relays_.back();
  }

  static PeerSpec spec(const Relay& to) {
    return PeerSpec{"127.0.0.1:" + std::to_string(to.addr.port()), "127.0.0.1", to.addr};
  }
  // `from` dials each of `to`.
  static void link(Relay& from, std::initializer_list<const Relay*> to) {
    std::vector<PeerSpec> peers;
    for (const Relay* r : to) peers.push_back(spec(*r));
    from.server->start_mesh(*from.endpoint, peers);
  }
  static bool linked(const Relay& r, uint64_t peers, uint64_t remote_nodes) {
    RelayMetrics m = r.server->metrics();
    return m.peers == peers && m.remote_nodes == remote_nodes;
  }

  // A tunnel from `a` to `b` (named `b_name`) at another relay; returns
  // {a's id, b's id}.
  std::pair<uint32_t, uint32_t> open_remote_tunnel(Node& a, Node& b, const std::string& b_name,
                                                    const std::string& a_name) {
    uint64_t req = a.client->request_tunnel(b_name);
    auto reply = a.events->wait_reply(req);
    EXPECT_TRUE(reply);
    if (!reply || !reply->tunnel) return {0, 0};
    uint32_t at_b = 0;
    EXPECT_TRUE(b.events->wait([&](Recorder& r) {
      for (auto& [t, src] : r.incoming_)
        if (src == a_name) at_b = t;
      return at_b != 0;
    }));
    return {reply->tunnel, at_b};
  }

  // r1 dialling r2, alice@a at r1 and bob@b at r2.
  struct AliceAndBob {
    Relay& r1;
    Relay& r2;
    Node alice, bob;
  };
  AliceAndBob alice_and_bob() {
    Relay& r1 = open_relay("r1");
    Relay& r2 = open_relay("r2");
    link(r1, {&r2});
    return {r1, r2, identified_at(r1.addr, "alice@a"), identified_at(r2.addr, "bob@b")};
  }

  std::vector<std::unique_ptr<Relay>> relays_;
};

TEST_F(RelayMeshTest, NodesAtTwoRelaysReachEachOtherByteExact) {
  auto [r1, r2, alice, bob] = alice_and_bob();
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 1); }));

  auto [ta, tb] = open_remote_tunnel(alice, bob, "bob@b", "alice@a");
  ASSERT_NE(ta, 0u);
  ASSERT_NE(tb, 0u);
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> to_bob, to_alice;
  const size_t sizes[] = {1, 100, 1200, 8192, 30000, kMaxPacketSize};
  for (int i = 0; i < 24; ++i) {
    to_bob.push_back(random_packet(rng, sizes[i % 6]));
    to_alice.push_back(random_packet(rng, sizes[(i + 3) % 6]));
    ASSERT_NE(alice.client->send_packet(ta, to_bob.back()), SendStatus::kClosed);
    ASSERT_NE(bob.client->send_packet(tb, to_alice.back()), SendStatus::kClosed);
  }
  ASSERT_TRUE(bob.events->wait([&](Recorder& r) { return r.packets_.size() == to_bob.size(); }));
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return r.packets_.size() == to_alice.size(); }));
  for (size_t i = 0; i < to_bob.size(); ++i) {
    EXPECT_EQ(bob.events->packets_[i].first, tb);
    EXPECT_EQ(bob.events->packets_[i].second, to_bob[i]) << i;
    EXPECT_EQ(alice.events->packets_[i].first, ta);
    EXPECT_EQ(alice.events->packets_[i].second, to_alice[i]) << i;
  }
  EXPECT_EQ(r1.server->metrics().tunnels, 1u);
  EXPECT_EQ(r2.server->metrics().tunnels, 1u);
}

// A node lists the nodes of both relays, each with its home relay.
TEST_F(RelayMeshTest, NodeListsCoverTheLinkedRelaysWithHomeRelays) {
  auto [r1, r2, alice, bob] = alice_and_bob();
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 1); }));
  Node carol = identified_at(r2.addr, "carol@c");
  ASSERT_TRUE(eventually([&] { return r1.server->metrics().remote_nodes == 2; }));
  std::vector<NodeEntry> all = alice.events->list_all(*alice.client);
  std::vector<NodeEntry> expected{{"alice@a", "r1"}, {"bob@b", "r2"}, {"carol@c", "r2"}};
  EXPECT_EQ(all, expected);
  EXPECT_EQ(carol.events->list_all(*carol.client), expected);
}

TEST_F(RelayMeshTest, RelaysThatDialEachOtherKeepOneLink) {
  Relay& r1 = open_relay("r1");
  Relay& r2 = open_relay("r2");
  link(r1, {&r2});
  link(r2, {&r1});
  Node alice = identified_at(r1.addr, "alice@a");
  Node bob = identified_at(r2.addr, "bob@b");
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 1); }));
  // One connection each for the node and the link; the duplicate is gone.
  ASSERT_TRUE(eventually([&] {
    return r1.server->metrics().connections == 2 && r2.server->metrics().connections == 2;
  }));
  // Re-dialling (tick) does not bring the duplicate back.
  for (int i = 0; i < 3; ++i) {
    r1.server->tick(now_ns() / 1000000 + 60000);
    r2.server->tick(now_ns() / 1000000 + 60000);
  }
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(r1.server->metrics().peers, 1u);
  auto [ta, tb] = open_remote_tunnel(bob, alice, "alice@a", "bob@b");
  ASSERT_NE(ta, 0u);
  std::vector<uint8_t> hello = {'h', 'i'};
  bob.client->send_packet(ta, hello);
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return r.packets_.size() == 1; }));
  EXPECT_EQ(alice.events->packets_[0].second, hello);
}

TEST_F(RelayMeshTest, ANameIsUniqueAcrossTheMesh) {
  Relay& r1 = open_relay("r1");
  Relay& r2 = open_relay("r2");
  link(r1, {&r2});
  Node alice = identified_at(r1.addr, "alice@a");
  ASSERT_TRUE(eventually([&] { return linked(r2, 1, 1); }));
  Node mallory = node_at(r2.addr, "alice@a");
  auto info = mallory.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kNameTaken));
  EXPECT_TRUE(alice.client->identified());
  // Once alice leaves r1, her name is free at r2.
  alice.client->close();
  ASSERT_TRUE(eventually([&] { return linked(r2, 1, 0); }));
  Node again = identified_at(r2.addr, "alice@a");
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1); }));
}

TEST_F(RelayMeshTest, UnknownTargetsAndLimitsAreRefusedAcrossTheMesh) {
  config_.max_tunnels_per_node = 1;
  Relay& r1 = open_relay("r1");
  Relay& r2 = open_relay("r2");
  link(r1, {&r2});
  Node alice = identified_at(r1.addr, "alice@a");
  Node bob = identified_at(r2.addr, "bob@b");
  Node carol = identified_at(r1.addr, "carol@a");
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 2); }));
  auto nobody = alice.events->wait_reply(alice.client->request_tunnel("nobody@x"));
  ASSERT_TRUE(nobody);
  EXPECT_EQ(nobody->reason, reason::kUnknownTarget);
  ASSERT_NE(open_remote_tunnel(alice, bob, "bob@b", "alice@a").first, 0u);
  // bob's one tunnel is taken: r2 refuses, and carol hears it from r1.
  auto full = carol.events->wait_reply(carol.client->request_tunnel("bob@b"));
  ASSERT_TRUE(full);
  EXPECT_EQ(full->tunnel, 0u);
  EXPECT_EQ(full->reason, reason::kTargetTunnelLimit);
  EXPECT_EQ(r1.server->metrics().tunnels, 1u);
}

TEST_F(RelayMeshTest, ClosesCrossTheMeshBothWays) {
  auto [r1, r2, alice, bob] = alice_and_bob();
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 1); }));
  auto [ta, tb] = open_remote_tunnel(alice, bob, "bob@b", "alice@a");
  alice.client->close_tunnel(ta, "done");
  ASSERT_TRUE(bob.events->wait([&](Recorder& r) { return !r.closed_tunnels_.empty(); }));
  EXPECT_EQ(bob.events->closed_tunnels_[0], std::make_pair(tb, std::string(reason::kClosed)));
  ASSERT_TRUE(eventually([&] {
    return r1.server->metrics().tunnels == 0 && r2.server->metrics().tunnels == 0;
  }));
  // And the other way, by a disconnect.
  auto [ta2, tb2] = open_remote_tunnel(alice, bob, "bob@b", "alice@a");
  bob.client->close();
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return !r.closed_tunnels_.empty(); }));
  EXPECT_EQ(alice.events->closed_tunnels_[0], std::make_pair(ta2, std::string(reason::kPeerGone)));
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 0); }));
}

TEST_F(RelayMeshTest, ALostRelayTakesItsTunnelsAndNamesAndIsRedialled) {
  auto [r1, r2, alice, bob] = alice_and_bob();
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1) && linked(r2, 1, 1); }));
  auto [ta, tb] = open_remote_tunnel(alice, bob, "bob@b", "alice@a");
  ASSERT_NE(ta, 0u);
  uint16_t port = r2.addr.port();
  r2.server->shutdown();
  std::this_thread::sleep_for(100ms);
  r2.endpoint.reset();
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return !r.closed_tunnels_.empty(); }));
  EXPECT_EQ(alice.events->closed_tunnels_[0], std::make_pair(ta, std::string(reason::kPeerGone)));
  ASSERT_TRUE(eventually([&] { return linked(r1, 0, 0); }));
  // bob's name was r2's: it is free at r1 now.
  Node bob_again = identified_at(r1.addr, "bob@b");

  // A relay back on the same port is linked again by r1's re-dial.
  RelayServerConfig c = config_;
  c.realm_secret = kSecret;
  c.name = "r2";
  r2.server = std::make_shared<RelayServer>(c, log_);
  EndpointConfig ec;
  ec.bind_ip = "127.0.0.1";
  ec.port = port;
  ec.tls.cert_dir = dir_.file("r2");
  std::string error;
  r2.endpoint = Endpoint::open(relay_endpoint_config(ec, c), r2.server, error);
  ASSERT_TRUE(r2.endpoint) << error;
  ASSERT_TRUE(eventually([&] {
    r1.server->tick(now_ns() / 1000000 + 20000);
    return linked(r1, 1, 0) && linked(r2, 1, 2);
  }));
}

TEST_F(RelayMeshTest, ARelayWithoutTheRealmSecretIsNotLinked) {
  Relay& r1 = open_relay("r1");
  Relay& rogue = open_relay("rogue", "another-realm-secret");
  link(r1, {&rogue});
  Node alice = identified_at(r1.addr, "alice@a");
  // rogue cannot check r1's proof, so it refuses the link.
  ASSERT_TRUE(eventually([&] { return rogue.server->metrics().rejections["bad_proof"] == 1; }));
  EXPECT_EQ(r1.server->metrics().peers, 0u);
  EXPECT_EQ(rogue.server->metrics().remote_nodes, 0u);

  // And r1 refuses a relay whose answer it cannot check.
  std::shared_ptr<FakeRelay> fake;
  Address fake_addr;
  auto ep = open_fake_relay(fake, fake_addr);
  ASSERT_TRUE(ep);
  Relay& r3 = open_relay("r3");
  r3.server->start_mesh(*r3.endpoint, {PeerSpec{"fake", "127.0.0.1", fake_addr}});
  ASSERT_TRUE(eventually([&] { return r3.server->metrics().rejections["relay_proof"] == 1; }));
  EXPECT_EQ(r3.server->metrics().peers, 0u);
  r3.server->shutdown();
  ep.reset();
  fake->shared_from_this_.reset();
}

// Relays in CA mode link only with relays whose certificate is from
// their CA and valid for the address they dial.
TEST_F(RelayMeshTest, InCaModeOnlyRelaysWithTheCasCertificatesLink) {
  macula::test::TestCa ca("mesh CA"), other("another CA");
  auto tls = [&](macula::test::TestCa& issuer, const std::string& stem) {
    TlsConfig t;
    t.mode = TrustMode::kCa;
    std::string ca_path = dir_.file("ca.pem");
    macula::test::write_file(ca_path, ca.cert_pem());
    t.cacertfile = ca_path;
    issuer.issue(stem, {"127.0.0.1"}, {})->write(dir_, stem, t.keyfile, t.certfile);
    return t;
  };
  TlsConfig t1 = tls(ca, "r1"), t2 = tls(ca, "r2"), t3 = tls(other, "r3");
  Relay& r1 = open_relay("r1", kSecret, &t1);
  Relay& r2 = open_relay("r2", kSecret, &t2);
  Relay& r3 = open_relay("r3", kSecret, &t3);
  link(r1, {&r2, &r3});
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 0) && linked(r2, 1, 0); }));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(r3.server->metrics().peers, 0u);
  EXPECT_EQ(r1.server->metrics().peers, 1u);
}

TEST_F(RelayMeshTest, ANodeCannotSpeakForARelay) {
  Relay& r1 = open_relay("r1");
  auto raw = std::make_shared<RawNode>();
  raw->handle = client_endpoint().dial(r1.addr, "127.0.0.1", [&](uint64_t) { return raw; });
  ASSERT_TRUE(raw->wait_connected());
  Identify id{1, kProtocolVersion, "eve@e",
              make_realm_proof(raw->handle->exporter(), kClientRole, "eve@e", kSecret)};
  raw->handle->send(Channel::kControl, encode_frame(id), 1);
  auto reply = raw->wait_message();
  ASSERT_TRUE(reply && std::holds_alternative<Identified>(*reply));
  // An identified node may not claim to be a relay, nor send relay messages.
  raw->handle->send(Channel::kControl, encode_frame(NodeUp{"bob@b"}), 1);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadFrame));
  EXPECT_EQ(info->text, "bad_frame: unexpected node_up");
  EXPECT_EQ(r1.server->metrics().remote_nodes, 0u);
}

TEST_F(RelayMeshTest, ASecondLinkRetiresTheFirstWithoutCuttingItsTunnels) {
  Relay& r1 = open_relay("r1");
  // Relay "r0" is played by raw connections that identify as it.
  auto raw_link = [&] {
    auto raw = std::make_shared<RawNode>();
    raw->handle = client_endpoint().dial(r1.addr, "127.0.0.1", [&](uint64_t) { return raw; });
    EXPECT_TRUE(raw->wait_connected());
    raw->handle->send(Channel::kControl,
                      encode_frame(PeerIdentify{1, kProtocolVersion, "r0",
                                                make_realm_proof(raw->handle->exporter(),
                                                                 kPeerClientRole, "r0", kSecret)}),
                      1);
    auto reply = raw->wait_message();
    EXPECT_TRUE(reply && std::holds_alternative<PeerIdentified>(*reply));
    return raw;
  };
  // The next message other than node_up.
  auto next = [](RawNode& raw) {
    std::optional<Message> m;
    do m = raw.wait_message();
    while (m && std::holds_alternative<NodeUp>(*m));
    return m;
  };
  auto first = raw_link();
  first->handle->send(Channel::kControl, encode_frame(NodeUp{"zed@z"}), 1);
  Node alice = identified_at(r1.addr, "alice@a");
  ASSERT_TRUE(eventually([&] { return linked(r1, 1, 1); }));
  uint64_t req = alice.client->request_tunnel("zed@z");
  auto open = next(*first);
  ASSERT_TRUE(open && std::holds_alternative<PeerTunnel>(*open));
  uint32_t t = std::get<PeerTunnel>(*open).tunnel;
  first->handle->send(Channel::kControl, encode_frame(PeerTunnelOk{t, 77}), 1);
  auto ok = alice.events->wait_reply(req);
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->tunnel, t);

  // "r0" links again (it restarted its side, say): the new link is used,
  // the first one keeps its tunnel until it ends.
  auto second = raw_link();
  std::this_thread::sleep_for(200ms);
  EXPECT_FALSE(first->wait_closed(10ms));
  EXPECT_EQ(r1.server->metrics().peers, 1u);
  EXPECT_EQ(r1.server->metrics().remote_nodes, 1u);
  std::vector<uint8_t> hello = {'h', 'i'};
  first->handle->send(Channel::kData, encode_tunnel_frame(t, hello), 1);
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return r.packets_.size() == 1; }));
  uint64_t req2 = alice.client->request_tunnel("zed@z");
  auto open2 = next(*second);
  ASSERT_TRUE(open2 && std::holds_alternative<PeerTunnel>(*open2));
  second->handle->send(Channel::kControl,
                       encode_frame(PeerTunnelError{std::get<PeerTunnel>(*open2).tunnel,
                                                    reason::kTargetTunnelLimit, "zed@z"}),
                       1);
  auto refused = alice.events->wait_reply(req2);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->reason, reason::kTargetTunnelLimit);

  // Its last tunnel closed, the retired link goes.
  alice.client->close_tunnel(t, "done");
  auto info = first->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->text, reason::kDuplicateLink);
  EXPECT_FALSE(second->wait_closed(100ms));
  EXPECT_EQ(r1.server->metrics().remote_nodes, 1u);
}

}  // namespace
}  // namespace macula::relay::test

