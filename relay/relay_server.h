// The relay's logic: who is connected under which name, which tunnels join
// whom, and the forwarding of tunnel packets between them. Transport-free:
// it is handed accepted connections (it is the endpoint's EndpointEvents)
// and talks to them only through their ConnectionHandles.
//
// Threads: connection events arrive on the endpoint's I/O thread; tick(),
// shutdown() and metrics() may be called from any thread. One mutex guards
// the state (the I/O thread is the only busy caller, so it is uncontended).
//
// Authentication: a node registers a name only with
// HMAC(realm secret, exporter || "client" || name) and the relay answers
// with its own proof ("server" role), so both ends know the other holds the
// realm secret. A live name is never taken over.
//
// Limits per node: tunnels it is an end of; bytes queued towards it and not
// yet acknowledged (above that its packets are dropped: they are the
// nodes' own QUIC packets, which recover from loss); control messages per
// second; control bytes queued towards it. A node that breaks the
// protocol or stops reading is disconnected with a reason.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "endpoint.h"
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
  uint64_t identify_timeout_ms = 10000;
  uint64_t idle_timeout_ms = 30000;
  uint32_t control_rate = 50;     // control messages per second, sustained
  uint32_t control_burst = 200;   // and in a burst
};

// `base` (address, TLS files and mode) with what a relay needs: ALPN
// kAlpn, the protocol's frame limits, no bound on the number of control
// frames (the server limits their rate), keep-alive, and an idle timeout
// that frees a vanished node's name.
EndpointConfig relay_endpoint_config(EndpointConfig base,
                                     const RelayServerConfig& config);

// Counters since start plus current gauges. Reason-labelled counters use
// the protocol's reason tokens.
struct RelayMetrics {
  uint64_t connections = 0;        // gauge: connected, identified or not
  uint64_t nodes = 0;              // gauge: identified
  uint64_t tunnels = 0;            // gauge
  uint64_t connections_total = 0;
  uint64_t tunnels_total = 0;
  uint64_t packets_forwarded = 0;
  uint64_t bytes_forwarded = 0;    // tunnel packet bytes, headers excluded
  std::map<std::string, uint64_t> drops;       // unknown_tunnel, congested, closed
  std::map<std::string, uint64_t> rejections;  // identify and tunnel refusals
  std::map<std::string, uint64_t> bad_frames;  // control, data
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

  // Closes connections that did not identify in time. Any thread, about
  // once a second; `now_ms` is a monotonic clock in milliseconds.
  void tick(uint64_t now_ms);
  // Closes every connection with reason relay_shutdown and refuses later
  // ones. Any thread. The endpoint still has to send the closes: keep it
  // running a moment (a round trip) before destroying it.
  void shutdown();
  RelayMetrics metrics() const;

 private:
  class Session;
  friend class Session;

  struct Node {
    std::shared_ptr<ConnectionHandle> handle;
    std::string name;  // empty until identified
    std::string remote;
    uint64_t since_ms = 0;
    std::unordered_set<uint32_t> tunnels;
    double tokens = 0;
    uint64_t refilled_ns = 0;
  };
  struct Tunnel {
    uint64_t a = 0, b = 0;  // connection ids; a requested it
  };

  // From the Session, I/O thread, with the lock not held.
  void on_control(uint64_t conn, Bytes frame);
  void on_data(uint64_t conn, std::vector<Bytes>& frames, uint64_t credit);
  void on_closed(uint64_t conn, const CloseInfo& info);

  // The rest runs with mu_ held.
  void control(Node& node, uint64_t conn, const Bytes& frame);
  void handle_message(Node& node, uint64_t conn, Message& m);
  void identify(Node& node, uint64_t conn, const Identify& m);
  void tunnel_request(Node& node, uint64_t conn, const TunnelRequest& m);
  void tunnel_close(uint64_t conn, const TunnelClose& m);
  void forward(uint64_t from, uint32_t tunnel, Bytes& frame);
  bool take_token(Node& node);
  uint32_t new_tunnel_id();
  void remove_tunnel(uint32_t id, uint64_t closer, const char* reason);
  void reject(Node& node, uint64_t conn, CloseCode code, const std::string& why);
  void drop_node(uint64_t conn);
  void send(Node& node, const Message& m);
  void close_backlogged();
  Node* find(uint64_t conn);

  const RelayServerConfig config_;
  Logger& log_;
  mutable std::mutex mu_;
  bool stopping_ = false;
  std::unordered_map<uint64_t, Node> nodes_;  // by connection id
  std::unordered_map<std::string, uint64_t> names_;
  std::unordered_map<uint32_t, Tunnel> tunnels_;
  uint32_t next_tunnel_ = 0;
  // Nodes over their backlog, closed at the end of the current event (not
  // inside send(), whose callers hold references into nodes_).
  std::vector<uint64_t> backlogged_;
  RelayMetrics m_;
};

}  // namespace macula::relay
