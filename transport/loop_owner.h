// Who may touch an endpoint's connections, and how work passes between
// the endpoint's I/O thread and the callers' threads (for Erlang: the
// schedulers). The threading rule of the whole transport lives here:
//
//   Whoever holds the endpoint's loop lock may touch its connections: the
//   I/O thread (timers, long writes, reads when no caller reads), or a
//   caller's thread (an Erlang scheduler) that got the lock with a
//   try-lock: a send (try_send), or a read woken by the socket's fd in the
//   caller's own pollset (Endpoint::read_now). A caller never waits for
//   the lock and never does unbounded work under it; if the lock is busy,
//   the job goes to the I/O thread (post, request_read).
//
// A LoopOwner owns the lock, the I/O thread's wait (epoll), its wake-up
// (eventfd), its timer (timerfd, for deadlines a caller sets while the
// thread sleeps), the mailbox of posted work, and the hand-over of reads.
// Shared by the endpoint and its connection handles; outlives neither's
// use of it.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "mailbox.h"

namespace macula {

class LoopOwner {
 public:
  // What a lock holder does on a caller's behalf; the endpoint.
  class Host {
   public:
    virtual ~Host() = default;
    // Lock held, on a caller's thread: writes connection `id`'s new sends
    // (bounded). False if it cannot (unknown or not open): post instead.
    virtual bool send_now(uint64_t id) = 0;
  };

  // Null and `error` set if the epoll set, eventfd or timerfd cannot be made.
  static std::shared_ptr<LoopOwner> create(std::string& error);
  ~LoopOwner();
  LoopOwner(const LoopOwner&) = delete;
  LoopOwner& operator=(const LoopOwner&) = delete;

  // The loop lock. `try_only`: only if it is free and this thread does not
  // hold it already (events run with it held, and may send); the I/O
  // thread alone takes it blocking.
  class Lock {
   public:
    Lock(LoopOwner& owner, bool try_only);
    ~Lock();
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;
    explicit operator bool() const { return held_; }
    void unlock();
    void lock();

   private:
    LoopOwner& owner_;
    bool held_ = false;
    const LoopOwner* outer_;  // the loop this thread held before, if any
  };

  // ---- Any thread ----
  // Work for the I/O thread; wakes it once per batch. False if dropped:
  // the endpoint stopped (shut()).
  bool post(uint64_t connection_id);
  bool post(DialRequest dial);
  bool post(std::function<void()> task);
  // Runs the host's send_now(id) on this thread if the lock is free and a
  // host is attached. False: nothing done, post() instead.
  bool try_send(uint64_t connection_id);
  void wake();

  // ---- Reads ----
  // Hands reading the socket `fd` to callers (true) or back to the I/O
  // thread. The I/O thread still hears the socket's errors (ICMP).
  void set_caller_reads(int fd, bool on);
  bool caller_reads() const { return caller_reads_.load(); }
  // A caller found the lock busy: the I/O thread reads instead.
  void request_read();
  bool take_read_request() { return read_requested_.exchange(false); }

  // ---- Lock held ----
  // After a caller's work: wakes the I/O thread if it left work behind,
  // else arms the timer for `deadline` if that comes before the thread
  // means to wake.
  void after_caller_work(bool work_left, uint64_t deadline);

  // ---- The I/O thread ----
  void attach(Host* host);  // lock held; null: detach (the endpoint stops)
  void watch(int fd);       // the thread's wait includes `fd` (EPOLLIN)
  // Releases the lock, waits for events until `deadline` (CLOCK_MONOTONIC
  // ns, UINT64_MAX: none), takes the lock again. `events[0..fds)`: the
  // events on watched fds; the owner's own (wake-up, timer) are consumed
  // here and only count in `woken`.
  struct Wakeup {
    int fds = 0;
    bool woken = false;  // anything at all happened (not a timeout)
  };
  Wakeup wait(Lock& lock, uint64_t now, uint64_t deadline, epoll_event* events, int max);
  Mailbox::Mail take_mail() { return mailbox_.take(); }
  // Posts are dropped from now on (the endpoint stops; any thread).
  void shut() { mailbox_.shut(); }

 private:
  LoopOwner() = default;
  bool posted(Mailbox::Posted result);
  bool own_event(const epoll_event& ev);

  int epoll_fd_ = -1, wake_fd_ = -1, timer_fd_ = -1;
  Mailbox mailbox_;
  std::mutex mu_;            // the loop lock
  Host* host_ = nullptr;     // guarded by mu_
  uint64_t sleep_until_ = 0; // the waiting thread's timeout; guarded by mu_
  std::atomic<bool> caller_reads_{false};
  std::atomic<bool> read_requested_{false};
};

}  // namespace macula
