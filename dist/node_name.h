// Erlang node names for macula: `port@host` (explicit UDP port, written
// without leading zeros) or `name@host` (the node's configured default
// port). Host is an IPv4 literal, an IPv6 literal (bare or in brackets) or
// a DNS name whose last label is not all digits (`10.1` is no DNS name).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace macula {

enum class HostKind { kIpv4, kIpv6, kDns };

struct NodeName {
  std::string name;  // the part before '@'
  std::string host;  // without brackets
  HostKind host_kind = HostKind::kDns;
  uint16_t port = 0;
  bool explicit_port = false;  // name was `port@host`
};

enum class NameError {
  kNone,
  kNoAt,           // not exactly one '@'
  kBadName,        // empty, too long or illegal characters before '@'
  kBadPort,        // all digits but not in 1..65535
  kBadHost,        // not an IP literal nor a valid DNS name
};

// Parses `text`; on success fills `out` and returns kNone. `default_port`
// is used for `name@host`.
NameError parse_node_name(std::string_view text, uint16_t default_port,
                          NodeName& out);

const char* name_error_text(NameError e);

}  // namespace macula
