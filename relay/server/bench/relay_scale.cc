// macula-relay-scale: how far one macula-relay goes. Starts the real
// daemon (a child process on 127.0.0.1), connects N simulated nodes to it
// from this process (RelayClients spread over a few endpoints), opens T
// tunnels between pairs of them and pushes packets through every tunnel
// for a while. Reads the relay's CPU time and resident memory from /proc
// and prints one markdown table: memory per connected node, idle CPU with
// N nodes, forwarded packets per second and CPU with T busy tunnels.
//
//   macula-relay-scale RELAY_BINARY [nodes] [tunnels] [seconds] [port]
//
// Bounded: every wait has a deadline; the relay is killed on the way out.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "relay_client.h"

extern char** environ;

namespace macula::relay {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kSecret[] = "relay-scale-realm-secret-0123456789";
constexpr size_t kPacket = 1200;  // a typical QUIC packet
constexpr size_t kEndpoints = 4;  // client-side I/O threads

struct ProcSample {
  double cpu_s = 0;  // user + system
  double rss_mb = 0;
};

ProcSample sample(pid_t pid) {
  ProcSample s;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  // Fields after the command name (which may hold spaces): 14, 15 = utime, stime.
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string f;
  for (int i = 3; i <= 15 && rest >> f; ++i) {
    if (i == 14) s.cpu_s += std::stod(f) / double(sysconf(_SC_CLK_TCK));
    if (i == 15) s.cpu_s += std::stod(f) / double(sysconf(_SC_CLK_TCK));
  }
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) s.rss_mb = std::stod(line.substr(6)) / 1024.0;
  return s;
}

// One simulated node: counts what the relay tells it.
class Sim : public RelayClientEvents {
 public:
  void identified(const Identified&) override { identified_ = true; }
  void tunnel_ok(uint64_t, uint32_t tunnel) override { tunnel_ = tunnel; }
  void tunnel_error(uint64_t, const std::string& reason) override {
    fprintf(stderr, "tunnel refused: %s\n", reason.c_str());
    failed_ = true;
  }
  void tunnel_incoming(uint32_t, const std::string&) override { incoming_ = true; }
  void tunnel_closed(uint32_t, const std::string&) override {}
  void packet(uint32_t, std::span<const uint8_t>) override { ++packets_; }
  void closed(const CloseInfo& info) override {
    if (!closed_.exchange(true) && info.kind != CloseInfo::Kind::kLocal) fprintf(stderr, "node closed: %s %s\n", close_kind_name(info.kind), info.text.c_str());
  }

  std::atomic<bool> identified_{false}, incoming_{false}, failed_{false}, closed_{false};
  std::atomic<uint32_t> tunnel_{0};
  std::atomic<uint64_t> packets_{0};
};

template <class Pred>
bool wait_for(Pred pred, std::chrono::seconds limit) {
  auto deadline = Clock::now() + limit;
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

pid_t start_relay(const std::string& bin, const std::string& dir, int port, size_t nodes) {
  std::ofstream(dir + "/secret") << kSecret << "\n";
  chmod((dir + "/secret").c_str(), 0600);
  std::string n = std::to_string(nodes + 64);
  std::vector<std::string> args = {bin, "--bind", "127.0.0.1", "--port", std::to_string(port),
                                   "--name", "scale-relay", "--realm-secret-file", dir + "/secret",
                                   "--cert-dir", dir + "/relay", "--max-connections", n,
                                   "--max-connections-per-ip", n, "--max-unidentified", n,
                                   "--max-unidentified-per-ip", n, "--idle-timeout-ms", "30000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Its log (a line per connection) goes to a file beside the secret.
  posix_spawn_file_actions_t io;
  posix_spawn_file_actions_init(&io);
  posix_spawn_file_actions_addopen(&io, 1, (dir + "/relay.log").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&io, 1, 2);
  pid_t pid = 0;
  int rv = posix_spawn(&pid, bin.c_str(), &io, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&io);
  return rv == 0 ? pid : 0;
}

struct Run {
  size_t nodes = 1000, tunnels = 100;
  int seconds = 10, port = 47600;
};

int run(const std::string& bin, const Run& r) {
  char tmpl[] = "/tmp/macula-relay-scale.XXXXXX";
  std::string dir = mkdtemp(tmpl);
  pid_t relay = start_relay(bin, dir, r.port, r.nodes);
  if (!relay) return fprintf(stderr, "cannot start %s\n", bin.c_str()), 1;
  std::shared_ptr<void> reap(nullptr, [&](void*) {
    kill(relay, SIGKILL);
    waitpid(relay, nullptr, 0);
    std::system(("rm -rf " + dir).c_str());
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ProcSample idle0 = sample(relay);

  std::vector<std::unique_ptr<Endpoint>> eps;
  for (size_t i = 0; i < kEndpoints; ++i) {
    EndpointConfig ec;
    ec.bind_ip = "127.0.0.1";
    ec.tls.cert_dir = dir + "/nodes";
    std::string error;
    eps.push_back(Endpoint::open(relay_client_endpoint_config(ec), nullptr, error));
    if (!eps.back()) return fprintf(stderr, "endpoint: %s\n", error.c_str()), 1;
  }
  Address at;
  make_address("127.0.0.1", uint16_t(r.port), at);
  std::vector<std::shared_ptr<Sim>> sims;
  std::vector<std::shared_ptr<RelayClient>> clients;
  auto t0 = Clock::now();
  for (size_t i = 0; i < r.nodes; ++i) {
    sims.push_back(std::make_shared<Sim>());
    char name[32];
    snprintf(name, sizeof name, "n%05zu@scale", i);
    clients.push_back(RelayClient::connect(*eps[i % kEndpoints],
                                           {name, kSecret, at, "127.0.0.1"}, sims.back()));
    // batches of 50, so the handshakes do not all time out together
    if (i % 50 == 49)
      wait_for([&] { return sims[i - 49]->identified_ && sims[i]->identified_; },
               std::chrono::seconds(30));
  }
  bool all = wait_for([&] {
    for (auto& s : sims)
      if (!s->identified_) return false;
    return true;
  }, std::chrono::seconds(60));
  double connect_s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!all) return fprintf(stderr, "not every node identified in 60 s\n"), 1;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ProcSample up = sample(relay);
  std::this_thread::sleep_for(std::chrono::seconds(5));
  ProcSample up5 = sample(relay);

  // Tunnels: node 2k -> node 2k+1.
  size_t tunnels = std::min(r.tunnels, r.nodes / 2);
  for (size_t k = 0; k < tunnels; ++k) {
    char target[32];
    snprintf(target, sizeof target, "n%05zu@scale", 2 * k + 1);
    clients[2 * k]->request_tunnel(target);
  }
  bool open = wait_for([&] {
    for (size_t k = 0; k < tunnels; ++k)
      if (!sims[2 * k]->tunnel_ || !sims[2 * k + 1]->incoming_) return false;
    return true;
  }, std::chrono::seconds(30));
  if (!open) return fprintf(stderr, "tunnels did not open in 30 s\n"), 1;

  // Pushes 1200-byte packets round the tunnels, 8 per send, backing off
  // while a connection is busy (above its queue mark).
  std::vector<uint8_t> bytes(kPacket, 0x5a);
  std::vector<std::span<const uint8_t>> batch(8, std::span<const uint8_t>(bytes));
  uint64_t sent = 0;
  ProcSample busy0 = sample(relay);
  auto start = Clock::now(), end = start + std::chrono::seconds(r.seconds);
  while (Clock::now() < end) {
    bool any = false;
    for (size_t k = 0; k < tunnels; ++k) {
      if (clients[2 * k]->queued_bytes() > (256u << 10)) continue;
      clients[2 * k]->send_packets(sims[2 * k]->tunnel_, batch);
      sent += batch.size();
      any = true;
    }
    if (!any) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  ProcSample busy1 = sample(relay);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  uint64_t received = 0;
  for (size_t k = 0; k < tunnels; ++k) received += sims[2 * k + 1]->packets_;

  printf("| what | figure |\n|---|---|\n");
  printf("| nodes connected (identified) | %zu in %.1f s |\n", r.nodes, connect_s);
  printf("| relay memory, idle / with the nodes | %.1f MB / %.1f MB |\n", idle0.rss_mb, up.rss_mb);
  printf("| memory per connected node | %.1f KB |\n",
         (up.rss_mb - idle0.rss_mb) * 1024.0 / double(r.nodes));
  printf("| relay CPU with %zu idle nodes (keep-alives) | %.1f%% of a core |\n", r.nodes,
         100.0 * (up5.cpu_s - up.cpu_s) / 5.0);
  printf("| busy tunnels | %zu, %zu-byte packets, %.1f s |\n", tunnels, kPacket, secs);
  printf("| packets forwarded | %.0f/s (%.0f MB/s); %llu sent, %llu arrived |\n",
         double(received) / secs, double(received) * kPacket / secs / 1e6,
         (unsigned long long)sent, (unsigned long long)received);
  printf("| relay CPU while forwarding | %.0f%% of a core (%.1f us per packet) |\n",
         100.0 * (busy1.cpu_s - busy0.cpu_s) / secs,
         received ? 1e6 * (busy1.cpu_s - busy0.cpu_s) / double(received) : 0.0);
  printf("| relay memory while forwarding | %.1f MB |\n", busy1.rss_mb);
  for (auto& c : clients) c->close();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return 0;
}

}  // namespace
}  // namespace macula::relay

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: macula-relay-scale RELAY_BINARY [nodes] [tunnels] [seconds] [port]\n");
    return 2;
  }
  macula::relay::Run r;
  if (argc > 2) r.nodes = size_t(std::atol(argv[2]));
  if (argc > 3) r.tunnels = size_t(std::atol(argv[3]));
  if (argc > 4) r.seconds = std::atoi(argv[4]);
  if (argc > 5) r.port = std::atoi(argv[5]);
  if (r.nodes < 2 || r.nodes > 20000 || r.seconds < 1 || r.seconds > 600 || r.port < 1 ||
      r.port > 65535) {
    fprintf(stderr, "nodes 2..20000, seconds 1..600, port 1..65535\n");
    return 2;
  }
  return macula::relay::run(argv[1], r);
}
