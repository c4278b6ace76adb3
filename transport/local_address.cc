#include "local_address.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

namespace macula {
namespace {

// A UDP socket closed when it goes out of scope.
struct ProbeSocket {
  explicit ProbeSocket(int family)
      : fd(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {}
  ~ProbeSocket() {
    if (fd >= 0) close(fd);
  }
  int fd;
};

}  // namespace

bool preferred_source(const Address& remote, Address& out, std::string& error) {
  ProbeSocket s(remote.storage.ss_family);
  if (s.fd < 0) {
    error = std::string("socket: ") + strerror(errno);
    return false;
  }
  // connect() on UDP sends nothing: it only runs the route lookup and
  // fixes the source address, which getsockname() then reports.
  if (connect(s.fd, remote.sa(), remote.len) != 0) {
    error = "no route to " + remote.ip_string() + ": " + strerror(errno);
    return false;
  }
  out = Address{};
  out.len = sizeof out.storage;
  if (getsockname(s.fd, out.sa(), &out.len) != 0) {
    error = std::string("getsockname: ") + strerror(errno);
    return false;
  }
  out = out.with_port(0);
  return true;
}

bool is_local_address(const Address& ip) {
  ProbeSocket s(ip.storage.ss_family);
  if (s.fd < 0) return false;
  Address a = ip.with_port(0);
  return bind(s.fd, a.sa(), a.len) == 0;
}

}  // namespace macula
