// The node's high-priority processes (macula:set_priority/2): the flow
// keys (dist_route.h) of local processes whose distribution signals go on
// each connection's priority stream. One table per loaded NIF library
// (its priv_data; a resource of its own owns the monitors), bounded by
// kMaxPriorityProcesses; each entry holds a monitor of its process and
// goes when the process exits, so the table never holds more than the
// marked processes that are alive.
//
// Threads: any scheduler may call any method (a mutex inside; contains()
// skips it while the table is empty, the common case).
#pragma once

#include <erl_nif.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace macula {

inline constexpr size_t kMaxPriorityProcesses = 4096;

class PriorityTable {
 public:
  enum class MarkResult { kOk, kFull, kNotAlive };

  // From the NIF's load() only: opens the resource type and makes the
  // table (kept until the library is unloaded). nullptr on failure.
  static PriorityTable* create(ErlNifEnv* env);

  // Marks the local process `pid` high priority; marking a marked process
  // again is ok. kNotAlive: the process is gone; kFull: the bound.
  MarkResult mark(ErlNifEnv* env, const ErlNifPid& pid);
  // Back to normal priority; a process not marked is left alone.
  void unmark(ErlNifEnv* env, const ErlNifPid& pid);
  bool marked(ErlNifEnv* env, const ErlNifPid& pid) const;
  // By flow key (dist_route.h route_of()): true for a marked process.
  bool contains(uint64_t key) const;
  size_t size() const { return size_.load(std::memory_order_relaxed); }
  // Frames routed to the priority stream (marked senders and OTP 28
  // priority signals), counted by the binding's send.
  void count_frames(uint64_t n) { frames_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t frames() const { return frames_.load(std::memory_order_relaxed); }

 private:
  explicit PriorityTable(ErlNifResourceType* type) : type_(type) {}
  static void down(ErlNifEnv* env, void* obj, ErlNifPid* pid, ErlNifMonitor* mon);
  static std::optional<uint64_t> key_of(ErlNifEnv* env, const ErlNifPid& pid);
  void* monitor_owner();

  ErlNifResourceType* const type_;
  void* owner_ = nullptr;

  mutable std::mutex mu_;
  std::unordered_map<uint64_t, ErlNifMonitor> marked_;
  std::atomic<size_t> size_{0};
  std::atomic<uint64_t> frames_{0};
};

}  // namespace macula
