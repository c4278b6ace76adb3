// The relay's logic: who is connected under which name, which tunnels join
// whom, and the forwarding of tunnel packets between them. Transport-free:
// it is handed accepted connections (it is the endpoint's EndpointEvents)
// and talks to them only through their ConnectionHandles.
//
// Threads: connection events arrive on the endpoint's I/O thread (the
// loop-lock holder: the daemon never reads with read_now); tick(),
// shutdown() and metrics() may be called from any thread. One mutex guards
// the state (the I/O thread is the only busy caller, so it is uncontended).
//
// Authentication: a node registers a name only with
// HMAC(realm secret, exporter || "client" || name) and the relay answers
// with its own proof ("server" role), so both ends know the other holds the
// realm secret. A live name is never taken over: a second claim to a name
// held here makes the relay probe the holder (an ack-eliciting tick), and
// only if the holder sends nothing at all for name_probe_ms (it vanished
// without closing: a crashed or halted VM) does the newcomer get the name;
// otherwise name_taken.
//
// Limits per node: tunnels it is an end of; bytes queued towards it and not
// yet acknowledged (above that its packets are dropped: they are the
// nodes' own QUIC packets, which recover from loss); control messages per
// second; control bytes queued towards it. A node that breaks the
// protocol or stops reading is disconnected with a reason.
//
// Mesh: relays of a realm link up (each dials the peers it is given, and
// accepts the others), prove the realm secret to each other, and tell
// each other which nodes they hold (node_up / node_down). A node's tunnel
// request for a node held by a linked relay goes over the link: the
// tunnel then has a node at each relay, and each relay forwards its
// packets to the other, rewriting the tunnel id to the one the receiver
// knows. Only direct links are used (no multi-hop): a mesh is a full mesh.
// A name is unique across the linked relays; two registrations racing at
// two relays are settled by relay name (the smaller keeps its node).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "endpoint.h"
#include "log_limit.h"
#include "relay_log.h"
#include "relay_protocol.h"

namespace macula::relay {

struct RelayServerConfig {
  std::string name = "macula-relay";  // proven to nodes; a valid_name()
  std::string realm_secret;           // required, non-empty
  size_t max_tunnels_per_node = 64;
  uint64_t max_bytes_in_flight_per_node = 4u << 20;
  // Control messages queued towards a node on top of that: a node that
  // stops reading (its window stays shut) is disconnected, rather than
  // let others' tunnel requests pile up in the relay's memory.
  uint64_t max_control_backlog = 1u << 20;
  // A connection that has not proved the realm secret this long after
  // its handshake is closed (identify_timeout).
  uint64_t identify_timeout_ms = 3000;
  // Connections that have not proved the secret yet, overall and per IP
  // address (IPv6: per /64): their own bounds, apart from
  // max_connections_per_ip, and closed after identify_timeout_ms. When
  // one is reached a newcomer that echoed a Retry token takes the place of
  // the oldest unproved connection (the endpoint's admission.h), so a
  // node gets in as long as it proves itself before that many newer
  // strangers arrive. Big enough that strangers from one address do not
  // churn through it (each displaced one costs a TLS handshake when it
  // comes back: with 32 per address, 300 strangers kept the relay's CPU
  // busy and a node took 1.3-8 s to register; with 512, 72 ms). Each
  // costs about 200 KB (300 took a relay from 8 to 64 MB).
  size_t max_unidentified = 1024;
  size_t max_unidentified_per_ip = 512;
  // A connection silent this long is closed (nodes PING every 2 s; a
  // node's own setting may be shorter, and then applies).
  uint64_t idle_timeout_ms = 10000;
  // Connections that proved the secret from one IP address (one NAT may
  // hide many nodes): one host cannot take all of max-connections.
  uint32_t max_connections_per_ip = 256;
  // How long a holder probed for a second claim to its name has to answer.
  uint64_t name_probe_ms = 3000;
  uint32_t control_rate = 50;     // control messages per second, sustained
  uint32_t control_burst = 200;   // and in a burst
  // Bytes queued towards a peer relay (all the tunnels over the link).
  // Control messages may queue max_control_backlog on top, as for nodes.
  uint64_t max_bytes_in_flight_per_peer = 16u << 20;
};

// A peer relay to dial: what was configured ("host:port") and where that
// resolved to.
struct PeerSpec {
  std::string spec;
  std::string host;
  Address address;
};

// `base` (address, TLS files and mode) with what a relay needs: ALPN
// kAlpn, the protocol's frame limits, no bound on the number of control
// frames (the server limits their rate), keep-alive, an idle timeout
// that frees a vanished node's name, and the bounds on connections that
// have not proved the secret (no tunnel data before that).
EndpointConfig relay_endpoint_config(EndpointConfig base,
                                     const RelayServerConfig& config);

// Counters since start plus current gauges. Reason-labelled counters use
// the protocol's reason tokens.
struct RelayMetrics {
  uint64_t connections = 0;        // gauge: connected, identified or not
  uint64_t nodes = 0;              // gauge: identified
  uint64_t peers = 0;              // gauge: linked relays of the mesh
  uint64_t remote_nodes = 0;       // gauge: nodes held by linked relays
  uint64_t tunnels = 0;            // gauge
  uint64_t connections_total = 0;
  uint64_t tunnels_total = 0;
  uint64_t packets_forwarded = 0;
  uint64_t bytes_forwarded = 0;    // tunnel packet bytes, headers excluded
  std::map<std::string, uint64_t> drops;       // unknown_tunnel, congested, closed
  std::map<std::string, uint64_t> rejections;  // identify and tunnel refusals
  std::map<std::string, uint64_t> bad_frames;  // control, data
  // Events of connections that had not identified (their log lines are
  // rate limited, log_limit.h): accepted, closed_*, and refusal reasons.
  std::map<std::string, uint64_t> unidentified_events;
};

class RelayServer : public EndpointEvents,
                    public std::enable_shared_from_this<RelayServer> {
 public:
  // `config` must be valid (check_config()).
  RelayServer(const RelayServerConfig& config, Logger& log);
  ~RelayServer() override;

  // Empty if `config` is usable, else one sentence naming the setting.
  static std::string check_config(const RelayServerConfig& config);

  // EndpointEvents, I/O thread.
  void accepted(std::shared_ptr<ConnectionHandle> handle) override;

  // Dials `peers` through `endpoint` (the relay's own, which must outlive
  // this server's use of it: call shutdown() before closing it), and
  // re-dials each one whose link is down, every 1 s .. 10 s. Call once.
  void start_mesh(Endpoint& endpoint, std::vector<PeerSpec> peers);

  // Settles name claims whose probe is over, closes connections that did
  // not identify in time, and dials peers that are due. Any thread, about once a second; `now_ms` is a
  // monotonic clock in milliseconds.
  void tick(uint64_t now_ms);
  // Closes every connection with reason relay_shutdown and refuses later
  // ones. Any thread. The endpoint still has to send the closes: keep it
  // running a moment (a round trip) before destroying it.
  void shutdown();
  RelayMetrics metrics() const;

 private:
  class Session;
  friend class Session;

  // A connection: a node, or a peer relay of the mesh (a link).
  struct Node {
    std::shared_ptr<ConnectionHandle> handle;
    std::string name;  // the node's or the peer relay's; empty until identified
    bool relay = false;    // an identified link
    bool retired = false;  // a duplicate link, closed once its tunnels are
    int dialled = -1;      // index in peers_ if we dialled it
    std::string remote;
    std::string ip;        // once proven: counted in per_ip_
    std::string peer_ip;   // accepted connections: the peer's address
    bool proven = false;   // showed the realm secret (node or peer relay)
    uint64_t since_ms = 0;
    std::unordered_set<uint32_t> tunnels;
    double tokens = 0;
    uint64_t refilled_ns = 0;
  };
  // One end of a tunnel: a connection, and the id it knows the tunnel by
  // (ours for a node; the peer relay's for a link, 0 until it answered).
  struct End {
    uint64_t conn = 0;
    uint32_t wire = 0;
  };
  struct Tunnel {
    End a, b;              // a requested it
    uint64_t request = 0;  // a's request id while b (a link) has not answered
  };
  // A valid identify for a name held here, waiting for the holder's
  // answer to a probe.
  struct Claim {
    uint64_t conn = 0;    // the newcomer
    Identify request;
    uint64_t holder = 0;
    uint64_t holder_bytes = 0;  // received from the holder when probed
    uint64_t due_ms = 0;
  };
  struct Peer {
    PeerSpec spec;
    uint64_t conn = 0;     // the link being dialled or up; 0: none
    uint64_t due_ms = 0;   // next attempt
    uint64_t backoff_ms = 1000;
  };

  // From the Session, I/O thread, with the lock not held.
  void on_connected(uint64_t conn);
  void on_control(uint64_t conn, Bytes frame);
  void on_data(uint64_t conn, std::vector<Bytes>& frames, uint64_t credit);
  void on_closed(uint64_t conn, const CloseInfo& info);

  // The rest runs with mu_ held.
  void control(Node& node, uint64_t conn, const Bytes& frame);
  void handle_message(Node& node, uint64_t conn, Message& m);
  void unexpected(Node& node, uint64_t conn, const Message& m);
  void identify(Node& node, uint64_t conn, const Identify& m);
  bool admit(Node& node, uint64_t conn);
  void claim(Node& node, uint64_t conn, const Identify& m, uint64_t holder);
  void settle_claims(uint64_t now);
  void register_node(Node& node, uint64_t conn, const Identify& m);
  void tunnel_request(Node& node, uint64_t conn, const TunnelRequest& m);
  void tunnel_close(uint64_t conn, const TunnelClose& m);
  void list_nodes(Node& node, const ListNodes& m);
  void open_tunnel(Node& node, uint64_t conn, const TunnelRequest& m, uint64_t target);
  // Mesh.
  void peer_message(Node& link, uint64_t conn, Message& m);
  void peer_identify(Node& node, uint64_t conn, const PeerIdentify& m);
  void peer_identified(Node& node, uint64_t conn, const PeerIdentified& m);
  bool add_link(Node& node, uint64_t conn, const std::string& relay);
  void node_up(Node& link, const NodeUp& m);
  void peer_tunnel(Node& link, uint64_t conn, const PeerTunnel& m);
  void peer_tunnel_ok(Node& link, uint64_t conn, const PeerTunnelOk& m);
  void peer_tunnel_error(uint64_t conn, const PeerTunnelError& m);
  void broadcast(const Message& m);
  void dial_due(uint64_t now);
  void forward(uint64_t from, uint32_t tunnel, Bytes& frame);
  bool take_token(Node& node);
  uint32_t new_tunnel_id();
  void remove_tunnel(uint32_t id, uint64_t closer, const std::string& why);
  // `why` goes to the peer; `detail`, if any, only to the log.
  void reject(Node& node, uint64_t conn, CloseCode code, const std::string& why,
              const std::string& detail = "");
  void drop_node(uint64_t conn);
  void send(Node& node, const Message& m);
  void close_deferred();
  uint64_t link_to(const std::string& relay) const;
  bool linked_from(const Address& address) const;
  Node* find(uint64_t conn);

  const RelayServerConfig config_;
  Logger& log_;
  LogLimit unidentified_log_;  // lines about connections that proved nothing
  mutable std::mutex mu_;
  bool stopping_ = false;
  std::unordered_map<uint64_t, Node> nodes_;  // by connection id
  // Sorted, so that list_nodes pages through both in name order.
  std::map<std::string, uint64_t> names_;             // local node -> conn
  std::unordered_map<std::string, uint64_t> links_;   // peer relay -> conn
  std::map<std::string, std::string> remote_;         // node at a peer -> that relay
  std::unordered_map<uint32_t, Tunnel> tunnels_;
  std::vector<Claim> claims_;
  std::unordered_map<std::string, uint32_t> per_ip_;  // accepted, proven connections
  Endpoint* endpoint_ = nullptr;  // for dialling peers
  std::vector<Peer> peers_;
  uint32_t next_tunnel_ = 0;
  // Nodes over their backlog, and retired links without tunnels left,
  // closed at the end of the current event (not inside send() or
  // remove_tunnel(), whose callers hold references into nodes_).
  std::vector<uint64_t> backlogged_, retired_done_;
  RelayMetrics m_;
};

}  // namespace macula::relay
