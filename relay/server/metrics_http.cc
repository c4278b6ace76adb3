#include "metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "udp_socket.h"

namespace macula::relay {
namespace {

constexpr size_t kMaxRequest = 8192;
constexpr int kRequestTimeoutMs = 2000;

std::string reply(const char* status, const char* type, const std::string& body) {
  return std::string("HTTP/1.0 ") + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
}

void write_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += size_t(n);
  }
}

}  // namespace

std::string http_response(const std::string& request,
                          const std::function<std::string()>& render) {
  size_t sp1 = request.find(' ');
  size_t sp2 = sp1 == std::string::npos ? sp1 : request.find(' ', sp1 + 1);
  if (sp2 == std::string::npos) return reply("400 Bad Request", "text/plain", "bad request\n");
  std::string method = request.substr(0, sp1), path = request.substr(sp1 + 1, sp2 - sp1 - 1);
  if (method != "GET") return reply("405 Method Not Allowed", "text/plain", "GET only\n");
  if (path == "/metrics")
    return reply("200 OK", "text/plain; version=0.0.4; charset=utf-8", render());
  if (path == "/") return reply("200 OK", "text/plain", "macula-relay: see /metrics\n");
  return reply("404 Not Found", "text/plain", "not found\n");
}

std::unique_ptr<MetricsHttp> MetricsHttp::open(const std::string& ip, uint16_t port,
                                               std::function<std::string()> render,
                                               std::string& error) {
  Address addr;
  if (!make_address(ip, port, addr)) {
    error = "metrics-bind is not an IP address: " + ip;
    return nullptr;
  }
  std::unique_ptr<MetricsHttp> m(new MetricsHttp());
  m->render_ = std::move(render);
  m->listen_fd_ = socket(addr.storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(m->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (m->listen_fd_ < 0 || bind(m->listen_fd_, addr.sa(), addr.len) != 0 ||
      listen(m->listen_fd_, 16) != 0) {
    error = "cannot listen for metrics on " + addr.to_string() + ": " + strerror(errno);
    return nullptr;
  }
  Address local;
  local.len = sizeof local.storage;
  getsockname(m->listen_fd_, local.sa(), &local.len);
  m->port_ = local.port();
  m->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  m->thread_ = std::thread([p = m.get()] { p->run(); });
  return m;
}

MetricsHttp::~MetricsHttp() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(stop_fd_, &one, sizeof one);
    thread_.join();
  }
  for (int fd : {listen_fd_, stop_fd_})
    if (fd >= 0) close(fd);
}

void MetricsHttp::run() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    serve(fd);
    close(fd);
  }
}

// Reads until the end of the headers, the size bound or the deadline.
void MetricsHttp::serve(int fd) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
  std::string req;
  char buf[1024];
  while (req.find("\r\n\r\n") == std::string::npos && req.find("\n\n") == std::string::npos) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(
                       deadline - Clock::now()).count());
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || req.size() >= kMaxRequest || poll(&p, 1, left) <= 0) return;
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    req.append(buf, size_t(n));
  }
  write_all(fd, http_response(req, render_));
}

}  // namespace macula::relay
