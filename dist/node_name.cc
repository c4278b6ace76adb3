#include "node_name.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cctype>

namespace macula {
namespace {

constexpr size_t kMaxNameLen = 255;

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
           return c >= '0' && c <= '9';
         });
}

bool valid_dns_label(std::string_view label) {
  if (label.empty() || label.size() > 63) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  return std::all_of(label.begin(), label.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
  });
}

// A last label of digits only would make the name read as an IPv4
// address in a short form ("10.1" is 10.0.0.1 to inet_aton and to
// Erlang's inet), so two spellings would name one host.
bool valid_dns_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  if (all_digits(host.substr(host.rfind('.') + 1))) return false;
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string_view label = host.substr(start, dot - start);
    if (!valid_dns_label(label)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

NameError classify_host(std::string_view host, NodeName& out) {
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  std::string h(host);
  unsigned char buf[16];
  if (inet_pton(AF_INET, h.c_str(), buf) == 1) {
    out.host_kind = HostKind::kIpv4;
  } else if (inet_pton(AF_INET6, h.c_str(), buf) == 1) {
    out.host_kind = HostKind::kIpv6;
  } else if (valid_dns_name(host)) {
    out.host_kind = HostKind::kDns;
  } else {
    return NameError::kBadHost;
  }
  out.host = std::move(h);
  return NameError::kNone;
}

}  // namespace

NameError parse_node_name(std::string_view text, uint16_t default_port,
                          NodeName& out) {
  size_t at = text.find('@');
  if (at == std::string_view::npos || text.find('@', at + 1) != text.npos)
    return NameError::kNoAt;
  std::string_view name = text.substr(0, at);
  if (name.empty() || name.size() > kMaxNameLen ||
      !std::all_of(name.begin(), name.end(), is_name_char))
    return NameError::kBadName;
  NodeName parsed;
  parsed.name = std::string(name);
  if (all_digits(name)) {
    // Leading zeros would give one port several node names ("0433",
    // "433"), which the distribution handshake sees as different nodes.
    unsigned long port = name.size() <= 5 && name[0] != '0' ? std::stoul(parsed.name) : 0;
    if (port < 1 || port > 65535) return NameError::kBadPort;
    parsed.port = static_cast<uint16_t>(port);
    parsed.explicit_port = true;
  } else {
    parsed.port = default_port;
  }
  if (NameError e = classify_host(text.substr(at + 1), parsed);
      e != NameError::kNone)
    return e;
  out = std::move(parsed);
  return NameError::kNone;
}

const char* name_error_text(NameError e) {
  switch (e) {
    case NameError::kNone: return "ok";
    case NameError::kNoAt: return "node name must contain exactly one '@'";
    case NameError::kBadName: return "invalid name part before '@'";
    case NameError::kBadPort: return "numeric name is not a port in 1..65535";
    case NameError::kBadHost: return "host is not an IP literal or DNS name";
  }
  return "unknown";
}

}  // namespace macula
