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

  // The loop lock, held by whoever works on the endpoint's connections:
  // the I/O thread, except while it waits for events, or a caller doing
  // that work at once (run_now(), Endpoint::read_now()).
  class LoopLock {
   public:
    // `try_only`: only if it is free and this thread does not hold it
    // already (events run with it held, and may send).
    LoopLock(Mailbox& mailbox, bool try_only);
    ~LoopLock();
    LoopLock(const LoopLock&) = delete;
    LoopLock& operator=(const LoopLock&) = delete;
    explicit operator bool() const { return held_; }
    void unlock();
    void lock();

   private:
    Mailbox& m_;
    bool held_ = false;
    const Mailbox* outer_;  // the loop this thread held before, if any
  };
  // With the loop lock held: what run_now() calls (empty: nothing, the
  // endpoint stops).
  void set_runner(std::function<bool(uint64_t)> runner);
  // Calls the runner for `connection_id` on this thread if the loop lock
  // is free. False if it is not, or the endpoint stopped: then post().
  bool run_now(uint64_t connection_id);

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

  std::mutex loop_mu_;
  std::function<bool(uint64_t)> runner_;  // guarded by loop_mu_
};

}  // namespace macula
