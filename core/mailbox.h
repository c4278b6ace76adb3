// Commands from caller threads to an endpoint's I/O thread: which
// connections have something in their inbox, and new dials. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
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
  // Work to run on the I/O thread (e.g. a migration request).
  void post(std::function<void()> task);
  // False once the endpoint stopped: posts are dropped from then on.
  bool open() const;
  void shut();

  // Everything posted so far, taken at once: the wake-up is re-armed in
  // the same step, so whatever is posted afterwards rings again.
  struct Mail {
    std::vector<uint64_t> ids;
    std::vector<DialRequest> dials;
    std::vector<std::function<void()>> tasks;
  };
  Mail take();

 private:
  void ring();
  const int wake_fd_;
  mutable std::mutex mu_;
  bool open_ = true;
  bool rung_ = false;
  std::vector<uint64_t> ids_;
  std::vector<DialRequest> dials_;
  std::vector<std::function<void()>> tasks_;
};

}  // namespace macula
