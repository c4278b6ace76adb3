#include "tls_context.h"

#include <arpa/inet.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <unistd.h>

#include <fstream>
#include <gnutls/crypto.h>
#include <sstream>

#include "node_identity.h"

namespace macula {
namespace {

// TLS 1.3 only; AES-GCM first (ChaCha20 is several times slower in this
// nettle build); X25519 then P-256.
constexpr char kPriority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:"
    "+CHACHA20-POLY1305:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:"
    "%DISABLE_TLS13_COMPAT_MODE";

bool readable(const std::string& path, const char* setting, std::string& error) {
  if (path.empty()) {
    error = std::string(setting) + " is required in CA mode";
    return false;
  }
  if (access(path.c_str(), R_OK) != 0) {
    error = std::string("cannot read ") + setting + " " + path;
    return false;
  }
  return true;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

std::unique_ptr<TlsContext> TlsContext::create(const TlsConfig& config,
                                               std::string& error) {
  std::string certfile = config.certfile, keyfile = config.keyfile;
  if (config.mode == TrustMode::kCa) {
    if (!readable(config.cacertfile, "macula_dist_cacertfile", error) ||
        !readable(certfile, "macula_dist_certfile", error) ||
        !readable(keyfile, "macula_dist_keyfile", error))
      return nullptr;
  } else if (certfile.empty() || keyfile.empty()) {
    IdentityFiles files;
    if (!ensure_identity(config.cert_dir, files, error)) {
      error = "macula_dist_cert_dir " + config.cert_dir + ": " + error;
      return nullptr;
    }
    certfile = files.cert_path;
    keyfile = files.key_path;
  }
  std::unique_ptr<TlsContext> ctx(new TlsContext());
  ctx->mode_ = config.mode;
  ctx->alpn_ = config.alpn;
  gnutls_certificate_allocate_credentials(&ctx->cred_);
  int rv = gnutls_certificate_set_x509_key_file(
      ctx->cred_, certfile.c_str(), keyfile.c_str(), GNUTLS_X509_FMT_PEM);
  if (rv < 0) {
    // Name the settings the files came from (the text of GnuTLS alone,
    // e.g. "The requested data were not available.", names nothing).
    bool given = !config.certfile.empty() && !config.keyfile.empty();
    error = (given ? "macula_dist_keyfile " + keyfile + " and macula_dist_certfile " + certfile
                   : "macula_dist_cert_dir " + config.cert_dir + " (" + keyfile + ", " +
                         certfile + ")") +
            ": cannot load the key with the certificate: " + gnutls_strerror(rv);
    return nullptr;
  }
  std::ifstream key_in(keyfile, std::ios::binary);
  std::stringstream key_bytes;
  key_bytes << key_in.rdbuf();
  std::string k = key_bytes.str();
  const char label[] = "macula stateless reset";
  gnutls_hmac_fast(GNUTLS_MAC_SHA256, k.data(), k.size(), label, sizeof label - 1,
                   ctx->reset_secret_);
  if (config.mode == TrustMode::kCa) {
    rv = gnutls_certificate_set_x509_trust_file(
        ctx->cred_, config.cacertfile.c_str(), GNUTLS_X509_FMT_PEM);
    if (rv <= 0) {
      error = "no CA certificate loaded from macula_dist_cacertfile " +
              config.cacertfile;
      return nullptr;
    }
  }
  return ctx;
}

TlsContext::~TlsContext() {
  if (cred_) gnutls_certificate_free_credentials(cred_);
}

gnutls_session_t TlsContext::new_session(Role role,
                                         const std::string& peer_host) const {
  gnutls_session_t s = nullptr;
  unsigned flags = role == Role::kClient ? GNUTLS_CLIENT : GNUTLS_SERVER;
  if (gnutls_init(&s, flags | GNUTLS_NO_END_OF_EARLY_DATA) != 0) return nullptr;
  int rv = gnutls_priority_set_direct(s, kPriority, nullptr);
  rv |= role == Role::kClient ? ngtcp2_crypto_gnutls_configure_client_session(s)
                              : ngtcp2_crypto_gnutls_configure_server_session(s);
  gnutls_datum_t alpn{(unsigned char*)alpn_.data(), unsigned(alpn_.size())};
  rv |= gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY);
  rv |= gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred_);
  if (role == Role::kServer) {
    // Mutual authentication always: a client without a certificate fails.
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
    if (mode_ == TrustMode::kCa) gnutls_session_set_verify_cert(s, nullptr, 0);
  } else {
    if (!peer_host.empty() && !is_ip_literal(peer_host))
      gnutls_server_name_set(s, GNUTLS_NAME_DNS, peer_host.data(), peer_host.size());
    if (mode_ == TrustMode::kCa) gnutls_session_set_verify_cert(s, peer_host.c_str(), 0);
  }
  if (rv != 0) {
    gnutls_deinit(s);
    return nullptr;
  }
  return s;
}

std::vector<uint8_t> peer_certificate(gnutls_session_t session) {
  unsigned n = 0;
  const gnutls_datum_t* certs = gnutls_certificate_get_peers(session, &n);
  if (!certs || n == 0) return {};
  return std::vector<uint8_t>(certs[0].data, certs[0].data + certs[0].size);
}

bool certificate_matches_host(const std::vector<uint8_t>& der,
                              const std::string& host) {
  if (der.empty()) return false;
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) != 0) return false;
  gnutls_datum_t d{const_cast<uint8_t*>(der.data()), unsigned(der.size())};
  bool ok = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) == 0 &&
            gnutls_x509_crt_check_hostname(crt, host.c_str()) != 0;
  gnutls_x509_crt_deinit(crt);
  return ok;
}

}  // namespace macula
