#include "endpoint_readers.h"

#include <mutex>
#include <unordered_map>

namespace macula::readers {
namespace {

struct List {
  std::mutex mu;
  std::unordered_map<uint64_t, std::weak_ptr<Endpoint>> by_id;
  uint64_t next = 1;
};

// Never destroyed: the NIF's atexit handler (registered before the list
// is first used, so run after its destructor would be) still reads it.
List& list() {
  static List* l = new List;
  return *l;
}

}  // namespace

uint64_t add(const std::shared_ptr<Endpoint>& endpoint) {
  List& l = list();
  std::lock_guard lock(l.mu);
  uint64_t id = l.next++;
  l.by_id[id] = endpoint;
  return id;
}

void remove(uint64_t id) {
  List& l = list();
  std::lock_guard lock(l.mu);
  l.by_id.erase(id);
}

std::shared_ptr<Endpoint> find(uint64_t id) {
  List& l = list();
  std::lock_guard lock(l.mu);
  auto it = l.by_id.find(id);
  return it == l.by_id.end() ? nullptr : it->second.lock();
}

std::vector<std::shared_ptr<Endpoint>> all() {
  List& l = list();
  std::lock_guard lock(l.mu);
  std::vector<std::shared_ptr<Endpoint>> out;
  for (auto& [id, weak] : l.by_id)
    if (auto ep = weak.lock()) out.push_back(std::move(ep));
  return out;
}

}  // namespace macula::readers
