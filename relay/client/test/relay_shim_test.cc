// The relay shim against a relay in this process (RelayServer on
// 127.0.0.1): plain UDP sockets stand in for inner endpoints where the
// test looks at single packets, and two real inner endpoints run a QUIC +
// TLS session through the tunnel at the end.
#include "relay_shim.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "framing.h"
#include "relay_server.h"
#include "test_util.h"

namespace macula::relay {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
constexpr auto kWait = 10s;  // generous: the machine is shared
constexpr char kSecret[] = "realm-secret-for-shim-tests";

// Like test::eventually, with this file's default timeout.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = kWait) {
  return test::eventually(pred, timeout);
}

// What a shim reported, for the test thread to wait on.
class ShimRecorder : public RelayShimEvents {
 public:
  struct Tunnel {
    uint64_t request = 0;
    uint32_t tunnel = 0;
    uint16_t port = 0;
    std::string text;  // failure reason or source node
  };

  void identified(const std::string& relay) override { set([&] { relay_ = relay; }); }
  void tunnel_ready(uint64_t request, uint32_t tunnel, uint16_t port) override {
    set([&] { ready_.push_back({request, tunnel, port, ""}); });
  }
  void tunnel_failed(uint64_t request, const std::string& reason) override {
    set([&] { failed_.push_back({request, 0, 0, reason}); });
  }
  void tunnel_incoming(uint32_t tunnel, const std::string& source, uint16_t port) override {
    set([&] { incoming_.push_back({0, tunnel, port, source}); });
  }
  void tunnel_closed(uint32_t tunnel, const std::string& reason) override {
    set([&] { closed_tunnels_.push_back({0, tunnel, 0, reason}); });
  }
  void closed(const CloseInfo& info) override { set([&] { closed_ = info; }); }

  bool wait_identified() { return wait([&] { return !relay_.empty(); }); }
  std::optional<Tunnel> wait_ready() { return take(ready_); }
  std::optional<Tunnel> wait_failed() { return take(failed_); }
  std::optional<Tunnel> wait_incoming() { return take(incoming_); }
  std::optional<Tunnel> wait_tunnel_closed() { return take(closed_tunnels_); }
  std::optional<CloseInfo> wait_closed() {
    if (!wait([&] { return closed_.has_value(); })) return std::nullopt;
    std::lock_guard l(mu_);
    return closed_;
  }

 private:
  template <class F>
  void set(F f) {
    std::lock_guard l(mu_);
    f();
    cv_.notify_all();
  }
  template <class P>
  bool wait(P p) {
    std::unique_lock l(mu_);
    return cv_.wait_for(l, kWait, p);
  }
  std::optional<Tunnel> take(std::deque<Tunnel>& q) {
    std::unique_lock l(mu_);
    if (!cv_.wait_for(l, kWait, [&] { return !q.empty(); })) return std::nullopt;
    Tunnel t = q.front();
    q.pop_front();
    return t;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::string relay_;
  std::deque<Tunnel> ready_, failed_, incoming_, closed_tunnels_;
  std::optional<CloseInfo> closed_;
};

// A UDP socket on 127.0.0.1 standing in for an inner endpoint.
class FakeInner {
 public:
  FakeInner() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    bind(fd_, reinterpret_cast<sockaddr*>(&a), len);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    int size = 4 << 20;
    setsockopt(fd_, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size);
  }
  ~FakeInner() { close(fd_); }

  uint16_t port() const { return port_; }
  Address address() const {
    Address a;
    make_address("127.0.0.1", port_, a);
    return a;
  }
  void send_to(uint16_t port, const std::vector<uint8_t>& data) {
    Address to;
    make_address("127.0.0.1", port, to);
    ASSERT_EQ(sendto(fd_, data.data(), data.size(), 0, to.sa(), to.len), ssize_t(data.size()));
  }
  // The next datagram and the port it came from; nullopt after `timeout`.
  std::optional<std::pair<std::vector<uint8_t>, uint16_t>> receive(
      std::chrono::milliseconds timeout = kWait) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, int(timeout.count())) != 1) return std::nullopt;
    std::vector<uint8_t> buf(65536);
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    if (n < 0) return std::nullopt;
    buf.resize(size_t(n));
    return std::make_pair(std::move(buf), ntohs(from.sin_port));
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

std::vector<uint8_t> pattern(size_t size, uint8_t seed) {
  std::vector<uint8_t> v(size);
  for (size_t i = 0; i < size; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

class RelayShimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RelayServerConfig config;
    config.realm_secret = kSecret;
    config.name = "shim-test-relay";
    server_ = std::make_shared<RelayServer>(config, log_);
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir_.file("relay");
    std::string error;
    relay_ = Endpoint::open(relay_endpoint_config(ec, config), server_, error);
    ASSERT_TRUE(relay_) << error;
    make_address("127.0.0.1", relay_->port(), relay_addr_);
  }

  struct Node {
    std::shared_ptr<ShimRecorder> events = std::make_shared<ShimRecorder>();
    std::unique_ptr<RelayShim> shim;
  };
  Node node(const std::string& name, const Address& inner, const std::string& secret = kSecret) {
    Node n;
    RelayShimConfig c;
    c.client = {name, secret, relay_addr_, "127.0.0.1"};
    c.endpoint.bind_ip = "127.0.0.1";
    c.endpoint.tls.cert_dir = dir_.file("nodes");
    c.inner = inner;
    std::string error;
    n.shim = RelayShim::open(c, n.events, error);
    EXPECT_TRUE(n.shim) << error;
    return n;
  }

  test::TempDir dir_;
  Logger log_{[](const std::string&) {}};
  std::shared_ptr<RelayServer> server_;
  std::unique_ptr<Endpoint> relay_;
  Address relay_addr_;
};

TEST_F(RelayShimTest, PacketsCrossATunnelBothWaysUpToTheMaximumSize) {
  FakeInner inner_a, inner_b;
  Node a = node("a@host", inner_a.address());
  Node b = node("b@host", inner_b.address());
  ASSERT_TRUE(a.events->wait_identified());
  ASSERT_TRUE(b.events->wait_identified());

  uint64_t req = a.shim->request_tunnel("b@host");
  auto ready = a.events->wait_ready();
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->request, req);
  auto in = b.events->wait_incoming();
  ASSERT_TRUE(in);
  EXPECT_EQ(in->text, "a@host");
  EXPECT_EQ(in->tunnel, ready->tunnel);

  // 8 KB is what the inner endpoint sends to loopback peers; 65000 is
  // close to the largest UDP datagram over IPv4.
  for (size_t size : {1u, 1200u, 8192u, 65000u}) {
    auto out = pattern(size, uint8_t(size));
    inner_a.send_to(ready->port, out);
    auto got = inner_b.receive();
    ASSERT_TRUE(got) << size;
    EXPECT_EQ(got->first, out);
    EXPECT_EQ(got->second, in->port);  // b sees a at the tunnel's port

    inner_b.send_to(in->port, out);
    auto back = inner_a.receive();
    ASSERT_TRUE(back) << size;
    EXPECT_EQ(back->first, out);
    EXPECT_EQ(back->second, ready->port);
  }
  // (counted just after the send, so the receiver may be a moment ahead)
  EXPECT_TRUE(eventually([&] { return a.shim->stats().packets_in == 4; }));
  EXPECT_EQ(a.shim->stats().packets_out, 4u);
  EXPECT_EQ(a.shim->stats().tunnels, 1u);
}

TEST_F(RelayShimTest, OnlyTheInnerEndpointMayUseATunnel) {
  FakeInner inner_a, inner_b, stranger;
  Node a = node("a@host", inner_a.address());
  Node b = node("b@host", inner_b.address());
  ASSERT_TRUE(b.events->wait_identified());
  a.shim->request_tunnel("b@host");
  auto ready = a.events->wait_ready();
  ASSERT_TRUE(ready);
  stranger.send_to(ready->port, pattern(100, 1));
  ASSERT_TRUE(eventually([&] { return a.shim->stats().dropped_other == 1; }));
  EXPECT_FALSE(inner_b.receive(200ms));
  EXPECT_EQ(a.shim->stats().packets_out, 0u);
}

TEST_F(RelayShimTest, UnknownTargetFailsTheRequest) {
  FakeInner inner_a;
  Node a = node("a@host", inner_a.address());
  uint64_t req = a.shim->request_tunnel("nobody@host");
  auto failed = a.events->wait_failed();
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->request, req);
  EXPECT_EQ(failed->text, reason::kUnknownTarget);
  EXPECT_EQ(a.shim->stats().tunnels, 0u);
}

TEST_F(RelayShimTest, ClosingATunnelClosesItAtTheOtherEnd) {
  FakeInner inner_a, inner_b;
  Node a = node("a@host", inner_a.address());
  Node b = node("b@host", inner_b.address());
  ASSERT_TRUE(b.events->wait_identified());
  a.shim->request_tunnel("b@host");
  auto ready = a.events->wait_ready();
  ASSERT_TRUE(ready);
  auto in = b.events->wait_incoming();
  ASSERT_TRUE(in);
  a.shim->close_tunnel(ready->tunnel);
  auto closed = b.events->wait_tunnel_closed();
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->tunnel, in->tunnel);
  EXPECT_EQ(closed->text, reason::kClosed);
  EXPECT_EQ(b.shim->stats().tunnels, 0u);
  // b's loopback port is gone: nothing reaches a through it any more.
  inner_b.send_to(in->port, pattern(10, 3));
  EXPECT_FALSE(inner_a.receive(200ms));
}

TEST_F(RelayShimTest, WrongSecretIsRefusedWithBadProof) {
  FakeInner inner;
  Node a = node("a@host", inner.address(), "not-the-realm-secret");
  auto closed = a.events->wait_closed();
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(closed->code, uint64_t(CloseCode::kBadProof));
}

TEST_F(RelayShimTest, ALiveNameIsNotTakenOver) {
  FakeInner inner_a, inner_b;
  Node a = node("a@host", inner_a.address());
  ASSERT_TRUE(a.events->wait_identified());
  Node hijack = node("a@host", inner_b.address());
  // a answers the relay's probe; the claim is settled when its time is up.
  ASSERT_TRUE(test::eventually([&] { return server_->metrics().connections == 2; }, 10s));
  std::this_thread::sleep_for(300ms);
  server_->tick(now_ns() / 1000000 + RelayServerConfig{}.name_probe_ms);
  auto closed = hijack.events->wait_closed();
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->code, uint64_t(CloseCode::kNameTaken));
  // The owner keeps its registration: its requests are still answered.
  a.shim->request_tunnel("nobody@host");
  auto failed = a.events->wait_failed();
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->text, reason::kUnknownTarget);
}

TEST_F(RelayShimTest, RelayGoneClosesTheShimAndItsTunnels) {
  FakeInner inner_a, inner_b;
  Node a = node("a@host", inner_a.address());
  Node b = node("b@host", inner_b.address());
  ASSERT_TRUE(b.events->wait_identified());
  a.shim->request_tunnel("b@host");
  ASSERT_TRUE(a.events->wait_ready());
  server_->shutdown();
  auto closed = a.events->wait_closed();
  ASSERT_TRUE(closed);
  EXPECT_EQ(closed->text, reason::kShutdown);
  EXPECT_EQ(a.shim->stats().tunnels, 0u);
}

// The inner endpoints' own QUIC + TLS session runs through the tunnel:
// a dials 127.0.0.1:<tunnel port>, b accepts a peer at 127.0.0.1:<its
// tunnel port>, and frames cross both ways.
class InnerEvents : public ConnectionEvents, public EndpointEvents {
 public:
  void connected() override { set([&] { connected_ = true; }); }
  void control_frame(Bytes frame) override {
    set([&] { frames_.emplace_back(frame.data.get(), frame.data.get() + frame.size); });
  }
  void data_frames(std::vector<Bytes>&, uint64_t) override {}
  void writable() override {}
  void closed(const CloseInfo&) override {}
  void accepted(std::shared_ptr<ConnectionHandle> h) override {
    set([&] { accepted_ = h; });
  }

  std::mutex mu;
  std::condition_variable cv;
  bool connected_ = false;
  std::shared_ptr<ConnectionHandle> accepted_;
  std::deque<std::string> frames_;

  template <class F>
  void set(F f) {
    std::lock_guard l(mu);
    f();
    cv.notify_all();
  }
  template <class P>
  bool wait(P p) {
    std::unique_lock l(mu);
    return cv.wait_for(l, kWait, p);
  }
};

Bytes control_frame(const std::string& text) {
  Bytes b(kFrameHeaderSize + text.size());
  uint32_t n = uint32_t(text.size());
  uint8_t h[4] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
  std::memcpy(b.data.get(), h, 4);
  std::memcpy(b.data.get() + 4, text.data(), text.size());
  return b;
}

TEST_F(RelayShimTest, InnerQuicSessionRunsThroughTheTunnel) {
  auto ev_a = std::make_shared<InnerEvents>(), ev_b = std::make_shared<InnerEvents>();
  EndpointConfig ec;
  ec.bind_ip = "127.0.0.1";
  ec.tls.cert_dir = dir_.file("inner");
  std::string error;
  auto inner_a = Endpoint::open(ec, ev_a, error);
  auto inner_b = Endpoint::open(ec, ev_b, error);
  ASSERT_TRUE(inner_a && inner_b) << error;
  Node a = node("a@host", inner_a->local_address());
  Node b = node("b@host", inner_b->local_address());
  ASSERT_TRUE(b.events->wait_identified());
  a.shim->request_tunnel("b@host");
  auto ready = a.events->wait_ready();
  ASSERT_TRUE(ready);

  Address to;
  make_address("127.0.0.1", ready->port, to);
  auto h = inner_a->dial(to, "127.0.0.1", [&](uint64_t) { return ev_a; });
  ASSERT_TRUE(ev_a->wait([&] { return ev_a->connected_; }));
  ASSERT_TRUE(ev_b->wait([&] { return ev_b->accepted_ != nullptr; }));
  auto in = b.events->wait_incoming();
  ASSERT_TRUE(in);
  EXPECT_EQ(ev_b->accepted_->remote().port(), in->port);
  ev_b->accepted_->attach(ev_b);
  h->send(Channel::kControl, control_frame("hello b"), 1);
  ev_b->accepted_->send(Channel::kControl, control_frame("hello a"), 1);
  ASSERT_TRUE(ev_b->wait([&] { return !ev_b->frames_.empty(); }));
  ASSERT_TRUE(ev_a->wait([&] { return !ev_a->frames_.empty(); }));
  EXPECT_EQ(ev_b->frames_.front(), "hello b");
  EXPECT_EQ(ev_a->frames_.front(), "hello a");
  // The relay saw the packets, not their content (QUIC encrypts it).
  EXPECT_GT(server_->metrics().packets_forwarded, 4u);
}

}  // namespace
}  // namespace macula::relay
