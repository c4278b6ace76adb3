// Items (connections) ordered by their next deadline, so that the I/O
// thread finds what is due, and how long it may sleep, without walking
// every connection on each wake-up (an endpoint with N connections would
// otherwise spend O(N) per wake-up, and wake-ups grow with N).
//
// Plain data, no locking: the owner's lock rule applies (the endpoint's
// loop lock).
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace macula {

template <class T>
class DeadlineIndex {
 public:
  // Records `item`'s deadline, replacing the one before; 0 or UINT64_MAX:
  // none.
  void set(T* item, uint64_t at) {
    if (auto it = at_.find(item); it != at_.end() && it->second == at) return;  // unchanged
    remove(item);
    if (at == 0 || at == UINT64_MAX) return;
    order_.emplace(at, item);
    at_.emplace(item, at);
  }
  void remove(T* item) {
    auto it = at_.find(item);
    if (it == at_.end()) return;
    order_.erase({it->second, item});
    at_.erase(it);
  }
  // The earliest deadline, UINT64_MAX if none.
  uint64_t earliest() const { return order_.empty() ? UINT64_MAX : order_.begin()->first; }
  // Takes out every item due at `now`, earliest first.
  std::vector<T*> take_due(uint64_t now) {
    std::vector<T*> due;
    while (!order_.empty() && order_.begin()->first <= now) {
      T* item = order_.begin()->second;
      order_.erase(order_.begin());
      at_.erase(item);
      due.push_back(item);
    }
    return due;
  }
  size_t size() const { return at_.size(); }

 private:
  std::set<std::pair<uint64_t, T*>> order_;
  std::unordered_map<T*, uint64_t> at_;
};

}  // namespace macula
