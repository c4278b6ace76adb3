// The relay shim of dist_relay mode: carries the UDP packets of a node's
// inner endpoint (its normal end-to-end QUIC + TLS endpoint, bound to
// loopback) through tunnels of one macula-relay.
//
// Each open tunnel gets its own loopback UDP socket. The inner endpoint
// reaches the node at the other end of the tunnel by sending to that
// socket's port, and what arrives from the tunnel is sent to the inner
// endpoint from that socket, so to the inner endpoint every remote node is
// an ordinary peer at 127.0.0.1:<tunnel port>: dialled for tunnels we
// request, accepted like any client for tunnels another node opened. The
// relay only ever sees the inner endpoint's QUIC packets (ciphertext).
//
// Tunnel packets are datagrams: when the relay connection's send queue is
// above `max_queued`, packets from the inner endpoint are dropped (the
// inner QUIC recovers), so a slow relay path costs loss, never memory.
//
// Threads: public methods may be called from any thread. Events arrive on
// the relay connection's I/O thread (the holder of its endpoint's loop
// lock: nothing reads a relay endpoint with read_now) or on the shim's
// own pump thread (the one reading the tunnel sockets), never at the same
// time, and none after closed() or after the destructor returned. The
// destructor closes the relay connection (the relay tells the other ends)
// and joins both threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "endpoint.h"
#include "relay_client.h"

namespace macula::relay {

struct RelayShimConfig {
  RelayClientConfig client;  // our node name, realm secret, the relay
  // The relay connection's endpoint: bind address and TLS files; the
  // shim applies relay_client_endpoint_config() and never accepts.
  EndpointConfig endpoint;
  Address inner;  // the inner endpoint's loopback address
  // Bytes queued on the relay connection above which packets are dropped.
  uint64_t max_queued = 4u << 20;
  // A relay silent this long is gone (QUIC idle timeout; our keep-alive
  // PINGs every 2 s keep a live one talking). Its tunnels' connections go
  // down then: ICMP errors after the handshake are not trusted (anyone can
  // forge them), so this bounds how long a dead relay goes unnoticed, and
  // the relay frees the name of a node that vanished as soon.
  uint64_t relay_idle_timeout_ms = 8000;
};

struct RelayShimStats {
  uint64_t packets_out = 0;   // inner endpoint -> relay
  uint64_t packets_in = 0;    // relay -> inner endpoint
  uint64_t dropped_busy = 0;  // relay connection congested
  uint64_t dropped_other = 0; // unknown tunnel, foreign sender, full socket
  uint64_t tunnels = 0;       // open now
};

class RelayShimEvents {
 public:
  virtual ~RelayShimEvents() = default;
  // The relay accepted our name and proved it holds the realm secret.
  virtual void identified(const std::string& relay) = 0;
  // request_tunnel() succeeded: dial 127.0.0.1:`port` to reach the target.
  virtual void tunnel_ready(uint64_t request, uint32_t tunnel, uint16_t port) = 0;
  // request_tunnel() failed; `reason` is the relay's token (unknown_target,
  // self, tunnel_limit...) or "socket: ..." when no loopback socket could
  // be made.
  virtual void tunnel_failed(uint64_t request, const std::string& reason) = 0;
  // Node `source` opened a tunnel to us; its packets will come to the inner
  // endpoint from 127.0.0.1:`port`.
  virtual void tunnel_incoming(uint32_t tunnel, const std::string& source,
                               uint16_t port) = 0;
  // A page of list_nodes(): nodes of the realm online at the relay and its
  // linked relays, in name order; `more`: ask again after the last name.
  virtual void node_list(uint64_t request, const std::vector<NodeEntry>& nodes, bool more) {
    (void)request, (void)nodes, (void)more;
  }
  // A request other than a tunnel (list_nodes) was refused with `reason`.
  virtual void request_failed(uint64_t request, const std::string& reason) {
    (void)request, (void)reason;
  }
  // The other end or the relay closed `tunnel`; its socket is gone.
  virtual void tunnel_closed(uint32_t tunnel, const std::string& reason) = 0;
  // The relay connection ended (see RelayClientEvents::closed for how a
  // refusal is reported); every tunnel is gone, without tunnel_closed.
  virtual void closed(const CloseInfo& info) = 0;
};

class RelayShim {
 public:
  // Opens the relay connection's endpoint and dials the relay; progress
  // arrives as events. Null and `error` set if the endpoint or the pump
  // cannot start.
  static std::unique_ptr<RelayShim> open(const RelayShimConfig& config,
                                         std::shared_ptr<RelayShimEvents> events,
                                         std::string& error);
  ~RelayShim();
  RelayShim(const RelayShim&) = delete;
  RelayShim& operator=(const RelayShim&) = delete;

  // Asks the relay for a tunnel to node `target`; the returned request id
  // comes back with tunnel_ready or tunnel_failed.
  uint64_t request_tunnel(const std::string& target);
  // Asks the relay which nodes are online (one page after `after`); the
  // returned request id comes back with node_list or request_failed.
  // 0 if the relay connection is already gone.
  uint64_t list_nodes(const std::string& after);
  // Closes our end of `tunnel` (the relay tells the other end); unknown
  // tunnels are ignored.
  void close_tunnel(uint32_t tunnel);
  // Closes the relay connection without waiting (closed() follows); the
  // threads end with the destructor.
  void close();
  RelayShimStats stats() const;
  // The process is exiting (an atexit handler; not the relay connection's
  // I/O thread): the relay connection is closed now, so the relay frees
  // our name and tells the other ends of our tunnels at once, rather than
  // after its idle timeout. Waits at most `limit_ms`; no events follow.
  void close_for_exit(uint64_t limit_ms);

  class State;

 private:
  RelayShim() = default;
  std::shared_ptr<State> state_;
  std::unique_ptr<Endpoint> endpoint_;
};

}  // namespace macula::relay
