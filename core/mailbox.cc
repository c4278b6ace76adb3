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

Mailbox::Mail Mailbox::take() {
  std::lock_guard lock(mu_);
  rung_ = false;
  return {std::exchange(ids_, {}), std::exchange(dials_, {}), std::exchange(tasks_, {})};
}

}  // namespace macula
