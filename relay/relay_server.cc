#include "relay_server.h"

#include <gnutls/crypto.h>

#include <algorithm>

namespace macula::relay {

// Routes one connection's events to the server; the server may be gone
// by the time the I/O thread delivers them (weak).
class RelayServer::Session : public ConnectionEvents {
 public:
  Session(std::weak_ptr<RelayServer> server, uint64_t conn)
      : server_(std::move(server)), conn_(conn) {}

  void connected() override {}
  void writable() override {}
  void control_frame(Bytes frame) override {
    if (auto s = server_.lock()) s->on_control(conn_, std::move(frame));
  }
  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override {
    if (auto s = server_.lock()) s->on_data(conn_, frames, credit);
  }
  void closed(const CloseInfo& info) override {
    if (auto s = server_.lock()) s->on_closed(conn_, info);
  }

 private:
  std::weak_ptr<RelayServer> server_;
  uint64_t conn_;
};

namespace {

// Owns a forwarded frame and the length prefix that goes before it, so
// the packet is sent from the buffer it arrived in (no copy).
struct Forwarded {
  uint8_t header[kFrameHeaderSize];
  Bytes frame;
};

OutChunk forward_chunk(Bytes frame) {
  auto f = std::make_shared<Forwarded>();
  size_t n = frame.size;
  for (int i = 0; i < 4; ++i) f->header[i] = uint8_t(n >> (24 - 8 * i));
  f->frame = std::move(frame);
  OutChunk c;
  c.iov = {{f->header, kFrameHeaderSize}, {f->frame.data.get(), n}};
  c.size = kFrameHeaderSize + n;
  c.owner = std::move(f);
  return c;
}

const char* close_code_reason(CloseCode code) {
  switch (code) {
    case CloseCode::kNormal: return "closed";
    case CloseCode::kBadFrame: return reason::kBadFrame;
    case CloseCode::kBadProof: return reason::kBadProof;
    case CloseCode::kNameTaken: return reason::kNameTaken;
    case CloseCode::kBadName: return reason::kBadName;
    case CloseCode::kUnsupportedVersion: return reason::kUnsupportedVersion;
    case CloseCode::kIdentifyTimeout: return reason::kIdentifyTimeout;
    case CloseCode::kShutdown: return reason::kShutdown;
    case CloseCode::kFlood: return reason::kFlood;
    case CloseCode::kRelayProof: return "relay_proof";
    case CloseCode::kBacklog: return reason::kBacklog;
  }
  return "closed";
}

uint64_t now_ms() { return now_ns() / 1000000; }

}  // namespace

EndpointConfig relay_endpoint_config(EndpointConfig base, const RelayServerConfig& c) {
  base.accept = true;
  base.tls.alpn = kAlpn;
  base.max_control_frame = kMaxMessageSize;
  base.max_control_frames = 0;
  base.max_data_frame = kMaxDataFrame;
  base.keep_alive_ms = kKeepAliveMs;
  base.idle_timeout_ms = c.idle_timeout_ms;
  // Forwarding never waits for the receiver (it drops), so the high-water
  // mark only matters as the in-flight bound.
  base.send_high_water = c.max_bytes_in_flight_per_node;
  base.send_low_water = c.max_bytes_in_flight_per_node / 2;
  base.stream_window = 4u << 20;
  return base;
}

RelayServer::RelayServer(const RelayServerConfig& config, Logger& log)
    : config_(config), log_(log) {
  gnutls_rnd(GNUTLS_RND_NONCE, &next_tunnel_, sizeof next_tunnel_);
}

RelayServer::~RelayServer() = default;

std::string RelayServer::check_config(const RelayServerConfig& c) {
  if (c.realm_secret.empty()) return "realm secret is required (--realm-secret-file)";
  if (!valid_name(c.name)) return "relay name must be 1-255 printable characters without spaces (name)";
  if (c.max_tunnels_per_node == 0) return "max-tunnels-per-node must be at least 1";
  if (c.max_bytes_in_flight_per_node < kMaxDataFrame + kFrameHeaderSize)
    return "max-bytes-in-flight-per-node must be at least " +
           std::to_string(kMaxDataFrame + kFrameHeaderSize);
  // A node may legitimately be sent a close for each of its tunnels at
  // once (its peers all left): that must fit in the backlog.
  if (c.max_control_backlog < 1024 * c.max_tunnels_per_node)
    return "max-control-backlog must be at least 1024 x max-tunnels-per-node";
  if (c.control_rate == 0 || c.control_burst == 0) return "control rate and burst must be positive";
  return "";
}

void RelayServer::accepted(std::shared_ptr<ConnectionHandle> handle) {
  uint64_t conn = handle->id();
  std::string remote = handle->remote().to_string();
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      handle->close(uint64_t(CloseCode::kShutdown), reason::kShutdown);
      return;
    }
    Node& n = nodes_[conn];
    n.handle = handle;
    n.remote = remote;
    n.since_ms = now_ms();
    n.tokens = config_.control_burst;
    n.refilled_ns = now_ns();
    ++m_.connections_total;
  }
  handle->attach(std::make_shared<Session>(weak_from_this(), conn));
  log_.info("connection_accepted", {{"conn", std::to_string(conn)}, {"remote", remote}});
}

RelayServer::Node* RelayServer::find(uint64_t conn) {
  auto it = nodes_.find(conn);
  return it == nodes_.end() ? nullptr : &it->second;
}

void RelayServer::send(Node& node, const Message& m) {
  node.handle->send(Channel::kControl, encode_frame(m), 1);
  uint64_t bound = config_.max_bytes_in_flight_per_node + config_.max_control_backlog;
  if (node.handle->stats().queued_bytes > bound) backlogged_.push_back(node.handle->id());
}

void RelayServer::close_backlogged() {
  while (!backlogged_.empty()) {
    uint64_t conn = backlogged_.back();
    backlogged_.pop_back();
    Node* node = find(conn);
    if (!node) continue;
    ++m_.rejections[reason::kBacklog];
    reject(*node, conn, CloseCode::kBacklog, reason::kBacklog);
  }
}

// Token bucket: a node may not keep the relay busy with control traffic.
bool RelayServer::take_token(Node& node) {
  uint64_t now = now_ns();
  node.tokens = std::min<double>(config_.control_burst,
                                 node.tokens + double(now - node.refilled_ns) *
                                                   config_.control_rate / 1e9);
  node.refilled_ns = now;
  if (node.tokens < 1) return false;
  node.tokens -= 1;
  return true;
}

void RelayServer::on_control(uint64_t conn, Bytes frame) {
  std::lock_guard lock(mu_);
  if (Node* node = find(conn)) control(*node, conn, frame);
  close_backlogged();
}

void RelayServer::control(Node& node, uint64_t conn, const Bytes& frame) {
  if (!take_token(node)) {
    ++m_.rejections[reason::kFlood];
    return reject(node, conn, CloseCode::kFlood, reason::kFlood);
  }
  ParseResult r = parse({frame.data.get(), frame.size});
  if (!r.ok()) {
    ++m_.bad_frames["control"];
    return reject(node, conn, CloseCode::kBadFrame, "bad_frame: " + r.describe());
  }
  handle_message(node, conn, r.message);
}

void RelayServer::handle_message(Node& node, uint64_t conn, Message& m) {
  if (auto* x = std::get_if<Identify>(&m)) return identify(node, conn, *x);
  if (auto* x = std::get_if<TunnelRequest>(&m)) return tunnel_request(node, conn, *x);
  if (auto* x = std::get_if<TunnelClose>(&m)) return tunnel_close(conn, *x);
  // Only the relay sends the other messages.
  ++m_.bad_frames["control"];
  reject(node, conn, CloseCode::kBadFrame,
         std::string("bad_frame: unexpected ") + message_name(m));
}

void RelayServer::identify(Node& node, uint64_t conn, const Identify& m) {
  if (!node.name.empty()) {
    ++m_.rejections[reason::kAlreadyIdentified];
    send(node, RequestError{m.id, reason::kAlreadyIdentified, node.name});
    return;
  }
  if (m.version != kProtocolVersion) {
    ++m_.rejections[reason::kUnsupportedVersion];
    return reject(node, conn, CloseCode::kUnsupportedVersion, reason::kUnsupportedVersion);
  }
  std::vector<uint8_t> exporter = node.handle->exporter();
  if (!proof_matches(make_realm_proof(exporter, kClientRole, m.name, config_.realm_secret),
                     m.proof)) {
    ++m_.rejections[reason::kBadProof];
    log_.warn("identify_refused", {{"conn", std::to_string(conn)}, {"name", m.name},
                                   {"reason", reason::kBadProof}, {"remote", node.remote}});
    return reject(node, conn, CloseCode::kBadProof, reason::kBadProof);
  }
  if (names_.count(m.name)) {
    ++m_.rejections[reason::kNameTaken];
    log_.warn("identify_refused", {{"conn", std::to_string(conn)}, {"name", m.name},
                                   {"reason", reason::kNameTaken}, {"remote", node.remote}});
    return reject(node, conn, CloseCode::kNameTaken, reason::kNameTaken);
  }
  node.name = m.name;
  names_[m.name] = conn;
  send(node, Identified{m.id, config_.name,
                        make_realm_proof(exporter, kServerRole, config_.name, config_.realm_secret),
                        kMaxPacketSize, config_.max_tunnels_per_node});
  log_.info("node_identified", {{"conn", std::to_string(conn)}, {"name", m.name},
                                {"remote", node.remote}});
}

void RelayServer::tunnel_request(Node& node, uint64_t conn, const TunnelRequest& m) {
  const char* refusal = nullptr;
  auto target = names_.find(m.target);
  Node* peer = target == names_.end() ? nullptr : find(target->second);
  if (node.name.empty()) refusal = reason::kNotIdentified;
  else if (m.target == node.name) refusal = reason::kSelf;
  else if (!peer) refusal = reason::kUnknownTarget;
  else if (node.tunnels.size() >= config_.max_tunnels_per_node) refusal = reason::kTunnelLimit;
  else if (peer->tunnels.size() >= config_.max_tunnels_per_node) refusal = reason::kTargetTunnelLimit;
  if (refusal) {
    ++m_.rejections[refusal];
    send(node, TunnelError{m.id, refusal, m.target});
    return;
  }
  uint32_t id = new_tunnel_id();
  tunnels_[id] = Tunnel{conn, target->second};
  node.tunnels.insert(id);
  peer->tunnels.insert(id);
  ++m_.tunnels_total;
  // The target learns of the tunnel first, and control is written before
  // data, so the requester's first packet (sent after tunnel_ok) normally
  // arrives after tunnel_notify. Only loss of the notify's QUIC packet can
  // reorder them; the target then drops the packet and the nodes' own QUIC
  // retransmits it.
  send(*peer, TunnelNotify{id, node.name});
  send(node, TunnelOk{m.id, id});
  log_.info("tunnel_opened", {{"tunnel", std::to_string(id)}, {"source", node.name},
                              {"target", m.target}});
}

void RelayServer::tunnel_close(uint64_t conn, const TunnelClose& m) {
  auto it = tunnels_.find(m.tunnel);
  // Closing a tunnel that is already gone is a normal race, not an error.
  if (it == tunnels_.end() || (it->second.a != conn && it->second.b != conn)) return;
  remove_tunnel(m.tunnel, conn, reason::kClosed);
}

uint32_t RelayServer::new_tunnel_id() {
  // Sequential from a random start; 0 is never an id.
  do {
    ++next_tunnel_;
  } while (next_tunnel_ == 0 || tunnels_.count(next_tunnel_));
  return next_tunnel_;
}

// Forgets tunnel `id` and tells its ends other than `closer` (0: both).
void RelayServer::remove_tunnel(uint32_t id, uint64_t closer, const char* why) {
  auto it = tunnels_.find(id);
  if (it == tunnels_.end()) return;
  Tunnel t = it->second;
  tunnels_.erase(it);
  for (uint64_t end : {t.a, t.b}) {
    Node* n = find(end);
    if (!n) continue;
    n->tunnels.erase(id);
    if (end != closer) send(*n, TunnelClose{id, why});
  }
  log_.info("tunnel_closed", {{"tunnel", std::to_string(id)}, {"reason", why}});
}

void RelayServer::on_data(uint64_t conn, std::vector<Bytes>& frames, uint64_t credit) {
  std::shared_ptr<ConnectionHandle> handle;
  {
    std::lock_guard lock(mu_);
    Node* node = find(conn);
    if (node) handle = node->handle;
    for (Bytes& f : frames) {
      if (!node) break;
      uint32_t tunnel;
      std::span<const uint8_t> packet;
      if (!parse_tunnel_frame({f.data.get(), f.size}, tunnel, packet)) {
        ++m_.bad_frames["data"];
        reject(*node, conn, CloseCode::kBadFrame, "bad_frame: short tunnel frame");
        break;
      }
      forward(conn, tunnel, f);
    }
    close_backlogged();
  }
  // The sender's window reopens at once: a slow receiver costs it drops,
  // never a stall of its other tunnels.
  if (handle && credit) handle->consumed(credit);
}

void RelayServer::forward(uint64_t from, uint32_t tunnel, Bytes& frame) {
  auto it = tunnels_.find(tunnel);
  if (it == tunnels_.end() || (it->second.a != from && it->second.b != from)) {
    // Packets in flight when a tunnel closes land here too.
    ++m_.drops[reason::kUnknownTunnel];
    return;
  }
  Node* peer = find(it->second.a == from ? it->second.b : it->second.a);
  uint64_t size = frame.size;
  if (!peer) {
    ++m_.drops["closed"];
    return;
  }
  if (peer->handle->stats().queued_bytes + size + kFrameHeaderSize >
      config_.max_bytes_in_flight_per_node) {
    ++m_.drops["congested"];
    return;
  }
  if (peer->handle->send(Channel::kData, forward_chunk(std::move(frame)), 1) ==
      SendStatus::kClosed) {
    ++m_.drops["closed"];
    return;
  }
  ++m_.packets_forwarded;
  m_.bytes_forwarded += size - kTunnelHeaderSize;
}

// Closes a connection for a protocol reason; its names and tunnels go at
// once, so the other ends hear of it without waiting for the close.
void RelayServer::reject(Node& node, uint64_t conn, CloseCode code, const std::string& why) {
  log_.warn("connection_refused", {{"conn", std::to_string(conn)},
                                   {"name", node.name.empty() ? "-" : node.name},
                                   {"reason", close_code_reason(code)},
                                   {"detail", why}, {"remote", node.remote}});
  node.handle->close(uint64_t(code), why);
  drop_node(conn);
}

void RelayServer::drop_node(uint64_t conn) {
  Node* node = find(conn);
  if (!node) return;
  std::vector<uint32_t> ids(node->tunnels.begin(), node->tunnels.end());
  for (uint32_t id : ids) remove_tunnel(id, conn, reason::kPeerGone);
  auto named = names_.find(node->name);
  if (named != names_.end() && named->second == conn) names_.erase(named);
  nodes_.erase(conn);
}

void RelayServer::on_closed(uint64_t conn, const CloseInfo& info) {
  std::lock_guard lock(mu_);
  Node* node = find(conn);
  if (!node) return;
  // A frame the core refused (oversized) ends the connection with a
  // protocol error: that is a bad frame too.
  if (info.kind == CloseInfo::Kind::kProtocol) ++m_.bad_frames["transport"];
  log_.info("connection_closed", {{"conn", std::to_string(conn)},
                                  {"name", node->name.empty() ? "-" : node->name},
                                  {"kind", close_kind_name(info.kind)},
                                  {"code", std::to_string(info.code)},
                                  {"reason", info.text}});
  drop_node(conn);
  close_backlogged();
}

void RelayServer::tick(uint64_t now) {
  std::lock_guard lock(mu_);
  std::vector<uint64_t> late;
  for (auto& [conn, n] : nodes_)
    if (n.name.empty() && now >= n.since_ms + config_.identify_timeout_ms) late.push_back(conn);
  for (uint64_t conn : late) {
    ++m_.rejections[reason::kIdentifyTimeout];
    reject(nodes_[conn], conn, CloseCode::kIdentifyTimeout, reason::kIdentifyTimeout);
  }
  close_backlogged();
}

void RelayServer::shutdown() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (auto& [conn, n] : nodes_)
    n.handle->close(uint64_t(CloseCode::kShutdown), reason::kShutdown);
  log_.info("closing_connections", {{"connections", std::to_string(nodes_.size())}});
  nodes_.clear();
  names_.clear();
  tunnels_.clear();
  backlogged_.clear();
}

RelayMetrics RelayServer::metrics() const {
  std::lock_guard lock(mu_);
  RelayMetrics m = m_;
  m.connections = nodes_.size();
  m.nodes = names_.size();
  m.tunnels = tunnels_.size();
  return m;
}

}  // namespace macula::relay
