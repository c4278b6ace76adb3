#include "endpoint.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include <gnutls/crypto.h>

namespace macula {
namespace {

constexpr int kMaxReadBatches = 64;
// One read_now() call stays short, as work on an Erlang scheduler should
// (a batch is up to 16 datagrams of up to 64 KB: about half a millisecond
// of decryption).
constexpr int kMaxCallerReadBatches = 1;
// What a caller's thread writes per connection before it leaves the rest
// to the I/O thread, for the same reason: a send, or what the ACKs read
// let out: bulk goes faster when the reading scheduler writes its share
// (1 MB messages 1.3-1.9 GB/s with this bound or none, 0.8-1.1 with 16).
constexpr size_t kMaxCallerPackets = 16;
constexpr size_t kMaxCallerFlushPackets = 128;
constexpr uint32_t kMaxResetsPerSecond = 100;
// How often reap() walks every connection (see timers_ in the header).
constexpr uint64_t kSweepNs = 500'000'000ull;
// RFC 9000 section 10.3: a reset is smaller than what triggered it (no
// amplification) and at least 21 bytes, and up to 43 bytes it is one byte
// shorter, so it looks like any short packet. Idle keep-alive PINGs are
// 39 bytes: they draw a reset too, so a restarted node's idle peers learn
// it within a keep-alive period.
constexpr size_t kMinResetSize =
    NGTCP2_MIN_STATELESS_RESET_RANDLEN + NGTCP2_STATELESS_RESET_TOKENLEN;
constexpr size_t kMaxResetSize = 43;

std::string cid_key(const uint8_t* data, size_t len) {
  return std::string(reinterpret_cast<const char*>(data), len);
}

}  // namespace

Endpoint::Endpoint(const EndpointConfig& config,
                   std::shared_ptr<EndpointEvents> events)
    : config_(config), events_(std::move(events)) {}

std::unique_ptr<Endpoint> Endpoint::open(const EndpointConfig& config,
                                         std::shared_ptr<EndpointEvents> events,
                                         std::string& error) {
  std::unique_ptr<Endpoint> ep(new Endpoint(config, std::move(events)));
  ep->tls_ = TlsContext::create(config.tls, error);
  if (!ep->tls_) return nullptr;
  std::memcpy(ep->reset_secret_, ep->tls_->reset_secret(), sizeof ep->reset_secret_);
  // Retry tokens only need to outlive one handshake: a fresh key per run.
  uint8_t token_secret[32];
  gnutls_rnd(GNUTLS_RND_KEY, token_secret, sizeof token_secret);
  ep->admission_ = std::make_unique<Admission>(config.admission, token_secret);
  if (!ep->socket_.open(config.bind_ip, config.port, error)) return nullptr;
  ep->loop_ = LoopOwner::create(error);
  if (!ep->loop_) return nullptr;
  ep->open_address_watch();
  for (int fd : {ep->socket_.fd(), ep->watch_.fd()})
    if (fd >= 0) ep->loop_->watch(fd);
  ep->thread_ = std::thread([p = ep.get()] { p->run(); });
  return ep;
}

Endpoint::~Endpoint() {
  if (thread_.joinable()) {
    stopping_.store(true);
    loop_->wake();
    thread_.join();
  }
  if (loop_) loop_->shut();
}

std::shared_ptr<ConnectionHandle> Endpoint::new_handle(Role role) {
  // Below the unconsumed limit, so the last credit that matters wakes it.
  return std::make_shared<ConnectionHandle>(next_id_++, role, loop_,
                                            config_.send_high_water,
                                            config_.send_low_water,
                                            config_.recv_unconsumed_limit / 4);
}

std::shared_ptr<ConnectionHandle> Endpoint::dial(
    const Address& remote, const std::string& host,
    const EventsFactory& make_events) {
  auto handle = new_handle(Role::kClient);
  loop_->post(DialRequest{handle, make_events(handle->id()), remote, host});
  return handle;
}

EndpointStats Endpoint::stats() const {
  EndpointStats s{n_conns_.load(), n_accepted_.load(), n_dropped_.load(), n_resets_.load(),
                  n_ignored_unreachable_.load(), n_failed_handshakes_.load(), {}};
  s.traffic = {n_bytes_sent_.load(), n_bytes_received_.load(), n_lost_.load(),
               n_migrations_.load(), n_failed_migrations_.load()};
  std::lock_guard lock(admission_stats_mu_);
  s.admission = admission_stats_;
  return s;
}

void Endpoint::add_traffic(const TrafficTotals& d) {
  n_bytes_sent_.fetch_add(d.bytes_sent, std::memory_order_relaxed);
  n_bytes_received_.fetch_add(d.bytes_received, std::memory_order_relaxed);
  n_lost_.fetch_add(d.lost_packets, std::memory_order_relaxed);
  n_migrations_.fetch_add(d.migrations, std::memory_order_relaxed);
  n_failed_migrations_.fetch_add(d.failed_migrations, std::memory_order_relaxed);
}

ConnectionConfig Endpoint::connection_config() {
  ConnectionConfig c;
  c.tls = tls_.get();
  c.host = this;
  c.reset_secret = reset_secret_;
  c.idle_timeout_ns = config_.idle_timeout_ms * 1000000;
  c.handshake_timeout_ns = config_.handshake_timeout_ms * 1000000;
  c.keep_alive_ns = config_.keep_alive_ms * 1000000;
  c.stream_window = config_.stream_window;
  c.data_streams = config_.data_streams;
  c.priority_stream = config_.priority_stream;
  c.recv_unconsumed_limit = config_.recv_unconsumed_limit;
  c.max_control_frame = config_.max_control_frame;
  c.max_control_frames = config_.max_control_frames;
  c.max_data_frame = config_.max_data_frame;
  c.cc_algo = config_.cc_algo;
  c.client_keep_alive_ns = config_.client_keep_alive_ms * 1000000;
  c.auth_timeout_ns = config_.auth_timeout_ms * 1000000;
  return c;
}

void Endpoint::add_cid(const ngtcp2_cid& cid, Connection* conn) {
  by_cid_[cid_key(cid.data, cid.datalen)] = conn;
}

void Endpoint::remove_cid(const ngtcp2_cid& cid) {
  by_cid_.erase(cid_key(cid.data, cid.datalen));
}

void Endpoint::accepted(Connection& conn) {
  ++n_accepted_;
  if (events_) events_->accepted(conn.shared_handle());
}

void Endpoint::authenticated(Connection& conn) {
  admission_->settled(conn.handle().id());
  publish_admission();
}

void Endpoint::publish_admission() {
  AdmissionStats s = admission_->stats();
  std::lock_guard lock(admission_stats_mu_);
  admission_stats_ = s;
}

// A caller's thread, while the I/O thread waits: writes a connection's new
// sends at once (a message and its reply each skip a thread hand-off).
// False (post instead) if the connection is not open or not yet known.
bool Endpoint::send_now(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end() || !it->second->is_open()) return false;
  Connection* c = it->second.get();
  if (c->send_direct(now_ns(), kMaxCallerPackets)) dirty_.insert(c);
  uint64_t deadline = c->expiry();
  timers_.set(c, deadline);
  loop_->after_caller_work(!dirty_.empty(), deadline);
  return true;
}

void Endpoint::set_caller_reads(bool on) { loop_->set_caller_reads(socket_.fd(), on); }

Endpoint::ReadResult Endpoint::read_now() {
  LoopOwner::Lock lock(*loop_, true);
  if (!lock) {
    loop_->request_read();
    return ReadResult::kBusy;
  }
  if (stopping_.load()) return ReadResult::kDone;
  bool more = read_socket(now_ns(), kMaxCallerReadBatches);
  std::vector<Connection*> touched(dirty_.begin(), dirty_.end());
  flush_dirty(now_ns(), kMaxCallerFlushPackets);
  // Only what this read touched has new deadlines: no walk over every
  // connection on a scheduler per batch.
  uint64_t deadline = UINT64_MAX;
  for (Connection* c : touched)
    if (uint64_t e = c->expiry(); e != 0) deadline = std::min(deadline, e);
  loop_->after_caller_work(!dirty_.empty(), deadline);
  return more ? ReadResult::kMore : ReadResult::kDone;
}

void Endpoint::run() {
  LoopOwner::Lock lock(*loop_, false);
  loop_->attach(this);
  uint64_t spin_until = 0;
  while (!stopping_.load()) {
    uint64_t now = now_ns();
    uint64_t deadline = !dirty_.empty() || now < spin_until ? now : next_deadline();
    epoll_event evs[4];
    LoopOwner::Wakeup w = loop_->wait(lock, now, deadline, evs, 4);
    now = now_ns();
    // After activity, poll for a short while instead of sleeping: the
    // answer to what we just delivered or sent often comes within tens of
    // microseconds, and a sleeping thread takes as long again to wake.
    if (w.woken) spin_until = now + config_.busy_poll_us * 1000;
    for (int i = 0; i < w.fds; ++i) on_fd_event(evs[i], now);
    if (loop_->take_read_request()) read_socket(now, kMaxReadBatches);
    turn(now);
  }
  loop_->attach(nullptr);
  shutdown_all();
}

void Endpoint::on_fd_event(const epoll_event& ev, uint64_t now) {
  if (ev.data.fd == socket_.fd()) {
    if (ev.events & EPOLLERR) on_socket_errors(now);
    if (!loop_->caller_reads()) read_socket(now, kMaxReadBatches);
  } else if (ev.data.fd == watch_.fd()) {
    on_address_changes(now);
  }
}

// One pass over what the I/O thread owes after a wake-up.
void Endpoint::turn(uint64_t now) {
  drain_mailbox(now);
  run_timers(now_ns());
  flush_dirty(now_ns());
  after_send_errors(now_ns());
  run_path_check(now_ns());
  reap(now_ns());
}

bool Endpoint::read_socket(uint64_t now, int max_batches) {
  std::vector<Datagram> batch;
  for (int i = 0; i < max_batches; ++i) {
    if (i > 0) {
      // Hand over what arrived before reading more, so Erlang works on
      // frames while we read. The last batch is handed over last in the
      // loop (flush_dirty()), after our writes.
      for (Connection* c : dirty_) c->deliver();
    }
    batch.clear();
    bool more = socket_.receive(batch);
    for (const Datagram& d : batch) dispatch(d, now);
    // A scheduler reading the socket is woken by its errors too: drain
    // them here, or it would be woken again and again.
    if (socket_.take_error_hint()) on_socket_errors(now);
    if (!more) return false;
  }
  return true;
}

void Endpoint::dispatch(const Datagram& d, uint64_t now) {
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, d.data, d.size, kCidLen) != 0) {
    ++n_dropped_;
    return;
  }
  auto it = by_cid_.find(cid_key(vc.dcid, vc.dcidlen));
  if (it != by_cid_.end()) {
    it->second->on_datagram(d.to, d.from, d.data, d.size, now);
    dirty_.insert(it->second);
    return;
  }
  if (vc.version != 0) {
    accept_new(d, now);
    return;
  }
  if (Connection* c = reset_target(d)) {
    // A stateless reset from a peer that lost our connection (it
    // restarted); the token proved it.
    c->on_stateless_reset(now);
    dirty_.insert(c);
    return;
  }
  send_reset(d, vc.dcid, vc.dcidlen, now);
}

Connection* Endpoint::reset_target(const Datagram& d) {
  if (d.size < kMinResetSize) return nullptr;
  const uint8_t* tail = d.data + d.size - NGTCP2_STATELESS_RESET_TOKENLEN;
  for (auto& [id, c] : conns_)
    if (c->is_reset_token(tail)) return c.get();
  return nullptr;
}

// Each refusal is offered to every connection: it names its own by the
// connection ID quoted (an established one) or by address (a dial).
void Endpoint::on_socket_errors(uint64_t now) {
  UdpSocket::Refusal refusal;
  while (socket_.next_refused(refusal)) {
    bool claimed = false;
    for (auto& [id, c] : conns_) {
      if (!c->on_unreachable(refusal, now)) continue;
      dirty_.insert(c.get());
      claimed = true;
    }
    if (!claimed) ++n_ignored_unreachable_;
  }
}

// A packet that may start a connection: admitted, answered with a Retry
// (no state kept), or dropped (admission.h).
void Endpoint::accept_new(const Datagram& d, uint64_t now) {
  ngtcp2_pkt_hd hd;
  if (!config_.accept || conns_.size() >= config_.max_connections ||
      ngtcp2_accept(&hd, d.data, d.size) != 0 || hd.type != NGTCP2_PKT_INITIAL) {
    ++n_dropped_;
    return;
  }
  Admission::Decision verdict = admission_->judge(hd, d.from, now);
  if (verdict.verdict == Admission::Verdict::kRetry) return send_retry(d, hd, now);
  if (verdict.verdict == Admission::Verdict::kDrop) {
    ++n_dropped_;
    publish_admission();
    return;
  }
  if (verdict.evict) evict(verdict.evict, now);
  ConnectionConfig cc = connection_config();
  if (!verdict.validated)
    cc.handshake_timeout_ns = std::min(cc.handshake_timeout_ns,
                                       config_.unvalidated_handshake_timeout_ms * 1000000);
  std::string error;
  auto conn = Connection::accept(cc, new_handle(Role::kServer), d.to, d.from, hd,
                                 verdict.validated ? &verdict.odcid : nullptr, now, error);
  if (!conn) {
    ++n_dropped_;
    return;
  }
  Connection* c = conn.get();
  conns_.emplace(c->handle().id(), std::move(conn));
  ++n_conns_;
  admission_->opened(c->handle().id(), d.from);
  publish_admission();
  c->on_datagram(d.to, d.from, d.data, d.size, now);
  dirty_.insert(c);
}

// A half-open connection gives its slot to a peer that proved its address.
void Endpoint::evict(uint64_t id, uint64_t now) {
  admission_->settled(id);
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  it->second->refuse(CloseInfo::Kind::kLocal, "half-open slot taken by a validated peer", now);
  dirty_.insert(it->second.get());
}

void Endpoint::send_retry(const Datagram& d, const ngtcp2_pkt_hd& hd, uint64_t now) {
  uint8_t buf[256];
  size_t n = admission_->write_retry(hd, d.from, kCidLen, now, buf, sizeof buf);
  if (n) socket_.send(d.to, d.from, buf, n, n);
  publish_admission();
}

// A short-header packet for a connection we do not know: most likely our
// previous incarnation's. Tell the peer at once, within a rate limit.
void Endpoint::send_reset(const Datagram& d, const uint8_t* dcid, size_t dcidlen,
                          uint64_t now) {
  ++n_dropped_;
  if (d.size <= kMinResetSize || dcidlen != kCidLen) return;
  if (now - reset_window_start_ > 1000000000ull) {
    reset_window_start_ = now;
    resets_in_window_ = 0;
  }
  if (++resets_in_window_ > kMaxResetsPerSecond) return;
  ngtcp2_cid cid;
  ngtcp2_cid_init(&cid, dcid, dcidlen);
  uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
  if (ngtcp2_crypto_generate_stateless_reset_token(token, reset_secret_, 32, &cid) != 0)
    return;
  size_t size = std::min(kMaxResetSize, d.size - 1);
  uint8_t rand[kMaxResetSize - NGTCP2_STATELESS_RESET_TOKENLEN];
  size_t randlen = size - NGTCP2_STATELESS_RESET_TOKENLEN;
  gnutls_rnd(GNUTLS_RND_NONCE, rand, randlen);
  uint8_t buf[kMaxResetSize];
  ngtcp2_ssize n = ngtcp2_pkt_write_stateless_reset(buf, size, token, rand, randlen);
  if (n > 0) {
    socket_.send(d.to, d.from, buf, size_t(n), size_t(n));
    ++n_resets_;
  }
}

void Endpoint::close_for_exit(uint64_t limit_ms) {
  struct Done {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
  };
  auto done = std::make_shared<Done>();
  bool posted = loop_->post([this, done] {
    uint64_t now = now_ns();
    for (auto& [id, c] : conns_) c->close_for_exit(now);
    std::lock_guard lock(done->mu);
    done->done = true;
    done->cv.notify_all();
  });
  if (!posted) return;  // the endpoint stopped: nothing left to close
  std::unique_lock lock(done->mu);
  done->cv.wait_for(lock, std::chrono::milliseconds(limit_ms), [&] { return done->done; });
}

void Endpoint::drain_mailbox(uint64_t now) {
  Mailbox::Mail mail = loop_->take_mail();
  for (DialRequest& dial : mail.dials) start_dial(dial, now);
  for (uint64_t id : mail.ids) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    it->second->on_inbox(now);
    dirty_.insert(it->second.get());
  }
  for (auto& task : mail.tasks) task();
}

void Endpoint::start_dial(DialRequest& dial, uint64_t now) {
  std::string error;
  Address remote = socket_.to_socket_family(dial.remote);
  auto conn = Connection::dial(connection_config(), dial.handle, dial.events,
                               dial_local(remote), remote, dial.host, now, error);
  if (!conn) {
    dial.handle->set_closed();
    dial.events->closed({CloseInfo::Kind::kProtocol, 0, error});
    return;
  }
  Connection* c = conn.get();
  conns_.emplace(dial.handle->id(), std::move(conn));
  ++n_conns_;
  // Whatever was queued before the dial was processed.
  c->on_inbox(now);
  dirty_.insert(c);
}

void Endpoint::run_timers(uint64_t now) {
  for (Connection* c : timers_.take_due(now)) {
    c->on_expiry(now);
    dirty_.insert(c);
  }
}

// Writes, then hands received frames to the user: the reply to what we
// hand over is written on the caller's thread (send_now()) if this thread
// is waiting by then, so little should follow the hand-over.
void Endpoint::flush_dirty(uint64_t now, size_t max_packets) {
  std::unordered_set<Connection*> again;
  for (Connection* c : dirty_)
    if (c->flush(now, max_packets)) again.insert(c);
  for (Connection* c : dirty_) {
    c->deliver();
    note_deadline(c);
    touched_.insert(c);
  }
  dirty_ = std::move(again);
}

// Only connections flushed this turn can have finished, except a closed
// one whose last holder dropped its handle: the sweep finds those, and
// re-files every deadline.
void Endpoint::reap(uint64_t now) {
  if (now >= next_sweep_) {
    next_sweep_ = now + kSweepNs;
    touched_.clear();
    for (auto it = conns_.begin(); it != conns_.end();) {
      Connection* c = (it++)->second.get();
      if (!reap_one(c, now)) note_deadline(c);
    }
    return;
  }
  for (Connection* c : std::exchange(touched_, {})) reap_one(c, now);
}

// Removes `c` if it is finished; true if it did.
bool Endpoint::reap_one(Connection* c, uint64_t now) {
  if (!c->finished(now)) return false;
  if (c->role() == Role::kServer && !c->reached_open()) handshake_failed(*c);
  c->publish_path(now, true);  // its last figures into the totals
  for (const ngtcp2_cid& cid : c->cids()) remove_cid(cid);
  uint64_t id = c->handle().id();
  admission_->settled(id);
  publish_admission();
  dirty_.erase(c);
  timers_.remove(c);
  conns_.erase(id);
  --n_conns_;
  return true;
}

// What a stranger's failed handshake tells the operator (rate-limited by
// the user of the events: strangers can cause any number of these).
void Endpoint::handshake_failed(const Connection& c) {
  const CloseInfo& why = c.close_info();
  if (why.kind == CloseInfo::Kind::kLocal || why.kind == CloseInfo::Kind::kEndpointStopped) return;
  ++n_failed_handshakes_;
  if (events_) events_->handshake_failed(c.remote_address(), why);
}

uint64_t Endpoint::next_deadline() const {
  return std::min(path_check_at_, timers_.earliest());
}

void Endpoint::shutdown_all() {
  loop_->shut();
  uint64_t now = now_ns();
  CloseInfo info{CloseInfo::Kind::kEndpointStopped, 0, "endpoint stopped"};
  Mailbox::Mail mail = loop_->take_mail();
  for (DialRequest& dial : mail.dials) {
    dial.handle->set_closed();
    dial.events->closed(info);
  }
  for (uint64_t id : mail.ids)
    if (auto it = conns_.find(id); it != conns_.end()) it->second->on_inbox(now);
  for (auto& task : mail.tasks) task();  // their waiters hear "closed" below
  for (auto& [id, c] : conns_) {
    c->abort(info, now);
    c->deliver();
  }
  conns_.clear();
  by_cid_.clear();
  dirty_.clear();
}

}  // namespace macula
