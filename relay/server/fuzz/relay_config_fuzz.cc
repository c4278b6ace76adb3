// Fuzz target for the relay daemon's settings (relay_config.h): the lines
// of a --config file and the command line, as an operator (or whoever can
// write the file) gives them.
//
// Input: a first byte choosing the form, then the text: a config file, or
// a command line with one argument per line.
// Properties, beyond "no crash, no sanitizer report":
// - a refusal says where: "line N: " for a file, and names the setting;
// - settings that parse stay parsed: applying a file twice is accepted
//   again (no hidden state), and bounded settings are within bounds.
#include <cstdint>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "relay_config.h"

namespace macula::relay {

// relay_config.cc's check() ends in the server's own check; nothing fuzzed
// here calls it, and linking the server would pull in the whole transport.
std::string RelayServer::check_config(const RelayServerConfig&) { abort(); }

}  // namespace macula::relay

using namespace macula::relay;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

void within_bounds(const DaemonConfig& c) {
  check(c.max_connections >= 1 && c.server.max_tunnels_per_node >= 1);
  check(c.server.control_rate >= 1 && c.server.control_burst >= 1);
  check(c.server.identify_timeout_ms >= 1 && c.server.idle_timeout_ms >= 1000);
}

void config_text(const std::string& text) {
  DaemonConfig c;
  std::string error;
  if (!apply_config_text(c, text, error)) {
    check(error.rfind("line ", 0) == 0);
    return;
  }
  within_bounds(c);
  DaemonConfig again;
  check(apply_config_text(again, text, error));
}

void command_line(const std::string& text) {
  std::vector<std::string> args = {"macula-relay"};
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    // --config reads a file: not what this target is about (and a path
    // like /dev/stdin would block).
    if (line.rfind("--config", 0) == 0) return;
    args.push_back(line);
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  DaemonConfig c;
  std::string error;
  if (!parse_command_line(int(argv.size()), argv.data(), c, error)) {
    check(!error.empty());
    return;
  }
  within_bounds(c);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) command_line(text);
  else config_text(text);
  return 0;
}
