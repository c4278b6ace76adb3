// An endpoint: one UDP socket, one I/O thread, one loop lock, and every
// QUIC connection that uses them, dialled and accepted alike. The
// transport's public entry point.
//
// Threads (the rule is loop_owner.h's): whoever holds the endpoint's loop
// lock may touch its connections: the I/O thread, or a caller's thread
// (an Erlang scheduler) that got the lock with a try-lock, for a send
// (ConnectionHandle::send) or a read (read_now), and does bounded work
// under it. A caller never waits for the lock; if it is busy, the I/O
// thread gets the job. Public methods may be called from any thread
// (close_for_exit: any but the I/O thread). Events are delivered by the
// lock holder: on the I/O thread, or on the thread inside read_now();
// never inside a send.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "address_watch.h"
#include "admission.h"
#include "connection.h"
#include "connection_handle.h"
#include "deadline_index.h"
#include "loop_owner.h"
#include "tls_context.h"
#include "udp_socket.h"

namespace macula {

struct EndpointConfig {
  std::string bind_ip = "::";  // dual-stack any
  uint16_t port = 0;           // 0: the kernel picks one
  bool accept = true;          // answer connections from peers
  TlsConfig tls;
  uint64_t idle_timeout_ms = 300000;  // liveness is the binding's job (Erlang: ticks)
  uint64_t handshake_timeout_ms = 10000;
  // The handshake timeout of a peer whose address is not validated (it
  // sent no Retry token): a spoofed source never finishes, so its slot
  // should not be held long.
  uint64_t unvalidated_handshake_timeout_ms = 3000;
  // Peers are strangers until ConnectionHandle::authenticate(), which
  // must come this long after the handshake at the latest (see
  // connection.h); 0: trusted once the handshake is done.
  uint64_t auth_timeout_ms = 0;
  // Half-open bounds and Retry (admission.h).
  AdmissionConfig admission;
  // Every connection sends a QUIC PING after this long without sending
  // anything the peer must acknowledge (0: only client_keep_alive_ms
  // applies). The relay and its clients set it, so NAT mappings stay open
  // and a dead node's name is freed by the idle timeout.
  uint64_t keep_alive_ms = 0;
  // Bytes queued per connection (all streams) before send() says kBusy
  // (for Erlang: busy_dist_port). A caller with one queue per connection
  // lets a small message overtake a big one only once both are here: room
  // for a couple of big messages in flight keeps small ones moving.
  uint64_t send_high_water = 32u << 20;
  uint64_t send_low_water = 8u << 20;
  uint64_t stream_window = 16u << 20;  // per data stream
  // Data streams per direction: frames of different flows (order_key.h)
  // spread over them, so one big message does not hold back the others.
  size_t data_streams = 8;
  // The last data stream carries flows that ask for priority and is
  // written first (connection.h, stream_router.h). Off by default (it
  // takes one of the data streams from bulk); the distribution binding
  // turns it on, the relay daemon and client leave it off.
  bool priority_stream = false;
  uint64_t recv_unconsumed_limit = 32u << 20;
  size_t max_control_frame = 64u << 10;
  // Non-tick control frames a peer may send over a connection's life; the
  // binding sets what its protocol needs (the distribution binding: a
  // handful; the relay, whose control protocol is long-lived and limits
  // itself: 0, no bound). The default keeps an unknown peer small.
  size_t max_control_frames = 64;
  size_t max_data_frame = 1u << 30;
  size_t max_connections = 4096;
  // After each event the I/O thread polls this long before sleeping
  // (0: sleep at once). Trades CPU for round-trip latency.
  uint64_t busy_poll_us = 0;
  // Congestion control. BBR v2 measured best here: on loopback ~1.4x
  // CUBIC's throughput, and with 20 ms delay + 1% loss a 16 MB round trip
  // in 1.2 s against CUBIC's 60 s (loss-based control collapses).
  ngtcp2_cc_algo cc_algo = NGTCP2_CC_ALGO_BBR2;
  // Move client-role connections to another local address by themselves
  // when this host's addresses or routes change, or sends fail for path
  // reasons (needs a wildcard bind_ip).
  bool follow_address_changes = true;
  // A connection we dialled that received nothing for this long sends a
  // PING. Behind a NAT that rebinds, a peer that only receives would
  // otherwise stay silent, and the server keep sending to the old
  // mapping, until the binding's next keep-alive (Erlang: a tick). 0: off.
  uint64_t client_keep_alive_ms = 2000;
};

class EndpointEvents {
 public:
  virtual ~EndpointEvents() = default;
  // A peer connected and passed the TLS checks. Attach events to the
  // handle to receive its frames (they are held until then).
  virtual void accepted(std::shared_ptr<ConnectionHandle> handle) = 0;
  // A peer's connection ended before its handshake did: a TLS alert (a
  // certificate or ALPN we refuse, or the peer refused ours), a peer that
  // gave up, a protocol error, or the handshake timeout. Not called for
  // connections this side closed (admission evictions, shutdown). Called
  // with the loop lock held, when the connection is reaped; must not block.
  virtual void handshake_failed(const Address& remote, const CloseInfo& why) {
    (void)remote;
    (void)why;
  }
};

struct EndpointStats {
  uint64_t connections = 0;
  uint64_t accepted = 0;
  uint64_t dropped_packets = 0;  // undecodable or for no connection
  uint64_t stateless_resets = 0;
  // ICMP "port unreachable" errors that named no connection of ours (a
  // forgery, or a packet of a connection already gone).
  uint64_t ignored_unreachable = 0;
  // Peers' connections that ended before their handshake did
  // (EndpointEvents::handshake_failed).
  uint64_t failed_handshakes = 0;
  AdmissionStats admission;
  // Every connection's traffic since the endpoint opened, closed ones
  // included (up to 100 ms behind: connections publish their figures at
  // most that often, and once more before they are deleted).
  TrafficTotals traffic;
};

class Endpoint : private ConnectionHost, private LoopOwner::Host {
 public:
  // Binds the socket and starts the I/O thread. On failure returns null and
  // sets `error` (e.g. "cannot bind UDP [::]:4433: Address already in use").
  static std::unique_ptr<Endpoint> open(const EndpointConfig& config,
                                        std::shared_ptr<EndpointEvents> events,
                                        std::string& error);
  // Closes every connection (peers are told at once) and joins the thread.
  ~Endpoint() override;

  // Starts a connection to `remote`; `host` is the peer's host as named
  // (checked against its certificate in CA mode). `make_events` is called
  // once, before dial returns, with the new connection's id; progress
  // arrives through what it returns: connected() or closed().
  using EventsFactory =
      std::function<std::shared_ptr<ConnectionEvents>(uint64_t id)>;
  std::shared_ptr<ConnectionHandle> dial(const Address& remote,
                                         const std::string& host,
                                         const EventsFactory& make_events);

  // Hands reading the socket to the caller (true) or back to the I/O
  // thread (false). While handed over, the caller calls read_now()
  // whenever socket_fd() is readable: the Erlang VM's schedulers poll it
  // like their own sockets (dist/nif/macula_drv.cc), so a packet and the
  // frames it carries reach their process on the thread that was woken.
  // The I/O thread keeps the timers, writes what callers leave it, and
  // reads when read_now() finds it busy.
  void set_caller_reads(bool on);
  // Reads and handles what the socket holds, on the calling thread, which
  // receives the events meanwhile. kMore: stopped after a batch, call
  // again; kBusy: the I/O thread was at work and reads instead.
  enum class ReadResult { kDone, kMore, kBusy };
  ReadResult read_now();
  int socket_fd() const { return socket_.fd(); }

  // The process is exiting (an atexit handler; any thread but the I/O
  // thread): every connection sends its peer a CONNECTION_CLOSE, so the
  // peer's node sees nodedown at once instead of after its tick timeout.
  // Waits at most `limit_ms` for the I/O thread to do it (the exit must
  // never hang). No events are delivered.
  void close_for_exit(uint64_t limit_ms);

  const Address& local_address() const { return socket_.local(); }
  uint16_t port() const { return socket_.local().port(); }
  EndpointStats stats() const;

  // Migrates this endpoint's client-role connections (QUIC lets only the
  // client migrate; accepted connections follow their peer by themselves).
  // `local`: an IP of this host to move to (port ignored), or an
  // unspecified Address{} for "the source address the routing table now
  // prefers towards each peer". `counted(n)` is called first, on the I/O
  // thread, with the number of client connections, then `done` once for
  // each of them by the loop-lock holder (see Connection::migrate and
  // MigrationCallback). Nothing is called if the
  // endpoint stops first. After a move to an explicit `local`, the
  // endpoint's own checks (address and route changes) leave the
  // connection there while that address exists; a request with an
  // unspecified `local` hands it back to them.
  void migrate(const Address& local, std::function<void(size_t)> counted,
               MigrationCallback done);
  // True if the endpoint follows address and route changes (netlink).
  bool watching_addresses() const { return watch_.fd() >= 0; }
  TrustMode trust_mode() const { return tls_->mode(); }

 private:
  Endpoint(const EndpointConfig& config, std::shared_ptr<EndpointEvents> events);

  // ConnectionHost, loop lock held.
  void add_cid(const ngtcp2_cid& cid, Connection* conn) override;
  void remove_cid(const ngtcp2_cid& cid) override;
  void accepted(Connection& conn) override;
  void handshake_failed(const Connection& conn);
  void authenticated(Connection& conn) override;
  UdpSocket& socket() override { return socket_; }
  std::vector<uint8_t>& tx_buffer() override { return tx_buffer_; }
  void add_traffic(const TrafficTotals& delta) override;

  // The I/O thread's loop: wait, then one turn over what is owed.
  void run();
  void on_fd_event(const epoll_event& ev, uint64_t now);
  void turn(uint64_t now);
  // LoopOwner::Host: a caller's thread with the loop lock (try_send).
  bool send_now(uint64_t id) override;
  // Reads up to `max_batches` batches; true if it stopped with more queued.
  bool read_socket(uint64_t now, int max_batches);
  void dispatch(const Datagram& d, uint64_t now);
  void accept_new(const Datagram& d, uint64_t now);
  void send_retry(const Datagram& d, const ngtcp2_pkt_hd& hd, uint64_t now);
  void evict(uint64_t id, uint64_t now);
  void publish_admission();
  Connection* reset_target(const Datagram& d);
  void on_socket_errors(uint64_t now);
  void send_reset(const Datagram& d, const uint8_t* dcid, size_t dcidlen, uint64_t now);
  void drain_mailbox(uint64_t now);
  void start_dial(DialRequest& dial, uint64_t now);
  void run_timers(uint64_t now);
  void flush_dirty(uint64_t now, size_t max_packets = kMaxPacketsPerFlush);
  void reap(uint64_t now);
  bool reap_one(Connection* c, uint64_t now);
  // Files `c`'s deadline in timers_ (after anything that may have moved it).
  void note_deadline(Connection* c) { timers_.set(c, c->expiry()); }
  // The earliest deadline (a connection's or the path check's), UINT64_MAX
  // if none.
  uint64_t next_deadline() const;
  void shutdown_all();
  std::shared_ptr<ConnectionHandle> new_handle(Role role);
  ConnectionConfig connection_config();

  // Paths and migration (endpoint_paths.cc), loop lock held.
  void open_address_watch();
  Address dial_local(const Address& remote) const;
  void on_address_changes(uint64_t now);
  void after_send_errors(uint64_t now);
  void schedule_path_check(uint64_t at);
  void run_path_check(uint64_t now);
  void check_paths(uint64_t now);
  void start_migration(const Address& local, const std::function<void(size_t)>& counted,
                       const MigrationCallback& done, uint64_t now);
  MigrationResult migration_target(const Address& local, Address& target) const;

  EndpointConfig config_;
  std::shared_ptr<EndpointEvents> events_;
  std::unique_ptr<TlsContext> tls_;
  UdpSocket socket_;
  AddressWatch watch_;
  std::shared_ptr<LoopOwner> loop_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> next_id_{1};
  uint8_t reset_secret_[32];
  std::unique_ptr<Admission> admission_;  // loop lock
  mutable std::mutex admission_stats_mu_;
  AdmissionStats admission_stats_;  // a copy for stats(), any thread

  // Loop lock held (the I/O thread, or a caller inside send_now/read_now).
  std::vector<uint8_t> tx_buffer_ = std::vector<uint8_t>(tx_buffer_size());
  std::unordered_map<uint64_t, std::unique_ptr<Connection>> conns_;
  std::unordered_map<std::string, Connection*> by_cid_;
  std::unordered_set<Connection*> dirty_;
  // Every connection's deadline as of the last time it was flushed, fired
  // or swept: a connection's deadline moves only when something is done
  // to it, and all of that puts it in dirty_ (or is send_now()), which
  // note_deadline()s it after the flush. The sweep (every kSweepNs)
  // re-files all of them and reaps what finished without being touched
  // (a closed connection whose handle was dropped), bounding any miss.
  DeadlineIndex<Connection> timers_;
  std::unordered_set<Connection*> touched_;  // flushed this turn: may have finished
  uint64_t next_sweep_ = 0;
  uint64_t reset_window_start_ = 0;
  uint32_t resets_in_window_ = 0;
  uint64_t path_check_at_ = UINT64_MAX;  // when to re-check client paths

  std::atomic<uint64_t> n_conns_{0}, n_accepted_{0}, n_dropped_{0}, n_resets_{0};
  std::atomic<uint64_t> n_ignored_unreachable_{0}, n_failed_handshakes_{0};
  std::atomic<uint64_t> n_bytes_sent_{0}, n_bytes_received_{0}, n_lost_{0};
  std::atomic<uint64_t> n_migrations_{0}, n_failed_migrations_{0};
};

}  // namespace macula
