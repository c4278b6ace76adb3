// The daemon's settings: defaults, then a config file of `key = value`
// lines (`#` starts a comment; keys are the long flag names without the
// dashes; `peer` may repeat), then command-line flags, each overriding the
// one before. Pure functions: any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "relay_server.h"

namespace macula::relay {

struct DaemonConfig {
  std::string bind = "::";
  uint16_t port = kDefaultPort;
  std::string cert_dir;  // empty: $HOME/.local/share/macula-relay
  std::string certfile, keyfile;
  std::string cacertfile;  // set: CA mode (peers' chains checked)
  std::string realm_secret_file;
  std::string metrics_bind = "127.0.0.1";
  uint16_t metrics_port = 0;  // 0: no metrics endpoint
  size_t max_connections = 4096;
  std::vector<std::string> peers;  // host:port of the other relays of the mesh
  RelayServerConfig server;        // realm_secret is filled from the file
  bool help = false;
};

// Sets one setting from its text. False with `error` naming the setting
// and the value when the key is unknown or the value does not parse.
bool apply_setting(DaemonConfig& config, const std::string& key,
                   const std::string& value, std::string& error);

// Applies every `key = value` line of `text`; errors say "line N: ...".
bool apply_config_text(DaemonConfig& config, const std::string& text,
                       std::string& error);

// The whole command line: `--config FILE` first (wherever it appears),
// then the other flags (`--key value` or `--key=value`; `--help`).
bool parse_command_line(int argc, const char* const* argv,
                        DaemonConfig& config, std::string& error);

// Reads the realm secret (surrounding whitespace trimmed) into
// config.server.realm_secret. Refuses a missing, unreadable or short
// (< 16 bytes) or oversized (> 4 KB) secret.
bool load_realm_secret(DaemonConfig& config, std::string& error);

// Fills defaults that depend on the environment (cert_dir, relay name).
void fill_defaults(DaemonConfig& config);

// Everything checkable before binding sockets; empty if fine.
std::string check(const DaemonConfig& config);

// "host:port" (or "[v6]:port") of a --peer, resolved now.
bool resolve_peer(const std::string& spec, PeerSpec& out, std::string& error);

std::string usage();

}  // namespace macula::relay
