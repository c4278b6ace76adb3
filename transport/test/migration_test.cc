// Paths and migration: replies from the address the peer wrote to, a
// client moving to another local address mid-transfer, a NAT that loses
// its state (the server follows the new address), a dead new path (the old
// one keeps the traffic), the refusals, the path figures, and the helpers
// (local addresses, the netlink watch).
//
// Everything runs on loopback (127.0.0.0/8 is all ours) through TestNat,
// a user-space NAT in this process, except the netlink test, which adds
// an address inside a private network namespace of a child process.
#include <errno.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "address_watch.h"
#include "endpoint.h"
#include "framing.h"
#include "local_address.h"
#include "test_util.h"

namespace macula {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 5s;
constexpr size_t kFrameSize = 4096;

Address addr(const std::string& ip, uint16_t port = 0) {
  Address a;
  if (!make_address(ip, port, a)) throw std::runtime_error("bad address " + ip);
  return a;
}

// A UDP socket on loopback, closed on destruction.
int udp_socket(uint16_t port = 0) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  Address a = addr("127.0.0.1", port);
  if (fd < 0 || bind(fd, a.sa(), a.len) != 0) throw std::runtime_error("udp socket");
  return fd;
}

uint16_t port_of(int fd) {
  Address a;
  a.len = sizeof a.storage;
  getsockname(fd, a.sa(), &a.len);
  return a.port();
}

// A NAT between client and server, on 127.0.0.1: each client source
// address gets its own upstream socket (the server sees the NAT's address
// and port); rebind() gives every mapping a fresh upstream port, as a NAT
// that lost its state does; packets from a black-holed source IP vanish.
class TestNat {
 public:
  explicit TestNat(uint16_t server_port)
      : front_(udp_socket()), server_(addr("127.0.0.1", server_port)) {
    thread_ = std::thread([this] { run(); });
  }
  ~TestNat() {
    stop_ = true;
    thread_.join();
    close(front_);
    for (auto& [key, m] : maps_) close(m.fd);
  }
  uint16_t port() const { return port_of(front_); }
  // Returns once the new mappings are in place.
  void rebind() {
    int want = ++rebinds_;
    while (applied_ < want) std::this_thread::sleep_for(1ms);
  }
  void blackhole(const std::string& ip) {
    std::lock_guard lock(mu_);
    blackholed_ = ip;
  }
  size_t upstream_ports_used() {
    std::lock_guard lock(mu_);
    return ports_used_;
  }

 private:
  struct Mapping {
    Address client;
    int fd;
  };

  void run() {
    int seen_rebinds = 0;
    while (!stop_) {
      if (rebinds_ != seen_rebinds) {
        seen_rebinds = rebinds_;
        for (auto& [key, m] : maps_) {
          close(m.fd);
          m.fd = new_upstream();
        }
        applied_ = seen_rebinds;
      }
      std::vector<pollfd> fds{{front_, POLLIN, 0}};
      for (auto& [key, m] : maps_) fds.push_back({m.fd, POLLIN, 0});
      if (poll(fds.data(), fds.size(), 5) <= 0) continue;
      forward_from_clients();
      forward_from_server();
    }
  }

  int new_upstream() {
    std::lock_guard lock(mu_);
    ++ports_used_;
    return udp_socket();
  }

  void forward_from_clients() {
    uint8_t buf[65536];
    for (;;) {
      Address from;
      from.len = sizeof from.storage;
      ssize_t n = recvfrom(front_, buf, sizeof buf, 0, from.sa(), &from.len);
      if (n < 0) return;
      {
        std::lock_guard lock(mu_);
        if (from.ip_string() == blackholed_) continue;
      }
      auto it = maps_.find(from.to_string());
      if (it == maps_.end())
        it = maps_.emplace(from.to_string(), Mapping{from, new_upstream()}).first;
      sendto(it->second.fd, buf, size_t(n), 0, server_.sa(), server_.len);
    }
  }

  void forward_from_server() {
    uint8_t buf[65536];
    for (auto& [key, m] : maps_) {
      ssize_t n;
      while ((n = recv(m.fd, buf, sizeof buf, 0)) >= 0) {
        sendto(front_, buf, size_t(n), 0, m.client.sa(), m.client.len);
      }
    }
  }

  int front_;
  Address server_;
  std::map<std::string, Mapping> maps_;  // I/O thread only
  std::atomic<int> rebinds_{0}, applied_{0};

  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string blackholed_;
  size_t ports_used_ = 0;
  std::thread thread_;
};

// Data frame `seq`: its number, then a pattern that depends on it.
Bytes numbered_frame(uint64_t seq) {
  std::vector<uint8_t> payload(kFrameSize);
  std::memcpy(payload.data(), &seq, sizeof seq);
  for (size_t i = sizeof seq; i < kFrameSize; ++i) payload[i] = uint8_t(seq * 31 + i);
  iovec v{payload.data(), payload.size()};
  std::span<const iovec> one(&v, 1);
  return encode_frames(std::span<const std::span<const iovec>>(&one, 1));
}

bool frame_ok(uint64_t expected, const Bytes& f) {
  if (f.size != kFrameSize) return false;
  uint64_t seq;
  std::memcpy(&seq, f.data.get(), sizeof seq);
  if (seq != expected) return false;
  for (size_t i = sizeof seq; i < kFrameSize; ++i)
    if (f.data[i] != uint8_t(seq * 31 + i)) return false;
  return true;
}

// Events of one connection: frames checked for sequence and content,
// credit returned at once.
class Sink : public ConnectionEvents {
 public:
  void connected() override { locked([&] { return ++connected_; }); }
  void control_frame(Bytes) override {}
  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override {
    locked([&] {
      for (Bytes& f : frames) bad_ += !frame_ok(frames_++, f);
      return 0;
    });
    if (auto h = handle_.lock()) h->consumed(credit);
  }
  void writable() override { locked([&] { return ++writable_; }); }
  void closed(const CloseInfo& info) override {
    locked([&] { return (closed_ = info).has_value(); });
  }

  void set_handle(std::shared_ptr<ConnectionHandle> h) { handle_ = h; }
  // Polls `pred` (which may call the accessors below) until it holds.
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout) {
    for (auto until = Clock::now() + timeout; !pred();) {
      if (Clock::now() >= until) return false;
      std::this_thread::sleep_for(1ms);
    }
    return true;
  }
  uint64_t frames() { return locked([&] { return frames_; }); }
  uint64_t bad() { return locked([&] { return bad_; }); }
  int writable_count() { return locked([&] { return writable_; }); }
  bool is_closed() { return locked([&] { return closed_.has_value(); }); }
  int connected_count() { return locked([&] { return connected_; }); }

 private:
  template <class F>
  auto locked(F f) -> decltype(f()) {
    std::lock_guard lock(mu_);
    return f();
  }
  std::mutex mu_;
  std::weak_ptr<ConnectionHandle> handle_;
  int connected_ = 0, writable_ = 0;
  uint64_t frames_ = 0, bad_ = 0;
  std::optional<CloseInfo> closed_;
};

class Acceptor : public EndpointEvents {
 public:
  void accepted(std::shared_ptr<ConnectionHandle> h) override {
    std::lock_guard lock(mu_);
    handles_.push_back(std::move(h));
  }
  std::shared_ptr<ConnectionHandle> first() {
    std::lock_guard lock(mu_);
    return handles_.empty() ? nullptr : handles_.front();
  }

 private:
  std::mutex mu_;
  std::vector<std::shared_ptr<ConnectionHandle>> handles_;
};

// Sends numbered frames on a connection from its own thread, honouring
// kBusy/writable(), until stopped.
class Sender {
 public:
  Sender(std::shared_ptr<ConnectionHandle> h, std::shared_ptr<Sink> events)
      : h_(std::move(h)), events_(std::move(events)) {
    thread_ = std::thread([this] { run(); });
  }
  ~Sender() { stop(); }
  uint64_t stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return sent_;
  }
  uint64_t sent() const { return sent_; }

 private:
  void run() {
    while (!stop_) {
      int before = events_->writable_count();
      SendStatus st = h_->send(Channel::kData, numbered_frame(sent_), 1);
      if (st == SendStatus::kClosed) return;
      ++sent_;
      if (st == SendStatus::kBusy)
        events_->wait([&] { return stop_ || events_->writable_count() > before; }, 100ms);
    }
  }
  std::shared_ptr<ConnectionHandle> h_;
  std::shared_ptr<Sink> events_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::thread thread_;
};

struct Outcomes {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<size_t> count;
  std::vector<MigrationOutcome> results;

  MigrationCallback callback() {
    return [this](uint64_t, const MigrationOutcome& o) {
      std::lock_guard lock(mu);
      results.push_back(o);
      cv.notify_all();
    };
  }
  std::function<void(size_t)> counter() {
    return [this](size_t n) {
      std::lock_guard lock(mu);
      count = n;
      cv.notify_all();
    };
  }
  bool wait(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, timeout, [&] { return count && results.size() >= n; });
  }
};

class MigrationTest : public ::testing::Test {
 protected:
  EndpointConfig config(const std::string& name, const std::string& ip) {
    EndpointConfig c;
    c.bind_ip = ip;
    c.tls.cert_dir = tmp_.file(name);
    // These tests move connections themselves; the host's own address
    // changes must not interfere.
    c.follow_address_changes = false;
    return c;
  }

  void open(const std::string& server_ip = "0.0.0.0",
            const std::string& client_ip = "0.0.0.0") {
    std::string error;
    server_ = Endpoint::open(config("server", server_ip), acceptor_, error);
    ASSERT_NE(server_, nullptr) << error;
    client_ = Endpoint::open(config("client", client_ip), nullptr, error);
    ASSERT_NE(client_, nullptr) << error;
  }

  // Dials `ip:port` and waits for both ends; the server end gets a Sink.
  void connect(const std::string& ip, uint16_t port) {
    client_events_ = std::make_shared<Sink>();
    client_h_ = client_->dial(addr(ip, port), ip, [&](uint64_t) { return client_events_; });
    client_events_->set_handle(client_h_);
    ASSERT_TRUE(client_events_->wait([&] { return client_events_->connected_count() > 0 ||
                                                  client_events_->is_closed(); }, kWait));
    ASSERT_EQ(client_events_->connected_count(), 1) << "client did not connect";
    ASSERT_TRUE(wait_for([&] { return acceptor_->first() != nullptr; }));
    server_h_ = acceptor_->first();
    server_events_ = std::make_shared<Sink>();
    server_events_->set_handle(server_h_);
    server_h_->attach(server_events_);
  }

  template <class Pred>
  bool wait_for(Pred pred, std::chrono::milliseconds timeout = kWait) {
    for (auto until = Clock::now() + timeout; !pred();) {
      if (Clock::now() >= until) return false;
      std::this_thread::sleep_for(5ms);
    }
    return true;
  }

  MigrationOutcome migrate_one(const std::string& ip, std::chrono::milliseconds timeout = kWait) {
    Outcomes out;
    client_->migrate(ip.empty() ? Address{} : addr(ip), out.counter(), out.callback());
    EXPECT_TRUE(out.wait(1, timeout)) << "no outcome";
    std::lock_guard lock(out.mu);
    EXPECT_EQ(out.count.value_or(0), 1u);
    return out.results.empty() ? MigrationOutcome{MigrationResult::kClosed, {}} : out.results[0];
  }

  // Frames keep arriving at the server, in order and intact.
  void expect_flowing(uint64_t after) {
    EXPECT_TRUE(server_events_->wait([&] { return server_events_->frames() > after + 200; }, kWait))
        << "transfer stalled at " << server_events_->frames();
  }

  void expect_all_delivered(Sender& sender) {
    uint64_t sent = sender.stop();
    EXPECT_TRUE(server_events_->wait([&] { return server_events_->frames() >= sent; }, 10s));
    EXPECT_EQ(server_events_->frames(), sent);
    EXPECT_EQ(server_events_->bad(), 0u) << "lost, reordered or corrupt frames";
    EXPECT_FALSE(server_events_->is_closed());
    EXPECT_FALSE(client_events_->is_closed());
  }

  test::TempDir tmp_;
  std::shared_ptr<Acceptor> acceptor_ = std::make_shared<Acceptor>();
  std::unique_ptr<Endpoint> server_, client_;
  std::shared_ptr<ConnectionHandle> client_h_, server_h_;
  std::shared_ptr<Sink> client_events_, server_events_;
};

TEST(LocalAddress, LoopbackIsOursAndReachesItself) {
  Address src;
  std::string error;
  ASSERT_TRUE(preferred_source(addr("127.0.0.1", 9), src, error)) << error;
  EXPECT_EQ(src.ip_string(), "127.0.0.1");
  EXPECT_EQ(src.port(), 0);
  EXPECT_TRUE(is_local_address(addr("127.0.0.1")));
  EXPECT_TRUE(is_local_address(addr("127.0.0.2")));
  // TEST-NET-1 (RFC 5737) is never assigned to a host.
  EXPECT_FALSE(is_local_address(addr("192.0.2.1")));
}

TEST(LocalAddress, V4MappedPeerGivesAV4MappedSource) {
  Address src;
  std::string error;
  ASSERT_TRUE(preferred_source(addr("::ffff:127.0.0.1", 9), src, error)) << error;
  EXPECT_EQ(src.storage.ss_family, AF_INET6);
  EXPECT_EQ(src.ip_string(), "127.0.0.1");
}

TEST(AddressHelpers, SameIpIgnoresPortsAndUnspecifiedIsWildcard) {
  EXPECT_TRUE(addr("127.0.0.1", 1).same_ip(addr("127.0.0.1", 2)));
  EXPECT_FALSE(addr("127.0.0.1", 1).same_ip(addr("127.0.0.2", 1)));
  EXPECT_TRUE(addr("0.0.0.0").unspecified());
  EXPECT_TRUE(addr("::").unspecified());
  EXPECT_TRUE(Address{}.unspecified());
  EXPECT_FALSE(addr("127.0.0.1").unspecified());
  EXPECT_EQ(addr("10.1.2.3", 7).with_port(9).to_string(), "10.1.2.3:9");
  EXPECT_EQ(addr("::1", 7).ip_string(), "::1");
}

// The watch sees an address being added and removed. It runs in a child
// process with a private network namespace, so the host is not touched.
TEST(AddressWatchTest, SeesAddressesComeAndGo) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (unshare(CLONE_NEWNET) != 0) _exit(77);
    AddressWatch w;
    std::string error;
    if (!w.open(error)) _exit(2);
    if (w.drain().any()) _exit(3);  // nothing happened yet
    if (system("ip link set lo up && ip addr add 10.198.77.1/32 dev lo") != 0) _exit(4);
    usleep(50000);
    AddressChanges added = w.drain();
    if (added.addresses_added < 1) _exit(5);
    if (system("ip addr del 10.198.77.1/32 dev lo") != 0) _exit(6);
    usleep(50000);
    if (w.drain().addresses_removed < 1) _exit(7);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 77) GTEST_SKIP() << "no permission for a network namespace";
  EXPECT_EQ(WEXITSTATUS(status), 0) << "step that failed (see the test)";
}

// Before IP_PKTINFO, a server on a wildcard address answered a client that
// dialled 127.0.0.2 from 127.0.0.1 (the kernel's choice), and the client
// dropped every answer: the handshake timed out.
TEST_F(MigrationTest, WildcardServerAnswersFromTheAddressDialled) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.2", server_->port()));
  ASSERT_TRUE(wait_for([&] { return client_h_->path().remote.len != 0; }));
  EXPECT_EQ(client_h_->path().remote.to_string(),
            "127.0.0.2:" + std::to_string(server_->port()));
  EXPECT_TRUE(wait_for([&] { return server_h_->path().local.ip_string() == "127.0.0.2"; }));
  // The client's path has a real local address (not 0.0.0.0).
  EXPECT_FALSE(client_h_->path().local.unspecified());
}

TEST_F(MigrationTest, ClientMovesToAnotherLocalAddressMidTransfer) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  Sender sender(client_h_, client_events_);
  expect_flowing(0);
  MigrationOutcome o = migrate_one("127.0.0.2");
  EXPECT_EQ(o.result, MigrationResult::kMigrated) << migration_result_name(o.result);
  EXPECT_EQ(o.local.to_string(), "127.0.0.2:" + std::to_string(client_->port()));
  expect_flowing(server_events_->frames());
  // Both ends now use the new path and counted one migration.
  EXPECT_TRUE(wait_for([&] { return client_h_->path().local.ip_string() == "127.0.0.2"; }));
  EXPECT_TRUE(wait_for([&] { return server_h_->path().remote.ip_string() == "127.0.0.2"; }));
  EXPECT_EQ(client_h_->path().migrations, 1u);
  EXPECT_GE(server_h_->path().migrations, 1u);
  expect_all_delivered(sender);
}

TEST_F(MigrationTest, ServerFollowsANatThatLostItsState) {
  ASSERT_NO_FATAL_FAILURE(open());
  TestNat nat(server_->port());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", nat.port()));
  Sender sender(client_h_, client_events_);
  expect_flowing(0);
  uint16_t before = server_h_->path().remote.port();
  for (int i = 0; i < 3; ++i) {
    nat.rebind();
    expect_flowing(server_events_->frames());
  }
  EXPECT_EQ(nat.upstream_ports_used(), 4u);
  EXPECT_TRUE(wait_for([&] { return server_h_->path().remote.port() != before; }));
  EXPECT_GE(server_h_->path().migrations, 1u);
  // The client saw nothing: same path, no migration of its own.
  EXPECT_EQ(client_h_->path().migrations, 0u);
  expect_all_delivered(sender);
}

// An idle connection whose NAT mapping changes, then the server sends: its
// packets go to the old port and vanish, and the client, which only
// receives, has nothing to answer. Its keep-alive PING (2 s after the
// last packet it received) is what shows the server the new address.
class KeepAliveTest : public MigrationTest {
 protected:
  // Milliseconds until data flows again, or -1 if not within `limit`.
  // `both_keep_alive_ms`: keep_alive_ms of both ends (what nodes use).
  long long resume_after_idle_rebind(uint64_t keep_alive_ms, std::chrono::milliseconds limit,
                                     uint64_t both_keep_alive_ms = 0) {
    EndpointConfig sc = config("server", "0.0.0.0"), cc = config("client", "0.0.0.0");
    cc.client_keep_alive_ms = keep_alive_ms;
    sc.keep_alive_ms = cc.keep_alive_ms = both_keep_alive_ms;
    std::string error;
    server_ = Endpoint::open(sc, acceptor_, error);
    client_ = Endpoint::open(cc, nullptr, error);
    if (!server_ || !client_) return -2;
    nat_ = std::make_unique<TestNat>(server_->port());
    connect("127.0.0.1", nat_->port());
    if (!server_h_) return -2;
    std::this_thread::sleep_for(300ms);  // handshake traffic settles: idle
    nat_->rebind();
    auto t0 = Clock::now();
    sender_ = std::make_unique<Sender>(server_h_, server_events_);
    if (!client_events_->wait([&] { return client_events_->frames() > 200; }, limit)) return -1;
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  }
  std::unique_ptr<Sender> sender_;
  std::unique_ptr<TestNat> nat_;  // lives as long as the test
};

TEST_F(KeepAliveTest, ReceiveOnlyClientIsFoundAgainByItsKeepAlive) {
  // Found at the keep-alive (2 s), then the server retransmits at its next
  // probe timeout, backed off meanwhile: about 3.5 s here.
  long long ms = resume_after_idle_rebind(2000, 6s);
  ASSERT_GE(ms, 0) << "never found again";
  uint64_t sent = sender_->stop();
  EXPECT_TRUE(client_events_->wait([&] { return client_events_->frames() >= sent; }, 10s))
      << "received " << client_events_->frames() << " of " << sent << "; server pto_count "
      << server_h_->path().pto_count << " lost " << server_h_->path().lost_packets
      << " queued " << server_h_->stats().queued_bytes << " remote "
      << server_h_->path().remote.to_string() << " after " << ms << " ms";
  EXPECT_EQ(client_events_->bad(), 0u);
  EXPECT_FALSE(client_events_->is_closed());
}

// The same without keep-alive: the client stays lost (this is what the
// keep-alive is for, and shows the test above measures it).
// With keep-alive on both ends (as nodes have it), the server's packets
// to the old mapping draw ICMP "port unreachable" from the NAT, quoting
// the connection's own ID. The server does not take that for a dead
// peer: the client speaks within its keep-alive, from its new address.
TEST_F(KeepAliveTest, IcmpFromAReboundNatDoesNotCutALiveClient) {
  long long ms = resume_after_idle_rebind(2000, 6s, 400);
  ASSERT_GE(ms, 0) << "never found again";
  sender_->stop();
  EXPECT_FALSE(client_events_->is_closed());
  EXPECT_FALSE(server_events_->is_closed());
  RecordProperty("resumed_after_ms", int(ms));
}

TEST_F(KeepAliveTest, WithoutKeepAliveTheReceiveOnlyClientStaysLost) {
  EXPECT_EQ(resume_after_idle_rebind(0, 6s), -1);
  sender_->stop();
}

TEST_F(MigrationTest, DeadNewPathLeavesTheOldOneCarryingTraffic) {
  ASSERT_NO_FATAL_FAILURE(open());
  TestNat nat(server_->port());
  nat.blackhole("127.0.0.3");
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", nat.port()));
  Sender sender(client_h_, client_events_);
  expect_flowing(0);
  Outcomes out;
  client_->migrate(addr("127.0.0.3"), out.counter(), out.callback());
  // While the new path is being validated, and after it failed, the
  // transfer keeps going on the old one.
  ASSERT_TRUE(wait_for([&] { return client_h_->path().migrating; }));
  expect_flowing(server_events_->frames());
  ASSERT_TRUE(out.wait(1, 30s)) << "validation never ended";
  EXPECT_EQ(out.results[0].result, MigrationResult::kFailed)
      << migration_result_name(out.results[0].result);
  EXPECT_EQ(out.results[0].local.ip_string(), "127.0.0.1");
  expect_flowing(server_events_->frames());
  EXPECT_EQ(client_h_->path().local.ip_string(), "127.0.0.1");
  EXPECT_TRUE(wait_for([&] { return client_h_->path().failed_migrations == 1; }));
  // A working address afterwards still migrates.
  MigrationOutcome o = migrate_one("127.0.0.2");
  EXPECT_EQ(o.result, MigrationResult::kMigrated) << migration_result_name(o.result);
  expect_all_delivered(sender);
}

TEST_F(MigrationTest, AutomaticMigrationUsesThePreferredSource) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  // Already on the routing table's choice: nothing to do.
  EXPECT_EQ(migrate_one("").result, MigrationResult::kSamePath);
  EXPECT_EQ(migrate_one("127.0.0.2").result, MigrationResult::kMigrated);
  // Back to the preferred source, 127.0.0.1.
  MigrationOutcome o = migrate_one("");
  EXPECT_EQ(o.result, MigrationResult::kMigrated) << migration_result_name(o.result);
  EXPECT_EQ(o.local.ip_string(), "127.0.0.1");
}

TEST_F(MigrationTest, RefusalsAreImmediateAndNamed) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  EXPECT_EQ(migrate_one("192.0.2.1").result, MigrationResult::kNotLocal);
  EXPECT_EQ(migrate_one("127.0.0.1").result, MigrationResult::kSamePath);
  EXPECT_EQ(migrate_one("::1").result, MigrationResult::kNoRoute);  // v4 socket
  // The server end is not a client connection: nothing to migrate there.
  Outcomes out;
  server_->migrate(addr("127.0.0.2"), out.counter(), out.callback());
  ASSERT_TRUE(out.wait(0, kWait));
  EXPECT_EQ(*out.count, 0u);
  EXPECT_STREQ(migration_result_name(MigrationResult::kServerRole), "server_role");
}

TEST_F(MigrationTest, SocketBoundToOneAddressCannotMove) {
  ASSERT_NO_FATAL_FAILURE(open("0.0.0.0", "127.0.0.1"));
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  EXPECT_EQ(migrate_one("127.0.0.2").result, MigrationResult::kBoundSocket);
  EXPECT_EQ(migrate_one("127.0.0.1").result, MigrationResult::kSamePath);
}

TEST_F(MigrationTest, PathFiguresAreFilledIn) {
  ASSERT_NO_FATAL_FAILURE(open());
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  {
    Sender sender(client_h_, client_events_);
    expect_flowing(0);
    expect_all_delivered(sender);
  }
  ASSERT_TRUE(wait_for([&] { return client_h_->path().bytes_sent > 200 * kFrameSize; }));
  PathInfo p = client_h_->path();
  EXPECT_GT(p.bytes_received, 0u);
  EXPECT_GT(p.smoothed_rtt_ns, 0u);
  EXPECT_GT(p.min_rtt_ns, 0u);
  EXPECT_LE(p.min_rtt_ns, p.smoothed_rtt_ns * 4);
  EXPECT_GT(p.cwnd, 0u);
  EXPECT_EQ(p.migrations, 0u);
  EXPECT_FALSE(p.migrating);
  EXPECT_TRUE(wait_for([&] { return server_h_->path().bytes_received >= p.bytes_sent / 2; }));
}

TEST_F(MigrationTest, DualStackSocketMigratesAV4Peer) {
  ASSERT_NO_FATAL_FAILURE(open("::", "::"));
  ASSERT_NO_FATAL_FAILURE(connect("127.0.0.1", server_->port()));
  EXPECT_EQ(client_h_->path().local.storage.ss_family, AF_INET6);
  MigrationOutcome o = migrate_one("127.0.0.2");
  EXPECT_EQ(o.result, MigrationResult::kMigrated) << migration_result_name(o.result);
  EXPECT_EQ(o.local.ip_string(), "127.0.0.2");
  EXPECT_EQ(migrate_one("::1").result, MigrationResult::kNoRoute);
}

}  // namespace
}  // namespace macula
