#include "mailbox.h"

#include "connection_handle.h"

namespace macula {

template <class T>
Mailbox::Posted Mailbox::push(std::vector<T>& queue, T item) {
  std::lock_guard lock(mu_);
  if (!open_) return Posted::kDropped;
  queue.push_back(std::move(item));
  return std::exchange(posted_, true) ? Posted::kQueued : Posted::kFirst;
}

Mailbox::Posted Mailbox::post(uint64_t connection_id) { return push(ids_, connection_id); }
Mailbox::Posted Mailbox::post(DialRequest dial) { return push(dials_, std::move(dial)); }
Mailbox::Posted Mailbox::post(std::function<void()> task) {
  return push(tasks_, std::move(task));
}

void Mailbox::shut() {
  std::lock_guard lock(mu_);
  open_ = false;
}

Mailbox::Mail Mailbox::take() {
  std::lock_guard lock(mu_);
  posted_ = false;
  return {std::exchange(ids_, {}), std::exchange(dials_, {}), std::exchange(tasks_, {})};
}

}  // namespace macula
