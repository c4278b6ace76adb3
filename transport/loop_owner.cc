#include "loop_owner.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

namespace macula {
namespace {
// The loop lock this thread holds, if any: a thread that holds it (an
// event handler that sends) must not try it again.
thread_local const LoopOwner* t_loop = nullptr;
}  // namespace

std::shared_ptr<LoopOwner> LoopOwner::create(std::string& error) {
  std::shared_ptr<LoopOwner> o(new LoopOwner());
  o->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  o->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  o->timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (o->epoll_fd_ < 0 || o->wake_fd_ < 0 || o->timer_fd_ < 0) {
    error = std::string("cannot create I/O loop: ") + strerror(errno);
    return nullptr;
  }
  o->watch(o->wake_fd_);
  o->watch(o->timer_fd_);
  return o;
}

LoopOwner::~LoopOwner() {
  for (int fd : {epoll_fd_, wake_fd_, timer_fd_})
    if (fd >= 0) close(fd);
}

LoopOwner::Lock::Lock(LoopOwner& owner, bool try_only) : owner_(owner), outer_(t_loop) {
  if (!try_only) {
    lock();
  } else if (t_loop != &owner_ && owner_.mu_.try_lock()) {
    held_ = true;
    t_loop = &owner_;
  }
}

LoopOwner::Lock::~Lock() {
  if (held_) unlock();
}

void LoopOwner::Lock::unlock() {
  held_ = false;
  t_loop = outer_;
  owner_.mu_.unlock();
}

void LoopOwner::Lock::lock() {
  owner_.mu_.lock();
  held_ = true;
  t_loop = &owner_;
}

bool LoopOwner::posted(Mailbox::Posted result) {
  if (result == Mailbox::Posted::kFirst) wake();
  return result != Mailbox::Posted::kDropped;
}

bool LoopOwner::post(uint64_t connection_id) { return posted(mailbox_.post(connection_id)); }

bool LoopOwner::post(DialRequest dial) { return posted(mailbox_.post(std::move(dial))); }

bool LoopOwner::post(std::function<void()> task) {
  return posted(mailbox_.post(std::move(task)));
}

bool LoopOwner::try_send(uint64_t connection_id) {
  Lock lock(*this, true);
  return lock && host_ && host_->send_now(connection_id);
}

void LoopOwner::wake() {
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

void LoopOwner::set_caller_reads(int fd, bool on) {
  caller_reads_.store(on);
  epoll_event ev{};
  ev.events = on ? 0u : uint32_t(EPOLLIN);
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void LoopOwner::request_read() {
  read_requested_.store(true);
  wake();
}

void LoopOwner::after_caller_work(bool work_left, uint64_t deadline) {
  if (work_left) {
    wake();
  } else if (deadline < sleep_until_) {
    // A deadline the waiting thread does not know (loss detection, say):
    // rare enough that arming the timer here is cheap.
    itimerspec at{};
    at.it_value.tv_sec = time_t(deadline / 1000000000ull);
    at.it_value.tv_nsec = long(deadline % 1000000000ull);
    timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &at, nullptr);
    sleep_until_ = deadline;
  }
}

void LoopOwner::attach(Host* host) { host_ = host; }

void LoopOwner::watch(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

bool LoopOwner::own_event(const epoll_event& ev) {
  if (ev.data.fd != wake_fd_ && ev.data.fd != timer_fd_) return false;
  uint64_t drain;
  [[maybe_unused]] ssize_t r = read(ev.data.fd, &drain, sizeof drain);
  return true;
}

// The deadline is the wait's timeout rather than the timerfd's: re-arming
// a timerfd at almost every packet (ngtcp2's deadlines move) cost more
// than the packet's crypto on this VM. The timerfd only brings deadlines
// that callers set while the thread waited.
LoopOwner::Wakeup LoopOwner::wait(Lock& lock, uint64_t now, uint64_t deadline,
                                  epoll_event* events, int max) {
  timespec ts{};
  if (deadline > now && deadline != UINT64_MAX) {
    ts.tv_sec = time_t((deadline - now) / 1000000000ull);
    ts.tv_nsec = long((deadline - now) % 1000000000ull);
  }
  sleep_until_ = deadline;
  lock.unlock();
  int n = epoll_pwait2(epoll_fd_, events, max, deadline == UINT64_MAX ? nullptr : &ts, nullptr);
  lock.lock();
  Wakeup w;
  w.woken = n > 0;
  for (int i = 0; i < n; ++i)
    if (!own_event(events[i])) events[w.fds++] = events[i];
  return w;
}

}  // namespace macula
