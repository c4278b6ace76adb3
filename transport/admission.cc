#include "admission.h"

#include <ngtcp2/ngtcp2_crypto.h>

#include <cstring>

#include <gnutls/crypto.h>

namespace macula {

Admission::Admission(const AdmissionConfig& config, const uint8_t* secret)
    : config_(config) {
  std::memcpy(secret_, secret, sizeof secret_);
}

std::string Admission::source_key(const Address& a) {
  const auto* p = reinterpret_cast<const uint8_t*>(&a.storage);
  if (a.storage.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(p);
    return std::string(reinterpret_cast<const char*>(&in->sin_addr), 4);
  }
  auto* in6 = reinterpret_cast<const sockaddr_in6*>(p);
  const auto* b = reinterpret_cast<const char*>(&in6->sin6_addr);
  // A v4-mapped peer is one IPv4 host; a v6 host usually owns a /64.
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return std::string(b + 12, 4);
  return std::string(b, 8);
}

Admission::Decision Admission::judge(const ngtcp2_pkt_hd& hd, const Address& remote,
                                     uint64_t now) {
  Decision d;
  if (hd.token.len > 0 && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
    if (ngtcp2_crypto_verify_retry_token(&d.odcid, hd.token.base, hd.token.len, secret_,
                                         sizeof secret_, hd.version, remote.sa(), remote.len,
                                         &hd.dcid, config_.token_lifetime_ns, now) != 0) {
      // Forged, replayed from elsewhere, or stale: nothing to answer.
      ++stats_.bad_tokens;
      return d;
    }
    d.validated = true;
  }
  // Other tokens (NEW_TOKEN) are not issued here: treated as none.
  auto src = per_source_.find(source_key(remote));
  bool source_full = src != per_source_.end() &&
                     src->second.size() >= config_.max_half_open_per_source;
  bool all_full = half_open_.size() >= config_.max_half_open;
  if (!d.validated && (config_.retry_threshold == 0 || source_full || all_full ||
                       half_open_.size() >= config_.retry_threshold)) {
    d.verdict = Verdict::kRetry;
    return d;
  }
  if (source_full || all_full) {
    // Only a validated peer gets here: it displaces the oldest stranger.
    ++stats_.evicted;
    d.evict = source_full ? *src->second.begin() : half_open_.begin()->first;
  }
  if (d.validated) ++stats_.validated;
  d.verdict = Verdict::kAccept;
  return d;
}

size_t Admission::write_retry(const ngtcp2_pkt_hd& hd, const Address& remote,
                              size_t cidlen, uint64_t now, uint8_t* buf, size_t len) {
  ngtcp2_cid scid;
  scid.datalen = cidlen;
  gnutls_rnd(GNUTLS_RND_NONCE, scid.data, scid.datalen);
  uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN];
  ngtcp2_ssize tokenlen = ngtcp2_crypto_generate_retry_token(
      token, secret_, sizeof secret_, hd.version, remote.sa(), remote.len, &scid, &hd.dcid,
      now);
  if (tokenlen < 0) return 0;
  ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, len, hd.version, &hd.scid, &scid, &hd.dcid,
                                             token, size_t(tokenlen));
  if (n <= 0) return 0;
  ++stats_.retries;
  return size_t(n);
}

void Admission::opened(uint64_t id, const Address& remote) {
  std::string key = source_key(remote);
  if (half_open_.emplace(id, key).second) per_source_[key].insert(id);
}

void Admission::settled(uint64_t id) {
  auto it = half_open_.find(id);
  if (it == half_open_.end()) return;
  auto src = per_source_.find(it->second);
  if (src != per_source_.end()) {
    src->second.erase(id);
    if (src->second.empty()) per_source_.erase(src);
  }
  half_open_.erase(it);
}

AdmissionStats Admission::stats() const {
  AdmissionStats s = stats_;
  s.half_open = half_open_.size();
  return s;
}

}  // namespace macula
