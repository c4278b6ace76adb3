#include "mailbox.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include "connection_handle.h"

namespace macula {

void Mailbox::ring() {
  // Called with mu_ held; one eventfd write per batch of posts.
  if (rung_) return;
  rung_ = true;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

void Mailbox::post(uint64_t connection_id) {
  std::lock_guard lock(mu_);
  if (!open_) return;
  ids_.push_back(connection_id);
  ring();
}

void Mailbox::post(DialRequest dial) {
  std::lock_guard lock(mu_);
  if (!open_) return;
  dials_.push_back(std::move(dial));
  ring();
}

void Mailbox::post(std::function<void()> task) {
  std::lock_guard lock(mu_);
  if (!open_) return;
  tasks_.push_back(std::move(task));
  ring();
}

bool Mailbox::open() const {
  std::lock_guard lock(mu_);
  return open_;
}

void Mailbox::shut() {
  std::lock_guard lock(mu_);
  open_ = false;
}

namespace {
// The loop lock this thread holds, if any.
thread_local const Mailbox* t_loop = nullptr;
}  // namespace

Mailbox::LoopLock::LoopLock(Mailbox& mailbox, bool try_only) : m_(mailbox), outer_(t_loop) {
  if (!try_only) {
    lock();
  } else if (t_loop != &m_ && m_.loop_mu_.try_lock()) {
    held_ = true;
    t_loop = &m_;
  }
}

Mailbox::LoopLock::~LoopLock() {
  if (held_) unlock();
}

void Mailbox::LoopLock::unlock() {
  held_ = false;
  t_loop = outer_;
  m_.loop_mu_.unlock();
}

void Mailbox::LoopLock::lock() {
  m_.loop_mu_.lock();
  held_ = true;
  t_loop = &m_;
}

void Mailbox::set_runner(std::function<bool(uint64_t)> runner) { runner_ = std::move(runner); }

bool Mailbox::run_now(uint64_t connection_id) {
  LoopLock loop(*this, true);
  return loop && runner_ && runner_(connection_id);
}

Mailbox::Mail Mailbox::take() {
  std::lock_guard lock(mu_);
  rung_ = false;
  return {std::exchange(ids_, {}), std::exchange(dials_, {}), std::exchange(tasks_, {})};
}

}  // namespace macula
