// Commands from caller threads to an endpoint's I/O thread: which
// connections have something in their inbox, and new dials. Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "udp_socket.h"

namespace macula {

class ConnectionHandle;
class ConnectionEvents;

struct DialRequest {
  std::shared_ptr<ConnectionHandle> handle;
  std::shared_ptr<ConnectionEvents> events;
  Address remote;
  std::string host;  // the peer's host as named, for certificate checks
};

class Mailbox {
 public:
  // `wake_fd` is an eventfd the I/O thread polls; not owned.
  explicit Mailbox(int wake_fd) : wake_fd_(wake_fd) {}

  void post(uint64_t connection_id);
  void post(DialRequest dial);
  // False once the endpoint stopped: posts are dropped from then on.
  bool open() const;
  void shut();

  std::vector<uint64_t> take_ids();
  std::vector<DialRequest> take_dials();

 private:
  void ring();
  const int wake_fd_;
  mutable std::mutex mu_;
  bool open_ = true;
  bool rung_ = false;
  std::vector<uint64_t> ids_;
  std::vector<DialRequest> dials_;
};

}  // namespace macula
