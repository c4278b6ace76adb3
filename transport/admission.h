// Which new connections an endpoint takes on. A connection is "half-open"
// from its first Initial until its peer is authenticated (the cookie proof
// or the relay's identify; Connection::authenticate), or until it is gone:
// that is the state a stranger can make us hold. Half-open connections are
// bounded overall and per source (an IPv4 address, an IPv6 /64). Once
// `retry_threshold` are half-open, an Initial without a valid Retry token
// gets a stateless Retry (RFC 9000 section 8.1) and nothing else: a
// spoofed or replayed Initial then costs one small packet. A peer whose
// address is validated (it echoed a token) is never turned away by the
// bounds: it takes the place of the oldest half-open connection of its
// source (or of all, when the overall bound is reached), so strangers
// holding slots cannot lock out a node that is about to prove itself.
//
// Thread: the endpoint's loop lock (I/O thread or a reading scheduler).
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <map>
#include <set>
#include <unordered_map>

#include "udp_socket.h"

namespace macula {

struct AdmissionConfig {
  size_t max_half_open = 512;
  size_t max_half_open_per_source = 64;
  // Half-open connections above which a token is required; 0: always.
  size_t retry_threshold = 16;
  uint64_t token_lifetime_ns = 10ull * 1000000000;
};

struct AdmissionStats {
  uint64_t half_open = 0;       // gauge
  uint64_t retries = 0;         // Retry packets sent
  uint64_t validated = 0;       // connections accepted with a valid token
  uint64_t bad_tokens = 0;      // Initials with a token that did not verify
  uint64_t evicted = 0;         // half-open connections closed for a validated newcomer
};

class Admission {
 public:
  enum class Verdict { kAccept, kRetry, kDrop };
  struct Decision {
    Verdict verdict = Verdict::kDrop;
    bool validated = false;  // the token proved the peer's address
    ngtcp2_cid odcid{};      // validated: the DCID of the client's first Initial
    uint64_t evict = 0;      // kAccept: close this half-open connection first (0: none)
  };

  // `secret`: 32 bytes that key the tokens (random per endpoint run).
  Admission(const AdmissionConfig& config, const uint8_t* secret);

  // What to do with an Initial (decoded by ngtcp2_accept) from `remote`.
  Decision judge(const ngtcp2_pkt_hd& hd, const Address& remote, uint64_t now);
  // A Retry answering `hd` into `buf`, with a new connection ID of
  // `cidlen` bytes; its size, 0 on failure.
  size_t write_retry(const ngtcp2_pkt_hd& hd, const Address& remote, size_t cidlen,
                     uint64_t now, uint8_t* buf, size_t len);

  // Connection `id` from `remote` was accepted: it is half-open.
  void opened(uint64_t id, const Address& remote);
  // Connection `id` is authenticated or gone; no-op if not half-open.
  void settled(uint64_t id);
  size_t half_open() const { return half_open_.size(); }
  AdmissionStats stats() const;

  // The per-source key of an address (4 bytes of IPv4, 8 of IPv6).
  static std::string source_key(const Address& a);

 private:
  const AdmissionConfig config_;
  uint8_t secret_[32];
  // Connection ids grow with time: the smallest is the oldest.
  std::map<uint64_t, std::string> half_open_;  // id -> source
  std::unordered_map<std::string, std::set<uint64_t>> per_source_;
  AdmissionStats stats_;
};

}  // namespace macula
