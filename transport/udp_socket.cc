#include "udp_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/udp.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace macula {
namespace {

constexpr size_t kRxSlots = 16;
constexpr size_t kRxSlotSize = 65536;
constexpr int kSocketBuffer = 8 << 20;

void set_buffer(int fd, int force_opt, int opt) {
  int size = kSocketBuffer;
  if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

}  // namespace

uint16_t Address::port() const {
  if (storage.ss_family == AF_INET)
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
}

std::string Address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (storage.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&storage);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  auto* in6 = reinterpret_cast<const sockaddr_in6*>(&storage);
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
    inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port());
  }
  inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port());
}

std::string Address::ip_string() const {
  std::string s = to_string();
  s.resize(s.rfind(':'));
  if (!s.empty() && s.front() == '[') s = s.substr(1, s.size() - 2);
  return s;
}

bool Address::operator==(const Address& o) const {
  return len == o.len && std::memcmp(&storage, &o.storage, len) == 0;
}

bool Address::same_ip(const Address& o) const {
  if (storage.ss_family != o.storage.ss_family) return false;
  if (storage.ss_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(&o.storage)->sin_addr.s_addr;
  if (storage.ss_family == AF_INET6)
    return IN6_ARE_ADDR_EQUAL(&reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr,
                              &reinterpret_cast<const sockaddr_in6*>(&o.storage)->sin6_addr);
  return false;
}

bool Address::unspecified() const {
  if (storage.ss_family == AF_INET)
    return reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr.s_addr == INADDR_ANY;
  if (storage.ss_family == AF_INET6)
    return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr);
  return true;
}

Address Address::with_port(uint16_t port) const {
  Address out = *this;
  if (storage.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&out.storage)->sin_port = htons(port);
  else if (storage.ss_family == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&out.storage)->sin6_port = htons(port);
  return out;
}

bool make_address(const std::string& ip, uint16_t port, Address& out) {
  out = Address{};
  auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
  if (inet_pton(AF_INET, ip.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    out.len = sizeof(sockaddr_in);
    return true;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (inet_pton(AF_INET6, ip.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    out.len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

UdpSocket::~UdpSocket() {
  if (fd_ >= 0) close(fd_);
}

bool UdpSocket::open(const std::string& ip, uint16_t port, std::string& error) {
  Address addr;
  if (!make_address(ip, port, addr)) {
    error = "invalid bind address " + ip;
    return false;
  }
  fd_ = socket(addr.storage.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    error = std::string("socket: ") + strerror(errno);
    return false;
  }
  if (addr.storage.ss_family == AF_INET6) {
    int off = 0;
    setsockopt(fd_, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  }
  if (bind(fd_, addr.sa(), addr.len) != 0) {
    error = "cannot bind UDP " + addr.to_string() + ": " + strerror(errno);
    ::close(fd_);
    fd_ = -1;
    return false;
  }
  set_buffer(fd_, SO_RCVBUFFORCE, SO_RCVBUF);
  set_buffer(fd_, SO_SNDBUFFORCE, SO_SNDBUF);
  int on = 1;
  // ICMP errors (nothing listening at a peer) arrive on the error queue.
  setsockopt(fd_, IPPROTO_IP, IP_RECVERR, &on, sizeof on);
  if (addr.storage.ss_family == AF_INET6)
    setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVERR, &on, sizeof on);
  // Which of our addresses each datagram was sent to: a wildcard socket
  // answers from that address, and connections know their real path.
  if (addr.storage.ss_family == AF_INET6)
    setsockopt(fd_, IPPROTO_IPV6, IPV6_RECVPKTINFO, &on, sizeof on);
  else
    setsockopt(fd_, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
  gro_ = setsockopt(fd_, IPPROTO_UDP, UDP_GRO, &on, sizeof on) == 0;
  local_.len = sizeof local_.storage;
  getsockname(fd_, local_.sa(), &local_.len);
  rx_buf_.resize(kRxSlots * kRxSlotSize);
  rx_from_.resize(kRxSlots);
  rx_seg_.resize(kRxSlots);
  return true;
}

Address UdpSocket::to_socket_family(const Address& a) const {
  if (local_.storage.ss_family != AF_INET6 || a.storage.ss_family != AF_INET)
    return a;
  auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
  Address out;
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = in->sin_port;
  in6->sin6_addr.s6_addr[10] = 0xff;
  in6->sin6_addr.s6_addr[11] = 0xff;
  std::memcpy(&in6->sin6_addr.s6_addr[12], &in->sin_addr, 4);
  out.len = sizeof(sockaddr_in6);
  return out;
}

bool UdpSocket::send(const Address& to, const uint8_t* data, size_t total,
                     size_t segment) {
  return send(Address{}, to, data, total, segment);
}

namespace {

// Appends the source-address control message for `from`; the caller
// checked that `from` is a specific address of the socket's family.
size_t add_source(cmsghdr* cm, const Address& from) {
  if (from.storage.ss_family == AF_INET6) {
    in6_pktinfo info{};
    info.ipi6_addr = reinterpret_cast<const sockaddr_in6*>(&from.storage)->sin6_addr;
    cm->cmsg_level = IPPROTO_IPV6;
    cm->cmsg_type = IPV6_PKTINFO;
    cm->cmsg_len = CMSG_LEN(sizeof info);
    std::memcpy(CMSG_DATA(cm), &info, sizeof info);
    return CMSG_SPACE(sizeof info);
  }
  in_pktinfo info{};
  info.ipi_spec_dst = reinterpret_cast<const sockaddr_in*>(&from.storage)->sin_addr;
  cm->cmsg_level = IPPROTO_IP;
  cm->cmsg_type = IP_PKTINFO;
  cm->cmsg_len = CMSG_LEN(sizeof info);
  std::memcpy(CMSG_DATA(cm), &info, sizeof info);
  return CMSG_SPACE(sizeof info);
}

size_t add_segment(cmsghdr* cm, size_t segment) {
  cm->cmsg_level = IPPROTO_UDP;
  cm->cmsg_type = UDP_SEGMENT;
  cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
  uint16_t seg = static_cast<uint16_t>(segment);
  std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  return CMSG_SPACE(sizeof seg);
}

bool is_path_error(int err) {
  return err == EINVAL || err == EADDRNOTAVAIL || err == ENETUNREACH ||
         err == EHOSTUNREACH || err == ENETDOWN || err == EPERM;
}

}  // namespace

bool UdpSocket::send(const Address& from, const Address& to, const uint8_t* data,
                     size_t total, size_t segment) {
  iovec iov{const_cast<uint8_t*>(data), total};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr*>(to.sa());
  msg.msg_namelen = to.len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(uint16_t)) +
                                CMSG_SPACE(sizeof(in6_pktinfo))] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  size_t used = 0;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  bool gso = gso_ && total > segment;
  if (gso) {
    used += add_segment(cm, segment);
    cm = CMSG_NXTHDR(&msg, cm);
  }
  if (!from.unspecified() && from.storage.ss_family == local_.storage.ss_family)
    used += add_source(cm, from);
  msg.msg_controllen = used;
  if (used == 0) msg.msg_control = nullptr;
  for (;;) {
    ssize_t n = sendmsg(fd_, &msg, 0);
    if (n >= 0) return true;
    if (errno == EINTR) continue;
    if (errno == EIO && gso) {
      // The device cannot segment: fall back to one send per packet.
      gso_ = false;
      bool ok = true;
      for (size_t off = 0; off < total; off += segment)
        ok &= send(from, to, data + off, std::min(segment, total - off), segment);
      return ok;
    }
    if (is_path_error(errno)) ++path_errors_;
    return false;
  }
}

uint64_t UdpSocket::take_path_errors() {
  return std::exchange(path_errors_, 0);
}

namespace {

// The destination address of a received datagram from its PKTINFO
// control message, with the socket's port; `to` is left alone otherwise.
void read_destination(const cmsghdr* cm, const Address& local, Address& to) {
  if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO &&
      local.storage.ss_family == AF_INET6) {
    in6_pktinfo info;
    std::memcpy(&info, CMSG_DATA(cm), sizeof info);
    reinterpret_cast<sockaddr_in6*>(&to.storage)->sin6_addr = info.ipi6_addr;
  } else if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO &&
             local.storage.ss_family == AF_INET) {
    in_pktinfo info;
    std::memcpy(&info, CMSG_DATA(cm), sizeof info);
    reinterpret_cast<sockaddr_in*>(&to.storage)->sin_addr = info.ipi_addr;
  }
}

}  // namespace

bool UdpSocket::receive(std::vector<Datagram>& out) {
  mmsghdr msgs[kRxSlots] = {};
  iovec iovs[kRxSlots];
  alignas(cmsghdr) char controls[kRxSlots][CMSG_SPACE(sizeof(int)) +
                                          CMSG_SPACE(sizeof(in6_pktinfo))];
  for (size_t i = 0; i < kRxSlots; ++i) {
    iovs[i] = {rx_buf_.data() + i * kRxSlotSize, kRxSlotSize};
    rx_from_[i] = Address{};
    msghdr& m = msgs[i].msg_hdr;
    m.msg_name = rx_from_[i].sa();
    m.msg_namelen = sizeof(sockaddr_storage);
    m.msg_iov = &iovs[i];
    m.msg_iovlen = 1;
    m.msg_control = controls[i];
    m.msg_controllen = sizeof controls[i];
  }
  int n = recvmmsg(fd_, msgs, kRxSlots, MSG_DONTWAIT, nullptr);
  // An ICMP error for the socket comes back here once as the call's error
  // (IP_RECVERR); its details wait on the error queue.
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
    error_hint_ = true;
  for (int i = 0; i < n; ++i) {
    msghdr& m = msgs[i].msg_hdr;
    rx_from_[i].len = m.msg_namelen;
    size_t len = msgs[i].msg_len;
    size_t seg = len;
    Address to = local_;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&m); cm; cm = CMSG_NXTHDR(&m, cm)) {
      if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO) {
        int gso_size = 0;
        std::memcpy(&gso_size, CMSG_DATA(cm), sizeof gso_size);
        if (gso_size > 0) seg = static_cast<size_t>(gso_size);
      } else {
        read_destination(cm, local_, to);
      }
    }
    const uint8_t* base = rx_buf_.data() + i * kRxSlotSize;
    for (size_t off = 0; off < len; off += seg)
      out.push_back({base + off, std::min(seg, len - off), rx_from_[i], to});
  }
  return n == int(kRxSlots);
}

bool UdpSocket::next_refused(Refusal& out) {
  for (;;) {
    alignas(cmsghdr) char control[512];
    iovec iov{out.head, sizeof out.head};
    msghdr msg{};
    out.to = Address{};
    msg.msg_name = out.to.sa();
    msg.msg_namelen = sizeof out.to.storage;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd_, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) return false;
    out.to.len = msg.msg_namelen;
    out.head_len = std::min(size_t(n), sizeof out.head);
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      bool ip_err = (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_RECVERR) ||
                    (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_RECVERR);
      if (!ip_err) continue;
      sock_extended_err ee;
      std::memcpy(&ee, CMSG_DATA(cm), sizeof ee);
      // Only what an ICMP message said: not errors of our own sends.
      bool icmp = ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6;
      if (icmp && ee.ee_errno == ECONNREFUSED) return true;
    }
  }
}

}  // namespace macula
