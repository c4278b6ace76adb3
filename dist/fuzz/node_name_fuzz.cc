// Fuzz target for what a node parses from names and addresses given by
// users and peers: node names (node_name.h: every name net_kernel asks
// about, and names from the command line) and IP literals (make_address:
// the bind address setting, the addresses dialled).
//
// Properties, beyond "no crash, no sanitizer report":
// - a parsed name is made of valid parts: the port is in 1..65535, an
//   explicit port is the name itself, and `name@host` (IPv6 in brackets)
//   parses again to the same name;
// - an address that parses prints as text that parses to the same address.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "node_name.h"
#include "udp_socket.h"

using namespace macula;

namespace {

void check(bool ok) {
  if (!ok) abort();
}

void names(std::string_view text, uint16_t default_port) {
  NodeName n;
  NameError e = parse_node_name(text, default_port, n);
  check(name_error_text(e) != nullptr);
  if (e != NameError::kNone) return;
  check(n.port >= 1 || (!n.explicit_port && default_port == 0));
  if (n.explicit_port) check(std::to_string(n.port) == n.name);
  std::string again = n.name + "@" + (n.host_kind == HostKind::kIpv6 ? "[" + n.host + "]" : n.host);
  NodeName m;
  check(parse_node_name(again, default_port, m) == NameError::kNone);
  check(m.name == n.name && m.host == n.host && m.port == n.port &&
        m.host_kind == n.host_kind && m.explicit_port == n.explicit_port);
}

void address(const std::string& text, uint16_t port) {
  Address a;
  if (!make_address(text, port, a)) return;
  check(a.port() == port);
  Address b;
  check(make_address(a.ip_string(), port, b));
  check(a.ip_string() == b.ip_string());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint16_t port = size >= 2 ? uint16_t(data[0] << 8 | data[1]) : 4433;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  names(text, 4433);
  names(text, port);
  address(std::string(text), port);
  return 0;
}
