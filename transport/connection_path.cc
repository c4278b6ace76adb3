// Connection: paths, migration and the figures published to the handle.
// Same class as connection.cc, kept apart because it is its own concern.
#include <algorithm>
#include <cstring>

#include "connection.h"

namespace macula {
namespace {

// A validation that failed is not retried automatically for this long:
// a dead path costs a PTO-backed-off validation (seconds) each time.
constexpr uint64_t kFailedBackoffNs = 10'000'000'000ull;
constexpr uint64_t kPublishEveryNs = 100'000'000ull;

Address to_address(const ngtcp2_addr& a) {
  Address out;
  std::memcpy(&out.storage, a.addr, a.addrlen);
  out.len = a.addrlen;
  return out;
}

MigrationResult result_of(int liberr) {
  switch (liberr) {
    case NGTCP2_ERR_INVALID_STATE: return MigrationResult::kNotReady;
    case NGTCP2_ERR_CONN_ID_BLOCKED: return MigrationResult::kNoSpareCid;
    case NGTCP2_ERR_INVALID_ARGUMENT: return MigrationResult::kSamePath;
    default: return MigrationResult::kFailed;
  }
}

}  // namespace

const char* migration_result_name(MigrationResult r) {
  switch (r) {
    case MigrationResult::kMigrated: return "migrated";
    case MigrationResult::kSamePath: return "same_path";
    case MigrationResult::kFailed: return "path_validation_failed";
    case MigrationResult::kAborted: return "aborted";
    case MigrationResult::kNotReady: return "not_ready";
    case MigrationResult::kNoSpareCid: return "no_spare_connection_id";
    case MigrationResult::kInProgress: return "in_progress";
    case MigrationResult::kServerRole: return "server_role";
    case MigrationResult::kNotLocal: return "not_local";
    case MigrationResult::kNoRoute: return "no_route";
    case MigrationResult::kClosed: return "closed";
    case MigrationResult::kBoundSocket: return "bound_socket";
  }
  return "unknown";
}

Address Connection::local_address() const {
  return to_address(ngtcp2_conn_get_path(conn_)->local);
}

Address Connection::remote_address() const {
  return to_address(ngtcp2_conn_get_path(conn_)->remote);
}

void Connection::migrate(const Address& local, uint64_t now, MigrationCallback done,
                         bool immediate) {
  auto refuse = [&](MigrationResult r) {
    if (done) done(handle_->id(), {r, local_address()});
  };
  if (role_ != Role::kClient) return refuse(MigrationResult::kServerRole);
  if (state_ == State::kHandshake) return refuse(MigrationResult::kNotReady);
  if (state_ != State::kOpen) return refuse(MigrationResult::kClosed);
  if (migrating()) return refuse(MigrationResult::kInProgress);
  if (local == local_address()) return refuse(MigrationResult::kSamePath);
  Address remote = remote_address();
  ngtcp2_path path{{const_cast<sockaddr*>(local.sa()), local.len},
                   {const_cast<sockaddr*>(remote.sa()), remote.len},
                   nullptr};
  int rv = immediate ? ngtcp2_conn_initiate_immediate_migration(conn_, &path, now)
                     : ngtcp2_conn_initiate_migration(conn_, &path, now);
  if (rv != 0) return refuse(result_of(rv));
  migration_started_ = now;
  if (done) migration_waiters_.push_back(std::move(done));
  published_at_ = 0;
}

void Connection::on_path_validation(const ngtcp2_path* path,
                                    ngtcp2_path_validation_result res) {
  // Server side this is the peer's doing (it migrated, or a NAT rebound
  // it); client side it is the end of our own migrate().
  published_at_ = 0;
  if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) {
    ++migrations_;
    if (migrating()) finish_migration(MigrationResult::kMigrated, to_address(path->local));
    return;
  }
  if (res == NGTCP2_PATH_VALIDATION_RESULT_FAILURE) {
    ++failed_migrations_;
    if (role_ == Role::kClient) {
      failed_local_ = to_address(path->local);
      failed_until_ = now_ns() + kFailedBackoffNs;
    }
  }
  if (migrating())
    finish_migration(res == NGTCP2_PATH_VALIDATION_RESULT_FAILURE ? MigrationResult::kFailed
                                                                  : MigrationResult::kAborted,
                     local_address());
}

void Connection::finish_migration(MigrationResult result, const Address& local) {
  migration_started_ = 0;
  std::vector<MigrationCallback> waiters = std::exchange(migration_waiters_, {});
  for (MigrationCallback& w : waiters) w(handle_->id(), {result, local});
}

bool Connection::recently_failed(const Address& local, uint64_t now) const {
  return now < failed_until_ && failed_local_ == local;
}

uint64_t Connection::lost_packets() const {
  uint64_t n = control_out_.id >= 0 ? ngtcp2_conn_get_stream_loss_count(conn_, control_out_.id) : 0;
  for (const StreamOut& s : data_out_) n += ngtcp2_conn_get_stream_loss_count(conn_, s.id);
  return n;
}

void Connection::publish_path(uint64_t now, bool force) {
  if (!conn_) return;
  if (!force && published_at_ && now - published_at_ < kPublishEveryNs) {
    publish_due_ = std::min(publish_due_, published_at_ + kPublishEveryNs);
    return;
  }
  published_at_ = now;
  publish_due_ = UINT64_MAX;
  ngtcp2_conn_stat st;
  ngtcp2_conn_get_conn_stat(conn_, &st);
  PathInfo p;
  p.local = local_address();
  p.remote = remote_address();
  p.migrations = migrations_;
  p.failed_migrations = failed_migrations_;
  p.migrating = migrating();
  bool sampled = st.first_rtt_sample_ts != UINT64_MAX;
  p.smoothed_rtt_ns = sampled ? st.smoothed_rtt : 0;
  p.min_rtt_ns = sampled ? st.min_rtt : 0;
  p.latest_rtt_ns = sampled ? st.latest_rtt : 0;
  p.lost_packets = lost_packets();
  p.pto_count = st.pto_count;
  p.cwnd = st.cwnd;
  p.bytes_sent = bytes_sent_;
  p.bytes_received = bytes_received_;
  handle_->set_path(p);
  count_traffic(p);
}

void Connection::count_traffic(const PathInfo& p) {
  TrafficTotals now{p.bytes_sent, p.bytes_received, p.lost_packets, p.migrations,
                    p.failed_migrations};
  TrafficTotals d{now.bytes_sent - counted_.bytes_sent,
                  now.bytes_received - counted_.bytes_received,
                  // Loss counts are per open stream: never let a total shrink.
                  now.lost_packets > counted_.lost_packets ? now.lost_packets - counted_.lost_packets : 0,
                  now.migrations - counted_.migrations,
                  now.failed_migrations - counted_.failed_migrations};
  now.lost_packets = std::max(now.lost_packets, counted_.lost_packets);
  counted_ = now;
  config_.host->add_traffic(d);
}

}  // namespace macula
