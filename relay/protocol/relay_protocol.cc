#include "relay_protocol.h"

#include <cstring>
#include <iterator>

#include "framing.h"

namespace macula::relay {
namespace {

using cbor::Value;

// Builds the map of one message; entries in a fixed order per type.
class MapBuilder {
 public:
  MapBuilder(const char* type) { text("t", type); }
  MapBuilder& uint(const char* key, uint64_t v) {
    Value x;
    x.type = Value::Type::kUint;
    x.uint = v;
    return add(key, std::move(x));
  }
  MapBuilder& text(const char* key, std::string_view s) {
    return add(key, string_value(Value::Type::kText, s));
  }
  MapBuilder& bytes(const char* key, std::span<const uint8_t> b) {
    return add(key, string_value(Value::Type::kBytes,
                                 {reinterpret_cast<const char*>(b.data()), b.size()}));
  }
  // A map of text to text, entries in the given order.
  MapBuilder& text_map(const char* key, const std::vector<NodeEntry>& entries) {
    Value m{Value::Type::kMap, 0, {}, {}};
    for (const NodeEntry& e : entries)
      m.map.push_back({e.node, string_value(Value::Type::kText, e.relay)});
    return add(key, std::move(m));
  }
  // Optional text: absent when empty.
  MapBuilder& maybe_text(const char* key, std::string_view s) {
    return s.empty() ? *this : text(key, s);
  }
  std::vector<uint8_t> encode() const {
    cbor::Encoder e;
    e.value(map_);
    return e.take();
  }

 private:
  static Value string_value(Value::Type t, std::string_view s) {
    Value x;
    x.type = t;
    x.str.assign(s);
    return x;
  }
  MapBuilder& add(const char* key, Value v) {
    map_.map.push_back({key, std::move(v)});
    return *this;
  }
  Value map_{Value::Type::kMap, 0, {}, {}};
};

std::vector<uint8_t> encode_one(const Identify& m) {
  return MapBuilder("identify").uint("id", m.id).uint("v", m.version)
      .text("name", m.name).bytes("proof", m.proof).encode();
}
std::vector<uint8_t> encode_one(const Identified& m) {
  return MapBuilder("identified").uint("id", m.id).text("relay", m.relay)
      .bytes("proof", m.proof).uint("max_packet", m.max_packet)
      .uint("max_tunnels", m.max_tunnels).encode();
}
std::vector<uint8_t> encode_one(const RequestError& m) {
  return MapBuilder("error").uint("id", m.id).text("reason", m.reason)
      .maybe_text("detail", m.detail).encode();
}
std::vector<uint8_t> encode_one(const TunnelRequest& m) {
  return MapBuilder("tunnel_request").uint("id", m.id).text("target", m.target).encode();
}
std::vector<uint8_t> encode_one(const TunnelOk& m) {
  return MapBuilder("tunnel_ok").uint("id", m.id).uint("tunnel", m.tunnel).encode();
}
std::vector<uint8_t> encode_one(const TunnelError& m) {
  return MapBuilder("tunnel_error").uint("id", m.id).text("reason", m.reason)
      .maybe_text("detail", m.detail).encode();
}
std::vector<uint8_t> encode_one(const TunnelNotify& m) {
  return MapBuilder("tunnel_notify").uint("tunnel", m.tunnel).text("source", m.source).encode();
}
std::vector<uint8_t> encode_one(const TunnelClose& m) {
  return MapBuilder("tunnel_close").uint("tunnel", m.tunnel)
      .maybe_text("reason", m.reason).encode();
}

std::vector<uint8_t> encode_one(const PeerIdentify& m) {
  return MapBuilder("peer_identify").uint("id", m.id).uint("v", m.version)
      .text("relay", m.relay).bytes("proof", m.proof).encode();
}
std::vector<uint8_t> encode_one(const PeerIdentified& m) {
  return MapBuilder("peer_identified").uint("id", m.id).text("relay", m.relay)
      .bytes("proof", m.proof).encode();
}
std::vector<uint8_t> encode_one(const NodeUp& m) {
  return MapBuilder("node_up").text("node", m.node).encode();
}
std::vector<uint8_t> encode_one(const NodeDown& m) {
  return MapBuilder("node_down").text("node", m.node).encode();
}
std::vector<uint8_t> encode_one(const PeerTunnel& m) {
  return MapBuilder("peer_tunnel").uint("tunnel", m.tunnel).text("source", m.source)
      .text("target", m.target).encode();
}
std::vector<uint8_t> encode_one(const PeerTunnelOk& m) {
  return MapBuilder("peer_tunnel_ok").uint("tunnel", m.tunnel)
      .uint("peer_tunnel", m.peer_tunnel).encode();
}
std::vector<uint8_t> encode_one(const PeerTunnelError& m) {
  return MapBuilder("peer_tunnel_error").uint("tunnel", m.tunnel).text("reason", m.reason)
      .maybe_text("detail", m.detail).encode();
}
std::vector<uint8_t> encode_one(const ListNodes& m) {
  return MapBuilder("list_nodes").uint("id", m.id).maybe_text("after", m.after).encode();
}
std::vector<uint8_t> encode_one(const NodeList& m) {
  return MapBuilder("node_list").uint("id", m.id).uint("more", m.more ? 1 : 0)
      .text_map("nodes", m.nodes).encode();
}

// Typed access to a decoded map; the first failure sticks, so a parser
// reads every field and checks once at the end.
class Fields {
 public:
  explicit Fields(const Value& map) : map_(map) {}

  uint64_t uint(const char* key, uint64_t min, uint64_t max) {
    const Value* v = get(key, Value::Type::kUint, true);
    if (!v) return 0;
    if (v->uint < min || v->uint > max) bad(ParseError::kBadField, key);
    return v->uint;
  }
  uint64_t optional_uint(const char* key, uint64_t fallback, uint64_t max) {
    const Value* v = get(key, Value::Type::kUint, false);
    if (!v) return fallback;
    if (v->uint > max) bad(ParseError::kBadField, key);
    return v->uint;
  }
  std::string text(const char* key, size_t max, bool required = true) {
    const Value* v = get(key, Value::Type::kText, required);
    if (!v) return {};
    if (v->str.size() > max || (required && v->str.empty())) bad(ParseError::kBadField, key);
    return v->str;
  }
  std::string name(const char* key) {
    std::string s = text(key, kMaxNameSize);
    if (error_ == ParseError::kNone && !valid_name(s)) bad(ParseError::kBadField, key);
    return s;
  }
  Proof proof(const char* key) {
    Proof p{};
    const Value* v = get(key, Value::Type::kBytes, true);
    if (v && v->str.size() != p.size()) bad(ParseError::kBadField, key);
    else if (v) std::memcpy(p.data(), v->str.data(), p.size());
    return p;
  }
  // A map of node names to relay names (both valid_name()).
  std::vector<NodeEntry> node_entries(const char* key) {
    std::vector<NodeEntry> out;
    const Value* v = get(key, Value::Type::kMap, true);
    if (!v) return out;
    if (v->map.size() > kMaxListEntries) bad(ParseError::kBadField, key);
    for (const Value::Entry& e : v->map) {
      if (e.value.type != Value::Type::kText || !valid_name(e.key) || !valid_name(e.value.str))
        bad(ParseError::kBadField, key);
      out.push_back({e.key, e.value.str});
    }
    return out;
  }
  uint64_t request_id() { return uint("id", 1, UINT64_MAX); }
  uint32_t tunnel(const char* key = "tunnel") { return uint32_t(uint(key, 1, UINT32_MAX)); }

  bool finish(ParseResult& r) const {
    r.error = error_;
    r.detail = detail_;
    return error_ == ParseError::kNone;
  }

 private:
  const Value* get(const char* key, Value::Type type, bool required) {
    const Value* v = map_.find(key);
    if (!v) {
      if (required) bad(ParseError::kMissingField, key);
      return nullptr;
    }
    if (v->type != type) {
      bad(ParseError::kBadField, key);
      return nullptr;
    }
    return v;
  }
  void bad(ParseError e, const char* key) {
    if (error_ != ParseError::kNone) return;
    error_ = e;
    detail_ = key;
  }

  const Value& map_;
  ParseError error_ = ParseError::kNone;
  std::string detail_;
};

Message parse_identify(Fields& f) {
  Identify m;
  m.id = f.request_id();
  m.version = f.uint("v", 1, UINT32_MAX);
  m.name = f.name("name");
  m.proof = f.proof("proof");
  return m;
}
Message parse_identified(Fields& f) {
  Identified m;
  m.id = f.request_id();
  m.relay = f.name("relay");
  m.proof = f.proof("proof");
  m.max_packet = f.optional_uint("max_packet", kMaxPacketSize, kMaxPacketSize);
  m.max_tunnels = f.optional_uint("max_tunnels", 0, UINT32_MAX);
  return m;
}
Message parse_request_error(Fields& f) {
  RequestError m;
  m.id = f.request_id();
  m.reason = f.text("reason", kMaxReasonSize);
  m.detail = f.text("detail", kMaxDetailSize, false);
  return m;
}
Message parse_tunnel_request(Fields& f) {
  TunnelRequest m;
  m.id = f.request_id();
  m.target = f.name("target");
  return m;
}
Message parse_tunnel_ok(Fields& f) {
  TunnelOk m;
  m.id = f.request_id();
  m.tunnel = f.tunnel();
  return m;
}
Message parse_tunnel_error(Fields& f) {
  TunnelError m;
  m.id = f.request_id();
  m.reason = f.text("reason", kMaxReasonSize);
  m.detail = f.text("detail", kMaxDetailSize, false);
  return m;
}
Message parse_tunnel_notify(Fields& f) {
  TunnelNotify m;
  m.tunnel = f.tunnel();
  m.source = f.name("source");
  return m;
}
Message parse_tunnel_close(Fields& f) {
  TunnelClose m;
  m.tunnel = f.tunnel();
  m.reason = f.text("reason", kMaxReasonSize, false);
  return m;
}

Message parse_peer_identify(Fields& f) {
  PeerIdentify m;
  m.id = f.request_id();
  m.version = f.uint("v", 1, UINT32_MAX);
  m.relay = f.name("relay");
  m.proof = f.proof("proof");
  return m;
}
Message parse_peer_identified(Fields& f) {
  PeerIdentified m;
  m.id = f.request_id();
  m.relay = f.name("relay");
  m.proof = f.proof("proof");
  return m;
}
Message parse_node_up(Fields& f) { return NodeUp{f.name("node")}; }
Message parse_node_down(Fields& f) { return NodeDown{f.name("node")}; }
Message parse_peer_tunnel(Fields& f) {
  PeerTunnel m;
  m.tunnel = f.tunnel();
  m.source = f.name("source");
  m.target = f.name("target");
  return m;
}
Message parse_peer_tunnel_ok(Fields& f) {
  PeerTunnelOk m;
  m.tunnel = f.tunnel();
  m.peer_tunnel = f.tunnel("peer_tunnel");
  return m;
}
Message parse_peer_tunnel_error(Fields& f) {
  PeerTunnelError m;
  m.tunnel = f.tunnel();
  m.reason = f.text("reason", kMaxReasonSize);
  m.detail = f.text("detail", kMaxDetailSize, false);
  return m;
}
Message parse_list_nodes(Fields& f) {
  ListNodes m;
  m.id = f.request_id();
  m.after = f.text("after", kMaxNameSize, false);
  return m;
}
Message parse_node_list(Fields& f) {
  NodeList m;
  m.id = f.request_id();
  m.more = f.uint("more", 0, 1) == 1;
  m.nodes = f.node_entries("nodes");
  return m;
}

struct Parser {
  const char* type;
  Message (*parse)(Fields&);
};
constexpr Parser kParsers[] = {
    {"identify", parse_identify},
    {"identified", parse_identified},
    {"error", parse_request_error},
    {"tunnel_request", parse_tunnel_request},
    {"tunnel_ok", parse_tunnel_ok},
    {"tunnel_error", parse_tunnel_error},
    {"tunnel_notify", parse_tunnel_notify},
    {"tunnel_close", parse_tunnel_close},
    {"peer_identify", parse_peer_identify},
    {"peer_identified", parse_peer_identified},
    {"node_up", parse_node_up},
    {"node_down", parse_node_down},
    {"peer_tunnel", parse_peer_tunnel},
    {"peer_tunnel_ok", parse_peer_tunnel_ok},
    {"peer_tunnel_error", parse_peer_tunnel_error},
    {"list_nodes", parse_list_nodes},
    {"node_list", parse_node_list},
};

static_assert(std::size(kParsers) == std::variant_size_v<Message>);

ParseResult failed(ParseError e, std::string detail) {
  ParseResult r;
  r.error = e;
  r.detail = std::move(detail);
  return r;
}

}  // namespace

const char* message_name(const Message& m) {
  // Same order as kParsers and the variant.
  return kParsers[m.index()].type;
}

std::vector<uint8_t> encode(const Message& m) {
  return std::visit([](const auto& x) { return encode_one(x); }, m);
}

Bytes encode_frame(const Message& m) {
  std::vector<uint8_t> payload = encode(m);
  iovec iov{payload.data(), payload.size()};
  std::span<const iovec> one(&iov, 1);
  return encode_frames(std::span<const std::span<const iovec>>(&one, 1));
}

const char* parse_error_name(ParseError e) {
  switch (e) {
    case ParseError::kNone: return "none";
    case ParseError::kCbor: return "bad_cbor";
    case ParseError::kNotAMap: return "not_a_map";
    case ParseError::kUnknownType: return "unknown_type";
    case ParseError::kMissingField: return "missing_field";
    case ParseError::kBadField: return "bad_field";
  }
  return "unknown";
}

std::string ParseResult::describe() const {
  std::string s = parse_error_name(error);
  if (!detail.empty()) s += ": " + detail;
  return s;
}

ParseResult parse(std::span<const uint8_t> payload) {
  cbor::DecodeResult d = cbor::decode(payload, kControlLimits);
  if (d.error != cbor::Error::kNone)
    return failed(ParseError::kCbor, cbor::error_name(d.error));
  if (d.value.type != Value::Type::kMap) return failed(ParseError::kNotAMap, "");
  const Value* t = d.value.find("t");
  if (!t) return failed(ParseError::kMissingField, "t");
  if (t->type != Value::Type::kText) return failed(ParseError::kBadField, "t");
  for (const Parser& p : kParsers) {
    if (t->str != p.type) continue;
    Fields f(d.value);
    ParseResult r;
    r.message = p.parse(f);
    f.finish(r);
    return r;
  }
  return failed(ParseError::kUnknownType, t->str.substr(0, kMaxReasonSize));
}

// A CBOR text string's head is 1, 2 or 3 bytes for names this short.
size_t node_entry_size(const NodeEntry& e) {
  auto text = [](size_t n) { return n + (n < 24 ? 1 : n < 256 ? 2 : 3); };
  return text(e.node.size()) + text(e.relay.size());
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameSize) return false;
  for (char c : name)
    if (c <= ' ' || c > '~') return false;
  return true;
}

bool parse_tunnel_frame(std::span<const uint8_t> frame, uint32_t& tunnel,
                        std::span<const uint8_t>& packet) {
  if (frame.size() <= kTunnelHeaderSize || frame.size() > kMaxDataFrame) return false;
  tunnel = uint32_t(frame[0]) << 24 | uint32_t(frame[1]) << 16 |
           uint32_t(frame[2]) << 8 | frame[3];
  packet = frame.subspan(kTunnelHeaderSize);
  return true;
}

Bytes encode_tunnel_frame(uint32_t tunnel, std::span<const uint8_t> packet) {
  return encode_tunnel_frames(tunnel, std::span(&packet, 1));
}

Bytes encode_tunnel_frames(uint32_t tunnel,
                           std::span<const std::span<const uint8_t>> packets) {
  uint8_t header[kTunnelHeaderSize] = {uint8_t(tunnel >> 24), uint8_t(tunnel >> 16),
                                       uint8_t(tunnel >> 8), uint8_t(tunnel)};
  std::vector<iovec> iovs;
  iovs.reserve(2 * packets.size());
  for (std::span<const uint8_t> p : packets) {
    iovs.push_back({header, sizeof header});
    iovs.push_back({const_cast<uint8_t*>(p.data()), p.size()});
  }
  std::vector<std::span<const iovec>> frames;
  frames.reserve(packets.size());
  for (size_t i = 0; i < packets.size(); ++i) frames.emplace_back(&iovs[2 * i], 2);
  return encode_frames(frames);
}

Proof make_realm_proof(std::span<const uint8_t> exporter, std::string_view role,
                       std::string_view name, std::string_view secret) {
  return make_session_proof(exporter, role, name, secret);
}

}  // namespace macula::relay
