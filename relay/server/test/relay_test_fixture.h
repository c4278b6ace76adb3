// Shared by the relay tests: a relay in this process on 127.0.0.1, with
// nodes that are real QUIC clients on their own endpoints: RelayClient for
// well-behaved nodes, a raw connection for nodes that misbehave on purpose.
#pragma once

#include "relay_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "relay_client.h"
#include "test_util.h"

namespace macula::relay::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr auto kWait = 10s;  // generous: the machine is shared
constexpr char kSecret[] = "realm-secret-for-tests";

// Like test::eventually, with this file's default timeout.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = kWait) {
  return macula::test::eventually(pred, timeout);
}

inline std::vector<uint8_t> random_packet(std::mt19937& rng, size_t size) {
  std::vector<uint8_t> p(size);
  for (auto& b : p) b = uint8_t(rng());
  return p;
}

// Everything a RelayClient reported, for the test thread to wait on.
class Recorder : public RelayClientEvents {
 public:
  struct Reply {
    uint64_t request;
    uint32_t tunnel;  // 0 on error
    std::string reason;
  };

  void identified(const Identified& relay) override {
    std::lock_guard l(mu_);
    relay_ = relay.relay;
    max_tunnels_ = relay.max_tunnels;
    max_packet_ = relay.max_packet;
    cv_.notify_all();
  }
  void tunnel_ok(uint64_t request, uint32_t tunnel) override {
    std::lock_guard l(mu_);
    replies_.push_back({request, tunnel, ""});
    cv_.notify_all();
  }
  void tunnel_error(uint64_t request, const std::string& reason) override {
    std::lock_guard l(mu_);
    replies_.push_back({request, 0, reason});
    cv_.notify_all();
  }
  void request_error(uint64_t request, const std::string& reason) override {
    std::lock_guard l(mu_);
    errors_.push_back({request, 0, reason});
    cv_.notify_all();
  }
  void node_list(const NodeList& page) override {
    std::lock_guard l(mu_);
    pages_.push_back(page);
    cv_.notify_all();
  }
  void tunnel_incoming(uint32_t tunnel, const std::string& source) override {
    std::lock_guard l(mu_);
    incoming_.emplace_back(tunnel, source);
    cv_.notify_all();
  }
  void tunnel_closed(uint32_t tunnel, const std::string& reason) override {
    std::lock_guard l(mu_);
    closed_tunnels_.emplace_back(tunnel, reason);
    cv_.notify_all();
  }
  void packet(uint32_t tunnel, std::span<const uint8_t> p) override {
    // Holding the I/O thread here stops this node from acknowledging:
    // how the in-flight limit test makes a slow receiver.
    std::unique_lock l(mu_);
    cv_.wait(l, [&] { return !stalled_; });
    packets_.emplace_back(tunnel, std::vector<uint8_t>(p.begin(), p.end()));
    cv_.notify_all();
  }
  void closed(const CloseInfo& info) override {
    std::lock_guard l(mu_);
    close_ = info;
    cv_.notify_all();
  }

  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, timeout, [&] { return pred(*this); });
  }
  bool wait_identified() {
    return wait([](Recorder& r) { return !r.relay_.empty(); });
  }
  std::optional<CloseInfo> wait_closed() {
    wait([](Recorder& r) { return r.close_.has_value(); });
    std::lock_guard l(mu_);
    return close_;
  }
  // The reply to `request`, once it came.
  std::optional<NodeList> wait_page(uint64_t request) {
    std::optional<NodeList> out;
    wait([&](Recorder& r) {
      for (const NodeList& p : r.pages_)
        if (p.id == request) out = p;
      return out.has_value();
    });
    return out;
  }
  // Every page of list_nodes() from the start, as the client pages.
  std::vector<NodeEntry> list_all(RelayClient& client) {
    std::vector<NodeEntry> all;
    for (int i = 0; i < 1000; ++i) {
      auto page = wait_page(client.list_nodes(all.empty() ? "" : all.back().node));
      if (!page) return {};
      all.insert(all.end(), page->nodes.begin(), page->nodes.end());
      if (!page->more) break;
    }
    return all;
  }
  std::optional<Reply> wait_reply(uint64_t request) {
    std::optional<Reply> out;
    wait([&](Recorder& r) {
      for (const Reply& x : r.replies_)
        if (x.request == request) out = x;
      return out.has_value();
    });
    return out;
  }
  void stall(bool on) {
    std::lock_guard l(mu_);
    stalled_ = on;
    cv_.notify_all();
  }

  std::string relay_;
  uint64_t max_tunnels_ = 0, max_packet_ = 0;
  std::vector<Reply> replies_, errors_;
  std::vector<NodeList> pages_;
  std::vector<std::pair<uint32_t, std::string>> incoming_, closed_tunnels_;
  std::vector<std::pair<uint32_t, std::vector<uint8_t>>> packets_;
  std::optional<CloseInfo> close_;
  bool stalled_ = false;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
};

// A connection speaking raw frames, to misbehave in ways RelayClient won't.
class RawNode : public ConnectionEvents {
 public:
  void connected() override {
    std::lock_guard l(mu_);
    connected_ = true;
    cv_.notify_all();
  }
  void control_frame(Bytes f) override {
    std::lock_guard l(mu_);
    control_.push_back(parse({f.data.get(), f.size}));
    cv_.notify_all();
  }
  void data_frames(std::vector<Bytes>&, uint64_t) override {}
  void writable() override {}
  void closed(const CloseInfo& info) override {
    std::lock_guard l(mu_);
    close_ = info;
    cv_.notify_all();
  }
  bool wait_connected() {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, kWait, [&] { return connected_; });
  }
  std::optional<CloseInfo> wait_closed(std::chrono::milliseconds t = kWait) {
    std::unique_lock l(mu_);
    cv_.wait_for(l, t, [&] { return close_.has_value(); });
    return close_;
  }
  std::optional<Message> wait_message() {
    std::unique_lock l(mu_);
    if (!cv_.wait_for(l, kWait, [&] { return !control_.empty(); })) return {};
    ParseResult r = std::move(control_.front());
    control_.pop_front();
    if (!r.ok()) return {};
    return r.message;
  }

  std::shared_ptr<ConnectionHandle> handle;

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  std::deque<ParseResult> control_;
  std::optional<CloseInfo> close_;
};

inline void send_raw(ConnectionHandle& h, Channel ch, std::span<const uint8_t> payload) {
  iovec v{const_cast<uint8_t*>(payload.data()), payload.size()};
  std::span<const iovec> one(&v, 1);
  h.send(ch, encode_frames(std::span<const std::span<const iovec>>(&one, 1)), 1);
}

// A relay that answers identify (from a node) and peer_identify (from a
// relay) without knowing the secret.
class FakeRelay : public EndpointEvents, public ConnectionEvents {
 public:
  void accepted(std::shared_ptr<ConnectionHandle> h) override {
    handle_ = h;
    h->attach(std::shared_ptr<ConnectionEvents>(shared_from_this_, this));
  }
  void connected() override {}
  void control_frame(Bytes f) override {
    ParseResult r = parse({f.data.get(), f.size});
    if (!r.ok()) return;
    if (auto* id = std::get_if<Identify>(&r.message)) {
      Identified reply{id->id, "evil-relay",
                       make_realm_proof(handle_->exporter(), kServerRole, "evil-relay", "wrong")};
      handle_->send(Channel::kControl, encode_frame(reply), 1);
    } else if (auto* peer = std::get_if<PeerIdentify>(&r.message)) {
      PeerIdentified reply{peer->id, "evil-relay",
                           make_realm_proof(handle_->exporter(), kPeerServerRole, "evil-relay",
                                            "wrong")};
      handle_->send(Channel::kControl, encode_frame(reply), 1);
    }
  }
  void data_frames(std::vector<Bytes>&, uint64_t) override {}
  void writable() override {}
  void closed(const CloseInfo&) override {}
  std::shared_ptr<void> shared_from_this_;

 private:
  std::shared_ptr<ConnectionHandle> handle_;
};

class RelayServerTest : public ::testing::Test {
 protected:
  void SetUp() override {}
  // A failed assertion must not leave an I/O thread stalled in a callback:
  // the endpoints could not stop.
  void TearDown() override {
    for (auto& r : recorders_) r->stall(false);
  }

  // Starts the relay; call once per test, after adjusting config_.
  void start_relay() {
    config_.realm_secret = kSecret;
    config_.name = "relay-test";
    ASSERT_EQ(RelayServer::check_config(config_), "");
    server_ = std::make_shared<RelayServer>(config_, log_);
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir_.file("relay");
    std::string error;
    relay_ = Endpoint::open(relay_endpoint_config(ec, config_), server_, error);
    ASSERT_TRUE(relay_) << error;
    make_address("127.0.0.1", relay_->port(), relay_addr_);
  }

  Endpoint& client_endpoint(const std::string& tls_alpn = kAlpn) {
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir_.file("nodes");
    ec = relay_client_endpoint_config(ec);
    ec.tls.alpn = tls_alpn;
    std::string error;
    auto ep = Endpoint::open(ec, nullptr, error);
    EXPECT_TRUE(ep) << error;
    endpoints_.push_back(std::move(ep));
    return *endpoints_.back();
  }

  struct Node {
    std::shared_ptr<Recorder> events = std::make_shared<Recorder>();
    std::shared_ptr<RelayClient> client;
  };
  Node node(const std::string& name, const std::string& secret = kSecret) {
    return node_at(relay_addr_, name, secret);
  }
  Node node_at(const Address& relay, const std::string& name,
               const std::string& secret = kSecret) {
    Node n;
    recorders_.push_back(n.events);
    RelayClientConfig c{name, secret, relay, "127.0.0.1"};
    n.client = RelayClient::connect(client_endpoint(), c, n.events);
    return n;
  }
  Node identified_node(const std::string& name) { return identified_at(relay_addr_, name); }
  Node identified_at(const Address& relay, const std::string& name) {
    Node n = node_at(relay, name);
    EXPECT_TRUE(n.events->wait_identified()) << name;
    return n;
  }

  std::shared_ptr<RawNode> raw_node() {
    auto raw = std::make_shared<RawNode>();
    raw->handle = client_endpoint().dial(relay_addr_, "127.0.0.1",
                                         [&](uint64_t) { return raw; });
    EXPECT_TRUE(raw->wait_connected());
    return raw;
  }
  // A raw node that identified as `name` with a good proof.
  std::shared_ptr<RawNode> raw_identified(const std::string& name) {
    auto raw = raw_node();
    Identify id{1, kProtocolVersion, name,
                make_realm_proof(raw->handle->exporter(), kClientRole, name, kSecret)};
    raw->handle->send(Channel::kControl, encode_frame(id), 1);
    auto reply = raw->wait_message();
    EXPECT_TRUE(reply && std::holds_alternative<Identified>(*reply));
    return raw;
  }

  // A FakeRelay on its own endpoint; `addr` is where it listens. Reset
  // fake->shared_from_this_ once the endpoint is gone.
  std::unique_ptr<Endpoint> open_fake_relay(std::shared_ptr<FakeRelay>& fake, Address& addr) {
    fake = std::make_shared<FakeRelay>();
    fake->shared_from_this_ = fake;
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir_.file("fake");
    std::string error;
    auto ep = Endpoint::open(relay_endpoint_config(ec, RelayServerConfig{}), fake, error);
    EXPECT_TRUE(ep) << error;
    if (ep) make_address("127.0.0.1", ep->port(), addr);
    return ep;
  }

  // Opens a tunnel from `a` to `b` (named `b_name`); returns its id.
  uint32_t open_tunnel(Node& a, Node& b, const std::string& b_name) {
    uint64_t req = a.client->request_tunnel(b_name);
    auto reply = a.events->wait_reply(req);
    EXPECT_TRUE(reply);
    if (!reply) return 0;
    EXPECT_NE(reply->tunnel, 0u) << reply->reason;
    EXPECT_TRUE(b.events->wait([&](Recorder& r) {
      for (auto& [t, src] : r.incoming_)
        if (t == reply->tunnel) return true;
      return false;
    }));
    return reply->tunnel;
  }

  // Lines of the relay's log that contain `text`.
  size_t log_lines(const std::string& text) {
    std::lock_guard l(lines_mu_);
    size_t n = 0;
    for (const auto& line : lines_) n += line.find(text) != std::string::npos;
    return n;
  }

  macula::test::TempDir dir_;
  std::mutex lines_mu_;
  std::vector<std::string> lines_;
  Logger log_{[this](const std::string& line) {
    std::lock_guard l(lines_mu_);
    lines_.push_back(line);
  }};
  RelayServerConfig config_;
  std::shared_ptr<RelayServer> server_;
  std::unique_ptr<Endpoint> relay_;
  Address relay_addr_;
  // Clients are declared after the relay: they go first.
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::vector<std::shared_ptr<Recorder>> recorders_;
};

}  // namespace macula::relay::test
