#include "relay_metrics.h"

#include <map>

namespace macula::relay {
namespace {

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const char* name, uint64_t v) {
  out += name;
  out += ' ' + std::to_string(v) + '\n';
}

void metric(std::string& out, const char* name, const char* type, const char* help,
            uint64_t v) {
  family(out, name, type, help);
  sample(out, name, v);
}

// `known` labels first (at 0 if unseen), then any others that occurred.
void labelled(std::string& out, const char* name, const char* help, const char* label,
              std::map<std::string, uint64_t> counts,
              std::initializer_list<const char*> known) {
  family(out, name, "counter", help);
  for (const char* k : known) counts.try_emplace(k, 0);
  for (const auto& [k, v] : counts)
    out += std::string(name) + '{' + label + "=\"" + k + "\"} " + std::to_string(v) + '\n';
}

}  // namespace

std::string render_prometheus(const RelayMetrics& m, const EndpointStats& e) {
  std::string out;
  metric(out, "macula_relay_connections", "gauge",
         "QUIC connections open now, identified or not.", m.connections);
  metric(out, "macula_relay_nodes", "gauge", "Nodes identified now.", m.nodes);
  metric(out, "macula_relay_tunnels", "gauge", "Tunnels open now.", m.tunnels);
  metric(out, "macula_relay_peers", "gauge", "Relays of the mesh linked now.", m.peers);
  metric(out, "macula_relay_remote_nodes", "gauge",
         "Nodes held by the linked relays, reachable through them.", m.remote_nodes);
  metric(out, "macula_relay_connections_total", "counter",
         "Connections accepted since start.", m.connections_total);
  metric(out, "macula_relay_tunnels_total", "counter", "Tunnels opened since start.",
         m.tunnels_total);
  metric(out, "macula_relay_packets_forwarded_total", "counter",
         "Tunnel packets forwarded.", m.packets_forwarded);
  metric(out, "macula_relay_bytes_forwarded_total", "counter",
         "Tunnel packet bytes forwarded (tunnel headers excluded).", m.bytes_forwarded);
  labelled(out, "macula_relay_drops_total", "Tunnel packets dropped, by reason.", "reason",
           m.drops, {reason::kUnknownTunnel, "congested", "closed"});
  labelled(out, "macula_relay_rejections_total",
           "Requests and connections refused, by reason.", "reason", m.rejections,
           {reason::kBadProof, reason::kNameTaken, reason::kUnsupportedVersion,
            reason::kAlreadyIdentified, reason::kNotIdentified, reason::kUnknownTarget,
            reason::kSelf, reason::kTunnelLimit, reason::kTargetTunnelLimit,
            reason::kIdentifyTimeout, reason::kFlood, reason::kBacklog, reason::kReplaced,
            reason::kTooManyConnections,
            reason::kRelayProof});
  labelled(out, "macula_relay_bad_frames_total",
           "Malformed frames (each ends its connection), by channel.", "kind",
           m.bad_frames, {"control", "data", "transport"});
  labelled(out, "macula_relay_unidentified_events_total",
           "Events of connections that had not identified, logged or not (their log "
           "lines are rate limited), by reason.",
           "reason", m.unidentified_events,
           {"accepted", reason::kBadProof, reason::kIdentifyTimeout, reason::kBadFrame,
            reason::kTooManyConnections});
  metric(out, "macula_relay_udp_dropped_total", "counter",
         "UDP datagrams dropped before reaching a connection.", e.dropped_packets);
  metric(out, "macula_relay_stateless_resets_total", "counter",
         "Stateless resets sent for unknown connections.", e.stateless_resets);
  metric(out, "macula_relay_failed_handshakes_total", "counter",
         "Peers' connections that ended before their QUIC/TLS handshake completed "
         "(a refused certificate or ALPN, a timeout, a protocol error).",
         e.failed_handshakes);
  return out;
}

}  // namespace macula::relay
