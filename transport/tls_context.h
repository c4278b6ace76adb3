// TLS 1.3 settings shared by every connection of an endpoint: the node's
// credentials, the trust mode and the cipher priority.
// Created once, read-only afterwards; new_session() is called by whoever
// holds the endpoint's loop lock (loop_owner.h).
#pragma once

#include <gnutls/gnutls.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace macula {

enum class Role { kClient, kServer };

inline constexpr char kAlpnName[] = "macula-dist";

enum class TrustMode {
  // Self-signed certificates; peers prove the Erlang cookie over a TLS
  // exporter before the distribution handshake (see cookie_proof.h).
  kCookie,
  // Both ends verify the peer chain against a CA; the client also checks
  // the server's host name.
  kCa,
  // No certificate check and no cookie binding. Only for explicit opt-in.
  kInsecure,
};

struct TlsConfig {
  TrustMode mode = TrustMode::kCookie;
  std::string cert_dir;    // kCookie/kInsecure: identity kept here (created)
  std::string cacertfile;  // kCa
  std::string certfile;    // kCa (also accepted in the other modes)
  std::string keyfile;
  std::string alpn = kAlpnName;  // another value only to test refusal
};


class TlsContext {
 public:
  // Loads or creates the credentials. On failure returns null and sets
  // `error` to one sentence naming the file or setting at fault.
  static std::unique_ptr<TlsContext> create(const TlsConfig& config,
                                            std::string& error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A configured session for one connection. `peer_host` (client only) is
  // the host of the node being dialled, checked against its certificate in
  // kCa mode. Returns null on failure.
  gnutls_session_t new_session(Role role, const std::string& peer_host) const;

  TrustMode mode() const { return mode_; }

  // 32 bytes derived from the node's private key: stable across restarts,
  // so a restarted node can reset its peers' stale connections.
  const uint8_t* reset_secret() const { return reset_secret_; }

 private:
  TlsContext() = default;
  TrustMode mode_ = TrustMode::kCookie;
  std::string alpn_;
  gnutls_certificate_credentials_t cred_ = nullptr;
  uint8_t reset_secret_[32] = {};
};

// Label of the TLS exporter value that cookie proofs are bound to.
inline constexpr char kExporterLabel[] = "EXPORTER-macula-dist-cookie";
inline constexpr size_t kExporterSize = 32;

// The peer certificate (DER) of a finished session; empty if none.
std::vector<uint8_t> peer_certificate(gnutls_session_t session);

// True when DER certificate `der` is valid for `host` (DNS name or IP).
bool certificate_matches_host(const std::vector<uint8_t>& der,
                              const std::string& host);

}  // namespace macula
