// The relay protocol (docs/relay-protocol.md): what nodes and a
// macula-relay say to each other over one QUIC connection with ALPN
// "macula-relay".
//
// Control channel: one CBOR map per frame (frames are the core's u32
// big-endian length prefix). Every request carries a request id chosen by
// the node, and the relay's reply echoes it, so replies are matched to
// requests, never to arrival order. Data channel: each frame is a u32
// big-endian tunnel id followed by one opaque packet, which the relay
// forwards unread to the tunnel's other end.
//
// Pure functions and plain values: any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "bytes.h"
#include "cbor.h"
#include "session_proof.h"

namespace macula::relay {

inline constexpr char kAlpn[] = "macula-relay";
inline constexpr uint16_t kDefaultPort = 4434;
inline constexpr uint64_t kProtocolVersion = 1;
// QUIC PINGs from both ends, so NAT mappings stay open and a vanished
// peer is noticed by the idle timeout.
inline constexpr uint64_t kKeepAliveMs = 10000;

// Limits every implementation enforces on what it receives.
inline constexpr size_t kMaxMessageSize = 4096;  // CBOR bytes of one control frame
inline constexpr size_t kMaxNameSize = 255;      // node or relay name
inline constexpr size_t kMaxReasonSize = 64;     // an error token
inline constexpr size_t kMaxDetailSize = 256;    // free text beside it
inline constexpr size_t kTunnelHeaderSize = 4;
inline constexpr size_t kMaxPacketSize = 65535;  // one tunnel packet
inline constexpr size_t kMaxDataFrame = kTunnelHeaderSize + kMaxPacketSize;
// The CBOR limits control messages are decoded under.
inline constexpr cbor::Limits kControlLimits{kMaxMessageSize, 2, 32, 512};

// Error reasons (the `reason` of error, tunnel_error and tunnel_close, and
// the text of the connection close). Receivers must accept reasons they do
// not know.
namespace reason {
inline constexpr char kBadProof[] = "bad_proof";
inline constexpr char kBadName[] = "bad_name";
inline constexpr char kNameTaken[] = "name_taken";
inline constexpr char kUnsupportedVersion[] = "unsupported_version";
inline constexpr char kAlreadyIdentified[] = "already_identified";
inline constexpr char kNotIdentified[] = "not_identified";
inline constexpr char kUnknownTarget[] = "unknown_target";
inline constexpr char kSelf[] = "self";
inline constexpr char kTunnelLimit[] = "tunnel_limit";
inline constexpr char kTargetTunnelLimit[] = "target_tunnel_limit";
inline constexpr char kUnknownTunnel[] = "unknown_tunnel";
inline constexpr char kUnexpected[] = "unexpected_message";
inline constexpr char kClosed[] = "closed";        // the other end closed it
inline constexpr char kPeerGone[] = "peer_gone";   // the other end disconnected
inline constexpr char kShutdown[] = "relay_shutdown";
inline constexpr char kBadFrame[] = "bad_frame";
inline constexpr char kIdentifyTimeout[] = "identify_timeout";
inline constexpr char kFlood[] = "control_flood";
inline constexpr char kBacklog[] = "backlog";  // the node does not read what it is sent
inline constexpr char kTooManyConnections[] = "too_many_connections";  // from one IP
inline constexpr char kReplaced[] = "replaced";  // silent holder of a name a node claimed
inline constexpr char kRelayProof[] = "relay_proof";  // a relay failed to prove the realm
inline constexpr char kDuplicateLink[] = "duplicate_link";  // two links join the same relays
inline constexpr char kPeerTimeout[] = "peer_timeout";
}  // namespace reason

// Application error codes of a connection close by the relay (the close
// text carries the reason token, and for bad frames what was wrong).
enum class CloseCode : uint64_t {
  kNormal = 0,
  kBadFrame = 0x20,
  kBadProof = 0x21,
  kNameTaken = 0x22,
  kBadName = 0x23,
  kUnsupportedVersion = 0x24,
  kIdentifyTimeout = 0x25,
  kShutdown = 0x26,
  kFlood = 0x27,
  kRelayProof = 0x28,  // a node closes: the relay failed to prove itself
  kBacklog = 0x29,
  kTooManyConnections = 0x2a,
};

// node -> relay. `proof` = make_realm_proof(exporter, kClientRole, name).
struct Identify {
  uint64_t id = 0;
  uint64_t version = kProtocolVersion;
  std::string name;
  Proof proof{};
};
// relay -> node. `proof` = make_realm_proof(exporter, kServerRole, relay).
struct Identified {
  uint64_t id = 0;
  std::string relay;
  Proof proof{};
  uint64_t max_packet = kMaxPacketSize;
  uint64_t max_tunnels = 0;  // this node's tunnel limit
};
// relay -> node: a request other than tunnel_request failed; the
// connection stays open.
struct RequestError {
  uint64_t id = 0;
  std::string reason;
  std::string detail;
};
// node -> relay: a tunnel to the node registered as `target`.
struct TunnelRequest {
  uint64_t id = 0;
  std::string target;
};
struct TunnelOk {
  uint64_t id = 0;
  uint32_t tunnel = 0;
};
struct TunnelError {
  uint64_t id = 0;
  std::string reason;
  std::string detail;
};
// relay -> target: `source` opened tunnel `tunnel` to you.
struct TunnelNotify {
  uint32_t tunnel = 0;
  std::string source;
};
// Either direction, no reply: the tunnel is gone. From a node it asks the
// relay to close; from the relay it says the tunnel was closed. Between
// relays `tunnel` is the receiving relay's id of the tunnel.
struct TunnelClose {
  uint32_t tunnel = 0;
  std::string reason;
};

// node -> relay: which nodes of the realm are online at this relay and at
// the relays linked to it. One page: names after `after` in byte order
// (empty: from the start). Only an identified node may ask.
struct ListNodes {
  uint64_t id = 0;
  std::string after;
};
// One online node and the relay that holds it (its home relay).
struct NodeEntry {
  std::string node;
  std::string relay;
  bool operator==(const NodeEntry&) const = default;
};
// relay -> node: the reply to list_nodes, in byte order of name, at most
// kMaxListEntries and kMaxMessageSize bytes. `more`: ask again with
// `after` = the last name of this page.
struct NodeList {
  uint64_t id = 0;
  std::vector<NodeEntry> nodes;
  bool more = false;
};
// Entries of one node_list: what kControlLimits' 32 items leave beside the
// message's own fields (t, id, more, nodes).
inline constexpr size_t kMaxListEntries = 11;
// Encoded bytes of a node_list with no entries beyond this bound, and
// what one entry adds, so a relay can fill a page up to kMaxMessageSize.
inline constexpr size_t kNodeListOverhead = 64;
size_t node_entry_size(const NodeEntry& e);

// ---- Between the relays of a mesh (docs/relay-protocol.md, "Mesh") ----

// Dialling relay -> dialled relay. `proof` = make_realm_proof(exporter,
// kPeerClientRole, relay).
struct PeerIdentify {
  uint64_t id = 0;
  uint64_t version = kProtocolVersion;
  std::string relay;
  Proof proof{};
};
// The reply; `proof` = make_realm_proof(exporter, kPeerServerRole, relay).
struct PeerIdentified {
  uint64_t id = 0;
  std::string relay;
  Proof proof{};
};
// A node identified at (node_up) or left (node_down) the sending relay.
struct NodeUp {
  std::string node;
};
struct NodeDown {
  std::string node;
};
// Node `source`, at the sending relay, asks for a tunnel to `target`, at
// the receiving relay. `tunnel` is the sender's id for it.
struct PeerTunnel {
  uint32_t tunnel = 0;
  std::string source;
  std::string target;
};
// The reply: `tunnel` echoes the request, `peer_tunnel` is the replying
// relay's id for the same tunnel.
struct PeerTunnelOk {
  uint32_t tunnel = 0;
  uint32_t peer_tunnel = 0;
};
struct PeerTunnelError {
  uint32_t tunnel = 0;
  std::string reason;
  std::string detail;
};

using Message = std::variant<Identify, Identified, RequestError, TunnelRequest,
                             TunnelOk, TunnelError, TunnelNotify, TunnelClose,
                             PeerIdentify, PeerIdentified, NodeUp, NodeDown,
                             PeerTunnel, PeerTunnelOk, PeerTunnelError, ListNodes,
                             NodeList>;

// The wire name of a message ("identify", "tunnel_ok"...).
const char* message_name(const Message& m);

// The CBOR map of `m`, without the frame header.
std::vector<uint8_t> encode(const Message& m);
// `m` as one control frame (length prefix included), for
// ConnectionHandle::send(Channel::kControl, ..., 1).
Bytes encode_frame(const Message& m);

enum class ParseError {
  kNone,
  kCbor,         // detail: the CBOR error token
  kNotAMap,
  kUnknownType,  // detail: the type seen
  kMissingField, // detail: the field
  kBadField,     // detail: the field (wrong type, size or value)
};
const char* parse_error_name(ParseError e);

struct ParseResult {
  ParseError error = ParseError::kNone;
  std::string detail;
  Message message;

  bool ok() const { return error == ParseError::kNone; }
  // "bad_field: name", for logs and close reasons.
  std::string describe() const;
};

// Parses one control frame's payload. Unknown keys are ignored (newer
// peers may add fields); known keys must have the right type and size.
ParseResult parse(std::span<const uint8_t> payload);

// Node and relay names: 1..kMaxNameSize bytes of printable ASCII, no
// space (node names are `name@host`).
bool valid_name(std::string_view name);

// Data channel frame payload: `tunnel` then `packet` (1..kMaxPacketSize
// bytes). Returns false for anything shorter than a header plus one byte.
bool parse_tunnel_frame(std::span<const uint8_t> frame, uint32_t& tunnel,
                        std::span<const uint8_t>& packet);
// A complete data-channel frame (length prefix, tunnel id, packet).
Bytes encode_tunnel_frame(uint32_t tunnel, std::span<const uint8_t> packet);
// Consecutive data-channel frames, one per packet, all on `tunnel`, in one
// buffer (one send for a batch).
Bytes encode_tunnel_frames(uint32_t tunnel,
                           std::span<const std::span<const uint8_t>> packets);

inline constexpr char kClientRole[] = "client";
inline constexpr char kServerRole[] = "server";
// The roles of the two relays of a mesh link (dialling, dialled).
inline constexpr char kPeerClientRole[] = "relay-client";
inline constexpr char kPeerServerRole[] = "relay-server";
// The realm-secret proof that `name` belongs to the realm: a session
// proof (session_proof.h) with the realm secret, bound to one TLS session,
// so it can be neither replayed nor relayed by a man in the middle.
// Compare with proof_matches() (constant time).
Proof make_realm_proof(std::span<const uint8_t> exporter, std::string_view role,
                       std::string_view name, std::string_view secret);

}  // namespace macula::relay
