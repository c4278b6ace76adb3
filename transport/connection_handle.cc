#include "connection_handle.h"

#include "loop_owner.h"

namespace macula {

const char* close_kind_name(CloseInfo::Kind kind) {
  switch (kind) {
    case CloseInfo::Kind::kLocal: return "local_close";
    case CloseInfo::Kind::kPeer: return "peer_closed";
    case CloseInfo::Kind::kIdleTimeout: return "idle_timeout";
    case CloseInfo::Kind::kHandshakeTimeout: return "handshake_timeout";
    case CloseInfo::Kind::kTlsAlert: return "tls_alert";
    case CloseInfo::Kind::kProtocol: return "protocol_error";
    case CloseInfo::Kind::kEndpointStopped: return "endpoint_stopped";
    case CloseInfo::Kind::kUnreachable: return "unreachable";
    case CloseInfo::Kind::kAuthTimeout: return "auth_timeout";
  }
  return "unknown";
}

ConnectionHandle::ConnectionHandle(uint64_t id, Role role,
                                   std::shared_ptr<LoopOwner> loop,
                                   uint64_t high_water, uint64_t low_water,
                                   uint64_t credit_wake)
    : id_(id), role_(role), loop_(std::move(loop)),
      high_water_(high_water), low_water_(low_water), credit_wake_(credit_wake) {}

void ConnectionHandle::wake() {
  // Called with mu_ held; the lock holder clears wake_pending_ in take_inbox.
  if (wake_pending_) return;
  wake_pending_ = true;
  loop_->post(id_);
}

SendStatus ConnectionHandle::send(Channel channel, OutChunk framed,
                                  uint32_t nframes, std::vector<OrderKey> routes) {
  if (closed_.load()) return SendStatus::kClosed;
  uint64_t size = framed.size;
  // Counted before the send is visible to the loop: otherwise it could be
  // written, acknowledged and release()d first, and the count would wrap
  // below zero for a moment (a wrong stats() and a lost writable()).
  bool over = queued_.fetch_add(size) + size > high_water_;
  bool direct;
  {
    std::lock_guard lock(mu_);
    inbox_.sends.push_back({channel, std::move(framed), std::move(routes)});
    direct = !wake_pending_;
  }
  // If the loop lock is free, write the packets on this thread rather than
  // wake the I/O thread: a thread hand-off less per message on a quiet
  // connection.
  if (!direct || !loop_->try_send(id_)) {
    std::lock_guard lock(mu_);
    wake();
  }
  frames_out_ += nframes;
  if (!over) return SendStatus::kOk;
  // Dekker-style with release(): whoever clears want_writable_ owns the
  // wake-up, so it is neither lost nor sent twice.
  want_writable_.store(true);
  if (queued_.load() <= low_water_ && want_writable_.exchange(false))
    return SendStatus::kOk;
  return SendStatus::kBusy;
}

bool ConnectionHandle::release(uint64_t bytes) {
  uint64_t left = queued_.fetch_sub(bytes) - bytes;
  return left <= low_water_ && want_writable_.exchange(false);
}

// Credit only reopens windows held back by the unconsumed limit, so a
// small amount need not wake the I/O thread: waking it for every message
// would put a third thread between a message and its reply.
void ConnectionHandle::consumed(uint64_t credit) {
  std::lock_guard lock(mu_);
  inbox_.credit += credit;
  if (inbox_.credit >= credit_wake_) wake();
}

std::vector<ConnectionHandle::Send> ConnectionHandle::take_sends() {
  std::lock_guard lock(mu_);
  return std::exchange(inbox_.sends, {});
}

uint64_t ConnectionHandle::take_credit() {
  std::lock_guard lock(mu_);
  return std::exchange(inbox_.credit, 0);
}

void ConnectionHandle::authenticate() {
  std::lock_guard lock(mu_);
  if (inbox_.authenticate) return;
  inbox_.authenticate = true;
  wake();
}

void ConnectionHandle::close(uint64_t app_code, std::string reason) {
  std::lock_guard lock(mu_);
  if (inbox_.close) return;
  inbox_.close = true;
  inbox_.close_code = app_code;
  inbox_.close_reason = std::move(reason);
  wake();
}

void ConnectionHandle::attach(std::shared_ptr<ConnectionEvents> events) {
  std::lock_guard lock(mu_);
  inbox_.attach = std::move(events);
  wake();
}

ConnectionStats ConnectionHandle::stats() const {
  return {frames_in_.load(), frames_out_.load(), queued_.load()};
}

std::vector<uint8_t> ConnectionHandle::exporter() const {
  std::lock_guard lock(mu_);
  return exporter_;
}

std::vector<uint8_t> ConnectionHandle::peer_certificate() const {
  std::lock_guard lock(mu_);
  return peer_cert_;
}

Address ConnectionHandle::remote() const {
  std::lock_guard lock(mu_);
  return remote_;
}

ConnectionHandle::Inbox ConnectionHandle::take_inbox() {
  std::lock_guard lock(mu_);
  wake_pending_ = false;
  return std::exchange(inbox_, {});
}

void ConnectionHandle::set_established(std::vector<uint8_t> exporter,
                                       std::vector<uint8_t> peer_cert,
                                       const Address& remote) {
  std::lock_guard lock(mu_);
  exporter_ = std::move(exporter);
  peer_cert_ = std::move(peer_cert);
  remote_ = remote;
}

void ConnectionHandle::set_closed() { closed_.store(true); }

PathInfo ConnectionHandle::path() const {
  std::lock_guard lock(mu_);
  return path_;
}

void ConnectionHandle::set_path(const PathInfo& info) {
  std::lock_guard lock(mu_);
  path_ = info;
}

}  // namespace macula
