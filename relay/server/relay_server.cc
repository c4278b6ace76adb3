#include "relay_server.h"

#include <gnutls/crypto.h>

#include <algorithm>

#include "framing.h"

namespace macula::relay {

// Routes one connection's events to the server; the server may be gone
// by the time the I/O thread delivers them (weak).
class RelayServer::Session : public ConnectionEvents {
 public:
  Session(std::weak_ptr<RelayServer> server, uint64_t conn)
      : server_(std::move(server)), conn_(conn) {}

  void connected() override {
    if (auto s = server_.lock()) s->on_connected(conn_);
  }
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
    case CloseCode::kRelayProof: return reason::kRelayProof;
    case CloseCode::kBacklog: return reason::kBacklog;
    case CloseCode::kTooManyConnections: return reason::kTooManyConnections;
  }
  return "closed";
}

uint64_t now_ms() { return now_ns() / 1000000; }

constexpr uint64_t kMinRedialMs = 1000;
constexpr uint64_t kMaxRedialMs = 10000;
// After a link we dialled was closed as a duplicate of the peer's.
constexpr uint64_t kDuplicateRedialMs = 30000;

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
  // Until the proof: no tunnel data, a small control window; the
  // transport's own deadline backs up tick()'s identify_timeout.
  base.auth_timeout_ms = c.identify_timeout_ms + 2000;
  base.admission.max_half_open = c.max_unidentified;
  base.admission.max_half_open_per_source = c.max_unidentified_per_ip;
  return base;
}

RelayServer::RelayServer(const RelayServerConfig& config, Logger& log)
    : config_(config), log_(log), unidentified_log_(log) {
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
  std::string ip = handle->remote().ip_string();
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      handle->close(uint64_t(CloseCode::kShutdown), reason::kShutdown);
      return;
    }
    // Counted against max_connections_per_ip once proven (admit()):
    // until then the endpoint's bounds on unproved connections apply.
    Node& n = nodes_[conn];
    n.handle = handle;
    n.remote = remote;
    n.peer_ip = ip;
    n.since_ms = now_ms();
    n.tokens = config_.control_burst;
    n.refilled_ns = now_ns();
    ++m_.connections_total;
  }
  handle->attach(std::make_shared<Session>(weak_from_this(), conn));
  unidentified_log_.info("accepted", now_ms(), "connection_accepted",
                         {{"conn", std::to_string(conn)}, {"remote", remote}});
}

RelayServer::Node* RelayServer::find(uint64_t conn) {
  auto it = nodes_.find(conn);
  return it == nodes_.end() ? nullptr : &it->second;
}

void RelayServer::send(Node& node, const Message& m) {
  node.handle->send(Channel::kControl, encode_frame(m), 1);
  uint64_t bound = config_.max_control_backlog + (node.relay ? config_.max_bytes_in_flight_per_peer
                                                             : config_.max_bytes_in_flight_per_node);
  if (node.handle->stats().queued_bytes > bound) backlogged_.push_back(node.handle->id());
}

void RelayServer::close_deferred() {
  while (!retired_done_.empty()) {
    uint64_t conn = retired_done_.back();
    retired_done_.pop_back();
    if (Node* node = find(conn)) {
      node->handle->close(uint64_t(CloseCode::kNormal), reason::kDuplicateLink);
      drop_node(conn);
    }
  }
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
  close_deferred();
}

void RelayServer::control(Node& node, uint64_t conn, const Bytes& frame) {
  // A peer relay speaks for all its nodes: its rate is theirs to limit.
  if (!node.relay && !take_token(node)) {
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
  if (node.relay) return peer_message(node, conn, m);
  bool fresh = node.name.empty();
  if (node.dialled < 0) {
    if (auto* x = std::get_if<Identify>(&m)) return identify(node, conn, *x);
    if (auto* x = std::get_if<TunnelRequest>(&m)) return tunnel_request(node, conn, *x);
    if (auto* x = std::get_if<TunnelClose>(&m)) return tunnel_close(conn, *x);
    if (auto* x = std::get_if<ListNodes>(&m)) return list_nodes(node, *x);
    if (auto* x = std::get_if<PeerIdentify>(&m); x && fresh) return peer_identify(node, conn, *x);
  } else if (auto* x = std::get_if<PeerIdentified>(&m); x && fresh) {
    return peer_identified(node, conn, *x);
  }
  unexpected(node, conn, m);
}

void RelayServer::unexpected(Node& node, uint64_t conn, const Message& m) {
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
    return reject(node, conn, CloseCode::kBadProof, reason::kBadProof,
                  "claimed name " + m.name);
  }
  if (!admit(node, conn)) return;
  if (auto held = names_.find(m.name); held != names_.end())
    return claim(node, conn, m, held->second);
  if (remote_.count(m.name)) {
    ++m_.rejections[reason::kNameTaken];
    log_.warn("identify_refused", {{"conn", std::to_string(conn)}, {"name", m.name},
                                   {"reason", reason::kNameTaken}, {"remote", node.remote}});
    return reject(node, conn, CloseCode::kNameTaken, reason::kNameTaken);
  }
  register_node(node, conn, m);
}

// `node` proved the realm secret: it counts against its address's limit
// from now on, and the transport opens its windows. False if it was
// turned away (too many proven connections from its address).
bool RelayServer::admit(Node& node, uint64_t conn) {
  if (node.proven) return true;
  if (node.dialled < 0) {
    if (per_ip_[node.peer_ip] >= config_.max_connections_per_ip) {
      ++m_.rejections[reason::kTooManyConnections];
      log_.warn("connection_refused", {{"conn", std::to_string(conn)},
                                       {"reason", reason::kTooManyConnections},
                                       {"remote", node.remote}});
      reject(node, conn, CloseCode::kTooManyConnections, reason::kTooManyConnections);
      return false;
    }
    ++per_ip_[node.peer_ip];
    node.ip = node.peer_ip;
  }
  node.proven = true;
  node.handle->authenticate();
  return true;
}

void RelayServer::register_node(Node& node, uint64_t conn, const Identify& m) {
  node.name = m.name;
  names_[m.name] = conn;
  send(node, Identified{m.id, config_.name,
                        make_realm_proof(node.handle->exporter(), kServerRole, config_.name,
                                         config_.realm_secret),
                        kMaxPacketSize, config_.max_tunnels_per_node});
  log_.info("node_identified", {{"conn", std::to_string(conn)}, {"name", m.name},
                                {"remote", node.remote}});
  broadcast(NodeUp{m.name});
}

// `node` proved `m.name`, which `holder` holds: probe the holder with a
// tick, which its QUIC stack acknowledges if it is there at all. One
// claim per name at a time.
void RelayServer::claim(Node& node, uint64_t conn, const Identify& m, uint64_t holder) {
  Node* h = find(holder);
  bool busy = std::any_of(claims_.begin(), claims_.end(),
                          [&](const Claim& c) { return c.request.name == m.name; });
  if (!h || busy) {
    ++m_.rejections[reason::kNameTaken];
    return reject(node, conn, CloseCode::kNameTaken, reason::kNameTaken);
  }
  claims_.push_back({conn, m, holder, h->handle->path().bytes_received,
                     now_ms() + config_.name_probe_ms});
  h->handle->send(Channel::kControl, tick_frame(), 1);
  log_.info("name_probe", {{"name", m.name}, {"holder", std::to_string(holder)},
                           {"claimant", std::to_string(conn)}, {"remote", node.remote}});
}

// A holder that answered the probe keeps its name (name_taken for the
// claimant); one that sent nothing since is gone and is replaced.
void RelayServer::settle_claims(uint64_t now) {
  std::vector<Claim> due;
  std::erase_if(claims_, [&](const Claim& c) {
    if (c.due_ms > now) return false;
    due.push_back(c);
    return true;
  });
  for (const Claim& c : due) {
    Node* node = find(c.conn);
    if (!node) continue;
    Node* holder = find(c.holder);
    if (holder && holder->handle->path().bytes_received != c.holder_bytes) {
      ++m_.rejections[reason::kNameTaken];
      log_.warn("identify_refused", {{"conn", std::to_string(c.conn)}, {"name", c.request.name},
                                     {"reason", reason::kNameTaken}, {"remote", node->remote}});
      reject(*node, c.conn, CloseCode::kNameTaken, reason::kNameTaken);
      continue;
    }
    if (holder) {
      ++m_.rejections[reason::kReplaced];
      log_.warn("name_reclaimed", {{"name", c.request.name}, {"silent_conn", std::to_string(c.holder)},
                                   {"conn", std::to_string(c.conn)}});
      reject(*holder, c.holder, CloseCode::kNameTaken, reason::kReplaced);
    }
    if (names_.count(c.request.name) || remote_.count(c.request.name)) {
      ++m_.rejections[reason::kNameTaken];  // taken again meanwhile (at a peer)
      reject(*node, c.conn, CloseCode::kNameTaken, reason::kNameTaken);
      continue;
    }
    register_node(*node, c.conn, c.request);
  }
}

// Who is online in the realm: the nodes held here and those the linked
// relays announced, merged in name order from after `m.after`, one page
// per request. Each page costs two map look-ups and at most
// kMaxListEntries steps; the control rate bounds how many a node asks.
void RelayServer::list_nodes(Node& node, const ListNodes& m) {
  if (node.name.empty()) {
    ++m_.rejections[reason::kNotIdentified];
    return send(node, RequestError{m.id, reason::kNotIdentified, ""});
  }
  NodeList page{m.id, {}, false};
  auto local = names_.upper_bound(m.after);
  auto remote = remote_.upper_bound(m.after);
  size_t bytes = kNodeListOverhead;
  while (local != names_.end() || remote != remote_.end()) {
    // A name held here and announced by a link (a race the mesh settles)
    // is listed once, as ours: a page's map may not repeat a key.
    bool take_local =
        remote == remote_.end() || (local != names_.end() && local->first <= remote->first);
    NodeEntry e = take_local ? NodeEntry{local->first, config_.name}
                             : NodeEntry{remote->first, remote->second};
    bytes += node_entry_size(e);
    if (page.nodes.size() == kMaxListEntries || bytes > kMaxMessageSize) {
      page.more = true;
      break;
    }
    if (take_local && remote != remote_.end() && remote->first == local->first) ++remote;
    page.nodes.push_back(std::move(e));
    if (take_local) ++local;
    else ++remote;
  }
  send(node, page);
}

void RelayServer::tunnel_request(Node& node, uint64_t conn, const TunnelRequest& m) {
  const char* refusal = nullptr;
  auto local = names_.find(m.target);
  auto remote = remote_.find(m.target);
  uint64_t target = local != names_.end() ? local->second
                    : remote != remote_.end() ? link_to(remote->second) : 0;
  Node* peer = find(target);
  if (node.name.empty()) refusal = reason::kNotIdentified;
  else if (m.target == node.name) refusal = reason::kSelf;
  else if (!peer) refusal = reason::kUnknownTarget;
  else if (node.tunnels.size() >= config_.max_tunnels_per_node) refusal = reason::kTunnelLimit;
  else if (!peer->relay && peer->tunnels.size() >= config_.max_tunnels_per_node)
    refusal = reason::kTargetTunnelLimit;
  if (refusal) {
    ++m_.rejections[refusal];
    send(node, TunnelError{m.id, refusal, m.target});
    return;
  }
  uint32_t id = new_tunnel_id();
  node.tunnels.insert(id);
  peer->tunnels.insert(id);
  ++m_.tunnels_total;
  if (peer->relay) {
    // The target's relay picks its own id for the tunnel; the requester
    // hears tunnel_ok (or the error) once it answered.
    tunnels_[id] = Tunnel{{conn, id}, {target, 0}, m.id};
    send(*peer, PeerTunnel{id, node.name, m.target});
    log_.info("tunnel_requested", {{"tunnel", std::to_string(id)}, {"source", node.name},
                                   {"target", m.target}, {"via", peer->name}});
    return;
  }
  tunnels_[id] = Tunnel{{conn, id}, {target, id}, 0};
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
  if (it == tunnels_.end() || (it->second.a.conn != conn && it->second.b.conn != conn)) return;
  // A peer relay passes on why its node's end went (closed, peer_gone).
  Node* from = find(conn);
  bool relayed = from && from->relay && !m.reason.empty();
  remove_tunnel(m.tunnel, conn, relayed ? m.reason : reason::kClosed);
}

uint32_t RelayServer::new_tunnel_id() {
  // Sequential from a random start; 0 is never an id.
  do {
    ++next_tunnel_;
  } while (next_tunnel_ == 0 || tunnels_.count(next_tunnel_));
  return next_tunnel_;
}

// Forgets tunnel `id` and tells its ends other than `closer` (0: both):
// by its id at that end, or, while the requester still waits for a peer
// relay's answer, with the error reply to its request.
void RelayServer::remove_tunnel(uint32_t id, uint64_t closer, const std::string& why) {
  auto it = tunnels_.find(id);
  if (it == tunnels_.end()) return;
  Tunnel t = it->second;
  tunnels_.erase(it);
  for (const End& end : {t.a, t.b}) {
    Node* n = find(end.conn);
    if (!n) continue;
    n->tunnels.erase(id);
    if (n->retired && n->tunnels.empty()) retired_done_.push_back(end.conn);
    if (end.conn == closer) continue;
    if (t.request && end.conn == t.a.conn) send(*n, TunnelError{t.request, why, ""});
    else if (end.wire) send(*n, TunnelClose{end.wire, why});
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
    close_deferred();
  }
  // The sender's window reopens at once: a slow receiver costs it drops,
  // never a stall of its other tunnels.
  if (handle && credit) handle->consumed(credit);
}

void RelayServer::forward(uint64_t from, uint32_t tunnel, Bytes& frame) {
  auto it = tunnels_.find(tunnel);
  if (it == tunnels_.end() || (it->second.a.conn != from && it->second.b.conn != from)) {
    // Packets in flight when a tunnel closes land here too.
    ++m_.drops[reason::kUnknownTunnel];
    return;
  }
  const End& to = it->second.a.conn == from ? it->second.b : it->second.a;
  Node* peer = find(to.conn);
  uint64_t size = frame.size;
  if (!peer || to.wire == 0) {  // gone, or a peer relay has not answered yet
    ++m_.drops["closed"];
    return;
  }
  uint64_t bound = peer->relay ? config_.max_bytes_in_flight_per_peer
                               : config_.max_bytes_in_flight_per_node;
  if (peer->handle->stats().queued_bytes + size + kFrameHeaderSize > bound) {
    ++m_.drops["congested"];
    return;
  }
  // The receiver knows the tunnel by its own id (a peer relay's differs).
  if (to.wire != tunnel)
    for (int i = 0; i < 4; ++i) frame.data[i] = uint8_t(to.wire >> (24 - 8 * i));
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
// Before a connection identifies, the line is rate limited (log_limit.h):
// anyone can cause it. name_taken comes after a valid proof.
void RelayServer::reject(Node& node, uint64_t conn, CloseCode code, const std::string& why,
                         const std::string& detail) {
  if (node.name.empty() && code != CloseCode::kNameTaken)
    unidentified_log_.warn(close_code_reason(code), now_ms(), "connection_refused",
                           {{"conn", std::to_string(conn)}, {"name", "-"},
                            {"reason", close_code_reason(code)},
                            {"detail", detail.empty() ? why : why + ": " + detail},
                            {"remote", node.remote}});
  else
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
  if (node->relay) {
    // The peer's nodes go with its link in use (not with a retired one).
    if (auto link = links_.find(node->name); link != links_.end() && link->second == conn) {
      links_.erase(link);
      std::erase_if(remote_, [&](const auto& entry) { return entry.second == node->name; });
    }
    log_.info("peer_unlinked", {{"conn", std::to_string(conn)}, {"relay", node->name}});
  } else if (auto named = names_.find(node->name);
             named != names_.end() && named->second == conn) {
    names_.erase(named);
    broadcast(NodeDown{node->name});
  }
  if (!node->ip.empty() && --per_ip_[node->ip] == 0) per_ip_.erase(node->ip);
  if (node->dialled >= 0) {
    Peer& p = peers_[node->dialled];
    if (p.conn == conn) {
      p.conn = 0;
      p.due_ms = now_ms() + p.backoff_ms;
      p.backoff_ms = std::min<uint64_t>(p.backoff_ms * 2, kMaxRedialMs);
    }
  }
  nodes_.erase(conn);
}

void RelayServer::on_closed(uint64_t conn, const CloseInfo& info) {
  std::lock_guard lock(mu_);
  Node* node = find(conn);
  if (!node) return;
  // A frame the core refused (oversized) ends the connection with a
  // protocol error: that is a bad frame too.
  if (info.kind == CloseInfo::Kind::kProtocol) ++m_.bad_frames["transport"];
  if (node->name.empty())
    unidentified_log_.info(std::string("closed_") + close_kind_name(info.kind), now_ms(),
                           "connection_closed",
                           {{"conn", std::to_string(conn)}, {"name", "-"},
                            {"kind", close_kind_name(info.kind)},
                            {"code", std::to_string(info.code)}, {"reason", info.text}});
  else
    log_.info("connection_closed", {{"conn", std::to_string(conn)},
                                    {"name", node->name},
                                    {"kind", close_kind_name(info.kind)},
                                    {"code", std::to_string(info.code)},
                                    {"reason", info.text}});
  int dialled = node->dialled;
  drop_node(conn);
  // The peer keeps the link it dialled itself: no use trying ours again soon.
  if (dialled >= 0 && info.text == reason::kDuplicateLink)
    peers_[dialled].due_ms = now_ms() + kDuplicateRedialMs;
  close_deferred();
}

void RelayServer::tick(uint64_t now) {
  std::lock_guard lock(mu_);
  unidentified_log_.tick(now);
  settle_claims(now);
  dial_due(now);
  std::vector<uint64_t> late;
  for (auto& [conn, n] : nodes_)
    if (!n.proven && now >= n.since_ms + config_.identify_timeout_ms) late.push_back(conn);
  for (uint64_t conn : late) {
    ++m_.rejections[reason::kIdentifyTimeout];
    reject(nodes_[conn], conn, CloseCode::kIdentifyTimeout, reason::kIdentifyTimeout);
  }
  close_deferred();
}

void RelayServer::shutdown() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (auto& [conn, n] : nodes_)
    n.handle->close(uint64_t(CloseCode::kShutdown), reason::kShutdown);
  log_.info("closing_connections", {{"connections", std::to_string(nodes_.size())}});
  nodes_.clear();
  names_.clear();
  links_.clear();
  remote_.clear();
  claims_.clear();
  per_ip_.clear();
  tunnels_.clear();
  backlogged_.clear();
}

RelayMetrics RelayServer::metrics() const {
  std::lock_guard lock(mu_);
  RelayMetrics m = m_;
  m.connections = nodes_.size();
  m.nodes = names_.size();
  m.peers = links_.size();
  m.remote_nodes = remote_.size();
  m.tunnels = tunnels_.size();
  m.unidentified_events = unidentified_log_.counts();
  return m;
}

// ---- Mesh ----

void RelayServer::start_mesh(Endpoint& endpoint, std::vector<PeerSpec> peers) {
  std::lock_guard lock(mu_);
  endpoint_ = &endpoint;
  for (PeerSpec& spec : peers) peers_.push_back(Peer{std::move(spec)});
  dial_due(now_ms());
}

// Dials each peer whose link is down and whose delay has passed. dial()
// only posts to the I/O thread, so holding the lock here is fine, and the
// connection is known before any of its events can arrive.
void RelayServer::dial_due(uint64_t now) {
  if (!endpoint_ || stopping_) return;
  for (size_t i = 0; i < peers_.size(); ++i) {
    Peer& p = peers_[i];
    if (p.conn || now < p.due_ms) continue;
    if (linked_from(p.spec.address)) {  // the peer dialled us from there
      p.due_ms = now + kMaxRedialMs;
      continue;
    }
    auto handle = endpoint_->dial(p.spec.address, p.spec.host, [&](uint64_t id) {
      return std::make_shared<Session>(weak_from_this(), id);
    });
    Node& n = nodes_[handle->id()];
    n.handle = handle;
    n.dialled = int(i);
    n.remote = p.spec.address.to_string();
    n.since_ms = now;
    p.conn = handle->id();
    log_.info("peer_dialling", {{"conn", std::to_string(p.conn)}, {"peer", p.spec.spec},
                                {"address", n.remote}});
  }
}

// Our dialled link is up: prove we are a relay of the realm.
void RelayServer::on_connected(uint64_t conn) {
  std::lock_guard lock(mu_);
  Node* node = find(conn);
  if (!node || node->dialled < 0) return;
  send(*node, PeerIdentify{1, kProtocolVersion, config_.name,
                           make_realm_proof(node->handle->exporter(), kPeerClientRole,
                                            config_.name, config_.realm_secret)});
  close_deferred();
}

void RelayServer::peer_identify(Node& node, uint64_t conn, const PeerIdentify& m) {
  if (m.version != kProtocolVersion) {
    ++m_.rejections[reason::kUnsupportedVersion];
    return reject(node, conn, CloseCode::kUnsupportedVersion, reason::kUnsupportedVersion);
  }
  std::vector<uint8_t> exporter = node.handle->exporter();
  if (!proof_matches(make_realm_proof(exporter, kPeerClientRole, m.relay, config_.realm_secret),
                     m.proof)) {
    ++m_.rejections[reason::kBadProof];
    return reject(node, conn, CloseCode::kBadProof, reason::kBadProof);
  }
  if (!admit(node, conn) || !add_link(node, conn, m.relay)) return;
  send(node, PeerIdentified{m.id, config_.name,
                            make_realm_proof(exporter, kPeerServerRole, config_.name,
                                             config_.realm_secret)});
  for (const auto& [name, c] : names_) send(node, NodeUp{name});
}

void RelayServer::peer_identified(Node& node, uint64_t conn, const PeerIdentified& m) {
  if (!proof_matches(make_realm_proof(node.handle->exporter(), kPeerServerRole, m.relay,
                                      config_.realm_secret),
                     m.proof)) {
    ++m_.rejections[reason::kRelayProof];
    return reject(node, conn, CloseCode::kRelayProof, reason::kRelayProof);
  }
  if (!admit(node, conn) || !add_link(node, conn, m.relay)) return;
  for (const auto& [name, c] : names_) send(node, NodeUp{name});
}

// Makes `node` the link to relay `relay`, unless that would be a second
// link between the same two relays (both dialled each other): then the
// one dialled by the relay with the smaller name is used, on both sides
// alike. Of two dialled by the same relay, the older is used if we
// dialled both (two configured addresses of one relay), else the newer
// (the peer restarted; the older is a dead connection). The other one is
// closed, or, if tunnels use it, retired: it carries them to their end
// and nothing new. False if `node` was closed.
bool RelayServer::add_link(Node& node, uint64_t conn, const std::string& relay) {
  if (relay == config_.name) {
    ++m_.rejections[reason::kNameTaken];
    reject(node, conn, CloseCode::kNameTaken, "name_taken: a relay's own name (a link to itself?)");
    return false;
  }
  if (auto it = links_.find(relay); it != links_.end()) {
    uint64_t old_conn = it->second;
    Node& old = *find(old_conn);
    auto dialler = [&](const Node& n) { return n.dialled >= 0 ? config_.name : relay; };
    bool keep_new = dialler(node) == dialler(old) ? node.dialled < 0
                                                  : dialler(node) < dialler(old);
    uint64_t loser = keep_new ? old_conn : conn;
    Node& l = *find(loser);
    bool retire = !l.tunnels.empty();
    log_.info("peer_duplicate_link", {{"relay", relay},
                                      {retire ? "retired" : "closed", std::to_string(loser)},
                                      {"kept", std::to_string(keep_new ? conn : old_conn)}});
    if (retire) {
      l.retired = true;
    } else {
      int dialled = l.dialled;
      l.handle->close(uint64_t(CloseCode::kNormal), reason::kDuplicateLink);
      drop_node(loser);
      if (dialled >= 0) peers_[dialled].due_ms = now_ms() + kDuplicateRedialMs;
      if (!keep_new) return false;
    }
  }
  node.name = relay;
  node.relay = true;
  links_[relay] = conn;
  if (node.dialled >= 0) peers_[node.dialled].backoff_ms = kMinRedialMs;
  log_.info("peer_linked", {{"conn", std::to_string(conn)}, {"relay", relay},
                            {"remote", node.remote}});
  return true;
}

void RelayServer::peer_message(Node& link, uint64_t conn, Message& m) {
  if (auto* x = std::get_if<NodeUp>(&m)) return node_up(link, *x);
  if (auto* x = std::get_if<NodeDown>(&m)) {
    if (auto it = remote_.find(x->node); it != remote_.end() && it->second == link.name)
      remote_.erase(it);
    return;
  }
  if (auto* x = std::get_if<PeerTunnel>(&m)) return peer_tunnel(link, conn, *x);
  if (auto* x = std::get_if<PeerTunnelOk>(&m)) return peer_tunnel_ok(link, conn, *x);
  if (auto* x = std::get_if<PeerTunnelError>(&m)) return peer_tunnel_error(conn, *x);
  if (auto* x = std::get_if<TunnelClose>(&m)) return tunnel_close(conn, *x);
  unexpected(link, conn, m);
}

// A node registered at a peer. If we hold the same name (both relays
// accepted it at once), the relay with the smaller name keeps its node;
// the other refuses its own, on both sides alike.
void RelayServer::node_up(Node& link, const NodeUp& m) {
  if (auto local = names_.find(m.node); local != names_.end()) {
    if (config_.name < link.name) return;
    uint64_t loser = local->second;
    ++m_.rejections[reason::kNameTaken];
    reject(*find(loser), loser, CloseCode::kNameTaken, "name_taken: at relay " + link.name);
  }
  remote_[m.node] = link.name;
}

// Relays dial from their listening port, so a link the peer dialled
// comes from the address we would dial.
bool RelayServer::linked_from(const Address& address) const {
  std::string want = address.ip_string() + ":" + std::to_string(address.port());
  for (const auto& [conn, n] : nodes_) {
    if (!n.relay) continue;
    Address a = n.handle->remote();
    if (a.ip_string() + ":" + std::to_string(a.port()) == want) return true;
  }
  return false;
}

uint64_t RelayServer::link_to(const std::string& relay) const {
  auto it = links_.find(relay);
  return it == links_.end() ? 0 : it->second;
}

// A node at peer relay `link` wants a tunnel to one of ours.
void RelayServer::peer_tunnel(Node& link, uint64_t conn, const PeerTunnel& m) {
  auto target = names_.find(m.target);
  Node* peer = target == names_.end() ? nullptr : find(target->second);
  const char* refusal = nullptr;
  if (!peer) refusal = reason::kUnknownTarget;
  else if (peer->tunnels.size() >= config_.max_tunnels_per_node) refusal = reason::kTargetTunnelLimit;
  if (refusal) {
    ++m_.rejections[refusal];
    send(link, PeerTunnelError{m.tunnel, refusal, m.target});
    return;
  }
  uint32_t id = new_tunnel_id();
  tunnels_[id] = Tunnel{{conn, m.tunnel}, {target->second, id}, 0};
  link.tunnels.insert(id);
  peer->tunnels.insert(id);
  ++m_.tunnels_total;
  send(*peer, TunnelNotify{id, m.source});
  send(link, PeerTunnelOk{m.tunnel, id});
  log_.info("tunnel_opened", {{"tunnel", std::to_string(id)}, {"source", m.source},
                              {"target", m.target}, {"via", link.name}});
}

void RelayServer::peer_tunnel_ok(Node& link, uint64_t conn, const PeerTunnelOk& m) {
  auto it = tunnels_.find(m.tunnel);
  if (it == tunnels_.end() || it->second.b.conn != conn || it->second.b.wire) {
    // The requester is gone meanwhile: close the peer's half too.
    send(link, TunnelClose{m.peer_tunnel, reason::kClosed});
    return;
  }
  Tunnel& t = it->second;
  t.b.wire = m.peer_tunnel;
  if (Node* requester = find(t.a.conn)) send(*requester, TunnelOk{t.request, m.tunnel});
  t.request = 0;
  log_.info("tunnel_opened", {{"tunnel", std::to_string(m.tunnel)}, {"via", link.name}});
}

void RelayServer::peer_tunnel_error(uint64_t conn, const PeerTunnelError& m) {
  auto it = tunnels_.find(m.tunnel);
  if (it == tunnels_.end() || it->second.b.conn != conn || it->second.b.wire) return;
  Tunnel t = it->second;
  tunnels_.erase(it);
  for (uint64_t end : {t.a.conn, t.b.conn})
    if (Node* n = find(end)) n->tunnels.erase(m.tunnel);
  if (Node* requester = find(t.a.conn)) send(*requester, TunnelError{t.request, m.reason, m.detail});
}

void RelayServer::broadcast(const Message& m) {
  for (const auto& [name, conn] : links_)
    if (Node* link = find(conn)) send(*link, m);
}

}  // namespace macula::relay
