// End-to-end tests of the QUIC core: a client and a server Endpoint in
// this process talking over 127.0.0.1.
#include "endpoint.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "framing.h"
#include "test_util.h"

namespace macula {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::eventually;
using test::TempDir;
using test::TestCa;

constexpr auto kWait = 5s;  // generous bound for things that should be fast

std::string str(const Bytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data.get()), b.size);
}

Bytes frames_of(const std::vector<std::string>& payloads) {
  std::vector<iovec> vecs;
  for (const std::string& p : payloads)
    vecs.push_back({const_cast<char*>(p.data()), p.size()});
  std::vector<std::span<const iovec>> frames;
  for (const iovec& v : vecs) frames.emplace_back(&v, 1);
  return encode_frames(frames);
}

SendStatus send(ConnectionHandle& h, Channel channel,
                const std::vector<std::string>& payloads) {
  return h.send(channel, frames_of(payloads), uint32_t(payloads.size()));
}

// Payload byte `i` of data frame number `frame` in the bulk transfer:
// differs between frames and within a frame, so loss, reordering and
// duplication all show.
uint8_t pattern(uint64_t frame, size_t i) {
  return uint8_t(frame * 131 + i * 7 + (i >> 10));
}

Bytes pattern_frame(uint64_t frame, size_t size) {
  std::vector<uint8_t> payload(size);
  for (size_t i = 0; i < size; ++i) payload[i] = pattern(frame, i);
  iovec v{payload.data(), payload.size()};
  std::span<const iovec> one(&v, 1);
  return encode_frames(std::span<const std::span<const iovec>>(&one, 1));
}

// What one connection reported so far.
struct Seen {
  int connected = 0;
  std::vector<std::string> control;
  std::vector<std::string> data;  // only when keep_data
  uint64_t data_frames = 0;
  uint64_t data_bytes = 0;
  uint64_t unreturned = 0;  // credit not given to consumed() yet
  uint64_t bad_frames = 0;  // failed the content check
  int writable = 0;
  std::optional<CloseInfo> closed;
  int after_closed = 0;  // events after closed(): a contract violation
};

// Records the events of one connection (called on the I/O thread) and lets
// the test wait for them with a timeout.
class Recorder : public ConnectionEvents {
 public:
  using Check = std::function<bool(uint64_t index, const Bytes& frame)>;

  void connected() override {
    update([](Seen& s) { ++s.connected; });
  }
  void control_frame(Bytes frame) override {
    update([&](Seen& s) { s.control.push_back(str(frame)); });
  }
  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override;
  void writable() override {
    update([](Seen& s) { ++s.writable; });
  }
  void closed(const CloseInfo& info) override {
    update([&](Seen& s) { s.closed = info; });
  }

  // The handle consumed() is called on; set right after dial/accept. Weak:
  // the core may hold this recorder from the handle (a pending attach).
  void set_handle(std::shared_ptr<ConnectionHandle> h) {
    std::lock_guard lock(mu_);
    handle_ = std::move(h);
  }
  // On: returns credit as frames arrive, and what was held until now.
  void set_auto_consume(bool on);
  void set_keep_data(bool on) {
    std::lock_guard lock(mu_);
    keep_data_ = on;
  }
  void set_check(Check check) {
    std::lock_guard lock(mu_);
    check_ = std::move(check);
  }

  // Waits until `pred(seen)` holds; false on timeout.
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(seen_); });
  }
  bool wait_closed(std::chrono::milliseconds timeout) {
    return wait([](const Seen& s) { return s.closed.has_value(); }, timeout);
  }
  // Runs `f(seen)` under the lock and returns its result.
  template <class F>
  auto read(F f) const {
    std::lock_guard lock(mu_);
    return f(seen_);
  }
  Seen seen() const {
    return read([](const Seen& s) { return s; });
  }

 private:
  template <class F>
  void update(F f) {
    {
      std::lock_guard lock(mu_);
      if (seen_.closed) ++seen_.after_closed;
      f(seen_);
    }
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  Seen seen_;
  std::weak_ptr<ConnectionHandle> handle_;
  bool auto_consume_ = true;
  bool keep_data_ = true;
  Check check_;
};

void Recorder::data_frames(std::vector<Bytes>& frames, uint64_t credit) {
  std::shared_ptr<ConnectionHandle> consume_to;
  update([&](Seen& s) {
    for (Bytes& f : frames) {
      if (check_ && !check_(s.data_frames, f)) ++s.bad_frames;
      if (keep_data_) s.data.push_back(str(f));
      ++s.data_frames;
      s.data_bytes += f.size;
    }
    if (auto_consume_) consume_to = handle_.lock();
    else s.unreturned += credit;
  });
  // Outside our lock: consumed() takes the handle's own lock.
  if (consume_to) consume_to->consumed(credit);
}

void Recorder::set_auto_consume(bool on) {
  std::shared_ptr<ConnectionHandle> h;
  uint64_t held = 0;
  {
    std::lock_guard lock(mu_);
    auto_consume_ = on;
    if (on) {
      held = std::exchange(seen_.unreturned, 0);
      h = handle_.lock();
    }
  }
  if (h && held) h->consumed(held);
}

// Holds the I/O thread inside its first data_frames() call until
// released, so a test can act while the thread is past its mailbox.
class GateRecorder : public Recorder {
 public:
  void data_frames(std::vector<Bytes>& frames, uint64_t credit) override {
    if (!blocked_.exchange(true)) {
      entered_.set_value();
      release_future_.wait();
    }
    Recorder::data_frames(frames, credit);
  }
  bool wait_entered(std::chrono::milliseconds timeout) {
    return entered_future_.wait_for(timeout) == std::future_status::ready;
  }
  void release() { release_.set_value(); }

 private:
  std::atomic<bool> blocked_{false};
  std::promise<void> entered_, release_;
  std::future<void> entered_future_ = entered_.get_future();
  std::shared_future<void> release_future_ = release_.get_future().share();
};

// Collects accepted connections.
class Acceptor : public EndpointEvents {
 public:
  void accepted(std::shared_ptr<ConnectionHandle> handle) override {
    {
      std::lock_guard lock(mu_);
      handles_.push_back(std::move(handle));
    }
    cv_.notify_all();
  }
  // The next accepted connection not taken yet, or null on timeout.
  std::shared_ptr<ConnectionHandle> next(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return taken_ < handles_.size(); }))
      return nullptr;
    return handles_[taken_++];
  }
  size_t count() const {
    std::lock_guard lock(mu_);
    return handles_.size();
  }
  void handshake_failed(const Address& remote, const CloseInfo& why) override {
    std::lock_guard lock(mu_);
    failures_.emplace_back(remote, why);
  }
  std::vector<std::pair<Address, CloseInfo>> failures() const {
    std::lock_guard lock(mu_);
    return failures_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::shared_ptr<ConnectionHandle>> handles_;
  std::vector<std::pair<Address, CloseInfo>> failures_;
  size_t taken_ = 0;
};

// One connection seen from both ends.
struct Link {
  std::shared_ptr<ConnectionHandle> client, server;
  std::shared_ptr<Recorder> client_events, server_events;
};

bool is_closed(const Seen& s) { return s.closed.has_value(); }

class EndpointTest : public ::testing::Test {
 protected:
  // Cookie mode, loopback only, an identity per name under the temp dir.
  EndpointConfig config(const std::string& name) {
    EndpointConfig c;
    c.bind_ip = "127.0.0.1";
    c.port = 0;
    c.tls.cert_dir = tmp_.file(name);
    return c;
  }

  void open_server(const EndpointConfig& c) {
    std::string error;
    server_ = Endpoint::open(c, acceptor_, error);
    ASSERT_NE(server_, nullptr) << error;
    ASSERT_NE(server_->port(), 0);
  }
  void open_client(const EndpointConfig& c) {
    std::string error;
    client_ = Endpoint::open(c, nullptr, error);
    ASSERT_NE(client_, nullptr) << error;
  }
  void open_both() {
    ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
    ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  }

  // Starts a connection from the client endpoint to `port`.
  void dial(uint16_t port, const std::string& host, Link& link,
            std::shared_ptr<Recorder> events = std::make_shared<Recorder>()) {
    Address remote;
    ASSERT_TRUE(make_address("127.0.0.1", port, remote));
    uint64_t factory_id = 0;
    link.client = client_->dial(remote, host, [&](uint64_t id) {
      factory_id = id;
      return events;
    });
    ASSERT_NE(link.client, nullptr);
    EXPECT_EQ(factory_id, link.client->id());
    events->set_handle(link.client);
    link.client_events = events;
  }

  // Dials the server, waits for both ends and (if `attach`) attaches a
  // recorder to the accepted handle.
  void connect(Link& link, bool attach = true, const std::string& host = "127.0.0.1",
               std::shared_ptr<Recorder> client_events = std::make_shared<Recorder>()) {
    ASSERT_NO_FATAL_FAILURE(dial(server_->port(), host, link, client_events));
    ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait))
        << "client never connected";
    link.server = acceptor_->next(kWait);
    ASSERT_NE(link.server, nullptr) << "server never accepted";
    link.server_events = std::make_shared<Recorder>();
    link.server_events->set_handle(link.server);
    if (attach) link.server->attach(link.server_events);
  }

  // A control frame from the client reached the server's recorder, so the
  // attach was applied and frames counted so far are settled.
  void sync(Link& link, const std::string& payload = "sync") {
    size_t before = link.server_events->read([](const Seen& s) { return s.control.size(); });
    ASSERT_EQ(send(*link.client, Channel::kControl, {payload}), SendStatus::kOk);
    ASSERT_TRUE(link.server_events->wait(
        [&](const Seen& s) { return s.control.size() > before; }, kWait));
  }

  TempDir tmp_;
  std::shared_ptr<Acceptor> acceptor_ = std::make_shared<Acceptor>();
  std::unique_ptr<Endpoint> server_, client_;
};

TEST_F(EndpointTest, ConnectsAndAccepts) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  EXPECT_EQ(link.client->role(), Role::kClient);
  EXPECT_EQ(link.server->role(), Role::kServer);
  EXPECT_EQ(link.client->remote().port(), server_->port());
  EXPECT_EQ(link.server->remote().port(), client_->port());
  EXPECT_EQ(server_->stats().accepted, 1u);
  EXPECT_EQ(server_->stats().connections, 1u);
  EXPECT_EQ(client_->stats().connections, 1u);
  EXPECT_EQ(client_->stats().accepted, 0u);
  EXPECT_EQ(link.client_events->seen().connected, 1);
  // Mutual authentication: each end holds the other's certificate.
  EXPECT_FALSE(link.client->peer_certificate().empty());
  EXPECT_FALSE(link.server->peer_certificate().empty());
}

TEST_F(EndpointTest, ExporterIs32BytesAndEqualOnBothEnds) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link a, b;
  ASSERT_NO_FATAL_FAILURE(connect(a));
  ASSERT_NO_FATAL_FAILURE(connect(b));
  std::vector<uint8_t> ea = a.client->exporter();
  EXPECT_EQ(ea.size(), kExporterSize);
  EXPECT_EQ(ea, a.server->exporter());
  EXPECT_EQ(b.client->exporter(), b.server->exporter());
  // Unique per session: that is what makes cookie proofs unforwardable.
  EXPECT_NE(ea, b.client->exporter());
  EXPECT_NE(ea, std::vector<uint8_t>(kExporterSize, 0));
}

TEST_F(EndpointTest, ControlFramesFlowBothWays) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_EQ(send(*link.client, Channel::kControl, {"hello"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait(
      [](const Seen& s) { return s.control.size() >= 1; }, kWait));
  ASSERT_EQ(send(*link.server, Channel::kControl, {"world", "again"}), SendStatus::kOk);
  ASSERT_TRUE(link.client_events->wait(
      [](const Seen& s) { return s.control.size() >= 2; }, kWait));
  EXPECT_EQ(link.server_events->seen().control, std::vector<std::string>{"hello"});
  EXPECT_EQ(link.client_events->seen().control,
            (std::vector<std::string>{"world", "again"}));
}

// Nothing in the contract says the dialling side must speak first; a
// server that greets first (or ticks first) must reach the client.
TEST_F(EndpointTest, ServerCanSendControlBeforeTheClientDoes) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_EQ(send(*link.server, Channel::kControl, {"server first"}), SendStatus::kOk);
  EXPECT_TRUE(link.client_events->wait(
      [](const Seen& s) { return !s.control.empty(); }, 2s))
      << "server control frame not delivered while the client stayed silent";
}

TEST_F(EndpointTest, DataFramesArriveInOrderBothWays) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_NO_FATAL_FAILURE(sync(link));
  uint64_t out0 = link.client->stats().frames_out, in0 = link.server->stats().frames_in;
  std::mt19937 rng(42);
  std::vector<std::string> up, down;
  for (int i = 0; i < 300; ++i) {
    up.push_back(std::to_string(i) + "u" + std::string(1 + rng() % 20000, char('a' + i % 26)));
    down.push_back(std::to_string(i) + "d" + std::string(1 + rng() % 3000, char('A' + i % 26)));
  }
  // Varying numbers of frames per send() call.
  for (size_t i = 0; i < up.size();) {
    size_t n = std::min<size_t>(1 + rng() % 7, up.size() - i);
    std::vector<std::string> u(up.begin() + i, up.begin() + i + n);
    std::vector<std::string> d(down.begin() + i, down.begin() + i + n);
    ASSERT_NE(send(*link.client, Channel::kData, u), SendStatus::kClosed);
    ASSERT_NE(send(*link.server, Channel::kData, d), SendStatus::kClosed);
    i += n;
  }
  ASSERT_TRUE(link.server_events->wait(
      [&](const Seen& s) { return s.data.size() >= up.size() || s.closed; }, 10s));
  ASSERT_TRUE(link.client_events->wait(
      [&](const Seen& s) { return s.data.size() >= down.size() || s.closed; }, 10s));
  EXPECT_EQ(link.server_events->seen().data, up);
  EXPECT_EQ(link.client_events->seen().data, down);
  EXPECT_EQ(link.client->stats().frames_out - out0, up.size());
  EXPECT_EQ(link.server->stats().frames_in - in0, up.size());
}

// With reads handed to the caller, only read_now() reads the socket: on
// the caller's thread, whenever the fd is readable (here a poll() loop;
// the Erlang schedulers in the node). Handed back, the I/O thread reads.
TEST_F(EndpointTest, CallerReadsTheSocketWhileHandedOver) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_NO_FATAL_FAILURE(sync(link));
  auto got = [&](const std::string& what) {
    return [what](const Seen& s) {
      return std::find(s.data.begin(), s.data.end(), what) != s.data.end();
    };
  };
  server_->set_caller_reads(true);
  ASSERT_NE(send(*link.client, Channel::kData, {"unread"}), SendStatus::kClosed);
  EXPECT_FALSE(link.server_events->wait(got("unread"), 300ms));

  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    pollfd p{server_->socket_fd(), POLLIN, 0};
    while (!stop.load()) {
      if (poll(&p, 1, 20) > 0 && server_->read_now() != Endpoint::ReadResult::kBusy) ++reads;
    }
  });
  EXPECT_TRUE(link.server_events->wait(got("unread"), kWait));
  std::vector<std::string> up, down;
  for (int i = 0; i < 200; ++i) {
    up.push_back(std::to_string(i) + std::string(size_t(i) * 97, 'u'));
    down.push_back(std::to_string(i) + std::string(size_t(i) * 13, 'd'));
    ASSERT_NE(send(*link.client, Channel::kData, {up.back()}), SendStatus::kClosed);
    ASSERT_NE(send(*link.server, Channel::kData, {down.back()}), SendStatus::kClosed);
  }
  ASSERT_TRUE(link.server_events->wait([&](const Seen& s) { return s.data.size() >= 201; }, 10s));
  ASSERT_TRUE(link.client_events->wait([&](const Seen& s) { return s.data.size() >= 200; }, 10s));
  std::vector<std::string> seen = link.server_events->seen().data;
  EXPECT_EQ(std::vector<std::string>(seen.end() - 200, seen.end()), up);
  EXPECT_EQ(link.client_events->seen().data, down);
  stop.store(true);
  reader.join();
  EXPECT_GT(reads.load(), 0);

  server_->set_caller_reads(false);
  ASSERT_NE(send(*link.client, Channel::kData, {"thread"}), SendStatus::kClosed);
  EXPECT_TRUE(link.server_events->wait(got("thread"), kWait));
}

// The zero-copy path: frames point into memory the caller keeps alive
// through the chunk's owner, which the core drops once the peer acked.
TEST_F(EndpointTest, ZeroCopyChunkArrivesAndIsReleasedAfterAck) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  auto payloads = std::make_shared<std::vector<std::string>>(
      std::vector<std::string>{"zero", std::string(300000, 'c'), "copy"});
  std::weak_ptr<void> pinned = payloads;
  std::vector<iovec> vecs;
  for (std::string& p : *payloads) vecs.push_back({p.data(), p.size()});
  std::vector<std::span<const iovec>> frames;
  for (const iovec& v : vecs) frames.emplace_back(&v, 1);
  std::vector<std::string> expected = *payloads;
  OutChunk chunk = frame_chunk(frames, std::move(payloads));
  ASSERT_NE(link.client->send(Channel::kData, std::move(chunk), 3), SendStatus::kClosed);
  ASSERT_TRUE(link.server_events->wait(
      [](const Seen& s) { return s.data.size() >= 3 || s.closed; }, kWait));
  EXPECT_EQ(link.server_events->seen().data, expected);
  EXPECT_TRUE(eventually([&] { return pinned.expired(); }, kWait))
      << "payload still pinned after the peer received it";
  EXPECT_TRUE(eventually([&] { return link.client->stats().queued_bytes == 0; }, kWait));
}

TEST_F(EndpointTest, TicksAreCountedButNotDelivered) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_NO_FATAL_FAILURE(sync(link, "start"));
  uint64_t out0 = link.client->stats().frames_out, in0 = link.server->stats().frames_in;
  ASSERT_EQ(send(*link.client, Channel::kControl, {"", "", "x", ""}), SendStatus::kOk);
  ASSERT_EQ(send(*link.client, Channel::kControl, {""}), SendStatus::kOk);
  ASSERT_EQ(send(*link.client, Channel::kControl, {"y"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait(
      [](const Seen& s) { return s.control.size() >= 3; }, kWait));
  EXPECT_EQ(link.server_events->seen().control,
            (std::vector<std::string>{"start", "x", "y"}));
  EXPECT_EQ(link.client->stats().frames_out - out0, 6u);
  EXPECT_EQ(link.server->stats().frames_in - in0, 6u);
}

TEST_F(EndpointTest, FramesArrivingBeforeAttachAreDeliveredOnAttach) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link, /*attach=*/false));
  ASSERT_EQ(send(*link.client, Channel::kControl, {"early"}), SendStatus::kOk);
  ASSERT_EQ(send(*link.client, Channel::kData, {"d1", "d2"}), SendStatus::kOk);
  // Let the frames reach the server while nobody is attached.
  ASSERT_TRUE(eventually([&] { return link.server->stats().frames_in >= 3; }, kWait));
  link.server->attach(link.server_events);
  ASSERT_TRUE(link.server_events->wait(
      [](const Seen& s) { return s.control.size() >= 1 && s.data.size() >= 2; }, kWait));
  EXPECT_EQ(link.server_events->seen().control, std::vector<std::string>{"early"});
  EXPECT_EQ(link.server_events->seen().data, (std::vector<std::string>{"d1", "d2"}));
}

// connection_handle.h: "accepted connections start without one; what
// arrived meanwhile is delivered on attach" -- a close included, however
// long the attach took.
TEST_F(EndpointTest, AttachAfterThePeerClosedStillReportsClosed) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link, /*attach=*/false));
  ASSERT_EQ(send(*link.client, Channel::kControl, {"hello"}), SendStatus::kOk);
  ASSERT_EQ(send(*link.client, Channel::kData, {"last words"}), SendStatus::kOk);
  ASSERT_TRUE(eventually([&] { return link.server->stats().frames_in >= 2; }, kWait));
  link.client->close(5, "gone early");
  ASSERT_TRUE(link.client_events->wait_closed(kWait));
  // The server side has long finished draining by now.
  std::this_thread::sleep_for(500ms);
  link.server->attach(link.server_events);
  ASSERT_TRUE(link.server_events->wait_closed(2s))
      << "closed() never delivered to a late attach";
  std::this_thread::sleep_for(100ms);  // anything (wrongly) after closed()
  Seen seen = link.server_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(seen.closed->code, 5u);
  EXPECT_EQ(seen.control, std::vector<std::string>{"hello"});
  EXPECT_EQ(seen.data, std::vector<std::string>{"last words"});
  EXPECT_EQ(seen.after_closed, 0) << "events delivered after closed()";
}

// The receiver holds 64 MB back until it returns credit: the transfer must
// stall without consumed() and complete, intact, once credit flows.
TEST_F(EndpointTest, BulkTransferCompletesOnlyWithConsumedCredit) {
  constexpr int kFrames = 64;
  constexpr size_t kFrameSize = 1 << 20;
  constexpr uint64_t kWindow = 4 << 20, kLimit = 8 << 20;
  EndpointConfig sc = config("server");
  sc.stream_window = kWindow;
  sc.recv_unconsumed_limit = kLimit;
  ASSERT_NO_FATAL_FAILURE(open_server(sc));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  Recorder& rx = *link.server_events;
  rx.set_auto_consume(false);
  rx.set_keep_data(false);
  rx.set_check([](uint64_t index, const Bytes& f) {
    if (f.size != kFrameSize) return false;
    for (size_t i = 0; i < f.size; ++i)
      if (f.data[i] != pattern(index, i)) return false;
    return true;
  });

  // The sender honours kBusy/writable() as a real user must.
  std::atomic<bool> refused{false}, stuck{false};
  std::thread sender([&] {
    for (int i = 0; i < kFrames; ++i) {
      int before = link.client_events->read([](const Seen& s) { return s.writable; });
      SendStatus st = link.client->send(Channel::kData, pattern_frame(i, kFrameSize), 1);
      if (st == SendStatus::kClosed) return refused.store(true);
      if (st == SendStatus::kBusy &&
          !link.client_events->wait(
              [&](const Seen& s) { return s.writable > before || s.closed; }, 30s))
        return stuck.store(true);
    }
  });

  // Phase 1: no credit returned. Wait until arrivals stop.
  uint64_t last = 0;
  int stable = 0;
  for (auto until = Clock::now() + 10s; stable < 4 && Clock::now() < until;) {
    std::this_thread::sleep_for(250ms);
    uint64_t now = rx.read([](const Seen& s) { return s.data_bytes; });
    stable = now == last && now > 0 ? stable + 1 : 0;
    last = now;
  }
  EXPECT_EQ(stable, 4) << "arrivals never stopped";
  EXPECT_LT(last, uint64_t(kFrames) * kFrameSize);
  // Bounded by the unconsumed limit plus (auto-tuned) windows in flight.
  EXPECT_LE(last, kLimit + 2 * kWindow + 2 * kFrameSize);
  EXPECT_GT(rx.read([](const Seen& s) { return s.unreturned; }), 0u);

  // Phase 2: return the credit; everything must arrive.
  rx.set_auto_consume(true);
  bool done = rx.wait(
      [&](const Seen& s) { return s.data_frames >= kFrames || s.closed; }, 20s);
  sender.join();
  ASSERT_TRUE(done);
  Seen seen = rx.seen();
  EXPECT_EQ(seen.data_frames, uint64_t(kFrames));
  EXPECT_EQ(seen.data_bytes, uint64_t(kFrames) * kFrameSize);
  EXPECT_EQ(seen.bad_frames, 0u);
  EXPECT_FALSE(seen.closed.has_value());
  EXPECT_FALSE(refused.load());
  EXPECT_FALSE(stuck.load());
  // Everything sent is eventually acknowledged and released.
  EXPECT_TRUE(eventually([&] { return link.client->stats().queued_bytes == 0; }, kWait));
}

// Frames of several flows, each routed as its flow (and priority), sent
// in one send: everything is queued before the first packet is written.
struct FlowBatch {
  std::vector<std::string> payloads;
  std::vector<OrderKey> routes;

  void add(uint64_t flow, std::string p, bool priority = false) {
    OrderKey r;
    r.kind = OrderKey::Kind::kFlow;
    r.key = flow;
    r.priority = priority;
    r.size = kFrameHeaderSize + p.size();
    routes.push_back(r);
    payloads.push_back(std::move(p));
  }
  SendStatus send(ConnectionHandle& h) {
    return h.send(Channel::kData, OutChunk::from_bytes(frames_of(payloads)),
                  uint32_t(payloads.size()), std::move(routes));
  }
};

// Frames of `process` (routed as its), one per payload.
SendStatus send_as(ConnectionHandle& h, uint64_t process,
                   const std::vector<std::string>& payloads) {
  FlowBatch b;
  for (const std::string& p : payloads) b.add(process, p);
  return b.send(h);
}

// Process 1 sends more than its stream's window while the receiver holds
// the credit: process 2's small frame still arrives, on another stream.
// With one data stream it waits behind process 1 (checked too, so the
// test shows the difference rather than assuming it).
TEST_F(EndpointTest, ABlockedStreamDoesNotHoldBackAnotherProcess) {
  EndpointConfig sc = config("server"), cc = config("client");
  sc.stream_window = 1 << 20;
  sc.recv_unconsumed_limit = 1 << 20;  // then windows reopen only on consumed()
  for (size_t streams : {8, 1}) {
    SCOPED_TRACE(streams);
    cc.data_streams = streams;
    ASSERT_NO_FATAL_FAILURE(open_server(sc));
    ASSERT_NO_FATAL_FAILURE(open_client(cc));
    Link link;
    ASSERT_NO_FATAL_FAILURE(connect(link));
    Recorder& rx = *link.server_events;
    rx.set_auto_consume(false);
    // Far more than the window plus the unconsumed limit.
    std::vector<std::string> bulk(8, std::string(1 << 20, 'x'));
    for (size_t i = 0; i < bulk.size(); ++i) bulk[i][0] = char('0' + i);
    ASSERT_NE(send_as(*link.client, 1, bulk), SendStatus::kClosed);
    ASSERT_TRUE(rx.wait([](const Seen& s) { return s.data_frames >= 1; }, kWait));
    ASSERT_NE(send_as(*link.client, 2, {"small"}), SendStatus::kClosed);
    bool through = rx.wait([](const Seen& s) {
      return std::find(s.data.begin(), s.data.end(), "small") != s.data.end();
    }, streams > 1 ? kWait : 1000ms);
    EXPECT_EQ(through, streams > 1);
    rx.set_auto_consume(true);
    ASSERT_TRUE(rx.wait([](const Seen& s) { return s.data_frames == 9; }, kWait));
    std::vector<std::string> mine;
    for (const std::string& d : rx.seen().data) if (d != "small") mine.push_back(d);
    EXPECT_TRUE(mine == bulk) << "process 1's frames out of order or damaged";
    client_.reset();
    server_.reset();
  }
}

// Eight processes have 4 MB each queued, on every ordinary stream; then a
// process that asks for priority and an ordinary one send a small frame
// each. The priority frame arrives before any bulk frame is complete, the
// ordinary one behind the bulk of its stream. Without the priority stream
// (checked too) the "priority" frame waits like the ordinary one.
TEST_F(EndpointTest, APriorityFrameOvertakesBulkOnEveryOrdinaryStream) {
  for (bool priority : {true, false}) {
    SCOPED_TRACE(priority);
    EndpointConfig cc = config("client");
    cc.priority_stream = priority;
    ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
    ASSERT_NO_FATAL_FAILURE(open_client(cc));
    Link link;
    ASSERT_NO_FATAL_FAILURE(connect(link));
    FlowBatch batch;
    for (int i = 0; i < 4; ++i)
      for (uint64_t flow = 1; flow <= 8; ++flow) batch.add(flow, std::string(1 << 20, 'b'));
    batch.add(100, "priority", true);
    batch.add(101, "ordinary");
    ASSERT_NE(batch.send(*link.client), SendStatus::kClosed);
    Recorder& rx = *link.server_events;
    ASSERT_TRUE(rx.wait([](const Seen& s) { return s.data_frames == 34; }, kWait));
    std::vector<std::string> got = rx.seen().data;
    auto at = [&](const std::string& p) {
      return size_t(std::find(got.begin(), got.end(), p) - got.begin());
    };
    EXPECT_EQ(at("priority") == 0, priority) << "priority frame at " << at("priority");
    EXPECT_GE(at("ordinary"), 4u) << "the ordinary frame waits behind its stream's bulk";
    client_.reset();
    server_.reset();
  }
}

// A flow asks for priority once, then streams 8 MB as an ordinary flow:
// with its first frame unacknowledged it stays on the priority stream, but
// that bulk does not get the strict first place there. Seven ordinary
// flows' 1 MB frames finish before the former priority flow's last frame
// (served strictly first, they would get 1 packet in 33 and finish after).
TEST_F(EndpointTest, BulkOfAFormerPriorityFlowTakesTurnsWithTheOthers) {
  EndpointConfig cc = config("client");
  cc.priority_stream = true;
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  FlowBatch batch;
  batch.add(1, "once", true);
  for (int i = 0; i < 8; ++i) batch.add(1, std::string(1 << 20, 'd'));
  for (uint64_t flow = 2; flow <= 8; ++flow) batch.add(flow, std::string(1 << 20, 'o'));
  ASSERT_NE(batch.send(*link.client), SendStatus::kClosed);
  Recorder& rx = *link.server_events;
  ASSERT_TRUE(rx.wait([](const Seen& s) { return s.data_frames == 16; }, kWait));
  std::vector<std::string> got = rx.seen().data;
  size_t first_ordinary = got.size(), last_demoted = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].size() == (1u << 20) && got[i][0] == 'o') first_ordinary = std::min(first_ordinary, i);
    if (got[i].size() == (1u << 20) && got[i][0] == 'd') last_demoted = i;
  }
  EXPECT_LT(first_ordinary, last_demoted)
      << "the former priority flow's bulk was served strictly first";
}

TEST_F(EndpointTest, SendIsBusyAboveHighWaterAndWritableFollows) {
  EndpointConfig cc = config("client");
  cc.send_high_water = 64 << 10;
  cc.send_low_water = 16 << 10;
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_EQ(send(*link.client, Channel::kControl, {"small"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return !s.control.empty(); }, kWait));
  EXPECT_EQ(link.client_events->seen().writable, 0) << "writable() without kBusy";

  // kOk is right too if the whole message was written and acknowledged
  // before send() looked at the queue again (a sender thread preempted on
  // a loaded machine): then nothing is owed. Up to 3 tries for a kBusy.
  std::string big(4 << 20, 'b');
  SendStatus st = SendStatus::kOk;
  size_t sent = 0;
  for (int i = 0; i < 3 && st == SendStatus::kOk; ++i, ++sent)
    st = send(*link.client, Channel::kData, {big});
  ASSERT_EQ(st, SendStatus::kBusy);
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.writable > 0; }, kWait))
      << "writable() never fired after kBusy";
  EXPECT_LE(link.client->stats().queued_bytes, cc.send_low_water);
  ASSERT_TRUE(link.server_events->wait([&](const Seen& s) { return s.data.size() == sent; },
                                       kWait));
  EXPECT_EQ(link.server_events->seen().data, std::vector<std::string>(sent, big));
  EXPECT_EQ(send(*link.client, Channel::kControl, {"after"}), SendStatus::kOk);
}

// A peer breaking the framing rules loses the connection; both ends are
// told it was a protocol error.
void expect_protocol_close(Link& link) {
  ASSERT_TRUE(link.server_events->wait_closed(kWait)) << "violation not punished";
  ASSERT_TRUE(link.client_events->wait_closed(1s)) << "violator not told";
  EXPECT_EQ(link.server_events->seen().closed->kind, CloseInfo::Kind::kProtocol)
      << close_kind_name(link.server_events->seen().closed->kind);
  EXPECT_EQ(link.client_events->seen().closed->kind, CloseInfo::Kind::kProtocol)
      << close_kind_name(link.client_events->seen().closed->kind);
}

TEST_F(EndpointTest, ControlFrameAboveMaxIsAProtocolError) {
  EndpointConfig sc = config("server");
  sc.max_control_frame = 1024;
  ASSERT_NO_FATAL_FAILURE(open_server(sc));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_EQ(send(*link.client, Channel::kControl, {std::string(1024, 'k')}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return !s.control.empty(); }, kWait));
  ASSERT_EQ(send(*link.client, Channel::kControl, {std::string(1025, 'k')}), SendStatus::kOk);
  expect_protocol_close(link);
  EXPECT_EQ(link.server_events->seen().control.size(), 1u);
}

TEST_F(EndpointTest, DataFrameAboveMaxIsAProtocolError) {
  EndpointConfig sc = config("server");
  sc.max_data_frame = 4096;
  ASSERT_NO_FATAL_FAILURE(open_server(sc));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_EQ(send(*link.client, Channel::kData, {std::string(4096, 'd')}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return !s.data.empty(); }, kWait));
  ASSERT_EQ(send(*link.client, Channel::kData, {std::string(5000, 'd')}), SendStatus::kOk);
  expect_protocol_close(link);
  EXPECT_EQ(link.server_events->seen().data.size(), 1u);
}

// The protocol needs a handful of control frames (proof, handshake) and
// then only ticks: a flood of them is an attack on memory.
TEST_F(EndpointTest, ControlFrameFloodIsAProtocolError) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  std::vector<std::string> flood(1000, "spam");
  ASSERT_NE(send(*link.client, Channel::kControl, flood), SendStatus::kClosed);
  expect_protocol_close(link);
  EXPECT_LT(link.server_events->seen().control.size(), flood.size());
}

TEST_F(EndpointTest, TicksAreNeverAFlood) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(send(*link.client, Channel::kControl, std::vector<std::string>(100, "")),
              SendStatus::kOk);
  ASSERT_EQ(send(*link.client, Channel::kControl, {"after 2000 ticks"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait(
      [](const Seen& s) { return !s.control.empty() || s.closed; }, kWait));
  EXPECT_EQ(link.server_events->seen().control, std::vector<std::string>{"after 2000 ticks"});
  EXPECT_FALSE(link.server_events->read(is_closed));
}

TEST_F(EndpointTest, ClientCloseCodeReachesServerPromptly) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  auto start = Clock::now();
  link.client->close(42, "bye");
  ASSERT_TRUE(link.server_events->wait_closed(1s)) << "peer did not learn of the close";
  EXPECT_LT(Clock::now() - start, 1s);
  CloseInfo peer = *link.server_events->seen().closed;
  EXPECT_EQ(peer.kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(peer.code, 42u);
  EXPECT_EQ(peer.text, "bye");
  ASSERT_TRUE(link.client_events->wait_closed(kWait));
  CloseInfo local = *link.client_events->seen().closed;
  EXPECT_EQ(local.kind, CloseInfo::Kind::kLocal);
  EXPECT_EQ(local.code, 42u);
  EXPECT_EQ(send(*link.client, Channel::kData, {"late"}), SendStatus::kClosed);
  EXPECT_EQ(send(*link.server, Channel::kData, {"late"}), SendStatus::kClosed);
  // Both endpoints forget the connection once it has drained.
  EXPECT_TRUE(eventually([&] { return client_->stats().connections == 0; }, kWait));
  EXPECT_TRUE(eventually([&] { return server_->stats().connections == 0; }, kWait));
  EXPECT_EQ(link.client_events->seen().after_closed, 0);
  EXPECT_EQ(link.server_events->seen().after_closed, 0);
}

TEST_F(EndpointTest, ServerCloseCodeReachesClientPromptly) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  auto start = Clock::now();
  link.server->close(7, "server says no");
  ASSERT_TRUE(link.client_events->wait_closed(1s));
  EXPECT_LT(Clock::now() - start, 1s);
  CloseInfo peer = *link.client_events->seen().closed;
  EXPECT_EQ(peer.kind, CloseInfo::Kind::kPeer);
  EXPECT_EQ(peer.code, 7u);
  ASSERT_TRUE(link.server_events->wait_closed(kWait));
  EXPECT_EQ(link.server_events->seen().closed->kind, CloseInfo::Kind::kLocal);
}

TEST_F(EndpointTest, CloseDuringHandshakeReportsLocalClose) {
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  // A bound socket that never answers: the handshake cannot finish.
  int silent = socket(AF_INET, SOCK_DGRAM, 0);
  Address addr;
  ASSERT_TRUE(make_address("127.0.0.1", 0, addr));
  ASSERT_EQ(bind(silent, addr.sa(), addr.len), 0);
  addr.len = sizeof addr.storage;
  getsockname(silent, addr.sa(), &addr.len);
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(addr.port(), "127.0.0.1", link));
  link.client->close(9, "changed my mind");
  ASSERT_TRUE(link.client_events->wait_closed(1s));
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kLocal);
  EXPECT_EQ(seen.closed->code, 9u);
  EXPECT_EQ(seen.connected, 0);
  close(silent);
}

TEST_F(EndpointTest, DestroyingServerEndpointClosesItsConnections) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_NO_FATAL_FAILURE(sync(link));  // the attach has been applied
  auto start = Clock::now();
  server_.reset();
  ASSERT_TRUE(link.server_events->read(is_closed)) << "destructor returned before closed()";
  EXPECT_EQ(link.server_events->seen().closed->kind, CloseInfo::Kind::kEndpointStopped);
  EXPECT_EQ(send(*link.server, Channel::kControl, {"x"}), SendStatus::kClosed);
  link.server->close(1, "after the endpoint");  // must be harmless
  ASSERT_TRUE(link.client_events->wait_closed(1s)) << "peer was not told";
  EXPECT_LT(Clock::now() - start, 1s);
  // Told explicitly, not left to time out.
  EXPECT_EQ(link.client_events->seen().closed->kind, CloseInfo::Kind::kPeer);
}

TEST_F(EndpointTest, DestroyingClientEndpointClosesItsConnections) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  auto start = Clock::now();
  client_.reset();
  ASSERT_TRUE(link.client_events->read(is_closed));
  EXPECT_EQ(link.client_events->seen().closed->kind, CloseInfo::Kind::kEndpointStopped);
  ASSERT_TRUE(link.server_events->wait_closed(1s)) << "peer was not told";
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_EQ(link.server_events->seen().closed->kind, CloseInfo::Kind::kPeer);
}

// An attach() that happened before the endpoint was destroyed must still
// get its closed(): otherwise the user waits forever for a dead
// connection. The gate holds the I/O thread in flush_dirty(), after it
// drained its mailbox, while the attach and the destruction happen.
// What the NIF's atexit handler does when the VM exits: the peer hears
// CONNECTION_CLOSE at once; this side reports nothing (the process is
// going away) and the call returns within its bound.
TEST_F(EndpointTest, CloseForExitTellsThePeerAtOnce) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  auto start = Clock::now();
  client_->close_for_exit(200);
  EXPECT_LT(Clock::now() - start, 300ms);
  ASSERT_TRUE(link.server_events->wait_closed(1s)) << "the peer was not told";
  EXPECT_LT(Clock::now() - start, 500ms);
  Seen seen = link.server_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kPeer) << seen.closed->text;
  EXPECT_EQ(seen.closed->text, "node exiting");
  EXPECT_FALSE(link.client_events->seen().closed.has_value());
  // An endpoint that stopped returns at once.
  client_.reset();
}

TEST_F(EndpointTest, AttachRightBeforeTheEndpointStopsStillGetsClosed) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link held, late;
  ASSERT_NO_FATAL_FAILURE(connect(held, /*attach=*/false));
  ASSERT_NO_FATAL_FAILURE(connect(late, /*attach=*/false));
  // Data waiting for `held` is delivered from flush_dirty() once it is
  // attached.
  ASSERT_EQ(send(*held.client, Channel::kData, {"wake"}), SendStatus::kOk);
  ASSERT_TRUE(eventually([&] { return held.server->stats().frames_in >= 1; }, kWait));
  auto gate = std::make_shared<GateRecorder>();
  held.server->attach(gate);
  ASSERT_TRUE(gate->wait_entered(kWait));

  late.server->attach(late.server_events);
  std::thread stopper([&] { server_.reset(); });
  std::this_thread::sleep_for(100ms);  // the destructor is waiting in join()
  gate->release();
  stopper.join();

  EXPECT_TRUE(gate->read(is_closed));
  EXPECT_TRUE(late.server_events->read(is_closed))
      << "attached before the endpoint stopped, never told it closed";
}

// A UDP socket on 127.0.0.1 with a kernel-chosen port: kept open (a peer
// that never answers) or closed again (nothing listens there).
uint16_t udp_port(bool keep_open, int* fd_out = nullptr) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  Address addr;
  make_address("127.0.0.1", 0, addr);
  bind(fd, addr.sa(), addr.len);
  addr.len = sizeof addr.storage;
  getsockname(fd, addr.sa(), &addr.len);
  if (keep_open && fd_out) *fd_out = fd;
  else close(fd);
  return addr.port();
}

// A client speaking another application protocol is refused during the
// TLS handshake (alert 120, no_application_protocol) and never accepted.
TEST_F(EndpointTest, ClientWithAnotherAlpnIsRefused) {
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  EndpointConfig cc = config("client");
  cc.tls.alpn = "h3";
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(server_->port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait_closed(3s));
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.connected, 0);
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kTlsAlert)
      << close_kind_name(seen.closed->kind) << ": " << seen.closed->text;
  EXPECT_EQ(seen.closed->code, 120u);
  EXPECT_EQ(server_->stats().accepted, 0u);
  // The server reports the failed handshake, once, with the peer's
  // address and the alert it sent, when the connection is reaped.
  ASSERT_TRUE(eventually([&] { return server_->stats().failed_handshakes == 1; }, kWait));
  auto failures = acceptor_->failures();
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_EQ(failures[0].first.port(), client_->port());
  EXPECT_EQ(failures[0].second.kind, CloseInfo::Kind::kTlsAlert);
  EXPECT_EQ(failures[0].second.code, 120u);
  EXPECT_EQ(failures[0].second.text, "No supported application protocol could be negotiated")
      << failures[0].second.text;
}

// A connection that completed its handshake is not a failed handshake
// when it closes later.
TEST_F(EndpointTest, ClosingAnOpenConnectionIsNoFailedHandshake) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  link.client->close(0, "bye");
  ASSERT_TRUE(link.server_events->wait_closed(kWait));
  ASSERT_TRUE(eventually([&] { return server_->stats().connections == 0; }, kWait));
  EXPECT_EQ(server_->stats().failed_handshakes, 0u);
  EXPECT_TRUE(acceptor_->failures().empty());
}

// ICMP port unreachable ends a dial at once instead of after the timeout.
TEST_F(EndpointTest, DialingAPortWithoutListenerFailsFast) {
  EndpointConfig cc = config("client");
  cc.handshake_timeout_ms = 5000;
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  uint16_t port = udp_port(/*keep_open=*/false);
  auto start = Clock::now();
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(port, "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait_closed(3s));
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.connected, 0);
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kUnreachable)
      << close_kind_name(seen.closed->kind) << ": " << seen.closed->text;
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_TRUE(eventually([&] { return client_->stats().connections == 0; }, kWait));
}

TEST_F(EndpointTest, DialingASilentPeerTimesOut) {
  EndpointConfig cc = config("client");
  cc.handshake_timeout_ms = 1000;
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  int silent = -1;
  uint16_t port = udp_port(/*keep_open=*/true, &silent);
  auto start = Clock::now();
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(port, "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait_closed(3s));
  auto elapsed = Clock::now() - start;
  close(silent);
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.connected, 0);
  EXPECT_TRUE(seen.closed->kind == CloseInfo::Kind::kHandshakeTimeout ||
              seen.closed->kind == CloseInfo::Kind::kIdleTimeout)
      << close_kind_name(seen.closed->kind) << ": " << seen.closed->text;
  EXPECT_LE(elapsed, 1500ms) << "handshake_timeout_ms is 1000";
  EXPECT_GE(elapsed, 900ms) << "gave up before the timeout";
  EXPECT_TRUE(eventually([&] { return client_->stats().connections == 0; }, kWait));
}

// A server that restarts without telling us (its close was lost) answers
// our packets with a stateless reset; the stale connection ends at once
// instead of waiting for the idle timeout. The close is lost for real:
// the client's I/O thread is held while its socket buffer is flooded.
TEST_F(EndpointTest, RestartedPeerResetsTheStaleConnection) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  uint16_t port = server_->port();
  auto gate = std::make_shared<GateRecorder>();
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link, true, "127.0.0.1", gate));
  ASSERT_EQ(send(*link.server, Channel::kData, {"hold the client"}), SendStatus::kOk);
  ASSERT_TRUE(gate->wait_entered(kWait));

  int junk = socket(AF_INET, SOCK_DGRAM, 0);
  const uint8_t byte = 0;
  const int kFlood = 40000;  // more than the client's receive buffer holds
  for (int i = 0; i < kFlood; ++i)
    sendto(junk, &byte, 1, 0, client_->local_address().sa(), client_->local_address().len);
  close(junk);
  server_.reset();  // its CONNECTION_CLOSE finds the buffer full
  ASSERT_NO_FATAL_FAILURE(open_server([&] {
    EndpointConfig c = config("server");  // same identity: same reset key
    c.port = port;
    return c;
  }()));
  uint64_t dropped = client_->stats().dropped_packets;
  auto start = Clock::now();
  gate->release();
  // The client acknowledged the data before handing it over, so this is
  // its next packet (a tick, in a node), and the new server's answer.
  ASSERT_NE(send(*link.client, Channel::kControl, {"anyone there?"}), SendStatus::kClosed);

  ASSERT_TRUE(gate->wait_closed(2s)) << "stale connection not reset";
  EXPECT_LT(Clock::now() - start, 1s);
  EXPECT_GE(server_->stats().stateless_resets, 1u);
  // The reset queued behind the whole backlog, so the junk count is final:
  // the flood overflowed the buffer, the old close was dropped, and the
  // reset is what ended the connection.
  uint64_t junk_read = client_->stats().dropped_packets - dropped;
  EXPECT_GT(junk_read, 0u);
  EXPECT_LT(junk_read, uint64_t(kFlood));
  CloseInfo info = *gate->seen().closed;
  EXPECT_NE(info.kind, CloseInfo::Kind::kIdleTimeout);
  RecordProperty("close_kind", close_kind_name(info.kind));
}

// A UDP relay on 127.0.0.1 between a client and a server: the client
// dials the proxy, which forwards both ways. Closing it is a peer that
// vanished without a word (its port answers ICMP "port unreachable");
// dropping server-to-client packets loses what the server says.
class UdpProxy {
 public:
  explicit UdpProxy(uint16_t server_port) {
    fd_ = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    server_ = a;
    server_.sin_port = htons(server_port);
    thread_ = std::thread([this] { run(); });
  }
  ~UdpProxy() { close_now(); }
  uint16_t port() const { return port_; }
  // Closes the socket: later packets to it draw ICMP port unreachable.
  void close_now() {
    if (stop_.exchange(true)) return;
    thread_.join();
    ::close(fd_);
  }
  void set_drop_to_client(bool on) { drop_to_client_ = on; }
  // Drops everything, both ways (a silent network).
  void set_blackhole(bool on) { blackhole_ = on; }
  size_t dropped_to_server() {
    std::lock_guard lock(mu_);
    return to_server_dropped_.size();
  }
  // Sizes of the datagrams forwarded to the client since the last call.
  std::vector<size_t> take_to_client() {
    std::lock_guard lock(mu_);
    return std::exchange(to_client_, {});
  }
  std::vector<size_t> take_to_server() {
    std::lock_guard lock(mu_);
    return std::exchange(to_server_, {});
  }

 private:
  void run() {
    std::vector<uint8_t> buf(65536);
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      sockaddr_in from{};
      socklen_t len = sizeof from;
      ssize_t n = recvfrom(fd_, buf.data(), buf.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) continue;
      bool from_server = from.sin_port == server_.sin_port;
      if (!from_server) client_ = from;
      std::lock_guard lock(mu_);
      if (blackhole_) {
        (from_server ? to_client_dropped_ : to_server_dropped_).push_back(size_t(n));
        continue;
      }
      if (from_server) {
        if (drop_to_client_ || client_.sin_port == 0) continue;
        to_client_.push_back(size_t(n));
        sendto(fd_, buf.data(), size_t(n), 0, reinterpret_cast<sockaddr*>(&client_), sizeof client_);
      } else {
        to_server_.push_back(size_t(n));
        sendto(fd_, buf.data(), size_t(n), 0, reinterpret_cast<sockaddr*>(&server_), sizeof server_);
      }
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  sockaddr_in server_{}, client_{};
  std::atomic<bool> stop_{false}, drop_to_client_{false}, blackhole_{false};
  std::mutex mu_;
  std::vector<size_t> to_client_, to_server_;
  std::vector<size_t> to_client_dropped_, to_server_dropped_;
  std::thread thread_;
};

// An idle connection whose peer vanished (its port now answers ICMP) is
// closed by the next keep-alive PING's ICMP error, which quotes the
// packet and so the connection ID we address the peer with. An ICMP
// error for a packet with another connection ID (what an off-path
// attacker can provoke: a real ICMP, quoting whatever it likes) is
// ignored.
TEST_F(EndpointTest, IcmpClosesAnEstablishedConnectionOnlyForItsOwnCid) {
  EndpointConfig cc = config("client");
  cc.client_keep_alive_ms = 0;  // the client stays silent until told
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  UdpProxy proxy(server_->port());
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(proxy.port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait));
  std::this_thread::sleep_for(300ms);  // handshake traffic settles: idle
  proxy.close_now();

  // A short-header packet with a made-up connection ID, from the
  // client's own socket to the dead port: the ICMP error comes back to
  // the client's socket for real.
  Address dead;
  ASSERT_TRUE(make_address("127.0.0.1", proxy.port(), dead));
  std::vector<uint8_t> forged(60, 0x5a);
  forged[0] = 0x41;
  ASSERT_EQ(sendto(client_->socket_fd(), forged.data(), forged.size(), 0, dead.sa(), dead.len),
            ssize_t(forged.size()));
  EXPECT_TRUE(eventually([&] { return client_->stats().ignored_unreachable >= 1; }, kWait))
      << "the ICMP error never reached the endpoint";
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(link.client_events->seen().closed.has_value())
      << "closed by an ICMP error for another connection ID";

  // Now a packet of the connection itself meets the dead port.
  auto start = Clock::now();
  ASSERT_EQ(send(*link.client, Channel::kControl, {"anyone there?"}), SendStatus::kOk);
  ASSERT_TRUE(link.client_events->wait_closed(2s)) << "ICMP for our own CID ignored";
  EXPECT_LT(Clock::now() - start, 500ms);
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kUnreachable)
      << close_kind_name(seen.closed->kind) << ": " << seen.closed->text;
}

// The accepting side of a connection whose client vanished: the ICMP
// error alone does not close it (a client behind a NAT that changed its
// mapping looks the same for a moment); a keep-alive period and a half
// of silence after the client's last packet does.
TEST_F(EndpointTest, AcceptedConnectionClosesAfterIcmpAndSilence) {
  EndpointConfig sc = config("server");
  sc.keep_alive_ms = 400;
  EndpointConfig cc = config("client");
  cc.client_keep_alive_ms = 0;
  ASSERT_NO_FATAL_FAILURE(open_server(sc));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  UdpProxy proxy(server_->port());
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(proxy.port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait));
  link.server = acceptor_->next(kWait);
  ASSERT_NE(link.server, nullptr);
  link.server_events = std::make_shared<Recorder>();
  link.server->attach(link.server_events);
  std::this_thread::sleep_for(300ms);
  auto start = Clock::now();
  proxy.close_now();  // the server now sends into a closed port
  ASSERT_TRUE(link.server_events->wait_closed(3s)) << "vanished client not noticed";
  auto elapsed = Clock::now() - start;
  EXPECT_LT(elapsed, 1500ms) << "keep_alive_ms 400: PING within 0.4 s, then 0.6 s of grace";
  Seen seen = link.server_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kUnreachable)
      << close_kind_name(seen.closed->kind) << ": " << seen.closed->text;
}

// The same for a connection that says nothing: the keep-alive PING finds
// the dead port within a keep-alive period. With the socket handed to a
// caller (a scheduler, in a node), the error wakes the caller's reads too.
TEST_F(EndpointTest, KeepAliveFindsAVanishedPeerWithCallerReads) {
  EndpointConfig cc = config("client");
  cc.keep_alive_ms = 300;
  cc.client_keep_alive_ms = 0;
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  UdpProxy proxy(server_->port());
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(proxy.port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait));
  client_->set_caller_reads(true);
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0};
  std::thread reader([&] {
    while (!stop) {
      pollfd p{client_->socket_fd(), POLLIN, 0};
      if (poll(&p, 1, 20) > 0) {
        client_->read_now();
        ++reads;
      }
    }
  });
  std::this_thread::sleep_for(200ms);
  proxy.close_now();
  auto start = Clock::now();
  bool closed = link.client_events->wait_closed(2s);
  auto elapsed = Clock::now() - start;
  std::this_thread::sleep_for(100ms);
  int reads_after = reads.load();
  std::this_thread::sleep_for(200ms);
  int spin = reads.load() - reads_after;
  stop = true;
  reader.join();
  client_->set_caller_reads(false);
  ASSERT_TRUE(closed) << "vanished peer not noticed";
  EXPECT_LT(elapsed, 1s) << "keep_alive_ms is 300";
  EXPECT_EQ(link.client_events->seen().closed->kind, CloseInfo::Kind::kUnreachable);
  // The error was drained: the reader is not woken over and over.
  EXPECT_LT(spin, 5) << "the socket stayed readable after the error";
}

// A node restarted on the same port while its peer's connection is idle:
// the peer's keep-alive PING (a small packet, 39 bytes) draws a stateless
// reset smaller than itself, and the connection ends at once. The old
// server's CONNECTION_CLOSE is lost (the proxy drops it).
TEST_F(EndpointTest, RestartedPeerResetsAnIdleConnectionWithASmallReset) {
  EndpointConfig cc = config("client");
  cc.keep_alive_ms = 300;
  cc.client_keep_alive_ms = 0;
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  uint16_t port = server_->port();
  UdpProxy proxy(port);
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(proxy.port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait));
  std::this_thread::sleep_for(500ms);  // idle: only keep-alives from here
  proxy.set_drop_to_client(true);
  server_.reset();
  // The proxy reads every 20 ms: let it drop the old server's close.
  std::this_thread::sleep_for(100ms);
  // What the old server's session sent is not counted; from here on every
  // packet is (taking them after the new server opened raced with the
  // first keep-alive and its reset: the trigger could be taken away).
  proxy.take_to_client();
  proxy.take_to_server();
  ASSERT_NO_FATAL_FAILURE(open_server([&] {
    EndpointConfig c = config("server");  // same identity: same reset key
    c.port = port;
    return c;
  }()));
  proxy.set_drop_to_client(false);
  auto start = Clock::now();
  ASSERT_TRUE(link.client_events->wait_closed(2s)) << "idle connection not reset";
  EXPECT_LT(Clock::now() - start, 1s) << "keep_alive_ms is 300";
  Seen seen = link.client_events->seen();
  EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kPeer) << seen.closed->text;
  EXPECT_EQ(seen.closed->text, "stateless reset");
  EXPECT_GE(server_->stats().stateless_resets, 1u);
  std::vector<size_t> up = proxy.take_to_server(), down = proxy.take_to_client();
  ASSERT_FALSE(up.empty());
  ASSERT_FALSE(down.empty());
  size_t trigger = *std::min_element(up.begin(), up.end());
  size_t reset = *std::min_element(down.begin(), down.end());
  EXPECT_LT(trigger, 41u) << "the keep-alive was not a small packet";
  EXPECT_LT(reset, trigger);
  EXPECT_GE(reset, 21u);
  RecordProperty("keep_alive_bytes", int(trigger));
  RecordProperty("reset_bytes", int(reset));
}

// A peer that went silent for a while (no ICMP: a firewall drops it)
// and then comes back restarted: the keep-alive still probes it often
// enough that the reset comes within about a keep-alive period of the
// restart, not after a long loss-recovery back-off.
TEST_F(EndpointTest, RestartAfterASilentPeriodIsStillResetSoon) {
  EndpointConfig cc = config("client");
  cc.keep_alive_ms = 300;
  cc.client_keep_alive_ms = 0;
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(cc));
  uint16_t port = server_->port();
  UdpProxy proxy(port);
  Link link;
  ASSERT_NO_FATAL_FAILURE(dial(proxy.port(), "127.0.0.1", link));
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.connected > 0; }, kWait));
  proxy.set_blackhole(true);
  server_.reset();
  std::this_thread::sleep_for(4s);
  ASSERT_FALSE(link.client_events->seen().closed.has_value());
  ASSERT_NO_FATAL_FAILURE(open_server([&] {
    EndpointConfig c = config("server");
    c.port = port;
    return c;
  }()));
  size_t probes = proxy.dropped_to_server();
  proxy.set_blackhole(false);
  auto start = Clock::now();
  ASSERT_TRUE(link.client_events->wait_closed(5s)) << "not reset";
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
  RecordProperty("reset_after_ms", int(ms));
  RecordProperty("probes_while_silent", int(probes));
  EXPECT_LT(ms, 1000) << "probes during 4 s of silence: " << probes;
}

TEST_F(EndpointTest, PortInUseIsReported) {
  ASSERT_NO_FATAL_FAILURE(open_server(config("server")));
  EndpointConfig again = config("again");
  again.port = server_->port();
  std::string error;
  auto second = Endpoint::open(again, nullptr, error);
  EXPECT_EQ(second, nullptr);
  EXPECT_NE(error.find("Address already in use"), std::string::npos) << error;
  EXPECT_NE(error.find(std::to_string(server_->port())), std::string::npos) << error;
}

TEST_F(EndpointTest, GarbageDatagramsAreDroppedWithoutHarm) {
  ASSERT_NO_FATAL_FAILURE(open_both());
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  uint64_t dropped = server_->stats().dropped_packets;
  uint64_t resets = server_->stats().stateless_resets;

  int junk = socket(AF_INET, SOCK_DGRAM, 0);
  Address to;
  ASSERT_TRUE(make_address("127.0.0.1", server_->port(), to));
  std::mt19937 rng(1234);
  std::vector<std::vector<uint8_t>> packets;
  for (size_t size : {1u, 5u, 30u, 100u, 600u, 1200u, 1350u, 40u, 2u, 1500u})
    for (int k = 0; k < 3; ++k) {
      std::vector<uint8_t> p(size);
      for (uint8_t& b : p) b = uint8_t(rng());
      packets.push_back(p);
    }
  // A short-header packet for an unknown connection: answered with a
  // stateless reset (a restarted node's peers learn it at once).
  std::vector<uint8_t> short_hdr(100);
  for (uint8_t& b : short_hdr) b = uint8_t(rng());
  short_hdr[0] = 0x40 | (short_hdr[0] & 0x3f);
  packets.push_back(short_hdr);
  for (const auto& p : packets)
    ASSERT_EQ(sendto(junk, p.data(), p.size(), 0, to.sa(), to.len), ssize_t(p.size()));

  EXPECT_TRUE(eventually(
      [&] { return server_->stats().dropped_packets >= dropped + packets.size(); }, kWait))
      << server_->stats().dropped_packets - dropped << " of " << packets.size();
  EXPECT_GT(server_->stats().stateless_resets, resets);
  close(junk);

  // The open connection did not notice.
  ASSERT_EQ(send(*link.client, Channel::kControl, {"still"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return !s.control.empty(); }, kWait));
  ASSERT_EQ(send(*link.server, Channel::kControl, {"here"}), SendStatus::kOk);
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return !s.control.empty(); }, kWait));
  EXPECT_FALSE(link.client_events->read(is_closed));
  EXPECT_FALSE(link.server_events->read(is_closed));
  EXPECT_EQ(server_->stats().connections, 1u);
}

// Longer than std::string's inline buffer, so it lives in its own heap block.
constexpr char kLongHost[] = "a-rather-long-node-name.example";

// CA mode: certificates from a CA made at test time.
class EndpointCaTest : public EndpointTest {
 protected:
  void SetUp() override {
    test::write_file(tmp_.file("ca.pem"), ca_.cert_pem());
    issue(ca_, "server", {"127.0.0.1"}, {"localhost", kLongHost});
    issue(ca_, "client", {"127.0.0.1"}, {});
    issue(other_ca_, "rogue", {"127.0.0.1"}, {"localhost"});
  }

  // CA-mode configuration with the credential written as `stem`.
  EndpointConfig ca_config(const std::string& stem) {
    EndpointConfig c = config(stem);
    c.tls.mode = TrustMode::kCa;
    c.tls.cacertfile = tmp_.file("ca.pem");
    c.tls.keyfile = tmp_.file(stem + "_key.pem");
    c.tls.certfile = tmp_.file(stem + "_cert.pem");
    return c;
  }

  // Dials and waits for the client to give up; the server must not accept.
  void expect_refused(const std::string& host) {
    Link link;
    ASSERT_NO_FATAL_FAILURE(dial(server_->port(), host, link));
    ASSERT_TRUE(link.client_events->wait_closed(kWait)) << "neither connected nor refused";
    Seen seen = link.client_events->seen();
    EXPECT_EQ(seen.connected, 0);
    EXPECT_EQ(seen.closed->kind, CloseInfo::Kind::kTlsAlert)
        << close_kind_name(seen.closed->kind) << " " << seen.closed->code << ": "
        << seen.closed->text;
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(acceptor_->count(), 0u);
    EXPECT_EQ(server_->stats().accepted, 0u);
  }

  void issue(TestCa& ca, const std::string& stem, const std::vector<std::string>& ips,
             const std::vector<std::string>& dns) {
    std::string key, cert;
    auto leaf = ca.issue(stem, ips, dns);
    leaf->write(tmp_, stem, key, cert);
    der_[stem] = leaf->cert_der();
  }

  TestCa ca_{"macula test ca"};
  TestCa other_ca_{"some other ca"};
  std::map<std::string, std::vector<uint8_t>> der_;
};

TEST_F(EndpointCaTest, CaSignedPeersConnect) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("client")));
  EXPECT_EQ(server_->trust_mode(), TrustMode::kCa);
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  EXPECT_EQ(link.client->peer_certificate(), der_["server"]);
  EXPECT_EQ(link.server->peer_certificate(), der_["client"]);
  EXPECT_TRUE(certificate_matches_host(link.client->peer_certificate(), "127.0.0.1"));
  ASSERT_EQ(send(*link.client, Channel::kControl, {"ca hello"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return !s.control.empty(); }, kWait));
}

TEST_F(EndpointCaTest, DnsNameInTheServerCertificateIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link, true, "localhost"));
}

// The host checked against the certificate must stay valid for the whole
// handshake, whatever its length and whatever the caller did with its copy.
TEST_F(EndpointCaTest, LongDnsNameInTheServerCertificateIsAccepted) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("client")));
  for (int i = 0; i < 3; ++i) {
    Link link;
    ASSERT_NO_FATAL_FAILURE(dial(server_->port(), kLongHost, link));
    ASSERT_TRUE(link.client_events->wait(
        [](const Seen& s) { return s.connected > 0 || s.closed; }, kWait));
    Seen seen = link.client_events->seen();
    EXPECT_EQ(seen.connected, 1) << "attempt " << i << ": "
        << (seen.closed ? close_kind_name(seen.closed->kind) : "") << " "
        << (seen.closed ? seen.closed->code : 0);
  }
}

TEST_F(EndpointCaTest, ClientCertificateFromAnotherCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("rogue")));
  expect_refused("127.0.0.1");
}

TEST_F(EndpointCaTest, ServerCertificateFromAnotherCaIsRefused) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("rogue")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("client")));
  expect_refused("127.0.0.1");
}

TEST_F(EndpointCaTest, ServerCertificateForAnotherHostIsRefused) {
  ASSERT_NO_FATAL_FAILURE(open_server(ca_config("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(ca_config("client")));
  expect_refused("wrong.example");
}

}  // namespace
}  // namespace macula

// ---- Strangers: nothing before authenticate(), admission of handshakes ----

namespace macula {
namespace {

class StrangerTest : public EndpointTest {
 protected:
  EndpointConfig gated(const std::string& name, uint64_t auth_timeout_ms = 5000) {
    EndpointConfig c = config(name);
    c.auth_timeout_ms = auth_timeout_ms;
    return c;
  }
};

// A peer that is not authenticated cannot make the server hold data: its
// data frames wait on its own side. Both ends gate, as nodes do, and each
// authenticates the other in turn.
TEST_F(StrangerTest, DataWaitsUntilThePeerIsAuthenticated) {
  ASSERT_NO_FATAL_FAILURE(open_server(gated("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(gated("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  std::string big(256 << 10, 'x');
  ASSERT_NE(send(*link.client, Channel::kData, {big, "second"}), SendStatus::kClosed);
  ASSERT_NO_FATAL_FAILURE(sync(link, "proof"));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(link.server_events->seen().data_bytes, 0u);
  EXPECT_EQ(server_->stats().admission.half_open, 1u);
  link.server->authenticate();
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return s.data_frames == 2; }, kWait));
  EXPECT_EQ(server_->stats().admission.half_open, 0u);
  // The server's data waits for the client's authenticate() the same way.
  ASSERT_NE(send(*link.server, Channel::kData, {"reply"}), SendStatus::kClosed);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(link.client_events->seen().data_frames, 0u);
  link.client->authenticate();
  ASSERT_TRUE(link.client_events->wait([](const Seen& s) { return s.data_frames == 1; }, kWait));
}

// Before authenticate() the control window is kPreAuthControlWindow: a
// stranger cannot queue more than that, whatever it sends.
TEST_F(StrangerTest, StrangerControlBytesAreBounded) {
  ASSERT_NO_FATAL_FAILURE(open_server(gated("server")));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  std::vector<std::string> frames(8, std::string(4000, 'c'));
  ASSERT_NE(send(*link.client, Channel::kControl, frames), SendStatus::kClosed);
  std::this_thread::sleep_for(300ms);
  size_t got = link.server_events->read([](const Seen& s) { return s.control.size(); });
  EXPECT_LE(got * 4004, kPreAuthControlWindow);
  EXPECT_GE(got, 1u);
  link.server->authenticate();
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return s.control.size() == 8; }, kWait));
}

TEST_F(StrangerTest, StrangerIsClosedWhenNotAuthenticatedInTime) {
  ASSERT_NO_FATAL_FAILURE(open_server(gated("server", 300)));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  ASSERT_TRUE(link.server_events->wait(is_closed, kWait));
  EXPECT_EQ(link.server_events->seen().closed->kind, CloseInfo::Kind::kAuthTimeout);
  ASSERT_TRUE(link.client_events->wait(is_closed, kWait));
  EXPECT_EQ(link.client_events->seen().closed->kind, CloseInfo::Kind::kProtocol);
  EXPECT_TRUE(eventually([&] { return server_->stats().admission.half_open == 0; }, kWait));
}

// With Retry always on, a real client still connects (one more round
// trip), and the server counts the Retry and the validated connection.
TEST_F(StrangerTest, ClientConnectsThroughRetry) {
  EndpointConfig sc = gated("server");
  sc.admission.retry_threshold = 0;
  ASSERT_NO_FATAL_FAILURE(open_server(sc));
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  Link link;
  ASSERT_NO_FATAL_FAILURE(connect(link));
  link.server->authenticate();
  ASSERT_NO_FATAL_FAILURE(sync(link));
  ASSERT_EQ(send(*link.client, Channel::kData, {"after retry"}), SendStatus::kOk);
  ASSERT_TRUE(link.server_events->wait([](const Seen& s) { return s.data_frames == 1; }, kWait));
  AdmissionStats a = server_->stats().admission;
  EXPECT_EQ(a.retries, 1u);
  EXPECT_EQ(a.validated, 1u);
  EXPECT_EQ(a.bad_tokens, 0u);
}

// The setup cost of Retry on loopback, same run: connections with Retry
// always on against none (printed; the bound is loose, the figure is
// what README's security section quotes).
TEST_F(StrangerTest, RetryCostsAboutOneRoundTrip) {
  auto time_connects = [&](size_t threshold) {
    EndpointConfig sc = gated("server");
    sc.admission.retry_threshold = threshold;
    server_.reset();
    open_server(sc);
    auto start = std::chrono::steady_clock::now();
    constexpr int kRuns = 20;
    for (int i = 0; i < kRuns; ++i) {
      Link link;
      connect(link);
      link.client->close(0, "done");
    }
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
               .count() / kRuns;
  };
  ASSERT_NO_FATAL_FAILURE(open_client(config("client")));
  double plain = time_connects(100), retry = time_connects(0);
  std::printf("connection setup on loopback: %.0f us without Retry, %.0f us with Retry\n",
              plain, retry);
  EXPECT_LT(retry, plain * 3 + 2000);
}

}  // namespace
}  // namespace macula
