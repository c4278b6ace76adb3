// Work posted to an endpoint's I/O thread: which connections have
// something in their inbox, new dials, and tasks. A plain queue: who posts
// wakes the thread (LoopOwner::post). Thread-safe.
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
  // What became of a post: dropped (the mailbox is shut), queued behind
  // earlier posts, or the first since the last take() (the reader needs
  // waking).
  enum class Posted { kDropped, kQueued, kFirst };
  Posted post(uint64_t connection_id);
  Posted post(DialRequest dial);
  Posted post(std::function<void()> task);
  // Posts are dropped from now on.
  void shut();

  // Everything posted so far, taken at once; the next post is a first again.
  struct Mail {
    std::vector<uint64_t> ids;
    std::vector<DialRequest> dials;
    std::vector<std::function<void()>> tasks;
  };
  Mail take();

 private:
  template <class T>
  Posted push(std::vector<T>& queue, T item);

  std::mutex mu_;
  bool open_ = true;
  bool posted_ = false;  // since the last take()
  std::vector<uint64_t> ids_;
  std::vector<DialRequest> dials_;
  std::vector<std::function<void()>> tasks_;
};

}  // namespace macula
