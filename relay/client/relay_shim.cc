#include "relay_shim.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>


namespace macula::relay {
namespace {

constexpr int kSocketBuffer = 4 << 20;
constexpr unsigned kBatch = 32;        // datagrams per recvmmsg
constexpr unsigned kRoundsPerWake = 8; // then let other tunnels have a turn
constexpr uint64_t kWakeKey = 0;       // epoll key of the eventfd; tunnels are != 0

// One tunnel's loopback UDP socket; the fd closes with the last reference,
// so a thread still using it never sees a reused descriptor.
struct TunnelSocket {
  uint32_t tunnel = 0;
  int fd = -1;
  uint16_t port = 0;
  ~TunnelSocket() {
    if (fd >= 0) ::close(fd);
  }
};

void set_buffer(int fd, int opt_force, int opt) {
  int size = kSocketBuffer;
  if (setsockopt(fd, SOL_SOCKET, opt_force, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

// A non-blocking UDP socket on 127.0.0.1 with a kernel-chosen port.
std::shared_ptr<TunnelSocket> open_loopback(uint32_t tunnel, std::string& error) {
  auto s = std::make_shared<TunnelSocket>();
  s->tunnel = tunnel;
  s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (s->fd < 0 || bind(s->fd, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
      getsockname(s->fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    error = std::string("socket: ") + strerror(errno);
    return nullptr;
  }
  set_buffer(s->fd, SO_RCVBUFFORCE, SO_RCVBUF);
  set_buffer(s->fd, SO_SNDBUFFORCE, SO_SNDBUF);
  s->port = ntohs(a.sin_port);
  return s;
}

bool same_v4(const sockaddr_in& a, const Address& b) {
  if (b.storage.ss_family != AF_INET) return false;
  auto* x = reinterpret_cast<const sockaddr_in*>(&b.storage);
  return a.sin_port == x->sin_port && a.sin_addr.s_addr == x->sin_addr.s_addr;
}

}  // namespace

class RelayShim::State : public RelayClientEvents,
                         public std::enable_shared_from_this<RelayShim::State> {
 public:
  State(const RelayShimConfig& config, std::shared_ptr<RelayShimEvents> events)
      : config_(config), events_(std::move(events)) {}

  bool start(std::string& error);
  void stop();
  void set_client(std::shared_ptr<RelayClient> c) {
    std::lock_guard lock(mu_);
    client_ = std::move(c);
  }
  std::shared_ptr<RelayClient> client() {
    std::lock_guard lock(mu_);
    return client_;
  }
  void close_tunnel(uint32_t tunnel);
  RelayShimStats stats() const;

  // RelayClientEvents, on the relay connection's I/O thread.
  void identified(const Identified& relay) override { events_->identified(relay.relay); }
  void tunnel_ok(uint64_t request, uint32_t tunnel) override;
  void tunnel_error(uint64_t request, const std::string& reason) override {
    events_->tunnel_failed(request, reason);
  }
  void request_error(uint64_t request, const std::string& reason) override {
    events_->request_failed(request, reason);
  }
  void node_list(const NodeList& page) override {
    events_->node_list(page.id, page.nodes, page.more);
  }
  void tunnel_incoming(uint32_t tunnel, const std::string& source) override;
  void tunnel_closed(uint32_t tunnel, const std::string& reason) override;
  void packet(uint32_t tunnel, std::span<const uint8_t> packet) override;
  void closed(const CloseInfo& info) override;

 private:
  std::shared_ptr<TunnelSocket> add(uint32_t tunnel, std::string& error);
  std::shared_ptr<TunnelSocket> find(uint32_t tunnel);
  bool remove(uint32_t tunnel);
  void pump();
  void drain(TunnelSocket& s);
  bool forward(TunnelSocket& s, mmsghdr* msgs, unsigned n);

  const RelayShimConfig config_;
  const std::shared_ptr<RelayShimEvents> events_;
  int epoll_fd_ = -1, wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mu_;
  std::shared_ptr<RelayClient> client_;
  std::unordered_map<uint32_t, std::shared_ptr<TunnelSocket>> sockets_;

  std::atomic<uint64_t> out_{0}, in_{0}, busy_{0}, other_{0};
  // Pump thread only.
  std::vector<uint8_t> rx_ = std::vector<uint8_t>(size_t(kBatch) * kMaxPacketSize);
};

bool RelayShim::State::start(std::string& error) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  if (epoll_fd_ < 0 || wake_fd_ < 0 || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    error = std::string("relay shim: ") + strerror(errno);
    return false;
  }
  thread_ = std::thread([this] { pump(); });
  return true;
}

// Breaks the State <-> RelayClient cycle and ends the pump.
void RelayShim::State::stop() {
  stopping_ = true;
  if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  std::lock_guard lock(mu_);
  client_.reset();
  sockets_.clear();
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  epoll_fd_ = wake_fd_ = -1;
}

std::shared_ptr<TunnelSocket> RelayShim::State::add(uint32_t tunnel, std::string& error) {
  auto s = open_loopback(tunnel, error);
  if (!s) return nullptr;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = tunnel;
  std::lock_guard lock(mu_);
  if (stopping_ || epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
    error = "socket: shim stopping";
    return nullptr;
  }
  sockets_[tunnel] = s;
  return s;
}

std::shared_ptr<TunnelSocket> RelayShim::State::find(uint32_t tunnel) {
  std::lock_guard lock(mu_);
  auto it = sockets_.find(tunnel);
  return it == sockets_.end() ? nullptr : it->second;
}

bool RelayShim::State::remove(uint32_t tunnel) {
  std::lock_guard lock(mu_);
  auto it = sockets_.find(tunnel);
  if (it == sockets_.end()) return false;
  if (epoll_fd_ >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, it->second->fd, nullptr);
  sockets_.erase(it);
  return true;
}

void RelayShim::State::tunnel_ok(uint64_t request, uint32_t tunnel) {
  std::string error;
  auto s = add(tunnel, error);
  if (!s) {
    if (auto c = client()) c->close_tunnel(tunnel, reason::kClosed);
    return events_->tunnel_failed(request, error);
  }
  events_->tunnel_ready(request, tunnel, s->port);
}

void RelayShim::State::tunnel_incoming(uint32_t tunnel, const std::string& source) {
  std::string error;
  auto s = add(tunnel, error);
  if (!s) {
    if (auto c = client()) c->close_tunnel(tunnel, reason::kClosed);
    return;
  }
  events_->tunnel_incoming(tunnel, source, s->port);
}

void RelayShim::State::tunnel_closed(uint32_t tunnel, const std::string& reason) {
  if (remove(tunnel)) events_->tunnel_closed(tunnel, reason);
}

void RelayShim::State::close_tunnel(uint32_t tunnel) {
  if (!remove(tunnel)) return;
  if (auto c = client()) c->close_tunnel(tunnel, reason::kClosed);
}

// From the relay to the inner endpoint. A full loopback socket means the
// inner endpoint is behind: drop, like a full link would.
void RelayShim::State::packet(uint32_t tunnel, std::span<const uint8_t> packet) {
  auto s = find(tunnel);
  if (!s) {
    ++other_;
    return;
  }
  ssize_t n = sendto(s->fd, packet.data(), packet.size(), 0, config_.inner.sa(),
                     config_.inner.len);
  if (n == ssize_t(packet.size())) ++in_;
  else ++other_;
}

void RelayShim::State::closed(const CloseInfo& info) {
  {
    std::lock_guard lock(mu_);
    for (auto& [id, s] : sockets_)
      if (epoll_fd_ >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, s->fd, nullptr);
    sockets_.clear();
  }
  events_->closed(info);
}

RelayShimStats RelayShim::State::stats() const {
  RelayShimStats s;
  s.packets_out = out_;
  s.packets_in = in_;
  s.dropped_busy = busy_;
  s.dropped_other = other_;
  std::lock_guard lock(mu_);
  s.tunnels = sockets_.size();
  return s;
}

void RelayShim::State::pump() {
  epoll_event evs[64];
  while (!stopping_) {
    int n = epoll_wait(epoll_fd_, evs, 64, -1);
    for (int i = 0; i < n && !stopping_; ++i) {
      if (evs[i].data.u64 == kWakeKey) continue;
      if (auto s = find(uint32_t(evs[i].data.u64))) drain(*s);
    }
  }
}

void RelayShim::State::drain(TunnelSocket& s) {
  mmsghdr msgs[kBatch];
  iovec iov[kBatch];
  sockaddr_in from[kBatch];
  for (unsigned round = 0; round < kRoundsPerWake; ++round) {
    std::memset(msgs, 0, sizeof msgs);
    for (unsigned i = 0; i < kBatch; ++i) {
      iov[i] = {rx_.data() + size_t(i) * kMaxPacketSize, kMaxPacketSize};
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      msgs[i].msg_hdr.msg_name = &from[i];
      msgs[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(s.fd, msgs, kBatch, MSG_DONTWAIT, nullptr);
    if (n <= 0) return;
    if (!forward(s, msgs, unsigned(n))) return;
    if (unsigned(n) < kBatch) return;
  }
}

// One send per batch (RelayClient::send_packets): send_packet would take
// the connection's lock per packet. Only the inner endpoint may use the
// tunnel: other local senders are ignored. False once the relay
// connection is gone.
bool RelayShim::State::forward(TunnelSocket& s, mmsghdr* msgs, unsigned n) {
  auto c = client();
  if (!c) return false;
  std::span<const uint8_t> packets[kBatch];
  unsigned count = 0;
  for (unsigned i = 0; i < n; ++i) {
    auto* from = static_cast<sockaddr_in*>(msgs[i].msg_hdr.msg_name);
    if (msgs[i].msg_len == 0 || !same_v4(*from, config_.inner)) {
      ++other_;
      continue;
    }
    packets[count++] = {static_cast<const uint8_t*>(msgs[i].msg_hdr.msg_iov->iov_base),
                        msgs[i].msg_len};
  }
  if (count == 0) return true;
  if (c->queued_bytes() > config_.max_queued) {
    busy_ += count;
    return true;
  }
  out_ += count;
  return c->send_packets(s.tunnel, std::span(packets, count)) != SendStatus::kClosed;
}

std::unique_ptr<RelayShim> RelayShim::open(const RelayShimConfig& config,
                                           std::shared_ptr<RelayShimEvents> events,
                                           std::string& error) {
  std::unique_ptr<RelayShim> shim(new RelayShim());
  shim->state_ = std::make_shared<State>(config, std::move(events));
  if (!shim->state_->start(error)) {
    shim->state_->stop();
    return nullptr;
  }
  EndpointConfig ec = relay_client_endpoint_config(config.endpoint);
  ec.idle_timeout_ms = config.relay_idle_timeout_ms;
  shim->endpoint_ = Endpoint::open(ec, nullptr, error);
  if (!shim->endpoint_) {
    shim->state_->stop();
    return nullptr;
  }
  shim->state_->set_client(RelayClient::connect(*shim->endpoint_, config.client, shim->state_));
  return shim;
}

// The endpoint goes first: once it is gone no event can arrive, and the
// relay has been told (it closes our tunnels at their other ends).
RelayShim::~RelayShim() {
  endpoint_.reset();
  if (state_) state_->stop();
}

uint64_t RelayShim::request_tunnel(const std::string& target) {
  auto c = state_->client();
  return c ? c->request_tunnel(target) : 0;
}

uint64_t RelayShim::list_nodes(const std::string& after) {
  auto c = state_->client();
  return c ? c->list_nodes(after) : 0;
}

void RelayShim::close_tunnel(uint32_t tunnel) { state_->close_tunnel(tunnel); }

void RelayShim::close() {
  if (auto c = state_->client()) c->close();
}

void RelayShim::close_for_exit(uint64_t limit_ms) { endpoint_->close_for_exit(limit_ms); }

RelayShimStats RelayShim::stats() const { return state_->stats(); }

}  // namespace macula::relay
