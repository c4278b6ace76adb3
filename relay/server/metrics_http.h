// A minimal HTTP/1.0 server for the metrics endpoint: GET /metrics answers
// render() as Prometheus text; anything else gets 404 or 405. One request
// per connection, one connection at a time, each bounded in size (8 KB)
// and time (2 s), so a misbehaving scraper cannot hold it for long.
// Owns one thread; the constructor and destructor may be called from any
// thread, and render() is called on the server's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace macula::relay {

class MetricsHttp {
 public:
  // Listens on ip:port (TCP; port 0 picks one). Null and `error` set on
  // failure.
  static std::unique_ptr<MetricsHttp> open(const std::string& ip, uint16_t port,
                                           std::function<std::string()> render,
                                           std::string& error);
  ~MetricsHttp();  // stops and joins the thread
  uint16_t port() const { return port_; }

 private:
  MetricsHttp() = default;
  void run();
  void serve(int fd);

  int listen_fd_ = -1, stop_fd_ = -1;
  uint16_t port_ = 0;
  std::function<std::string()> render_;
  std::thread thread_;
};

// The response to one raw request (exposed for tests).
std::string http_response(const std::string& request,
                          const std::function<std::string()>& render);

}  // namespace macula::relay
