// Forwarding rate and round trip through an in-process relay on loopback:
// two RelayClients (own endpoints) with one tunnel between them.
//   relay_bench [packet_bytes=1200] [seconds=3] [relay_port secret_file]
// With a port and a secret file it uses a macula-relay already listening
// on 127.0.0.1 (another process) instead of one of its own.
// Throughput: alice sends as fast as her queue allows (<= 1 MB queued),
// bob counts what arrives; the relay's drops are reported too.
// Round trip: alice sends one 64-byte packet, bob echoes it, 2000 times.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "relay_client.h"
#include "relay_server.h"

using namespace macula;
using namespace macula::relay;
using Clock = std::chrono::steady_clock;

namespace {

constexpr char kSecret[] = "bench-secret-0123456789";

class Events : public RelayClientEvents {
 public:
  void identified(const Identified&) override { set(ready); }
  void tunnel_ok(uint64_t, uint32_t t) override { tunnel = t, set(ready_tunnel); }
  void tunnel_error(uint64_t, const std::string& r) override {
    fprintf(stderr, "tunnel_error %s\n", r.c_str());
    std::exit(1);
  }
  void tunnel_incoming(uint32_t t, const std::string&) override { tunnel = t, set(ready_tunnel); }
  void tunnel_closed(uint32_t, const std::string&) override {}
  void packet(uint32_t t, std::span<const uint8_t> p) override {
    packets.fetch_add(1, std::memory_order_relaxed);
    bytes.fetch_add(p.size(), std::memory_order_relaxed);
    if (RelayClient* to = echo_to.load()) to->send_packet(t, p);
    if (p.size() == 64) {
      std::lock_guard l(mu);
      ++pongs;
      cv.notify_all();
    }
  }
  void closed(const CloseInfo& i) override { fprintf(stderr, "closed: %s\n", i.text.c_str()); }

  void set(std::atomic<bool>& f) {
    std::lock_guard l(mu);
    f = true;
    cv.notify_all();
  }
  void wait(std::atomic<bool>& f) {
    std::unique_lock l(mu);
    cv.wait(l, [&] { return f.load(); });
  }

  std::atomic<bool> ready{false}, ready_tunnel{false};
  std::atomic<uint32_t> tunnel{0};
  std::atomic<uint64_t> packets{0}, bytes{0};
  std::atomic<RelayClient*> echo_to{nullptr};
  std::mutex mu;
  std::condition_variable cv;
  uint64_t pongs = 0;
};

std::unique_ptr<Endpoint> open_endpoint(const EndpointConfig& c) {
  std::string error;
  auto ep = Endpoint::open(c, nullptr, error);
  if (!ep) {
    fprintf(stderr, "%s\n", error.c_str());
    std::exit(1);
  }
  return ep;
}

}  // namespace

int main(int argc, char** argv) {
  size_t size = argc > 1 ? size_t(atoi(argv[1])) : 1200;
  int seconds = argc > 2 ? atoi(argv[2]) : 3;
  char dir[] = "/tmp/relay_bench_XXXXXX";
  if (!mkdtemp(dir)) return 1;
  Logger log([](const std::string&) {});
  RelayServerConfig sc;
  sc.realm_secret = kSecret;
  if (argc > 4) {
    std::ifstream in(argv[4]);
    std::getline(in, sc.realm_secret);
  }
  auto server = std::make_shared<RelayServer>(sc, log);
  std::unique_ptr<Endpoint> relay;
  uint16_t relay_port = argc > 3 ? uint16_t(atoi(argv[3])) : 0;
  if (!relay_port) {
    EndpointConfig rc;
    rc.bind_ip = "127.0.0.1";
    rc.tls.cert_dir = std::string(dir) + "/relay";
    std::string error;
    relay = Endpoint::open(relay_endpoint_config(rc, sc), server, error);
    if (!relay) return fprintf(stderr, "%s\n", error.c_str()), 1;
    relay_port = relay->port();
  }
  EndpointConfig nc;
  nc.bind_ip = "127.0.0.1";
  nc.tls.cert_dir = std::string(dir) + "/node";
  nc = relay_client_endpoint_config(nc);
  auto ea = open_endpoint(nc), eb = open_endpoint(nc);
  Address ra;
  make_address("127.0.0.1", relay_port, ra);
  auto a_ev = std::make_shared<Events>(), b_ev = std::make_shared<Events>();
  auto alice = RelayClient::connect(*ea, {"alice@bench", sc.realm_secret, ra, "127.0.0.1"}, a_ev);
  auto bob = RelayClient::connect(*eb, {"bob@bench", sc.realm_secret, ra, "127.0.0.1"}, b_ev);
  a_ev->wait(a_ev->ready);
  b_ev->wait(b_ev->ready);
  alice->request_tunnel("bob@bench");
  a_ev->wait(a_ev->ready_tunnel);
  b_ev->wait(b_ev->ready_tunnel);
  uint32_t t = a_ev->tunnel;

  // Throughput.
  std::vector<uint8_t> pkt(size, 0x5a);
  uint64_t sent = 0;
  auto start = Clock::now(), until = start + std::chrono::seconds(seconds);
  while (Clock::now() < until) {
    if (alice->queued_bytes() > (1u << 20)) {
      std::this_thread::yield();
      continue;
    }
    alice->send_packet(t, pkt);
    ++sent;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  double secs = std::chrono::duration<double>(until - start).count();
  uint64_t got = b_ev->packets;
  printf("packet %zu B: sent %.0f pkt/s, received %.0f pkt/s = %.1f MB/s payload "
         "(%llu of %llu)\n",
         size, sent / secs, got / secs, double(b_ev->bytes) / secs / 1e6,
         (unsigned long long)got, (unsigned long long)sent);

  // Round trip.
  b_ev->echo_to = bob.get();
  std::vector<uint8_t> ping(64, 1);
  std::vector<double> rtts;
  for (int i = 0; i < 2000; ++i) {
    auto t0 = Clock::now();
    uint64_t want;
    {
      std::lock_guard l(a_ev->mu);
      want = a_ev->pongs + 1;
    }
    alice->send_packet(t, ping);
    std::unique_lock l(a_ev->mu);
    if (!a_ev->cv.wait_for(l, std::chrono::seconds(2), [&] { return a_ev->pongs >= want; })) {
      printf("round trip %d lost\n", i);
      continue;
    }
    rtts.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(rtts.begin(), rtts.end());
  if (!rtts.empty())
    printf("64 B round trip via relay: p50 %.0f us, p99 %.0f us (%zu samples)\n",
           rtts[rtts.size() / 2], rtts[rtts.size() * 99 / 100], rtts.size());
  b_ev->echo_to = nullptr;
  alice.reset();
  bob.reset();
  ea.reset();
  eb.reset();
  relay.reset();
  std::string rm = std::string("rm -rf ") + dir;
  return system(rm.c_str()) == 0 ? 0 : 1;
}
