// What a connection's path looks like from outside the loop lock, and
// the outcome of a migration request. Plain values, no behaviour.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "udp_socket.h"

namespace macula {

// A snapshot of one connection's path and transport figures, refreshed by
// the loop-lock holder at least every 100 ms while it has traffic, and at once
// when the path changes.
struct PathInfo {
  Address local, remote;         // the current path
  uint64_t migrations = 0;       // validated path changes (ours or the peer's)
  uint64_t failed_migrations = 0;  // path validations that failed
  bool migrating = false;        // client: a migrate() is being validated
  uint64_t smoothed_rtt_ns = 0;
  uint64_t min_rtt_ns = 0;
  uint64_t latest_rtt_ns = 0;
  // Packets carrying our stream data that were declared lost (ngtcp2 0.12
  // counts losses per stream only; spurious losses included).
  uint64_t lost_packets = 0;
  uint64_t pto_count = 0;        // probe timeouts in a row right now
  uint64_t cwnd = 0;             // congestion window, bytes
  uint64_t bytes_sent = 0;       // UDP payload bytes
  uint64_t bytes_received = 0;
};

// Traffic figures summed over connections (EndpointStats::traffic).
struct TrafficTotals {
  uint64_t bytes_sent = 0;      // UDP payload bytes
  uint64_t bytes_received = 0;
  uint64_t lost_packets = 0;    // as PathInfo::lost_packets
  uint64_t migrations = 0;      // validated path changes
  uint64_t failed_migrations = 0;
};

// How a migration request ended for one connection.
enum class MigrationResult {
  kMigrated,      // the new path was validated and is now in use
  kSamePath,      // already on that local address: nothing to do
  kFailed,        // the new path did not answer; the old one stays
  kAborted,       // superseded (ngtcp2 aborted the validation)
  kNotReady,      // handshake not confirmed yet
  kNoSpareCid,    // the peer gave us no unused connection ID
  kInProgress,    // another migration is running
  kServerRole,    // QUIC lets only the client migrate
  kNotLocal,      // the address is not one of this host's
  kNoRoute,       // no route to the peer
  kClosed,        // the connection is closing
  kBoundSocket,   // the endpoint's socket is bound to one address
};

const char* migration_result_name(MigrationResult r);

struct MigrationOutcome {
  MigrationResult result = MigrationResult::kMigrated;
  Address local;  // the path's local address after the attempt
};

// Called once per connection a request applied to, by the holder of the
// endpoint's loop lock (the I/O thread, or a caller inside read_now).
using MigrationCallback =
    std::function<void(uint64_t connection_id, const MigrationOutcome&)>;

}  // namespace macula
