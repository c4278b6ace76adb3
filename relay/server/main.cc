// macula-relay: the daemon around RelayServer. Reads its settings, opens
// the QUIC endpoint and the metrics port, then waits for SIGTERM/SIGINT
// while ticking the server's timers once a second.
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "metrics_http.h"
#include "relay_config.h"
#include "relay_metrics.h"
#include "relay_server.h"

using namespace macula;
using namespace macula::relay;

namespace {

// Signals are taken synchronously by the main thread only: block them
// before any thread starts, so every thread inherits the mask.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

int fail(Logger& log, const std::string& error) {
  log.error("relay_failed", {{"error", error}});
  fprintf(stderr, "macula-relay: %s\n", error.c_str());
  return 1;
}

EndpointConfig endpoint_config(const DaemonConfig& c) {
  EndpointConfig ec;
  ec.bind_ip = c.bind;
  ec.port = c.port;
  ec.max_connections = c.max_connections;
  // Identities are proven with the realm secret; CA mode checks
  // certificates on top.
  ec.tls.mode = c.cacertfile.empty() ? TrustMode::kCookie : TrustMode::kCa;
  ec.tls.cacertfile = c.cacertfile;
  ec.tls.cert_dir = c.cert_dir;
  ec.tls.certfile = c.certfile;
  ec.tls.keyfile = c.keyfile;
  return relay_endpoint_config(ec, c.server);
}

// Lets the endpoint send the closes shutdown() queued, then returns; a
// peer that is gone already must not hold the exit up for long.
void drain(Endpoint& endpoint) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (endpoint.stats().connections > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
}

int run(DaemonConfig& config, Logger& log, const sigset_t& stop) {
  auto server = std::make_shared<RelayServer>(config.server, log);
  std::string error;
  auto endpoint = Endpoint::open(endpoint_config(config), server, error);
  if (!endpoint) return fail(log, error);
  std::unique_ptr<MetricsHttp> metrics;
  if (config.metrics_port) {
    Endpoint* ep = endpoint.get();
    metrics = MetricsHttp::open(config.metrics_bind, config.metrics_port, [server, ep] {
      return render_prometheus(server->metrics(), ep->stats());
    }, error);
    if (!metrics) return fail(log, error);
  }
  log.info("relay_started", {{"name", config.server.name},
                             {"address", endpoint->local_address().to_string()},
                             {"metrics", metrics ? config.metrics_bind + ":" +
                                                       std::to_string(metrics->port()) : "off"},
                             {"max_tunnels_per_node", std::to_string(config.server.max_tunnels_per_node)},
                             {"max_bytes_in_flight_per_node",
                              std::to_string(config.server.max_bytes_in_flight_per_node)}});
  std::vector<PeerSpec> peers(config.peers.size());
  for (size_t i = 0; i < peers.size(); ++i)
    if (!resolve_peer(config.peers[i], peers[i], error)) return fail(log, error);
  server->start_mesh(*endpoint, std::move(peers));
  timespec second{1, 0};
  int sig;
  while ((sig = sigtimedwait(&stop, nullptr, &second)) < 0)
    server->tick(now_ns() / 1000000);
  log.info("relay_stopping", {{"signal", sig == SIGTERM ? "SIGTERM" : "SIGINT"}});
  server->shutdown();
  drain(*endpoint);
  metrics.reset();
  endpoint.reset();
  log.info("relay_stopped", {});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t stop = block_stop_signals();
  Logger log;
  DaemonConfig config;
  std::string error;
  if (!parse_command_line(argc, argv, config, error)) {
    fprintf(stderr, "macula-relay: %s\n(see macula-relay --help)\n", error.c_str());
    return 2;
  }
  if (config.help) {
    fputs(usage().c_str(), stdout);
    return 0;
  }
  fill_defaults(config);
  if (!load_realm_secret(config, error)) return fail(log, error);
  struct stat st;
  if (stat(config.realm_secret_file.c_str(), &st) == 0 && (st.st_mode & 077))
    log.warn("realm_secret_exposed", {{"file", config.realm_secret_file},
                                      {"why", "readable by group or others; chmod 600"}});
  if (std::string why = check(config); !why.empty()) return fail(log, why);
  return run(config, log, stop);
}
