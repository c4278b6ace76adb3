// A node's side of the relay protocol (relay_protocol.h): dials a
// macula-relay, proves its name with the realm secret, checks the relay's
// proof in return, and then opens tunnels to other nodes and carries
// opaque packets over them.
//
// Threads: the public methods may be called from any thread. Events arrive
// from the holder of the endpoint's loop lock (loop_owner.h: the I/O
// thread, as nothing reads a relay endpoint with read_now), in order, and
// none after closed(). A
// RelayClient does not own its endpoint; keep the endpoint alive longer.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "endpoint.h"
#include "relay_protocol.h"

namespace macula::relay {

struct RelayClientConfig {
  std::string node_name;     // must be valid_name()
  std::string realm_secret;  // the realm's shared secret
  Address relay;             // where the relay listens
  std::string relay_host;    // checked against its certificate in CA mode
};

// `base` (address, TLS files and mode) with what a relay client needs:
// ALPN kAlpn, no accepting, the protocol's frame limits, keep-alive.
EndpointConfig relay_client_endpoint_config(EndpointConfig base);

class RelayClientEvents {
 public:
  virtual ~RelayClientEvents() = default;
  // The relay accepted our name and proved it belongs to the realm;
  // `relay` carries its name and the limits it applies to us.
  virtual void identified(const Identified& relay) = 0;
  // Replies to request_tunnel(), matched by request id.
  virtual void tunnel_ok(uint64_t request, uint32_t tunnel) = 0;
  virtual void tunnel_error(uint64_t request, const std::string& reason) = 0;
  // A reply `error` to another request (e.g. a second identify).
  virtual void request_error(uint64_t request, const std::string& reason) {
    (void)request;
    (void)reason;
  }
  // A reply to list_nodes(), matched by request id (refusals arrive as
  // request_error).
  virtual void node_list(const NodeList& page) { (void)page; }
  // Node `source` opened `tunnel` to us.
  virtual void tunnel_incoming(uint32_t tunnel, const std::string& source) = 0;
  // The relay closed `tunnel` (the other end closed it or went away).
  virtual void tunnel_closed(uint32_t tunnel, const std::string& reason) = 0;
  // One packet from the other end of `tunnel`; the span is valid during
  // the call only.
  virtual void packet(uint32_t tunnel, std::span<const uint8_t> packet) = 0;
  // The relay connection is gone. A refusal by the relay arrives as
  // kind kPeer with a CloseCode and the reason token as text; a relay that
  // failed its proof as kind kLocal with code CloseCode::kRelayProof.
  virtual void closed(const CloseInfo& info) = 0;
};

class RelayClient : public std::enable_shared_from_this<RelayClient> {
 public:
  // Dials the relay through `endpoint`, whose TlsConfig must use ALPN
  // kAlpn. Identify goes out as soon as the TLS handshake is confirmed.
  static std::shared_ptr<RelayClient> connect(Endpoint& endpoint,
                                              const RelayClientConfig& config,
                                              std::shared_ptr<RelayClientEvents> events);

  // Asks for a tunnel to `target`; returns the request id that
  // tunnel_ok/tunnel_error will carry. Before identified() the request is
  // held and sent right after identification.
  uint64_t request_tunnel(const std::string& target);
  // Asks which nodes of the realm are online (one page, names after
  // `after`); returns the request id node_list/request_error will carry.
  // Held until identified, like request_tunnel().
  uint64_t list_nodes(const std::string& after);
  // Sends one packet (1..kMaxPacketSize bytes, copied) on `tunnel`.
  // kBusy: sent, but the connection's queue is above its high-water mark.
  SendStatus send_packet(uint32_t tunnel, std::span<const uint8_t> packet);
  // The same for several packets of one tunnel, as one send (one lock
  // round on the connection for the batch). No packet may be empty.
  SendStatus send_packets(uint32_t tunnel,
                          std::span<const std::span<const uint8_t>> packets);
  // Bytes queued on the relay connection and not yet acknowledged.
  uint64_t queued_bytes() const { return handle_->stats().queued_bytes; }
  // Tells the relay we are done with `tunnel`; the other end is told.
  void close_tunnel(uint32_t tunnel, const std::string& reason);
  // Closes the relay connection (closed() follows).
  void close();

  bool identified() const;

 private:
  class Bridge;
  friend class Bridge;

  RelayClient(const RelayClientConfig& config, std::shared_ptr<RelayClientEvents> events)
      : config_(config), events_(std::move(events)) {}

  // From the Bridge, loop lock held.
  void on_connected();
  void on_control(Bytes frame);
  void on_data(std::vector<Bytes>& frames, uint64_t credit);
  void on_identified(const Identified& m);
  void fail(CloseCode code, const std::string& why);
  uint64_t request(Message m);

  const RelayClientConfig config_;
  const std::shared_ptr<RelayClientEvents> events_;
  std::shared_ptr<ConnectionHandle> handle_;

  mutable std::mutex mu_;
  uint64_t next_id_ = 1;
  uint64_t identify_id_ = 0;
  bool identified_ = false;
  std::vector<Message> held_;  // requested before identification
};

}  // namespace macula::relay
