// One QUIC connection: an ngtcp2_conn, its GnuTLS session and its streams.
// Threads: used only by whoever holds the endpoint's loop lock
// (loop_owner.h): the I/O thread, or a caller's thread that got the lock
// with a try-lock and does bounded work (send_direct, a read batch).
// Events are queued as they happen and handed to the ConnectionEvents only
// by deliver(), which the lock holder calls after its work (never inside
// a caller's send).
//
// Streams: the client opens bidirectional stream 0 as the control channel;
// each side opens several unidirectional streams for its data, and a
// StreamRouter spreads frames over them by sending process. Control bytes
// are written before data bytes, and the connection-level window is
// extended as bytes arrive, so control frames never wait behind data.
// Data streams take turns packet by packet, so a big message on one does
// not hold back a small one on another. With priority_stream, the last
// data stream carries the flows that ask for priority (stream_router.h)
// and is written before the other data streams, strictly except that
// after kPriorityRun picks of it in a row the others get one packet when
// they have data (bulk slows down under priority load, it never stops).
// While flows that stopped asking for priority have more than the router's
// budget of bulk unacknowledged on it (StreamRouter::priority_favoured),
// the priority stream just takes its turn with the others.
// A data stream's window only reopens as the user returns credit.
//
// Authentication: with auth_timeout_ns set, a peer is a stranger until the
// user calls ConnectionHandle::authenticate() (the binding does, once the
// cookie proof or the relay identify checked out; the transport does not
// know how). Until then the peer may open no data stream, has a small
// control window (kPreAuthControlWindow) and auth_timeout_ns after the
// handshake to be authenticated, or the connection closes (kAuthTimeout).
#pragma once

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "connection_handle.h"
#include "framing.h"
#include "path_info.h"
#include "send_buffer.h"
#include "stream_router.h"
#include "tls_context.h"
#include "udp_socket.h"

namespace macula {

class Connection;

// What a connection needs from its endpoint.
class ConnectionHost {
 public:
  virtual ~ConnectionHost() = default;
  virtual void add_cid(const ngtcp2_cid& cid, Connection* conn) = 0;
  virtual void remove_cid(const ngtcp2_cid& cid) = 0;
  // A server-side connection finished its handshake.
  virtual void accepted(Connection& conn) = 0;
  // A server-side connection's peer is authenticated (at the end of the
  // handshake when the endpoint does not ask for authentication).
  virtual void authenticated(Connection& conn) = 0;
  virtual UdpSocket& socket() = 0;
  // Scratch space for one GSO batch, shared by all connections (only the
  // loop-lock holder flushes, one connection at a time).
  virtual std::vector<uint8_t>& tx_buffer() = 0;
  // What a connection's figures grew by since it last said (each time it
  // publishes its PathInfo, and a last time before it is deleted).
  virtual void add_traffic(const TrafficTotals& delta) = 0;
};

struct ConnectionConfig {
  const TlsContext* tls = nullptr;
  ConnectionHost* host = nullptr;
  const uint8_t* reset_secret = nullptr;  // 32 bytes, for reset tokens
  uint64_t idle_timeout_ns = 0;
  uint64_t handshake_timeout_ns = 0;
  uint64_t keep_alive_ns = 0;       // all roles: PING at most this apart; 0: off
  uint64_t stream_window = 0;       // flow-control window per data stream
  size_t data_streams = 1;          // data streams each side opens
  bool priority_stream = false;     // reserve the last for priority flows
  uint64_t recv_unconsumed_limit = 0;  // delivered, not yet consumed
  size_t max_control_frame = 0;
  size_t max_control_frames = 64;  // non-tick frames per connection; 0: no bound
  size_t max_data_frame = 0;
  ngtcp2_cc_algo cc_algo = NGTCP2_CC_ALGO_BBR2;
  uint64_t client_keep_alive_ns = 0;  // the same for connections we dialled
  // Time after the handshake for the user to authenticate the peer
  // (see above); 0: every peer is trusted once the handshake is done.
  uint64_t auth_timeout_ns = 0;
};

// What a stranger may send on the control stream before authenticate():
// the cookie proof or an identify needs a few hundred bytes.
inline constexpr uint64_t kPreAuthControlWindow = 16u << 10;

// Picks of the priority stream in a row before the other data streams
// get a packet (when they have data).
inline constexpr size_t kPriorityRun = 32;

inline constexpr size_t kCidLen = 17;
inline constexpr size_t kMaxPacketsPerFlush = 1024;
// Size of ConnectionHost::tx_buffer().
size_t tx_buffer_size();

class Connection {
 public:
  static std::unique_ptr<Connection> dial(
      const ConnectionConfig& config, std::shared_ptr<ConnectionHandle> handle,
      std::shared_ptr<ConnectionEvents> events, const Address& local,
      const Address& remote, const std::string& peer_host, uint64_t now,
      std::string& error);
  // `hd` is the decoded first Initial packet from the client; `odcid`,
  // if the Initial carried a valid Retry token, the DCID of the client's
  // Initial before the Retry (the peer's address is then validated).
  static std::unique_ptr<Connection> accept(
      const ConnectionConfig& config, std::shared_ptr<ConnectionHandle> handle,
      const Address& local, const Address& remote, const ngtcp2_pkt_hd& hd,
      const ngtcp2_cid* odcid, uint64_t now, std::string& error);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void on_datagram(const Address& local, const Address& remote,
                   const uint8_t* data, size_t len, uint64_t now);
  void on_expiry(uint64_t now);
  void on_inbox(uint64_t now);
  // Closes because the endpoint is stopping.
  void abort(const CloseInfo& info, uint64_t now);
  // Closes with CONNECTION_REFUSED and `why` (the peer's slot is needed,
  // or it did not authenticate in time); reported to the user as `kind`.
  void refuse(CloseInfo::Kind kind, const std::string& why, uint64_t now);
  // Tells the peer the connection is closed (CONNECTION_CLOSE, sent at
  // once) because this process exits; reports nothing to the events.
  void close_for_exit(uint64_t now);

  // Writes what ngtcp2 lets it, at most `max_packets` packets; true if
  // more is ready (call again soon).
  bool flush(uint64_t now, size_t max_packets = kMaxPacketsPerFlush);
  // Called by a caller's thread that holds the loop lock while the I/O
  // thread waits (Endpoint::send_now): queues the handle's new sends and
  // writes up to `max_packets` packets. True if the I/O thread has work
  // left (more to write, or events to deliver, e.g. a close).
  bool send_direct(uint64_t now, size_t max_packets);
  // Hands the queued events to the events receiver, in order: connected,
  // control frames, data frames, writable, closed (last, once; nothing
  // after it). Kept while no receiver is attached.
  void deliver();

  // True if `tail` (the last 16 bytes of a datagram for an unknown
  // connection ID) is a stateless reset token the peer gave us.
  bool is_reset_token(const uint8_t* tail) const;
  // True if `head` (the start of a datagram we sent) is a packet
  // addressed with one of the peer's connection IDs in use.
  bool sent_by_us(const uint8_t* head, size_t len) const;
  // An ICMP "port unreachable" for a datagram we sent: nothing listens
  // at the peer's address any more (its process is gone, its host
  // answers). A connection in its handshake gives up if `r.to` is its
  // peer's address. An established one acts only if the quoted packet
  // carries one of the connection IDs we address the peer with: an
  // off-path attacker cannot know them, so cannot forge the error. Then
  // a connection we dialled closes at once (a server's address does not
  // move); one we accepted closes only if the peer stays silent for a
  // keep-alive period and a half since its last packet: a client whose
  // NAT mapping changed (the NAT answers ICMP for the old port) is alive,
  // and its next keep-alive shows its new address. Without a keep-alive
  // of our own, an accepted connection ignores ICMP. True if the error
  // was for this connection.
  bool on_unreachable(const UdpSocket::Refusal& r, uint64_t now);
  // A datagram that ends with a stateless reset token the peer gave us
  // (is_reset_token()): the peer lost the connection (it restarted).
  // Closes at once, whatever the datagram's size; ngtcp2 would only see
  // resets big enough to look like a packet it can decrypt.
  void on_stateless_reset(uint64_t now);

  uint64_t expiry() const;
  // Closed and past its draining period: the endpoint may delete it.
  bool finished(uint64_t now) const;
  ConnectionHandle& handle() { return *handle_; }
  const std::shared_ptr<ConnectionHandle>& shared_handle() const { return handle_; }
  const std::vector<ngtcp2_cid>& cids() const { return cids_; }

  // ---- Paths and migration (connection_path.cc) ----
  // Client role only. Moves the connection to the local address `local`
  // (one of ours, with the endpoint's port) once a PATH_CHALLENGE on the
  // new path is answered; until then, and for good if it is not, the old
  // path carries the traffic (ngtcp2's validated migration: a dead new
  // path costs nothing). When the old path is known dead (its local
  // address is gone), `immediate` moves at once and validates after:
  // ngtcp2 writes path probes only within the current path's congestion
  // window, which a dead path's unacknowledged data keeps full, so a
  // validation from a dead path waits for loss-timer probes (seconds,
  // or past the validation timeout), on both ends. `done`, if set, is
  // called exactly once with the outcome: at once when the migration
  // cannot start, else when the validation ends (or the connection
  // closes).
  void migrate(const Address& local, uint64_t now, MigrationCallback done,
               bool immediate = false);
  // The current path (what packets leave from and go to).
  Address local_address() const;
  Address remote_address() const;
  Role role() const { return role_; }
  bool is_open() const { return state_ == State::kOpen; }
  // The handshake completed at some point (the connection may be closed now).
  bool reached_open() const { return reached_open_; }
  // Why it closed; meaningful once it has.
  const CloseInfo& close_info() const { return close_info_; }
  bool authenticated() const { return authenticated_; }
  bool migrating() const { return migration_started_ != 0; }
  // True if a migration to `local` failed less than a back-off ago: the
  // endpoint's automatic checks leave it alone meanwhile.
  bool recently_failed(const Address& local, uint64_t now) const;
  // The local address an operator chose (empty: none). The endpoint's
  // automatic checks leave a connection on it while it exists.
  void set_pinned_local(const Address& local) { pinned_local_ = local; }
  const Address& pinned_local() const { return pinned_local_; }
  // Refreshes the handle's PathInfo: at most every 100 ms unless `force`;
  // a refresh skipped for that reason happens by timer (expiry()), so the
  // snapshot is never more than 100 ms behind the last activity.
  void publish_path(uint64_t now, bool force);

 private:
  enum class State { kHandshake, kOpen, kClosing, kDraining, kClosed };

  struct StreamOut {
    int64_t id = -1;
    SendBuffer buffer;
    bool blocked = false;
  };
  struct StreamIn {
    Channel channel;
    FrameDecoder decoder;
    uint64_t credit_held = 0;  // bytes waiting for consumed()
  };
  // Data frames not yet on a stream: behind a barrier frame.
  struct Unrouted {
    ChunkCutter cutter;
    std::vector<OrderKey> routes;
    size_t next = 0;
  };

  friend struct ConnectionCallbacks;

  Connection(const ConnectionConfig& config,
             std::shared_ptr<ConnectionHandle> handle, Role role);
  bool init_tls(const std::string& peer_host);
  void settings_and_params(uint64_t now, const Address& remote, ngtcp2_settings& s,
                           ngtcp2_transport_params& p) const;

  // ngtcp2 callbacks (static trampolines in the .cc).
  int on_stream_data(int64_t stream_id, const uint8_t* data, size_t len);
  void on_acked(int64_t stream_id, uint64_t offset, uint64_t len);
  int on_new_cid(ngtcp2_cid* cid, uint8_t* token, size_t cidlen);
  void on_remove_cid(const ngtcp2_cid* cid);
  void on_path_validation(const ngtcp2_path* path,
                          ngtcp2_path_validation_result res);
  void finish_migration(MigrationResult result, const Address& local);
  uint64_t lost_packets() const;
  void count_traffic(const PathInfo& p);

  void after_read(uint64_t now);
  void establish(uint64_t now);
  void set_keep_alive();
  void open_streams();
  void open_data_streams();
  bool gated() const { return config_.auth_timeout_ns != 0; }
  void authenticate();
  StreamOut* pick_stream();
  StreamOut* pick_data(size_t n);  // round-robin over data streams [0, n)
  bool has_unsent() const;
  // Bytes one flush may write (see the .cc): bounded on paths whose
  // minimum round trip is at least this.
  static constexpr uint64_t kBurstRttNs = 1000000;
  size_t send_budget() const;
  class TxBatch;
  int write_packets(TxBatch& batch, uint64_t now, size_t max_packets, size_t& total);
  int after_flush(uint64_t now, size_t total);
  void queue_sends(std::vector<ConnectionHandle::Send>& sends);
  void queue_data(OutChunk chunk, std::vector<OrderKey> routes);
  void route_unrouted();
  bool send_batch(const Address& from, const Address& to, const uint8_t* data,
                  size_t len, size_t seg);
  void apply_credit(uint64_t credit);
  void fail(int liberr, uint64_t now);
  void close_gone(uint64_t now);
  void close_with(const ngtcp2_connection_close_error& ccerr,
                  const CloseInfo& info, uint64_t now);
  void enter_closed(State state, const CloseInfo& info, uint64_t now);
  void report_closed(const CloseInfo& info);
  bool events_owed() const;
  void deliver_data();
  CloseInfo peer_close_info();

  const ConnectionConfig config_;
  const std::shared_ptr<ConnectionHandle> handle_;
  const Role role_;
  std::shared_ptr<ConnectionEvents> events_;
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t session_ = nullptr;
  ngtcp2_crypto_conn_ref conn_ref_{};
  State state_ = State::kHandshake;
  bool handshake_done_ = false;  // set in a callback, acted on after read
  bool authenticated_ = false;
  bool more_streams_ = false;    // the peer let us open more (callback)
  uint64_t auth_deadline_ = UINT64_MAX;
  uint64_t control_held_ = 0;    // control credit kept back until authenticated
  std::vector<ngtcp2_cid> cids_;
  std::string peer_host_;

  StreamOut control_out_;
  std::vector<StreamOut> data_out_;
  StreamRouter router_{1};
  std::deque<Unrouted> unrouted_;
  size_t next_data_ = 0;          // data stream whose turn it is
  size_t priority_run_ = 0;       // priority-stream picks in a row
  std::map<int64_t, StreamIn> streams_in_;
  uint64_t control_credit_ = 0;   // control bytes to give back at once
  size_t control_frames_in_ = 0;  // non-tick control frames received
  uint64_t conn_credit_ = 0;      // connection-level bytes to give back
  uint64_t data_credit_held_ = 0; // data bytes waiting for consumed()
  uint64_t unconsumed_ = 0;       // delivered data bytes not yet consumed

  // Events waiting for deliver() (and for a receiver to be attached).
  bool pending_connected_ = false;
  std::vector<Bytes> pending_control_;
  std::vector<Bytes> pending_data_;
  uint64_t pending_data_bytes_ = 0;
  bool writable_owed_ = false;
  bool closed_reported_ = false;   // closed; the event waits for deliver()
  bool closed_delivered_ = false;
  CloseInfo close_info_;
  bool reached_open_ = false;

  std::vector<uint8_t> close_packet_;
  Address close_from_, close_to_;
  uint64_t drain_deadline_ = 0;

  // Paths and migration.
  std::vector<MigrationCallback> migration_waiters_;
  uint64_t migration_started_ = 0;  // 0: none running
  Address failed_local_;            // last local address that failed validation
  uint64_t failed_until_ = 0;
  Address pinned_local_;
  uint64_t migrations_ = 0, failed_migrations_ = 0;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
  uint64_t published_at_ = 0;
  TrafficTotals counted_;  // what add_traffic() was told so far
  uint64_t publish_due_ = UINT64_MAX;  // a skipped refresh is owed by then

  // Dead peers (on_unreachable).
  uint64_t last_rx_ = 0;         // when the last datagram arrived
  uint64_t gone_deadline_ = 0;   // close then unless the peer speaks; 0: none
};

// CLOCK_MONOTONIC in nanoseconds.
uint64_t now_ns();

}  // namespace macula
