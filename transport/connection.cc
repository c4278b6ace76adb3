#include "connection.h"

#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <ctime>

namespace macula {
namespace {

constexpr size_t kMaxGsoPackets = 64;
constexpr size_t kMaxGsoBytes = 65000;  // one UDP datagram's length field
constexpr size_t kMaxVecs = 16;
constexpr uint64_t kControlWindow = 1 << 20;
constexpr uint64_t kConnWindow = 64ull << 20;
constexpr size_t kMaxUdpPayload = 1452;
// Loopback has a 64 KB MTU and per-packet costs dominate, so peers on the
// same host use bigger datagrams (never sent across a real link).
constexpr size_t kLoopbackUdpPayload = 8192;

ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<ngtcp2_conn*>(ref->user_data);
}

void random_bytes(uint8_t* dest, size_t len) {
  gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

ngtcp2_cid random_cid(size_t len) {
  ngtcp2_cid cid;
  cid.datalen = len;
  random_bytes(cid.data, len);
  return cid;
}

Address address_of(const ngtcp2_addr& a) {
  Address out;
  std::memcpy(&out.storage, a.addr, a.addrlen);
  out.len = a.addrlen;
  return out;
}

ngtcp2_path make_path(const Address& local, const Address& remote) {
  return ngtcp2_path{{const_cast<sockaddr*>(local.sa()), local.len},
                     {const_cast<sockaddr*>(remote.sa()), remote.len},
                     nullptr};
}

bool is_loopback(const Address& a) {
  if (a.storage.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr.s_addr) >> 24) == 127;
  auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return in6->sin6_addr.s6_addr[12] == 127;
  return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
}

bool is_local_stream(int64_t id, Role role) {
  return (id & 1) == (role == Role::kServer ? 1 : 0);
}

}  // namespace

// Trampolines from ngtcp2's C callbacks to the connection.
struct ConnectionCallbacks {
  static Connection* self(void* ud) { return static_cast<Connection*>(ud); }

  static void rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) {
    random_bytes(dest, len);
  }
  static int recv_stream_data(ngtcp2_conn*, uint32_t, int64_t id, uint64_t,
                              const uint8_t* data, size_t len, void* ud, void*) {
    return self(ud)->on_stream_data(id, data, len);
  }
  static int acked(ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t len,
                   void* ud, void*) {
    self(ud)->on_acked(id, offset, len);
    return 0;
  }
  static int new_cid(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token,
                     size_t cidlen, void* ud) {
    return self(ud)->on_new_cid(cid, token, cidlen);
  }
  static int remove_cid(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud) {
    self(ud)->on_remove_cid(cid);
    return 0;
  }
  static int handshake_done(ngtcp2_conn*, void* ud) {
    self(ud)->handshake_done_ = true;
    return 0;
  }
  static int more_streams(ngtcp2_conn*, uint64_t, void* ud) {
    self(ud)->more_streams_ = true;
    return 0;
  }
  static int path_validation(ngtcp2_conn*, uint32_t, const ngtcp2_path* path,
                             ngtcp2_path_validation_result res, void* ud) {
    self(ud)->on_path_validation(path, res);
    return 0;
  }

  static ngtcp2_callbacks make(Role role) {
    ngtcp2_callbacks cb{};
    if (role == Role::kClient) {
      cb.client_initial = ngtcp2_crypto_client_initial_cb;
      cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
      // A client is authenticated only once the server confirmed: in TLS
      // 1.3 the server may still reject our certificate after "completed".
      cb.handshake_confirmed = handshake_done;
    } else {
      cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
      cb.handshake_completed = handshake_done;
    }
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = rand;
    cb.get_new_connection_id = new_cid;
    cb.remove_connection_id = remove_cid;
    cb.recv_stream_data = recv_stream_data;
    cb.acked_stream_data_offset = acked;
    cb.path_validation = path_validation;
    cb.extend_max_local_streams_uni = more_streams;
    return cb;
  }
};

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

Connection::Connection(const ConnectionConfig& config,
                       std::shared_ptr<ConnectionHandle> handle, Role role)
    : config_(config), handle_(std::move(handle)), role_(role) {}

size_t tx_buffer_size() { return kMaxGsoBytes + kLoopbackUdpPayload; }

Connection::~Connection() {
  if (conn_) ngtcp2_conn_del(conn_);
  if (session_) gnutls_deinit(session_);
}

void Connection::settings_and_params(uint64_t now, const Address& remote,
                                     ngtcp2_settings& s,
                                     ngtcp2_transport_params& p) const {
  ngtcp2_settings_default(&s);
  if (is_loopback(remote)) {
    s.max_tx_udp_payload_size = kLoopbackUdpPayload;
    s.no_tx_udp_payload_size_shaping = 1;
  }
  s.initial_ts = now;
  s.cc_algo = config_.cc_algo;
  s.rand_ctx.native_handle = nullptr;
  s.handshake_timeout = config_.handshake_timeout_ns;
  s.max_window = 4 * kConnWindow;
  s.max_stream_window = 2 * config_.stream_window;
  ngtcp2_transport_params_default(&p);
  p.initial_max_data = kConnWindow;
  p.initial_max_stream_data_bidi_local = kControlWindow;
  p.initial_max_stream_data_bidi_remote = kControlWindow;
  p.initial_max_stream_data_uni = config_.stream_window;
  p.initial_max_streams_bidi = role_ == Role::kServer ? 1 : 0;
  p.initial_max_streams_uni = config_.data_streams;
  if (gated()) {
    // A stranger gets no data stream and a small control window until
    // authenticate() (see the header).
    p.initial_max_streams_uni = 0;
    p.initial_max_stream_data_bidi_local = kPreAuthControlWindow;
    p.initial_max_stream_data_bidi_remote = kPreAuthControlWindow;
  }
  p.max_idle_timeout = config_.idle_timeout_ns;
  p.active_connection_id_limit = 4;
  // A lone packet (a small reply) is acknowledged within 5 ms instead of
  // 25: the sender's probe timeout, which recovers a lost tail packet,
  // includes this delay. Busy streams are acknowledged every 2 packets
  // anyway.
  p.max_ack_delay = 5 * NGTCP2_MILLISECONDS;
}

bool Connection::init_tls(const std::string& peer_host) {
  session_ = config_.tls->new_session(role_, peer_host);
  if (!session_) return false;
  conn_ref_.get_conn = get_conn;
  conn_ref_.user_data = conn_;
  gnutls_session_set_ptr(session_, &conn_ref_);
  ngtcp2_conn_set_tls_native_handle(conn_, session_);
  return true;
}

std::unique_ptr<Connection> Connection::dial(
    const ConnectionConfig& config, std::shared_ptr<ConnectionHandle> handle,
    std::shared_ptr<ConnectionEvents> events, const Address& local,
    const Address& remote, const std::string& peer_host, uint64_t now,
    std::string& error) {
  std::unique_ptr<Connection> c(new Connection(config, std::move(handle), Role::kClient));
  c->events_ = std::move(events);
  c->peer_host_ = peer_host;
  ngtcp2_cid dcid = random_cid(18), scid = random_cid(kCidLen);
  ngtcp2_path path = make_path(local, remote);
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  c->settings_and_params(now, remote, s, p);
  ngtcp2_callbacks cb = ConnectionCallbacks::make(Role::kClient);
  int rv = ngtcp2_conn_client_new(&c->conn_, &dcid, &scid, &path,
                                  NGTCP2_PROTO_VER_V1, &cb, &s, &p, nullptr,
                                  c.get());
  if (rv != 0 || !c->init_tls(c->peer_host_)) {
    error = rv != 0 ? ngtcp2_strerror(rv) : "TLS session setup failed";
    return nullptr;
  }
  c->cids_.push_back(scid);
  config.host->add_cid(scid, c.get());
  return c;
}

std::unique_ptr<Connection> Connection::accept(
    const ConnectionConfig& config, std::shared_ptr<ConnectionHandle> handle,
    const Address& local, const Address& remote, const ngtcp2_pkt_hd& hd,
    const ngtcp2_cid* odcid, uint64_t now, std::string& error) {
  std::unique_ptr<Connection> c(new Connection(config, std::move(handle), Role::kServer));
  ngtcp2_cid scid = random_cid(kCidLen);
  ngtcp2_path path = make_path(local, remote);
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  c->settings_and_params(now, remote, s, p);
  p.original_dcid = hd.dcid;
  if (odcid) {
    // After our Retry: the client now uses the Retry's CID, and tells
    // both apart in its checks of our transport parameters.
    p.original_dcid = *odcid;
    p.retry_scid = hd.dcid;
    p.retry_scid_present = 1;
    s.token = hd.token;  // marks the path validated (no amplification limit)
  }
  ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token,
                                               config.reset_secret, 32, &scid);
  p.stateless_reset_token_present = 1;
  ngtcp2_callbacks cb = ConnectionCallbacks::make(Role::kServer);
  int rv = ngtcp2_conn_server_new(&c->conn_, &hd.scid, &scid, &path, hd.version,
                                  &cb, &s, &p, nullptr, c.get());
  if (rv != 0 || !c->init_tls("")) {
    error = rv != 0 ? ngtcp2_strerror(rv) : "TLS session setup failed";
    return nullptr;
  }
  c->cids_.push_back(scid);
  c->cids_.push_back(hd.dcid);
  config.host->add_cid(scid, c.get());
  config.host->add_cid(hd.dcid, c.get());
  return c;
}

int Connection::on_new_cid(ngtcp2_cid* cid, uint8_t* token, size_t cidlen) {
  *cid = random_cid(cidlen);
  if (ngtcp2_crypto_generate_stateless_reset_token(token, config_.reset_secret,
                                                   32, cid) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cids_.push_back(*cid);
  config_.host->add_cid(*cid, this);
  return 0;
}

void Connection::on_remove_cid(const ngtcp2_cid* cid) {
  config_.host->remove_cid(*cid);
  cids_.erase(std::remove_if(cids_.begin(), cids_.end(),
                             [&](const ngtcp2_cid& c) { return ngtcp2_cid_eq(&c, cid); }),
              cids_.end());
}

// Routes stream bytes to the stream's frame decoder. Stream 0 is control;
// the peer's unidirectional streams are data (ngtcp2 holds the peer to the
// number we allow); anything else is refused.
int Connection::on_stream_data(int64_t id, const uint8_t* data, size_t len) {
  conn_credit_ += len;
  auto it = streams_in_.find(id);
  if (it == streams_in_.end()) {
    bool control = id == 0;
    bool data_stream = (id & 2) && !is_local_stream(id, role_);
    if (!control && !data_stream) return NGTCP2_ERR_CALLBACK_FAILURE;
    if (control && role_ == Role::kServer) control_out_.id = 0;
    Channel ch = control ? Channel::kControl : Channel::kData;
    size_t limit = control ? config_.max_control_frame : config_.max_data_frame;
    it = streams_in_.emplace(id, StreamIn{ch, FrameDecoder(limit)}).first;
  }
  StreamIn& in = it->second;
  std::vector<Bytes> frames;
  if (in.decoder.feed(data, len, frames) != FrameDecoder::Status::kOk)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  handle_->count_frames_in(frames.size());
  if (in.channel == Channel::kControl) {
    control_credit_ += len;
    for (Bytes& f : frames) {
      if (f.size == 0) continue;
      // The binding sets the bound its protocol needs (Erlang distribution:
      // a handful, then only ticks); more is a peer trying to fill our memory.
      if (++control_frames_in_ > config_.max_control_frames &&
          config_.max_control_frames != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
      pending_control_.push_back(std::move(f));
    }
    return 0;
  }
  in.credit_held += len;
  data_credit_held_ += len;
  for (Bytes& f : frames) {
    pending_data_bytes_ += f.size;
    if (f.size) pending_data_.push_back(std::move(f));
  }
  return 0;
}

void Connection::on_acked(int64_t id, uint64_t offset, uint64_t len) {
  size_t freed;
  if (id == control_out_.id) {
    freed = control_out_.buffer.acknowledge(offset, len);
  } else {
    if (data_out_.empty()) return;
    // Data streams are opened in order: their ids are 4 apart.
    size_t index = size_t(id - data_out_[0].id) / 4;
    if (index >= data_out_.size() || data_out_[index].id != id) return;
    SendBuffer& b = data_out_[index].buffer;
    freed = b.acknowledge(offset, len);
    router_.acked(index, b.acked_offset());
    if (!unrouted_.empty()) route_unrouted();
  }
  if (freed && handle_->release(freed)) writable_owed_ = true;
}

void Connection::on_datagram(const Address& local, const Address& remote,
                             const uint8_t* data, size_t len, uint64_t now) {
  if (state_ == State::kClosing) {
    // Answer a peer that keeps talking with our close again.
    if (!close_packet_.empty())
      send_batch(close_from_, close_to_, close_packet_.data(), close_packet_.size(),
                 close_packet_.size());
    return;
  }
  if (state_ != State::kHandshake && state_ != State::kOpen) return;
  bytes_received_ += len;
  last_rx_ = now;
  gone_deadline_ = 0;  // the peer is alive after all
  ngtcp2_path path = make_path(local, remote);
  ngtcp2_pkt_info pi{};
  int rv = ngtcp2_conn_read_pkt(conn_, &path, &pi, data, len, now);
  if (rv != 0) {
    fail(rv, now);
    return;
  }
  after_read(now);
}

void Connection::after_read(uint64_t now) {
  if (handshake_done_ && state_ == State::kHandshake) establish(now);
  if (more_streams_ && state_ == State::kOpen) {
    more_streams_ = false;
    open_data_streams();
  }
  if (!authenticated_) {
    control_held_ += control_credit_;
  } else if (control_credit_ && control_out_.id >= 0) {
    // Stream 0 exists on both sides once bytes flowed on it.
    ngtcp2_conn_extend_max_stream_offset(conn_, 0, control_credit_);
  }
  control_credit_ = 0;
  ngtcp2_conn_extend_max_offset(conn_, conn_credit_);
  conn_credit_ = 0;
  apply_credit(handle_->take_credit());
}

// The data window reopens only while the user keeps up; otherwise bytes
// pile up in this process and the peer's queue fills instead.
void Connection::apply_credit(uint64_t consumed) {
  unconsumed_ -= std::min(unconsumed_, consumed);
  if (data_credit_held_ == 0 || unconsumed_ > config_.recv_unconsumed_limit) return;
  for (auto& [id, in] : streams_in_) {
    if (in.channel != Channel::kData || in.credit_held == 0) continue;
    ngtcp2_conn_extend_max_stream_offset(conn_, id, in.credit_held);
    in.credit_held = 0;
  }
  data_credit_held_ = 0;
}

void Connection::establish(uint64_t now) {
  state_ = State::kOpen;
  reached_open_ = true;
  set_keep_alive();
  std::vector<uint8_t> exporter(kExporterSize);
  gnutls_prf_rfc5705(session_, sizeof kExporterLabel - 1, kExporterLabel, 0,
                     nullptr, exporter.size(), reinterpret_cast<char*>(exporter.data()));
  const ngtcp2_path* path = ngtcp2_conn_get_path(conn_);
  handle_->set_established(std::move(exporter), peer_certificate(session_),
                           address_of(path->remote));
  open_streams();
  if (gated())
    auth_deadline_ = now + config_.auth_timeout_ns;
  else
    authenticate();
  if (role_ == Role::kServer)
    config_.host->accepted(*this);
  else
    pending_connected_ = true;
}

// The shorter of the two keep-alive settings that apply to this role, and
// at least twice per idle timeout (the smaller of the two ends': the
// peer's may be shorter than ours).
void Connection::set_keep_alive() {
  uint64_t ka = config_.keep_alive_ns;
  if (role_ == Role::kClient && config_.client_keep_alive_ns)
    ka = ka ? std::min(ka, config_.client_keep_alive_ns) : config_.client_keep_alive_ns;
  if (ka == 0) return;
  uint64_t idle = config_.idle_timeout_ns;
  const ngtcp2_transport_params* peer = ngtcp2_conn_get_remote_transport_params(conn_);
  if (peer && peer->max_idle_timeout && peer->max_idle_timeout < idle)
    idle = peer->max_idle_timeout;
  ngtcp2_conn_set_keep_alive_timeout(conn_, std::min(ka, idle / 2));
}

void Connection::open_streams() {
  if (role_ == Role::kClient) {
    ngtcp2_conn_open_bidi_stream(conn_, &control_out_.id, nullptr);
    handle_->send(Channel::kControl, tick_frame(), 1);
  }
  open_data_streams();
}

// Data streams open once, as many as the peer allows (an older peer may
// allow fewer). A peer that authenticates us first allows none: data
// waits in unrouted_ until its MAX_STREAMS arrives (more_streams_).
void Connection::open_data_streams() {
  if (!data_out_.empty()) return;
  for (size_t i = 0; i < config_.data_streams; ++i) {
    StreamOut s;
    if (ngtcp2_conn_open_uni_stream(conn_, &s.id, nullptr) != 0) break;
    data_out_.push_back(std::move(s));
  }
  if (data_out_.empty()) return;
  router_ = StreamRouter(data_out_.size(), config_.priority_stream);
  route_unrouted();
}

// The peer proved itself: its data streams and the full control window.
void Connection::authenticate() {
  if (authenticated_ || (state_ != State::kOpen && gated())) return;
  authenticated_ = true;
  auth_deadline_ = UINT64_MAX;
  if (gated()) {
    ngtcp2_conn_extend_max_streams_uni(conn_, config_.data_streams);
    if (control_out_.id >= 0)
      ngtcp2_conn_extend_max_stream_offset(
          conn_, 0, control_held_ + kControlWindow - kPreAuthControlWindow);
    control_held_ = 0;
  }
  if (role_ == Role::kServer) config_.host->authenticated(*this);
}

void Connection::on_inbox(uint64_t now) {
  ConnectionHandle::Inbox in = handle_->take_inbox();
  // What arrived meanwhile goes to it with the next deliver().
  if (in.attach && !events_) events_ = std::move(in.attach);
  queue_sends(in.sends);
  if (in.authenticate) authenticate();
  if (in.credit) apply_credit(in.credit);
  if (in.close && (state_ == State::kOpen || state_ == State::kHandshake)) {
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_set_application_error(
        &ccerr, in.close_code, reinterpret_cast<const uint8_t*>(in.close_reason.data()),
        std::min<size_t>(in.close_reason.size(), 64));
    close_with(ccerr, {CloseInfo::Kind::kLocal, in.close_code, in.close_reason}, now);
  }
}

void Connection::queue_sends(std::vector<ConnectionHandle::Send>& sends) {
  if (state_ != State::kOpen && state_ != State::kHandshake) return;
  for (ConnectionHandle::Send& send : sends) {
    if (send.channel == Channel::kControl)
      control_out_.buffer.append(std::move(send.chunk));
    else
      queue_data(std::move(send.chunk), std::move(send.routes));
  }
}

bool Connection::send_direct(uint64_t now, size_t max_packets) {
  std::vector<ConnectionHandle::Send> sends = handle_->take_sends();
  queue_sends(sends);
  bool more = flush(now, max_packets);
  return more || events_owed();
}

void Connection::on_expiry(uint64_t now) {
  if (state_ == State::kClosing || state_ == State::kDraining) {
    if (now >= drain_deadline_) state_ = State::kClosed;
    return;
  }
  if (state_ == State::kClosed) return;
  if (gone_deadline_ != 0 && gone_deadline_ <= now) {
    close_gone(now);
    return;
  }
  if (publish_due_ <= now) publish_path(now, true);
  if (auth_deadline_ <= now && state_ == State::kOpen) {
    refuse(CloseInfo::Kind::kAuthTimeout, "not authenticated in time", now);
    return;
  }
  if (ngtcp2_conn_get_expiry(conn_) > now) return;
  int rv = ngtcp2_conn_handle_expiry(conn_, now);
  if (rv != 0) fail(rv, now);
}

void Connection::refuse(CloseInfo::Kind kind, const std::string& why, uint64_t now) {
  if (state_ != State::kOpen && state_ != State::kHandshake) return;
  ngtcp2_connection_close_error ccerr;
  ngtcp2_connection_close_error_set_transport_error(
      &ccerr, NGTCP2_CONNECTION_REFUSED, reinterpret_cast<const uint8_t*>(why.data()),
      why.size());
  close_with(ccerr, {kind, 0, why}, now);
}

void Connection::abort(const CloseInfo& info, uint64_t now) {
  if (state_ == State::kOpen || state_ == State::kHandshake) {
    ngtcp2_connection_close_error ccerr;
    ngtcp2_connection_close_error_set_application_error(&ccerr, 0, nullptr, 0);
    close_with(ccerr, info, now);
  }
  report_closed(info);
  state_ = State::kClosed;
  drain_deadline_ = 0;
}

void Connection::close_for_exit(uint64_t now) {
  if (state_ != State::kOpen && state_ != State::kHandshake) return;
  static constexpr char kReason[] = "node exiting";
  ngtcp2_connection_close_error ccerr;
  ngtcp2_connection_close_error_set_application_error(
      &ccerr, 0, reinterpret_cast<const uint8_t*>(kReason), sizeof kReason - 1);
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  uint8_t packet[kMaxUdpPayload];
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, packet,
                                                      sizeof packet, &ccerr, now);
  if (n > 0)
    send_batch(address_of(ps.path.local), address_of(ps.path.remote), packet,
               size_t(n), size_t(n));
  state_ = State::kClosed;
}

CloseInfo Connection::peer_close_info() {
  ngtcp2_connection_close_error ccerr;
  ngtcp2_conn_get_connection_close_error(conn_, &ccerr);
  std::string text(reinterpret_cast<char*>(ccerr.reason), ccerr.reasonlen);
  if (ccerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION)
    return {CloseInfo::Kind::kPeer, ccerr.error_code, text};
  // Transport codes 0x100-0x1ff carry a TLS alert.
  if (ccerr.error_code >= 0x100 && ccerr.error_code <= 0x1ff)
    return {CloseInfo::Kind::kTlsAlert, ccerr.error_code - 0x100, text};
  if (ccerr.error_code == 0) return {CloseInfo::Kind::kPeer, 0, text};
  return {CloseInfo::Kind::kProtocol, ccerr.error_code, text};
}

// ngtcp2 refused a packet or a timer fired fatally.
void Connection::fail(int liberr, uint64_t now) {
  switch (liberr) {
    case NGTCP2_ERR_DRAINING:
      enter_closed(State::kDraining, peer_close_info(), now);
      return;
    case NGTCP2_ERR_IDLE_CLOSE:
      enter_closed(State::kClosed, {CloseInfo::Kind::kIdleTimeout, 0, "idle timeout"}, now);
      return;
    case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
      enter_closed(State::kClosed, {CloseInfo::Kind::kHandshakeTimeout, 0, "handshake timeout"}, now);
      return;
    case NGTCP2_ERR_DROP_CONN:
      enter_closed(State::kClosed, {CloseInfo::Kind::kProtocol, 0, "dropped"}, now);
      return;
    default:
      break;
  }
  ngtcp2_connection_close_error ccerr;
  CloseInfo info{CloseInfo::Kind::kProtocol, 0, ngtcp2_strerror(liberr)};
  uint8_t alert = ngtcp2_conn_get_tls_alert(conn_);
  if (liberr == NGTCP2_ERR_CRYPTO && alert) {
    ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr, alert, nullptr, 0);
    const char* name = gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(alert));
    info = {CloseInfo::Kind::kTlsAlert, alert, name ? name : "TLS alert"};
  } else {
    ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr, liberr, nullptr, 0);
  }
  close_with(ccerr, info, now);
}

void Connection::close_with(const ngtcp2_connection_close_error& ccerr,
                            const CloseInfo& info, uint64_t now) {
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  close_packet_.resize(kMaxUdpPayload);
  ngtcp2_ssize n = ngtcp2_conn_write_connection_close(
      conn_, &ps.path, &pi, close_packet_.data(), close_packet_.size(), &ccerr, now);
  if (n > 0) {
    close_packet_.resize(size_t(n));
    close_from_ = address_of(ps.path.local);
    close_to_ = address_of(ps.path.remote);
    send_batch(close_from_, close_to_, close_packet_.data(), close_packet_.size(),
               close_packet_.size());
  } else {
    close_packet_.clear();
  }
  enter_closed(n > 0 ? State::kClosing : State::kClosed, info, now);
}

void Connection::enter_closed(State state, const CloseInfo& info, uint64_t now) {
  state_ = state;
  drain_deadline_ = now + 3 * ngtcp2_conn_get_pto(conn_);
  report_closed(info);
}

void Connection::report_closed(const CloseInfo& info) {
  if (closed_reported_) return;
  closed_reported_ = true;
  close_info_ = info;
  handle_->set_closed();
}

bool Connection::events_owed() const {
  if (closed_reported_ && migrating()) return true;
  if (!events_ || closed_delivered_) return false;
  return pending_connected_ || !pending_control_.empty() || pending_data_bytes_ != 0 ||
         !pending_data_.empty() || writable_owed_ || closed_reported_;
}

// Events are only ever called from here, so that whoever holds the loop
// lock chooses when: never inside a caller's send().
void Connection::deliver() {
  if (closed_reported_ && migrating()) finish_migration(MigrationResult::kClosed, Address{});
  if (!events_ || closed_delivered_) return;
  if (std::exchange(pending_connected_, false)) events_->connected();
  for (Bytes& f : pending_control_) events_->control_frame(std::move(f));
  pending_control_.clear();
  deliver_data();
  if (std::exchange(writable_owed_, false)) events_->writable();
  if (closed_reported_) {
    closed_delivered_ = true;
    events_->closed(close_info_);
  }
}

void Connection::deliver_data() {
  if (pending_data_.empty() && pending_data_bytes_ == 0) return;
  uint64_t credit = pending_data_bytes_;
  unconsumed_ += credit;
  events_->data_frames(pending_data_, credit);
  pending_data_.clear();
  pending_data_bytes_ = 0;
}

// Frames wait in arrival order until routed: the queue only moves while
// its head can be placed (a barrier waits for acknowledgements), so no
// frame overtakes one that arrived before it without a route.
void Connection::queue_data(OutChunk chunk, std::vector<OrderKey> routes) {
  uint64_t routed = 0;
  for (const OrderKey& r : routes) routed += r.size;
  if (routed != chunk.size) {
    // One flow for callers that do not route (tests, tools), and for
    // routes that do not describe the chunk (never split it blindly).
    routes.clear();
    OrderKey one{OrderKey::Kind::kFlow, UINT64_MAX};
    one.size = chunk.size;
    routes.push_back(one);
  }
  unrouted_.push_back({ChunkCutter(std::move(chunk)), std::move(routes)});
  route_unrouted();
}

// Appends consecutive frames bound for the same stream as one piece.
void Connection::route_unrouted() {
  while (!unrouted_.empty() && !data_out_.empty()) {
    Unrouted& u = unrouted_.front();
    size_t run_stream = 0;
    uint64_t run = 0;
    auto append_run = [&] {
      if (run) data_out_[run_stream].buffer.append(u.cutter.take(run));
      run = 0;
    };
    for (; u.next < u.routes.size(); ++u.next) {
      std::optional<size_t> stream = router_.place(u.routes[u.next]);
      if (!stream) {
        append_run();
        return;  // a barrier: on_acked() calls again
      }
      if (*stream != run_stream) append_run();
      run_stream = *stream;
      run += u.routes[u.next].size;
    }
    append_run();
    unrouted_.pop_front();
  }
}

// Control first; then the priority stream (see the header: strict, but
// for one packet of the others after kPriorityRun of its own); then the
// other data streams in turn, one packet each. While bulk of flows that
// stopped asking for priority fills the priority stream (the router's
// priority_favoured()), it takes its turn with the others instead.
Connection::StreamOut* Connection::pick_stream() {
  if (control_out_.id >= 0 && !control_out_.blocked && control_out_.buffer.has_unsent())
    return &control_out_;
  std::optional<size_t> p = router_.priority_stream();
  if (p && !router_.priority_favoured()) return pick_data(data_out_.size());
  StreamOut* prio = p && *p < data_out_.size() ? &data_out_[*p] : nullptr;
  if (prio && (prio->blocked || !prio->buffer.has_unsent())) prio = nullptr;
  if (prio && priority_run_ < kPriorityRun) {
    ++priority_run_;
    return prio;
  }
  if (StreamOut* s = pick_data(p.value_or(data_out_.size()))) {
    priority_run_ = 0;
    return s;
  }
  return prio;
}

// Round-robin over data streams [0, n).
Connection::StreamOut* Connection::pick_data(size_t n) {
  n = std::min(n, data_out_.size());
  for (size_t i = 0; i < n; ++i) {
    StreamOut& s = data_out_[(next_data_ + i) % n];
    if (!s.blocked && s.buffer.has_unsent()) {
      next_data_ = (next_data_ + i + 1) % n;
      return &s;
    }
  }
  return nullptr;
}

bool Connection::has_unsent() const {
  if (!unrouted_.empty() || control_out_.buffer.has_unsent()) return true;
  for (const StreamOut& s : data_out_)
    if (s.buffer.has_unsent()) return true;
  return false;
}

bool Connection::send_batch(const Address& from, const Address& to,
                            const uint8_t* data, size_t len, size_t seg) {
  bytes_sent_ += len;
  return config_.host->socket().send(from, to, data, len, seg);
}

// On a path with a real round trip, once ngtcp2 paces (after the first
// RTT sample, see flush()), one flush writes at most ngtcp2's send quantum
// (at most 64 KB). ngtcp2 reads the pacing clock only before a flush's
// first packet, so an unbounded flush (up to kMaxPacketsPerFlush packets,
// 1.5 MB) is a burst that queues at the path's bottleneck, and a small
// message of another stream waits behind it. The pacing deadline is part
// of expiry(), which brings the next flush. Below kBurstRttNs (loopback, a
// veth pair, a LAN) a burst drains in about the time the extra wake-ups
// would cost: there whole flushes stay (64 MB round trip over a veth pair:
// 750-790 ms with them, 940-1060 ms without).
size_t Connection::send_budget() const {
  ngtcp2_conn_stat cstat;
  ngtcp2_conn_get_conn_stat(conn_, &cstat);
  if (cstat.first_rtt_sample_ts == UINT64_MAX || cstat.min_rtt < kBurstRttNs) return SIZE_MAX;
  return ngtcp2_conn_get_send_quantum(conn_);
}

// The packets of one flush, gathered for one GSO send: same path, same
// size except the last.
class Connection::TxBatch {
 public:
  explicit TxBatch(Connection& c) : c_(c), tx_(c.config_.host->tx_buffer()) {}
  // Where the next packet is to be written.
  uint8_t* next() { return tx_.data() + off_; }
  // Takes the `n`-byte packet just written at next(), for path from -> to.
  void add(size_t n, const Address& from, const Address& to) {
    if (npkts_ > 0 && (n > seg_ || !(to == to_) || !(from == from_))) {
      // This packet cannot join the batch: send the batch, keep the packet.
      c_.send_batch(from_, to_, tx_.data(), off_, seg_);
      std::memmove(tx_.data(), tx_.data() + off_, n);
      off_ = npkts_ = 0;
    }
    if (npkts_ == 0) {
      seg_ = n;
      from_ = from;
      to_ = to;
    }
    off_ += n;
    ++npkts_;
    if (npkts_ == kMaxGsoPackets || off_ + seg_ > kMaxGsoBytes || n < seg_) send();
  }
  void send() {
    if (off_) c_.send_batch(from_, to_, tx_.data(), off_, seg_);
    off_ = npkts_ = 0;
  }

 private:
  Connection& c_;
  std::vector<uint8_t>& tx_;
  size_t off_ = 0, npkts_ = 0, seg_ = 0;
  Address from_, to_;
};

bool Connection::flush(uint64_t now, size_t max_packets) {
  if (state_ != State::kHandshake && state_ != State::kOpen) return false;
  control_out_.blocked = false;
  for (StreamOut& d : data_out_) d.blocked = false;
  TxBatch batch(*this);
  size_t total = 0;
  int rv = write_packets(batch, now, max_packets, total);
  batch.send();
  if (rv == 0) rv = after_flush(now, total);
  if (rv != 0) {
    fail(rv, now);
    return false;
  }
  publish_path(now, false);
  return total >= max_packets;
}

// Writes packets into `batch` until ngtcp2 has nothing more to send or the
// packet count or byte budget is spent; counts them in `total`. 0 or an
// ngtcp2 error.
int Connection::write_packets(TxBatch& batch, uint64_t now, size_t max_packets,
                              size_t& total) {
  ngtcp2_path_storage ps;
  ngtcp2_path_storage_zero(&ps);
  ngtcp2_pkt_info pi{};
  size_t max_udp = ngtcp2_conn_get_max_tx_udp_payload_size(conn_);
  size_t budget = send_budget(), bytes = 0;
  while (total < max_packets && bytes < budget) {
    StreamOut* s = pick_stream();
    ngtcp2_vec vecs[kMaxVecs];
    size_t nvecs = s ? s->buffer.unsent(vecs, kMaxVecs) : 0;
    ngtcp2_ssize datalen = -1;
    uint32_t flags = s ? NGTCP2_WRITE_STREAM_FLAG_MORE : 0;
    ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, batch.next(), max_udp,
                                               &datalen, flags, s ? s->id : -1, vecs, nvecs, now);
    if (n == NGTCP2_ERR_WRITE_MORE) {
      s->buffer.mark_sent(size_t(datalen));
      continue;
    }
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR ||
        n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      s->blocked = true;
      continue;
    }
    if (n < 0) return int(n);
    if (s && datalen > 0) s->buffer.mark_sent(size_t(datalen));
    if (n == 0) break;
    batch.add(size_t(n), address_of(ps.path.local), address_of(ps.path.remote));
    bytes += size_t(n);
    ++total;
  }
  return 0;
}

// Pacing and timers after a flush that wrote `total` packets. 0 or an
// ngtcp2 error.
int Connection::after_flush(uint64_t now, size_t total) {
  ngtcp2_conn_stat cstat;
  ngtcp2_conn_get_conn_stat(conn_, &cstat);
  // ngtcp2 0.12 paces with initial_rtt (333 ms) before the first RTT
  // sample, which delays the first flights by ~20 ms: pace only after it.
  if (cstat.first_rtt_sample_ts != UINT64_MAX) ngtcp2_conn_update_pkt_tx_time(conn_, now);
  // With nothing left to send, the pacing deadline just set would only
  // wake the I/O thread for nothing (ngtcp2 lets a packet leave up to 1
  // ms early anyway); handle_expiry() drops it.
  if (total > 0 && !has_unsent()) return ngtcp2_conn_handle_expiry(conn_, now);
  return 0;
}

bool Connection::is_reset_token(const uint8_t* tail) const {
  if (state_ != State::kOpen) return false;
  size_t n = ngtcp2_conn_get_num_active_dcid(conn_);
  std::vector<ngtcp2_cid_token> dcids(n);
  ngtcp2_conn_get_active_dcid(conn_, dcids.data());
  for (const ngtcp2_cid_token& t : dcids)
    if (t.token_present &&
        std::memcmp(t.token, tail, NGTCP2_STATELESS_RESET_TOKENLEN) == 0)
      return true;
  return false;
}

bool Connection::sent_by_us(const uint8_t* head, size_t len) const {
  const ngtcp2_cid* current = ngtcp2_conn_get_dcid(conn_);
  ngtcp2_version_cid vc;
  if (ngtcp2_pkt_decode_version_cid(&vc, head, len, current->datalen) != 0)
    return false;
  auto same = [&](const ngtcp2_cid& cid) {
    return cid.datalen == vc.dcidlen && cid.datalen > 0 &&
           std::memcmp(cid.data, vc.dcid, vc.dcidlen) == 0;
  };
  if (same(*current)) return true;
  // After a migration, packets in flight may still carry an older one.
  size_t n = ngtcp2_conn_get_num_active_dcid(conn_);
  std::vector<ngtcp2_cid_token> dcids(n);
  ngtcp2_conn_get_active_dcid(conn_, dcids.data());
  for (const ngtcp2_cid_token& t : dcids)
    if (same(t.cid)) return true;
  return false;
}

bool Connection::on_unreachable(const UdpSocket::Refusal& r, uint64_t now) {
  if (state_ == State::kHandshake) {
    if (!(address_of(ngtcp2_conn_get_path(conn_)->remote) == r.to)) return false;
    enter_closed(State::kClosed, {CloseInfo::Kind::kUnreachable, 0, "connection refused"}, now);
    return true;
  }
  if (state_ != State::kOpen || !sent_by_us(r.head, r.head_len)) return false;
  if (role_ == Role::kClient) {
    close_gone(now);
    return true;
  }
  uint64_t ka = config_.keep_alive_ns;
  if (ka == 0) return true;
  // The peer sends at least every keep-alive period; half a period more
  // (or two probe timeouts on a slow path) for the way here.
  uint64_t grace = ka + std::max(ka / 2, 2 * ngtcp2_conn_get_pto(conn_));
  uint64_t deadline = std::max(now, last_rx_ + grace);
  if (deadline <= now) close_gone(now);
  else if (gone_deadline_ == 0) gone_deadline_ = deadline;
  return true;
}

void Connection::close_gone(uint64_t now) {
  enter_closed(State::kClosed,
               {CloseInfo::Kind::kUnreachable, 0, "peer gone (ICMP port unreachable)"}, now);
}

void Connection::on_stateless_reset(uint64_t now) {
  if (state_ != State::kOpen) return;
  enter_closed(State::kDraining, {CloseInfo::Kind::kPeer, 0, "stateless reset"}, now);
}

uint64_t Connection::expiry() const {
  if (state_ == State::kClosing || state_ == State::kDraining) return drain_deadline_;
  if (state_ == State::kClosed) return 0;
  uint64_t e = std::min({ngtcp2_conn_get_expiry(conn_), publish_due_, auth_deadline_});
  return gone_deadline_ != 0 ? std::min(e, gone_deadline_) : e;
}

bool Connection::finished(uint64_t now) const {
  // Closed before anyone attached: keep it for attach(), as long as
  // someone still holds the handle and so may attach.
  if (closed_reported_ && !events_ && handle_.use_count() > 1) return false;
  if (events_ && closed_reported_ && !closed_delivered_) return false;
  return state_ == State::kClosed ||
         ((state_ == State::kClosing || state_ == State::kDraining) && now >= drain_deadline_);
}

}  // namespace macula
