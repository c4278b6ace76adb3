// Endpoint: which local address each client connection should use, and
// moving connections when that changes. Same class as endpoint.cc.
//
// The socket is bound to a wildcard address and every packet leaves with
// an explicit source (IP_PKTINFO), the local address of its connection's
// path. So a connection keeps its address until we move it, and moving it
// is a QUIC migration the peer validates, not a silent change of source
// address (which the peer would see as a NAT rebinding).
#include <netinet/in.h>

#include "endpoint.h"
#include "local_address.h"

namespace macula {
namespace {

// Address events come in bursts (an address move is a delete, an add and
// route changes): let the burst settle before looking. Short: each event
// restarts nothing, and a look that finds no route yet costs only the
// wait for the next event (20 ms here made an address move cost 50-125 ms
// of interruption instead of ~12 ms).
constexpr uint64_t kSettleNs = 5'000'000ull;
// After sends failed for path reasons, look again this soon.
constexpr uint64_t kErrorCheckNs = 100'000'000ull;
// While a failed path is in back-off, look again this often.
constexpr uint64_t kBackoffCheckNs = 1'000'000'000ull;

bool is_v4_mapped(const Address& a) {
  return a.storage.ss_family == AF_INET6 &&
         IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr);
}

}  // namespace

void Endpoint::open_address_watch() {
  if (!config_.follow_address_changes || !socket_.local().unspecified()) return;
  std::string error;
  // Without netlink (a sandbox), failing sends still trigger the checks.
  watch_.open(error);
}

// The client's first local address: the source the routing table picks
// for the peer, so that the path has a real address from the start.
Address Endpoint::dial_local(const Address& remote) const {
  if (!socket_.local().unspecified()) return socket_.local();
  Address src;
  std::string error;
  if (!preferred_source(remote, src, error)) return socket_.local();
  return src.with_port(socket_.local().port());
}

void Endpoint::on_address_changes(uint64_t now) {
  if (watch_.drain().any()) schedule_path_check(now + kSettleNs);
}

void Endpoint::after_send_errors(uint64_t now) {
  if (socket_.take_path_errors() && config_.follow_address_changes)
    schedule_path_check(now + kErrorCheckNs);
}

void Endpoint::schedule_path_check(uint64_t at) {
  path_check_at_ = std::min(path_check_at_, at);
}

void Endpoint::run_path_check(uint64_t now) {
  if (path_check_at_ > now) return;
  path_check_at_ = UINT64_MAX;
  check_paths(now);
}

// Moves each open client connection whose preferred source address
// changed. A connection whose move failed lately keeps its path for the
// back-off; it is looked at again when that ends.
void Endpoint::check_paths(uint64_t now) {
  if (!socket_.local().unspecified()) return;
  for (auto& [id, c] : conns_) {
    if (c->role() != Role::kClient || !c->is_open() || c->migrating()) continue;
    // An operator's choice stands while its address exists.
    if (c->pinned_local().len && c->local_address() == c->pinned_local() &&
        is_local_address(c->pinned_local()))
      continue;
    Address want;
    std::string error;
    // No route at all: wait for one (a route event or a failing send).
    if (!preferred_source(c->remote_address(), want, error)) continue;
    want = want.with_port(socket_.local().port());
    if (want == c->local_address()) continue;
    if (c->recently_failed(want, now)) {
      schedule_path_check(now + kBackoffCheckNs);
      continue;
    }
    c->migrate(want, now, nullptr, !is_local_address(c->local_address()));
    dirty_.insert(c.get());
  }
}

void Endpoint::migrate(const Address& local, std::function<void(size_t)> counted,
                       MigrationCallback done) {
  loop_->post([this, local, counted = std::move(counted), done = std::move(done)] {
    start_migration(local, counted, done, now_ns());
  });
}

// What an explicit target becomes on our socket, or why it cannot be.
MigrationResult Endpoint::migration_target(const Address& local, Address& target) const {
  if (!socket_.local().unspecified()) {
    Address bound = socket_.to_socket_family(local).with_port(socket_.local().port());
    return bound == socket_.local() ? MigrationResult::kSamePath
                                    : MigrationResult::kBoundSocket;
  }
  if (!is_local_address(local)) return MigrationResult::kNotLocal;
  target = socket_.to_socket_family(local).with_port(socket_.local().port());
  // An IPv6 address on an IPv4 socket: no way to send from it.
  if (target.storage.ss_family != socket_.local().storage.ss_family)
    return MigrationResult::kNoRoute;
  return MigrationResult::kMigrated;
}

void Endpoint::start_migration(const Address& local, const std::function<void(size_t)>& counted,
                               const MigrationCallback& done, uint64_t now) {
  std::vector<Connection*> clients;
  for (auto& [id, c] : conns_)
    if (c->role() == Role::kClient && !c->finished(now)) clients.push_back(c.get());
  if (counted) counted(clients.size());
  bool automatic = local.unspecified();
  Address target;
  MigrationResult check = automatic ? MigrationResult::kMigrated : migration_target(local, target);
  for (Connection* c : clients) {
    Address to = target;
    MigrationResult r = check;
    std::string error;
    if (automatic && preferred_source(c->remote_address(), to, error))
      to = to.with_port(socket_.local().port());
    else if (automatic)
      r = MigrationResult::kNoRoute;
    else if (r == MigrationResult::kMigrated && is_v4_mapped(to) != is_v4_mapped(c->remote_address()))
      r = MigrationResult::kNoRoute;  // an IPv6 source for an IPv4 peer, or the reverse
    if (r != MigrationResult::kMigrated) {
      if (done) done(c->handle().id(), {r, c->local_address()});
      continue;
    }
    // An explicit address is the operator's choice: automatic checks keep
    // the connection there. migrate() to "auto" hands it back to them.
    c->set_pinned_local(automatic ? Address{} : to);
    c->migrate(to, now, done, !is_local_address(c->local_address()));
    dirty_.insert(c);
  }
}

}  // namespace macula
