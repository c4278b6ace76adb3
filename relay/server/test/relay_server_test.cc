// The relay in this process on 127.0.0.1, with nodes that are real QUIC
// clients (relay_test_fixture.h).
#include "relay_test_fixture.h"

namespace macula::relay::test {
namespace {

TEST_F(RelayServerTest, NodesIdentifyAndTheRelayProvesItself) {
  start_relay();
  Node alice = identified_node("alice@host");
  EXPECT_EQ(alice.events->relay_, "relay-test");
  EXPECT_EQ(alice.events->max_tunnels_, config_.max_tunnels_per_node);
  EXPECT_EQ(alice.events->max_packet_, kMaxPacketSize);
  EXPECT_TRUE(alice.client->identified());
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.nodes, 1u);
  EXPECT_EQ(m.connections, 1u);
}

TEST_F(RelayServerTest, WrongRealmSecretIsRefusedWithBadProof) {
  start_relay();
  Node mallory = node("alice@host", "guessed-secret");
  auto info = mallory.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadProof));
  EXPECT_EQ(info->text, "bad_proof");
  EXPECT_TRUE(mallory.events->relay_.empty());
  EXPECT_EQ(server_->metrics().rejections["bad_proof"], 1u);
  // The name stayed free: the real alice gets it.
  Node alice = identified_node("alice@host");
  EXPECT_EQ(server_->metrics().nodes, 1u);
}

// Anyone can connect and fail the proof: the relay logs the first few of
// each 10 s in full, counts every one, and sums up the rest in one line.
TEST_F(RelayServerTest, RefusalsBeforeIdentifyAreRateLimitedAndCounted) {
  start_relay();
  constexpr int kAttempts = 40;
  for (int i = 0; i < kAttempts; ++i) {
    Node mallory = node("m" + std::to_string(i) + "@host", "guessed-secret");
    ASSERT_TRUE(mallory.events->wait_closed()) << i;
  }
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.unidentified_events["bad_proof"], uint64_t(kAttempts));
  EXPECT_EQ(m.unidentified_events["accepted"], uint64_t(kAttempts));
  EXPECT_EQ(m.rejections["bad_proof"], uint64_t(kAttempts));
  // Each attempt used to log three lines. The attempts may span two
  // intervals: at most two bursts, then summaries.
  size_t full = log_lines("event=connection_accepted") + log_lines("event=connection_refused") +
                log_lines("event=identify_refused");
  EXPECT_GE(full, 1u);
  EXPECT_LE(full, 2 * LogLimit::kBurst);
  server_->tick(now_ns() / 1000000 + LogLimit::kIntervalMs);
  EXPECT_EQ(log_lines("event=unidentified_summary"), 1u);
  // A node with the secret is logged as always.
  Node alice = identified_node("alice@host");
  EXPECT_EQ(log_lines("event=node_identified"), 1u);
}

TEST_F(RelayServerTest, ProofForAnotherNameIsRefused) {
  start_relay();
  auto raw = raw_node();
  Identify id{1, kProtocolVersion, "bob@host",
              make_realm_proof(raw->handle->exporter(), kClientRole, "alice@host", kSecret)};
  raw->handle->send(Channel::kControl, encode_frame(id), 1);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadProof));
}

TEST_F(RelayServerTest, NodeRefusesARelayThatCannotProveTheRealm) {
  std::shared_ptr<FakeRelay> fake;
  auto ep = open_fake_relay(fake, relay_addr_);
  ASSERT_TRUE(ep);
  Node alice = node("alice@host");
  auto info = alice.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, CloseInfo::Kind::kLocal);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kRelayProof));
  EXPECT_FALSE(alice.client->identified());
  EXPECT_TRUE(alice.events->relay_.empty());
  endpoints_.clear();
  fake->shared_from_this_.reset();
}

TEST_F(RelayServerTest, ALiveNameCannotBeTakenOver) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  Node impostor = node("alice@host");
  // alice answers the relay's probe; the claim is settled once its time
  // is up (the daemon ticks every second).
  ASSERT_TRUE(eventually([&] { return server_->metrics().connections == 3; }));
  std::this_thread::sleep_for(300ms);
  server_->tick(now_ns() / 1000000 + config_.name_probe_ms);
  auto info = impostor.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kNameTaken));
  EXPECT_EQ(info->text, "name_taken");
  EXPECT_EQ(server_->metrics().rejections["name_taken"], 1u);
  // The first alice still owns the name: bob's tunnel reaches her.
  uint32_t t = open_tunnel(bob, alice, "alice@host");
  const uint8_t hello[] = {'h', 'i'};
  bob.client->send_packet(t, hello);
  EXPECT_TRUE(alice.events->wait([](Recorder& r) { return r.packets_.size() == 1; }));
}

// alice's VM stopped without closing (here: her I/O thread is stuck, so
// she acknowledges nothing): a node proving her name gets it once she
// fails to answer the probe, without waiting for the idle timeout.
TEST_F(RelayServerTest, ASilentHoldersNameGoesToANewClaimant) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(bob, alice, "alice@host");
  alice.events->stall(true);
  const uint8_t one[] = {1};
  bob.client->send_packet(t, one);
  std::this_thread::sleep_for(200ms);
  Node again = node("alice@host");
  ASSERT_TRUE(eventually([&] { return server_->metrics().connections == 3; }));
  std::this_thread::sleep_for(300ms);
  server_->tick(now_ns() / 1000000 + config_.name_probe_ms);
  ASSERT_TRUE(again.events->wait_identified());
  EXPECT_EQ(server_->metrics().rejections["replaced"], 1u);
  EXPECT_EQ(server_->metrics().nodes, 2u);
  // The old alice's tunnel went with her.
  EXPECT_TRUE(bob.events->wait([&](Recorder& r) { return r.closed_tunnels_.size() == 1; }));
  alice.events->stall(false);
}

TEST_F(RelayServerTest, ConnectionsFromOneAddressAreBounded) {
  config_.max_connections_per_ip = 2;
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  Node carol = node("carol@host");
  auto info = carol.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kTooManyConnections));
  EXPECT_EQ(info->text, "too_many_connections");
  EXPECT_EQ(server_->metrics().rejections["too_many_connections"], 1u);
  // A place frees up when a node leaves.
  bob.client->close();
  ASSERT_TRUE(eventually([&] { return server_->metrics().connections == 1; }));
  Node carol2 = identified_node("carol@host");
}

TEST_F(RelayServerTest, NameIsFreedWhenItsOwnerLeaves) {
  start_relay();
  Node alice = identified_node("alice@host");
  alice.client->close();
  ASSERT_TRUE(alice.events->wait_closed());
  ASSERT_TRUE(eventually([&] { return server_->metrics().nodes == 0; }));
  Node again = identified_node("alice@host");
  EXPECT_EQ(server_->metrics().nodes, 1u);
}

// Keep-alive holds an idle node; a node that vanished without a word
// (here: its I/O thread frozen) is dropped by the idle timeout, and its
// name becomes free again.
TEST_F(RelayServerTest, IdleNodesStayVanishedNodesLoseTheirNames) {
  config_.idle_timeout_ms = 1000;
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  bob.events->stall(true);
  const uint8_t one[] = {1};
  alice.client->send_packet(t, one);
  ASSERT_TRUE(eventually([&] { return server_->metrics().nodes == 1; }, 5s));
  std::this_thread::sleep_for(1500ms);  // alice idle for longer than the timeout
  EXPECT_FALSE(alice.events->close_.has_value());
  EXPECT_EQ(server_->metrics().nodes, 1u);
  Node bob2 = identified_node("bob@host");
  EXPECT_EQ(server_->metrics().nodes, 2u);
  EXPECT_TRUE(alice.events->wait([&](Recorder& r) { return r.closed_tunnels_.size() == 1; }));
  EXPECT_EQ(alice.events->closed_tunnels_[0].second, "peer_gone");
}

TEST_F(RelayServerTest, TunnelRequestsToUnknownOrSelfAreRefused) {
  start_relay();
  Node alice = identified_node("alice@host");
  uint64_t r1 = alice.client->request_tunnel("nobody@host");
  uint64_t r2 = alice.client->request_tunnel("alice@host");
  auto a1 = alice.events->wait_reply(r1), a2 = alice.events->wait_reply(r2);
  ASSERT_TRUE(a1 && a2);
  EXPECT_EQ(a1->tunnel, 0u);
  EXPECT_EQ(a1->reason, "unknown_target");
  EXPECT_EQ(a2->reason, "self");
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.rejections["unknown_target"], 1u);
  EXPECT_EQ(m.rejections["self"], 1u);
  EXPECT_EQ(m.tunnels, 0u);
}

TEST_F(RelayServerTest, RequestsMadeBeforeIdentificationWaitForIt) {
  start_relay();
  Node bob = identified_node("bob@host");
  Node alice = node("alice@host");
  uint64_t req = alice.client->request_tunnel("bob@host");  // not yet identified
  auto reply = alice.events->wait_reply(req);
  ASSERT_TRUE(reply);
  EXPECT_NE(reply->tunnel, 0u) << reply->reason;
}

TEST_F(RelayServerTest, RepliesCarryTheirRequestIds) {
  start_relay();
  Node bob = identified_node("bob@host");
  Node alice = identified_node("alice@host");
  std::vector<uint64_t> ids;
  for (int i = 0; i < 10; ++i)
    ids.push_back(alice.client->request_tunnel(i % 2 ? "bob@host" : "ghost@host"));
  for (int i = 0; i < 10; ++i) {
    auto r = alice.events->wait_reply(ids[i]);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->tunnel != 0, i % 2 == 1) << i;
  }
}

TEST_F(RelayServerTest, NotIdentifiedAndSecondIdentifyAreRefused) {
  start_relay();
  auto raw = raw_node();
  raw->handle->send(Channel::kControl, encode_frame(TunnelRequest{41, "bob@host"}), 1);
  auto m = raw->wait_message();
  ASSERT_TRUE(m && std::holds_alternative<TunnelError>(*m));
  EXPECT_EQ(std::get<TunnelError>(*m).id, 41u);
  EXPECT_EQ(std::get<TunnelError>(*m).reason, "not_identified");

  Identify id{42, kProtocolVersion, "raw@host",
              make_realm_proof(raw->handle->exporter(), kClientRole, "raw@host", kSecret)};
  raw->handle->send(Channel::kControl, encode_frame(id), 1);
  m = raw->wait_message();
  ASSERT_TRUE(m && std::holds_alternative<Identified>(*m));
  EXPECT_EQ(std::get<Identified>(*m).id, 42u);
  id.id = 43;
  raw->handle->send(Channel::kControl, encode_frame(id), 1);
  m = raw->wait_message();
  ASSERT_TRUE(m && std::holds_alternative<RequestError>(*m));
  EXPECT_EQ(std::get<RequestError>(*m).id, 43u);
  EXPECT_EQ(std::get<RequestError>(*m).reason, "already_identified");
}

// Nodes ask who is online: every identified node, once, in name order,
// page by page; a connection that has not identified learns nothing.
TEST_F(RelayServerTest, IdentifiedNodesListTheOnlineNodesPageByPage) {
  start_relay();
  auto raw = raw_node();
  raw->handle->send(Channel::kControl, encode_frame(ListNodes{9, ""}), 1);
  auto m = raw->wait_message();
  ASSERT_TRUE(m && std::holds_alternative<RequestError>(*m));
  EXPECT_EQ(std::get<RequestError>(*m).id, 9u);
  EXPECT_EQ(std::get<RequestError>(*m).reason, "not_identified");

  std::vector<Node> nodes;
  std::vector<std::string> names;
  for (int i = 0; i < 25; ++i) {
    names.push_back("n" + std::to_string(100 + i) + "@host");
    nodes.push_back(identified_node(names.back()));
  }
  std::vector<NodeEntry> all = nodes[3].events->list_all(*nodes[3].client);
  ASSERT_EQ(all.size(), names.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(all[i].node, names[i]);  // created in name order
    EXPECT_EQ(all[i].relay, "relay-test");
  }
  EXPECT_GE(nodes[3].events->pages_.size(), 3u);  // 11 per page at most

  // A node that leaves is no longer listed.
  nodes[0].client->close();
  ASSERT_TRUE(eventually([&] { return server_->metrics().nodes == 24; }));
  all = nodes[5].events->list_all(*nodes[5].client);
  ASSERT_EQ(all.size(), 24u);
  EXPECT_EQ(all.front().node, names[1]);
}

TEST_F(RelayServerTest, PacketsAreForwardedBothWaysByteExact) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  ASSERT_NE(t, 0u);
  EXPECT_EQ(bob.events->incoming_.front().second, "alice@host");
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> to_bob, to_alice;
  const size_t sizes[] = {1, 2, 1200, 1452, 8192, kMaxPacketSize};
  for (int i = 0; i < 60; ++i) {
    to_bob.push_back(random_packet(rng, sizes[i % 6]));
    to_alice.push_back(random_packet(rng, sizes[(i + 3) % 6]));
    alice.client->send_packet(t, to_bob.back());
    bob.client->send_packet(t, to_alice.back());
  }
  ASSERT_TRUE(bob.events->wait([&](Recorder& r) { return r.packets_.size() == to_bob.size(); }));
  ASSERT_TRUE(alice.events->wait([&](Recorder& r) { return r.packets_.size() == to_alice.size(); }));
  for (size_t i = 0; i < to_bob.size(); ++i) {
    EXPECT_EQ(bob.events->packets_[i].first, t);
    EXPECT_EQ(bob.events->packets_[i].second, to_bob[i]) << i;
    EXPECT_EQ(alice.events->packets_[i].second, to_alice[i]) << i;
  }
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.packets_forwarded, 120u);
  uint64_t bytes = 0;
  for (auto& p : to_bob) bytes += p.size();
  for (auto& p : to_alice) bytes += p.size();
  EXPECT_EQ(m.bytes_forwarded, bytes);
  EXPECT_EQ(m.tunnels, 1u);
}

TEST_F(RelayServerTest, TunnelCloseIsPropagatedAndLaterPacketsDropped) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  alice.client->close_tunnel(t, "done");
  ASSERT_TRUE(bob.events->wait([](Recorder& r) { return !r.closed_tunnels_.empty(); }));
  EXPECT_EQ(bob.events->closed_tunnels_[0].first, t);
  EXPECT_EQ(bob.events->closed_tunnels_[0].second, "closed");
  EXPECT_EQ(server_->metrics().tunnels, 0u);
  const uint8_t late[] = {1, 2, 3};
  bob.client->send_packet(t, late);
  ASSERT_TRUE(eventually([&] { return server_->metrics().drops["unknown_tunnel"] == 1; }));
  EXPECT_TRUE(alice.events->packets_.empty());
  // The closer is not told its own close back.
  EXPECT_TRUE(alice.events->closed_tunnels_.empty());
}

TEST_F(RelayServerTest, ADisconnectingNodeClosesItsTunnels) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t1 = open_tunnel(alice, bob, "bob@host");
  uint32_t t2 = open_tunnel(bob, alice, "alice@host");
  bob.client->close();
  ASSERT_TRUE(alice.events->wait([](Recorder& r) { return r.closed_tunnels_.size() == 2; }));
  std::set<uint32_t> closed;
  for (auto& [t, why] : alice.events->closed_tunnels_) {
    closed.insert(t);
    EXPECT_EQ(why, "peer_gone");
  }
  EXPECT_EQ(closed, (std::set<uint32_t>{t1, t2}));
  EXPECT_EQ(server_->metrics().tunnels, 0u);
}

TEST_F(RelayServerTest, TunnelLimitsApplyToBothEnds) {
  config_.max_tunnels_per_node = 2;
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  Node carol = identified_node("carol@host");
  open_tunnel(alice, bob, "bob@host");
  open_tunnel(alice, bob, "bob@host");
  auto r = alice.events->wait_reply(alice.client->request_tunnel("bob@host"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->reason, "tunnel_limit");
  r = carol.events->wait_reply(carol.client->request_tunnel("bob@host"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->reason, "target_tunnel_limit");
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.rejections["tunnel_limit"], 1u);
  EXPECT_EQ(m.rejections["target_tunnel_limit"], 1u);
  EXPECT_EQ(m.tunnels, 2u);
}

TEST_F(RelayServerTest, BytesInFlightToASlowNodeAreBoundedByDrops) {
  config_.max_bytes_in_flight_per_node = 256u << 10;
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  // Bob's I/O thread blocks on its first packet, so he acknowledges
  // nothing more while alice sends 8 MB.
  bob.events->stall(true);
  std::mt19937 rng(3);
  const int kPackets = 200;
  std::vector<std::vector<uint8_t>> sent;
  for (int i = 0; i < kPackets; ++i) {
    sent.push_back(random_packet(rng, 40000));
    alice.client->send_packet(t, sent.back());
  }
  ASSERT_TRUE(eventually([&] {
    RelayMetrics m = server_->metrics();
    return m.drops["congested"] + m.packets_forwarded == uint64_t(kPackets);
  }, 30s));
  RelayMetrics m = server_->metrics();
  EXPECT_GT(m.drops["congested"], 0u);
  // Never more than the limit (plus one packet) was admitted while bob
  // was stalled: at most limit/packet + a few packets got through.
  EXPECT_LE(m.packets_forwarded, (256u << 10) / 40000 + 2);
  bob.events->stall(false);
  ASSERT_TRUE(bob.events->wait(
      [&](Recorder& r) { return r.packets_.size() == m.packets_forwarded; }));
  // What got through is intact and in order (a subsequence of what was sent).
  size_t j = 0;
  for (auto& [tunnel, p] : bob.events->packets_) {
    while (j < sent.size() && sent[j] != p) ++j;
    ASSERT_LT(j, sent.size()) << "a forwarded packet was altered";
    ++j;
  }
}

// A node that stops reading cannot make the relay hoard the control
// messages others cause it to be sent.
TEST_F(RelayServerTest, ANodeThatStopsReadingIsClosedForBacklog) {
  config_.max_bytes_in_flight_per_node = kMaxDataFrame + kFrameHeaderSize;
  config_.max_control_backlog = 64u << 10;
  config_.control_rate = config_.control_burst = 100000;
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  bob.events->stall(true);  // from his first packet on, bob acknowledges nothing
  const uint8_t one[] = {1};
  alice.client->send_packet(t, one);
  ASSERT_TRUE(eventually([&] { return server_->metrics().packets_forwarded == 1; }));
  // Each open/close cycle queues a tunnel_notify and a tunnel_close for
  // bob (~90 bytes): 2000 cycles are more than the bound (64 KB of data
  // allowance + 64 KB of backlog).
  int cycles = 0;
  for (; cycles < 2000 && server_->metrics().rejections["backlog"] == 0; ++cycles) {
    auto r = alice.events->wait_reply(alice.client->request_tunnel("bob@host"));
    ASSERT_TRUE(r);
    if (r->tunnel == 0) break;  // bob is gone
    alice.client->close_tunnel(r->tunnel, "done");
  }
  ASSERT_TRUE(eventually([&] { return server_->metrics().rejections["backlog"] == 1; }))
      << cycles << " cycles";
  EXPECT_GT(cycles, 500);  // not before the bound
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.nodes, 1u);  // alice stays
  EXPECT_EQ(alice.events->wait_reply(alice.client->request_tunnel("bob@host"))->reason,
            "unknown_target");
  bob.events->stall(false);
  auto info = bob.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBacklog));
}

TEST_F(RelayServerTest, GarbageOnTheControlChannelDisconnectsWithAReason) {
  start_relay();
  auto raw = raw_node();
  const uint8_t junk[] = {0xff, 0x00, 0x13, 0x37};
  send_raw(*raw->handle, Channel::kControl, junk);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadFrame));
  EXPECT_EQ(info->text, "bad_frame: bad_cbor: unsupported_type");
  EXPECT_EQ(server_->metrics().bad_frames["control"], 1u);
  EXPECT_TRUE(eventually([&] { return server_->metrics().connections == 0; }));
}

TEST_F(RelayServerTest, RelayOnlyMessagesFromANodeAreBadFrames) {
  start_relay();
  auto raw = raw_identified("raw@host");
  raw->handle->send(Channel::kControl, encode_frame(TunnelNotify{5, "x@y"}), 1);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadFrame));
  EXPECT_EQ(info->text, "bad_frame: unexpected tunnel_notify");
}

TEST_F(RelayServerTest, OversizedControlFrameEndsTheConnection) {
  start_relay();
  auto raw = raw_node();
  std::vector<uint8_t> big(kMaxMessageSize + 1, 0xa0);
  send_raw(*raw->handle, Channel::kControl, big);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, CloseInfo::Kind::kProtocol);
  EXPECT_TRUE(eventually([&] { return server_->metrics().bad_frames["transport"] == 1; }));
}

TEST_F(RelayServerTest, ShortDataFramesDisconnectUnknownTunnelsAreDropped) {
  start_relay();
  auto raw = raw_identified("raw@host");
  Bytes stray = encode_tunnel_frame(12345, std::vector<uint8_t>{1, 2, 3});
  raw->handle->send(Channel::kData, std::move(stray), 1);
  ASSERT_TRUE(eventually([&] { return server_->metrics().drops["unknown_tunnel"] == 1; }));
  const uint8_t short_frame[] = {0, 0, 0};
  send_raw(*raw->handle, Channel::kData, short_frame);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kBadFrame));
  EXPECT_EQ(server_->metrics().bad_frames["data"], 1u);
}

TEST_F(RelayServerTest, PacketsOnSomeoneElsesTunnelAreDropped) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  uint32_t t = open_tunnel(alice, bob, "bob@host");
  auto raw = raw_identified("mallory@host");
  raw->handle->send(Channel::kData, encode_tunnel_frame(t, std::vector<uint8_t>{6, 6, 6}), 1);
  ASSERT_TRUE(eventually([&] { return server_->metrics().drops["unknown_tunnel"] == 1; }));
  EXPECT_TRUE(bob.events->packets_.empty());
  EXPECT_TRUE(alice.events->packets_.empty());
}

TEST_F(RelayServerTest, NodesThatDoNotIdentifyAreClosedAfterTheTimeout) {
  config_.identify_timeout_ms = 50;
  start_relay();
  auto raw = raw_node();
  Node alice = identified_node("alice@host");
  ASSERT_TRUE(eventually([&] { return server_->metrics().connections == 2; }));
  std::this_thread::sleep_for(60ms);
  server_->tick(now_ns() / 1000000);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kIdentifyTimeout));
  EXPECT_FALSE(alice.events->close_.has_value());
  EXPECT_EQ(server_->metrics().nodes, 1u);
}

// Connections without the secret have their own small bound: past it, a
// newcomer (through a Retry) takes the place of the oldest of them, so
// strangers from the nodes' own address cannot keep a node out.
TEST_F(RelayServerTest, UnidentifiedConnectionsCannotLockOutANode) {
  config_.max_unidentified_per_ip = 4;
  start_relay();
  std::vector<std::shared_ptr<RawNode>> strangers;
  for (int i = 0; i < 8; ++i) strangers.push_back(raw_node());
  Node alice = identified_node("alice@host");
  EXPECT_EQ(server_->metrics().nodes, 1u);
  ASSERT_TRUE(eventually([&] { return relay_->stats().admission.half_open <= 4; }));
  EXPECT_GE(relay_->stats().admission.evicted, 4u);
  // The oldest strangers were closed, the identified node was not.
  ASSERT_TRUE(strangers[0]->wait_closed());
  EXPECT_FALSE(alice.events->close_.has_value());
}

TEST_F(RelayServerTest, ControlFloodDisconnects) {
  config_.control_rate = 1;
  config_.control_burst = 5;
  start_relay();
  auto raw = raw_identified("raw@host");  // one token spent
  for (uint64_t i = 0; i < 10; ++i)
    raw->handle->send(Channel::kControl, encode_frame(TunnelRequest{100 + i, "x@y"}), 1);
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kFlood));
  EXPECT_EQ(server_->metrics().rejections["control_flood"], 1u);
}

TEST_F(RelayServerTest, WrongAlpnIsRefusedByTls) {
  start_relay();
  auto raw = std::make_shared<RawNode>();
  raw->handle = client_endpoint("macula-dist").dial(relay_addr_, "127.0.0.1",
                                                    [&](uint64_t) { return raw; });
  auto info = raw->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->kind, CloseInfo::Kind::kTlsAlert);
  EXPECT_EQ(server_->metrics().connections_total, 0u);
}

TEST_F(RelayServerTest, ShutdownClosesEveryNodeWithAReason) {
  start_relay();
  Node alice = identified_node("alice@host");
  Node bob = identified_node("bob@host");
  server_->shutdown();
  for (Node* n : {&alice, &bob}) {
    auto info = n->events->wait_closed();
    ASSERT_TRUE(info);
    EXPECT_EQ(info->code, uint64_t(CloseCode::kShutdown));
    EXPECT_EQ(info->text, "relay_shutdown");
  }
  Node late = node("carol@host");
  auto info = late.events->wait_closed();
  ASSERT_TRUE(info);
  EXPECT_EQ(info->code, uint64_t(CloseCode::kShutdown));
}

// Many misbehaving connections in a row leave no state behind.
TEST_F(RelayServerTest, GarbageLeavesNoStateBehind) {
  start_relay();
  std::mt19937 rng(11);
  for (int i = 0; i < 20; ++i) {
    // Control: any junk. Data: frames too short to hold a tunnel id
    // (longer ones are packets for unknown tunnels, dropped quietly);
    // only an identified node has data streams to send them on.
    bool control = i % 2;
    auto raw = control ? raw_node() : raw_identified("n" + std::to_string(i) + "@host");
    std::vector<uint8_t> junk = random_packet(rng, 1 + rng() % (control ? 200 : 4));
    send_raw(*raw->handle, control ? Channel::kControl : Channel::kData, junk);
    ASSERT_TRUE(raw->wait_closed()) << i;
  }
  EXPECT_TRUE(eventually([&] { return server_->metrics().connections == 0; }));
  RelayMetrics m = server_->metrics();
  EXPECT_EQ(m.nodes, 0u);
  EXPECT_EQ(m.tunnels, 0u);
  EXPECT_EQ(m.bad_frames["control"] + m.bad_frames["data"] + m.bad_frames["transport"], 20u);
}

}  // namespace
}  // namespace macula::relay::test
