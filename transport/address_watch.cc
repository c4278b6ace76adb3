#include "address_watch.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

namespace macula {

AddressWatch::~AddressWatch() {
  if (fd_ >= 0) close(fd_);
}

bool AddressWatch::open(std::string& error) {
  fd_ = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd_ < 0) {
    error = std::string("netlink socket: ") + strerror(errno);
    return false;
  }
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE |
                 RTMGRP_IPV6_ROUTE;
  if (bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    error = std::string("netlink bind: ") + strerror(errno);
    close(fd_);
    fd_ = -1;
    return false;
  }
  return true;
}

namespace {

void count(const nlmsghdr* h, AddressChanges& out) {
  switch (h->nlmsg_type) {
    case RTM_NEWADDR: ++out.addresses_added; break;
    case RTM_DELADDR: ++out.addresses_removed; break;
    case RTM_NEWROUTE:
    case RTM_DELROUTE: ++out.routes_changed; break;
    default: break;
  }
}

}  // namespace

AddressChanges AddressWatch::drain() {
  AddressChanges out;
  if (fd_ < 0) return out;
  alignas(nlmsghdr) char buf[16384];
  for (;;) {
    ssize_t n = recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        ++out.routes_changed;
        continue;
      }
      return out;  // EAGAIN: drained
    }
    int left = int(n);
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left))
      count(h, out);
  }
}

}  // namespace macula
