#include "priority_table.h"

#include <new>
#include <span>

#include "dist_route.h"

namespace macula {

PriorityTable* PriorityTable::create(ErlNifEnv* env) {
  ErlNifResourceTypeInit init{};
  init.down = down;
  auto flags = ErlNifResourceFlags(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER);
  ErlNifResourceType* type =
      enif_open_resource_type_x(env, "macula_priority", &init, flags, nullptr);
  if (!type) return nullptr;
  return new (std::nothrow) PriorityTable(type);
}

// The monitors' owner: a resource holding a pointer back to the table.
// Made on first use, not in create(): resource types opened by a NIF's
// load() get their callbacks only once load() returned. Never released:
// it lives as long as the library. mu_ held.
void* PriorityTable::monitor_owner() {
  if (!owner_) {
    owner_ = enif_alloc_resource(type_, sizeof(PriorityTable*));
    *static_cast<PriorityTable**>(owner_) = this;
  }
  return owner_;
}

// The same key route_of() reads from a frame: the pid's number and serial,
// from its external format.
std::optional<uint64_t> PriorityTable::key_of(ErlNifEnv* env, const ErlNifPid& pid) {
  ErlNifBinary bin;
  if (!enif_term_to_binary(env, enif_make_pid(env, &pid), &bin)) return std::nullopt;
  std::optional<uint64_t> key = pid_key({bin.data, bin.size});
  enif_release_binary(&bin);
  return key;
}

PriorityTable::MarkResult PriorityTable::mark(ErlNifEnv* env, const ErlNifPid& pid) {
  std::optional<uint64_t> key = key_of(env, pid);
  if (!key) return MarkResult::kNotAlive;
  std::lock_guard lock(mu_);
  if (marked_.count(*key)) return MarkResult::kOk;
  if (marked_.size() >= kMaxPriorityProcesses) return MarkResult::kFull;
  ErlNifMonitor mon;
  // The down callback takes mu_: it runs on another thread or later, never
  // inside enif_monitor_process (which returns > 0 for a dead process).
  if (enif_monitor_process(env, monitor_owner(), &pid, &mon) != 0) return MarkResult::kNotAlive;
  marked_.emplace(*key, mon);
  size_.store(marked_.size(), std::memory_order_relaxed);
  return MarkResult::kOk;
}

void PriorityTable::unmark(ErlNifEnv* env, const ErlNifPid& pid) {
  std::optional<uint64_t> key = key_of(env, pid);
  if (!key) return;
  std::lock_guard lock(mu_);
  auto it = marked_.find(*key);
  if (it == marked_.end()) return;
  enif_demonitor_process(env, owner_, &it->second);
  marked_.erase(it);
  size_.store(marked_.size(), std::memory_order_relaxed);
}

bool PriorityTable::marked(ErlNifEnv* env, const ErlNifPid& pid) const {
  std::optional<uint64_t> key = key_of(env, pid);
  return key && contains(*key);
}

bool PriorityTable::contains(uint64_t key) const {
  if (size_.load(std::memory_order_relaxed) == 0) return false;
  std::lock_guard lock(mu_);
  return marked_.count(key) != 0;
}

void PriorityTable::down(ErlNifEnv* env, void* obj, ErlNifPid* pid, ErlNifMonitor*) {
  PriorityTable* table = *static_cast<PriorityTable**>(obj);
  std::optional<uint64_t> key = key_of(env, *pid);
  if (!key) return;
  std::lock_guard lock(table->mu_);
  table->marked_.erase(*key);
  table->size_.store(table->marked_.size(), std::memory_order_relaxed);
}

}  // namespace macula
