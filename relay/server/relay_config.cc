#include "relay_config.h"

#include <netdb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace macula::relay {
namespace {

constexpr size_t kMinSecret = 16;
constexpr size_t kMaxConfigFile = 64 << 10;
constexpr size_t kMaxSecretFile = 4096;

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

template <typename T>
bool number(const std::string& text, T min, T max, T& out) {
  T v{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < min || v > max)
    return false;
  out = v;
  return true;
}

using Setter = std::function<bool(DaemonConfig&, const std::string&)>;

template <typename T>
Setter num(T DaemonConfig::*field, T min, T max) {
  return [=](DaemonConfig& c, const std::string& v) { return number(v, min, max, c.*field); };
}
template <typename T>
Setter server_num(T RelayServerConfig::*field, T min, T max) {
  return [=](DaemonConfig& c, const std::string& v) {
    return number(v, min, max, c.server.*field);
  };
}
Setter text(std::string DaemonConfig::*field) {
  return [=](DaemonConfig& c, const std::string& v) {
    c.*field = v;
    return !v.empty();
  };
}

// "host:port" or "[v6]:port"; only the shape is checked here.
bool peer_address(DaemonConfig& c, const std::string& v) {
  size_t colon = v.rfind(':');
  uint16_t port;
  if (colon == std::string::npos || colon == 0 ||
      !number<uint16_t>(v.substr(colon + 1), 1, 65535, port))
    return false;
  c.peers.push_back(v);
  return true;
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> table = {
      {"bind", text(&DaemonConfig::bind)},
      {"port", num<uint16_t>(&DaemonConfig::port, 0, 65535)},
      {"cert-dir", text(&DaemonConfig::cert_dir)},
      {"certfile", text(&DaemonConfig::certfile)},
      {"keyfile", text(&DaemonConfig::keyfile)},
      {"cacertfile", text(&DaemonConfig::cacertfile)},
      {"realm-secret-file", text(&DaemonConfig::realm_secret_file)},
      {"metrics-bind", text(&DaemonConfig::metrics_bind)},
      {"metrics-port", num<uint16_t>(&DaemonConfig::metrics_port, 0, 65535)},
      {"max-connections", num<size_t>(&DaemonConfig::max_connections, 1, 1000000)},
      {"peer", peer_address},
      {"max-bytes-in-flight-per-peer",
       server_num<uint64_t>(&RelayServerConfig::max_bytes_in_flight_per_peer, 1u << 17,
                            uint64_t(1) << 32)},
      {"name", [](DaemonConfig& c, const std::string& v) {
         c.server.name = v;
         return valid_name(v);
       }},
      {"max-tunnels-per-node",
       server_num<size_t>(&RelayServerConfig::max_tunnels_per_node, 1, 1000000)},
      {"max-bytes-in-flight-per-node",
       server_num<uint64_t>(&RelayServerConfig::max_bytes_in_flight_per_node,
                            kMaxDataFrame + kFrameHeaderSize, uint64_t(1) << 40)},
      {"max-control-backlog",
       server_num<uint64_t>(&RelayServerConfig::max_control_backlog, 4096, uint64_t(1) << 40)},
      {"identify-timeout-ms",
       server_num<uint64_t>(&RelayServerConfig::identify_timeout_ms, 1, 3600000)},
      {"max-connections-per-ip", server_num<uint32_t>(&RelayServerConfig::max_connections_per_ip,
                                                      1, 1000000)},
      {"name-probe-ms", server_num<uint64_t>(&RelayServerConfig::name_probe_ms, 100, 60000)},
      {"idle-timeout-ms",
       server_num<uint64_t>(&RelayServerConfig::idle_timeout_ms, 1000, 3600000)},
      {"control-rate", server_num<uint32_t>(&RelayServerConfig::control_rate, 1, 1000000)},
      {"control-burst", server_num<uint32_t>(&RelayServerConfig::control_burst, 1, 1000000)},
  };
  return table;
}

}  // namespace

bool apply_setting(DaemonConfig& config, const std::string& key,
                   const std::string& value, std::string& error) {
  auto it = setters().find(key);
  if (it == setters().end()) {
    error = "unknown setting " + key;
    return false;
  }
  if (!it->second(config, value)) {
    error = "bad value for " + key + ": '" + value + "'";
    return false;
  }
  return true;
}

bool apply_config_text(DaemonConfig& config, const std::string& text,
                       std::string& error) {
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    line = trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    size_t eq = line.find('=');
    std::string why = "expected key = value";
    if (eq != std::string::npos &&
        apply_setting(config, trim(line.substr(0, eq)), trim(line.substr(eq + 1)), why))
      continue;
    error = "line " + std::to_string(n) + ": " + why;
    return false;
  }
  return true;
}

namespace {

// Splits "--key=value" / "--key value"; advances `i` past what it used.
bool next_flag(int argc, const char* const* argv, int& i, std::string& key,
               std::string& value, std::string& error) {
  std::string arg = argv[i];
  if (arg.rfind("--", 0) != 0) {
    error = "unexpected argument " + arg;
    return false;
  }
  arg = arg.substr(2);
  size_t eq = arg.find('=');
  if (eq != std::string::npos) {
    key = arg.substr(0, eq);
    value = arg.substr(eq + 1);
  } else if (arg == "help") {
    key = arg;
  } else if (i + 1 < argc) {
    key = arg;
    value = argv[++i];
  } else {
    error = "--" + arg + " needs a value";
    return false;
  }
  ++i;
  return true;
}

bool read_config_file(DaemonConfig& config, const std::string& path, std::string& error) {
  std::ifstream in(path);
  if (!in) {
    error = "cannot read config file " + path;
    return false;
  }
  std::string text(kMaxConfigFile + 1, '\0');
  in.read(text.data(), std::streamsize(text.size()));
  text.resize(size_t(in.gcount()));
  if (text.size() > kMaxConfigFile) {
    error = "config file " + path + " is larger than 64 KB";
    return false;
  }
  if (apply_config_text(config, text, error)) return true;
  error = path + ": " + error;
  return false;
}

}  // namespace

bool parse_command_line(int argc, const char* const* argv, DaemonConfig& config,
                        std::string& error) {
  std::string key, value;
  for (int i = 1; i < argc;) {
    if (!next_flag(argc, argv, i, key, value, error)) return false;
    if (key == "config" && !read_config_file(config, value, error)) return false;
  }
  for (int i = 1; i < argc;) {
    next_flag(argc, argv, i, key, value, error);
    if (key == "help") config.help = true;
    else if (key != "config" && !apply_setting(config, key, value, error)) return false;
  }
  return true;
}

bool load_realm_secret(DaemonConfig& config, std::string& error) {
  const std::string& path = config.realm_secret_file;
  if (path.empty()) {
    error = "--realm-secret-file is required (a file holding the realm's shared secret)";
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot read realm-secret-file " + path;
    return false;
  }
  std::string s(kMaxSecretFile + 1, '\0');
  in.read(s.data(), std::streamsize(s.size()));
  s.resize(size_t(in.gcount()));
  if (s.size() > kMaxSecretFile) {
    error = "realm-secret-file " + path + " is larger than 4 KB";
    return false;
  }
  config.server.realm_secret = trim(s);
  if (config.server.realm_secret.size() < kMinSecret) {
    error = "realm secret in " + path + " is shorter than " + std::to_string(kMinSecret) + " bytes";
    return false;
  }
  return true;
}

void fill_defaults(DaemonConfig& config) {
  if (config.cert_dir.empty()) {
    const char* home = getenv("HOME");
    config.cert_dir = std::string(home && *home ? home : "/var/lib") +
                      (home && *home ? "/.local/share/macula-relay" : "/macula-relay");
  }
  if (config.server.name == RelayServerConfig{}.name) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0 && valid_name(host)) config.server.name = host;
  }
}

std::string check(const DaemonConfig& config) {
  if (config.certfile.empty() != config.keyfile.empty())
    return "--certfile and --keyfile go together";
  if (!config.cacertfile.empty() && config.certfile.empty())
    return "--cacertfile needs --certfile and --keyfile (a certificate from that CA)";
  if (config.metrics_port != 0 && config.metrics_port == config.port &&
      config.metrics_bind == config.bind)
    return "metrics-port must differ from port";
  return RelayServer::check_config(config.server);
}

bool resolve_peer(const std::string& spec, PeerSpec& out, std::string& error) {
  size_t colon = spec.rfind(':');
  std::string host = spec.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  int rv = getaddrinfo(host.c_str(), spec.c_str() + colon + 1, &hints, &found);
  if (rv != 0) {
    error = "cannot resolve peer " + spec + ": " + gai_strerror(rv);
    return false;
  }
  out.spec = spec;
  out.host = host;
  std::memcpy(&out.address.storage, found->ai_addr, found->ai_addrlen);
  out.address.len = found->ai_addrlen;
  freeaddrinfo(found);
  return true;
}

std::string usage() {
  return R"(usage: macula-relay --realm-secret-file FILE [options]

Relays tunnels between macula nodes that cannot reach each other directly.
QUIC + TLS 1.3 on one UDP port, ALPN "macula-relay". Nodes and relay prove
knowledge of the realm secret to each other; the relay forwards the nodes'
end-to-end encrypted packets without being able to read them.

  --config FILE                   key = value lines (keys: the flag names)
  --port N                        UDP port (default 4434)
  --bind IP                       local address (default :: = dual-stack)
  --cert-dir DIR                  key and self-signed certificate, created
                                  if missing (default ~/.local/share/macula-relay)
  --certfile FILE --keyfile FILE  use this certificate and key instead
  --cacertfile FILE               CA mode: nodes and peer relays must present
                                  certificates from this CA (and peers valid
                                  for the host they are dialled by); the
                                  realm secret is still proven
  --realm-secret-file FILE        the realm's shared secret (required, >= 16 bytes)
  --name NAME                     the relay's name in its proof (default: host name)
  --metrics-port N                Prometheus metrics over HTTP (default 0 = off)
  --metrics-bind IP               address of the metrics port (default 127.0.0.1)
  --max-tunnels-per-node N        default 64
  --max-bytes-in-flight-per-node N
                                  bytes queued towards one node, not yet
                                  acknowledged; beyond it packets are dropped
                                  (default 4194304)
  --max-control-backlog N         control bytes queued towards a node on top
                                  of that; beyond it the node is closed (1048576)
  --max-connections N             default 4096
  --max-connections-per-ip N      from one IP address (one NAT may hide many
                                  nodes; default 256)
  --identify-timeout-ms N         close connections that do not identify (10000)
  --idle-timeout-ms N             close silent connections (10000)
  --name-probe-ms N               a node claiming a name held here gets it
                                  only if the holder sends nothing for this
                                  long after a probe (3000)
  --control-rate N, --control-burst N
                                  control messages per second per node (50, 200)
  --peer HOST:PORT                another relay of the mesh to link up with
                                  (repeat for each; every relay of a mesh
                                  must be linked to every other one)
  --max-bytes-in-flight-per-peer N
                                  bytes queued towards one peer relay (16777216)
  --help                          this text

SIGTERM or SIGINT: every node is told "relay_shutdown", then the relay exits.
)";
}

}  // namespace macula::relay
