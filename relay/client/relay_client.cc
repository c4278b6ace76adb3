#include "relay_client.h"

namespace macula::relay {

// Connection events to the client; weak, because the endpoint may deliver
// a last event after the user dropped the client.
class RelayClient::Bridge : public ConnectionEvents {
 public:
  explicit Bridge(std::weak_ptr<RelayClient> client) : client_(std::move(client)) {}

  void connected() override {
    if (auto c = client_.lock()) c->on_connected();
  }
  void control_frame(Bytes frame) override {
    if (auto c = client_.lock()) c->on_control(std::move(frame));
  }
  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override {
    if (auto c = client_.lock()) c->on_data(frames, credit);
  }
  void writable() override {}
  void closed(const CloseInfo& info) override {
    if (auto c = client_.lock()) c->events_->closed(info);
  }

 private:
  std::weak_ptr<RelayClient> client_;
};

EndpointConfig relay_client_endpoint_config(EndpointConfig base) {
  base.accept = false;
  base.tls.alpn = kAlpn;
  base.max_control_frame = kMaxMessageSize;
  base.max_control_frames = 0;
  base.max_data_frame = kMaxDataFrame;
  base.keep_alive_ms = kKeepAliveMs;
  return base;
}

std::shared_ptr<RelayClient> RelayClient::connect(
    Endpoint& endpoint, const RelayClientConfig& config,
    std::shared_ptr<RelayClientEvents> events) {
  std::shared_ptr<RelayClient> c(new RelayClient(config, std::move(events)));
  std::weak_ptr<RelayClient> weak = c;
  // Held so that on_connected() (I/O thread) sees handle_ assigned.
  std::lock_guard lock(c->mu_);
  c->handle_ = endpoint.dial(config.relay, config.relay_host, [&](uint64_t) {
    return std::make_shared<Bridge>(weak);
  });
  return c;
}

uint64_t RelayClient::request_tunnel(const std::string& target) {
  return request(TunnelRequest{0, target});
}

uint64_t RelayClient::list_nodes(const std::string& after) {
  return request(ListNodes{0, after});
}

// Gives `m` the next request id, and sends it or holds it until identified.
uint64_t RelayClient::request(Message m) {
  std::lock_guard lock(mu_);
  uint64_t id = next_id_++;
  std::visit([id](auto& x) {
    if constexpr (requires { x.id; }) x.id = id;
  }, m);
  if (identified_) handle_->send(Channel::kControl, encode_frame(m), 1);
  else held_.push_back(std::move(m));
  return id;
}

SendStatus RelayClient::send_packet(uint32_t tunnel, std::span<const uint8_t> packet) {
  return handle_->send(Channel::kData, encode_tunnel_frame(tunnel, packet), 1);
}

SendStatus RelayClient::send_packets(uint32_t tunnel,
                                     std::span<const std::span<const uint8_t>> packets) {
  if (packets.empty()) return SendStatus::kOk;
  return handle_->send(Channel::kData, encode_tunnel_frames(tunnel, packets),
                       uint32_t(packets.size()));
}

void RelayClient::close_tunnel(uint32_t tunnel, const std::string& reason) {
  handle_->send(Channel::kControl, encode_frame(TunnelClose{tunnel, reason}), 1);
}

void RelayClient::close() { handle_->close(uint64_t(CloseCode::kNormal), "closed"); }

bool RelayClient::identified() const {
  std::lock_guard lock(mu_);
  return identified_;
}

void RelayClient::on_connected() {
  std::lock_guard lock(mu_);
  identify_id_ = next_id_++;
  Identify m{identify_id_, kProtocolVersion, config_.node_name,
             make_realm_proof(handle_->exporter(), kClientRole, config_.node_name,
                              config_.realm_secret)};
  handle_->send(Channel::kControl, encode_frame(m), 1);
}

// The relay must prove the realm secret too, over this very session:
// otherwise anyone could pose as a relay and learn who talks to whom.
void RelayClient::on_identified(const Identified& m) {
  {
    std::lock_guard lock(mu_);
    Proof expected = make_realm_proof(handle_->exporter(), kServerRole, m.relay,
                                      config_.realm_secret);
    if (m.id != identify_id_ || identified_ || !proof_matches(expected, m.proof)) {
      handle_->close(uint64_t(CloseCode::kRelayProof), "relay proof failed");
      return;
    }
    identified_ = true;
    for (const Message& r : held_) handle_->send(Channel::kControl, encode_frame(r), 1);
    held_.clear();
  }
  events_->identified(m);
}

void RelayClient::fail(CloseCode code, const std::string& why) {
  handle_->close(uint64_t(code), why);
}

void RelayClient::on_control(Bytes frame) {
  ParseResult r = parse({frame.data.get(), frame.size});
  if (!r.ok()) return fail(CloseCode::kBadFrame, "bad_frame: " + r.describe());
  Message& m = r.message;
  if (auto* x = std::get_if<Identified>(&m)) return on_identified(*x);
  if (auto* x = std::get_if<TunnelOk>(&m)) return events_->tunnel_ok(x->id, x->tunnel);
  if (auto* x = std::get_if<TunnelError>(&m)) return events_->tunnel_error(x->id, x->reason);
  if (auto* x = std::get_if<RequestError>(&m)) return events_->request_error(x->id, x->reason);
  if (auto* x = std::get_if<NodeList>(&m)) return events_->node_list(*x);
  if (auto* x = std::get_if<TunnelNotify>(&m))
    return events_->tunnel_incoming(x->tunnel, x->source);
  if (auto* x = std::get_if<TunnelClose>(&m)) return events_->tunnel_closed(x->tunnel, x->reason);
  fail(CloseCode::kBadFrame, std::string("bad_frame: unexpected ") + message_name(m));
}

void RelayClient::on_data(std::vector<Bytes>& frames, uint64_t credit) {
  for (Bytes& f : frames) {
    uint32_t tunnel;
    std::span<const uint8_t> packet;
    // The relay only forwards frames it parsed; anything else is a broken
    // relay, and a packet we cannot attribute is simply dropped.
    if (parse_tunnel_frame({f.data.get(), f.size}, tunnel, packet))
      events_->packet(tunnel, packet);
  }
  handle_->consumed(credit);
}

}  // namespace macula::relay
