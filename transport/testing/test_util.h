// Helpers shared by the core tests: temporary directories, small files and
// a throwaway PKI generated with GnuTLS at test time (so the tests depend
// neither on openssl nor on key material checked into the repository).
#pragma once

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace macula::test {

// Polls `pred` until it holds or `timeout` passes; for state the core
// exposes without events (stats, counters).
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/macula_test_XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Throws on a GnuTLS error so a broken fixture fails the test loudly.
inline void check_gnutls(int rv, const char* what) {
  if (rv < 0)
    throw std::runtime_error(std::string(what) + ": " + gnutls_strerror(rv));
}

// A private key and a certificate, owned, with PEM and DER exports.
class Credential {
 public:
  Credential() {
    check_gnutls(gnutls_x509_privkey_init(&key_), "privkey_init");
    check_gnutls(gnutls_x509_crt_init(&crt_), "crt_init");
    // ECDSA P-256: generated in milliseconds, unlike RSA.
    check_gnutls(gnutls_x509_privkey_generate(
                     key_, GNUTLS_PK_ECDSA,
                     GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
                 "privkey_generate");
  }
  ~Credential() {
    gnutls_x509_crt_deinit(crt_);
    gnutls_x509_privkey_deinit(key_);
  }
  Credential(const Credential&) = delete;
  Credential& operator=(const Credential&) = delete;

  gnutls_x509_privkey_t key() const { return key_; }
  gnutls_x509_crt_t crt() const { return crt_; }

  std::string key_pem() const {
    gnutls_datum_t d{};
    check_gnutls(gnutls_x509_privkey_export2(key_, GNUTLS_X509_FMT_PEM, &d),
                 "privkey_export2");
    return take(d);
  }
  std::string cert_pem() const {
    gnutls_datum_t d{};
    check_gnutls(gnutls_x509_crt_export2(crt_, GNUTLS_X509_FMT_PEM, &d),
                 "crt_export2");
    return take(d);
  }
  std::vector<uint8_t> cert_der() const {
    gnutls_datum_t d{};
    check_gnutls(gnutls_x509_crt_export2(crt_, GNUTLS_X509_FMT_DER, &d),
                 "crt_export2");
    std::string s = take(d);
    return std::vector<uint8_t>(s.begin(), s.end());
  }

  // Writes `<stem>_key.pem` and `<stem>_cert.pem` under `dir`; returns the
  // paths through `key_path` and `cert_path`.
  void write(const TempDir& dir, const std::string& stem,
             std::string& key_path, std::string& cert_path) const {
    key_path = dir.file(stem + "_key.pem");
    cert_path = dir.file(stem + "_cert.pem");
    write_file(key_path, key_pem());
    write_file(cert_path, cert_pem());
  }

  // Fields every certificate here shares: version, serial, validity, CN,
  // and the subject key id (so issued certificates can point back at it).
  void set_common(const std::string& cn, uint8_t serial) {
    time_t now = time(nullptr);
    unsigned char serial_bytes[] = {0x01, serial};
    check_gnutls(gnutls_x509_crt_set_version(crt_, 3), "set_version");
    check_gnutls(gnutls_x509_crt_set_serial(crt_, serial_bytes, sizeof serial_bytes),
                 "set_serial");
    check_gnutls(gnutls_x509_crt_set_activation_time(crt_, now - 3600),
                 "set_activation_time");
    check_gnutls(gnutls_x509_crt_set_expiration_time(crt_, now + 24 * 3600),
                 "set_expiration_time");
    check_gnutls(gnutls_x509_crt_set_dn_by_oid(crt_, GNUTLS_OID_X520_COMMON_NAME,
                                               0, cn.data(), cn.size()),
                 "set_dn");
    check_gnutls(gnutls_x509_crt_set_key(crt_, key_), "set_key");
    unsigned char id[64];
    size_t id_size = sizeof id;
    check_gnutls(gnutls_x509_crt_get_key_id(crt_, 0, id, &id_size), "get_key_id");
    check_gnutls(gnutls_x509_crt_set_subject_key_id(crt_, id, id_size),
                 "set_subject_key_id");
  }

 private:
  static std::string take(gnutls_datum_t& d) {
    std::string s(reinterpret_cast<char*>(d.data), d.size);
    gnutls_free(d.data);
    return s;
  }

  gnutls_x509_privkey_t key_ = nullptr;
  gnutls_x509_crt_t crt_ = nullptr;
};

// A self-signed CA that issues leaf certificates for both TLS roles.
class TestCa {
 public:
  explicit TestCa(const std::string& name) {
    ca_.set_common(name, 1);
    check_gnutls(gnutls_x509_crt_set_basic_constraints(ca_.crt(), 1, -1),
                 "set_basic_constraints");
    check_gnutls(gnutls_x509_crt_set_key_usage(
                     ca_.crt(), GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN),
                 "set_key_usage");
    check_gnutls(gnutls_x509_crt_sign2(ca_.crt(), ca_.crt(), ca_.key(),
                                       GNUTLS_DIG_SHA256, 0),
                 "self-sign");
  }

  std::string cert_pem() const { return ca_.cert_pem(); }

  // A leaf with key purposes server and client and the given SANs (IP
  // literals and DNS names).
  std::unique_ptr<Credential> issue(const std::string& cn,
                                    const std::vector<std::string>& ips,
                                    const std::vector<std::string>& dns) {
    auto leaf = std::make_unique<Credential>();
    leaf->set_common(cn, ++serial_);
    gnutls_x509_crt_t crt = leaf->crt();
    check_gnutls(gnutls_x509_crt_set_basic_constraints(crt, 0, -1),
                 "set_basic_constraints");
    check_gnutls(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE),
                 "set_key_usage");
    check_gnutls(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0),
                 "set_key_purpose server");
    check_gnutls(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0),
                 "set_key_purpose client");
    for (const std::string& ip : ips) add_ip(crt, ip);
    for (const std::string& name : dns)
      check_gnutls(gnutls_x509_crt_set_subject_alt_name(
                       crt, GNUTLS_SAN_DNSNAME, name.data(), name.size(),
                       GNUTLS_FSAN_APPEND),
                   "set_subject_alt_name dns");
    check_gnutls(gnutls_x509_crt_sign2(crt, ca_.crt(), ca_.key(), GNUTLS_DIG_SHA256, 0),
                 "sign leaf");
    return leaf;
  }

 private:
  static void add_ip(gnutls_x509_crt_t crt, const std::string& ip) {
    unsigned char buf[16];
    unsigned len = 0;
    if (inet_pton(AF_INET, ip.c_str(), buf) == 1) len = 4;
    else if (inet_pton(AF_INET6, ip.c_str(), buf) == 1) len = 16;
    else throw std::runtime_error("not an IP literal: " + ip);
    check_gnutls(gnutls_x509_crt_set_subject_alt_name(
                     crt, GNUTLS_SAN_IPADDRESS, buf, len, GNUTLS_FSAN_APPEND),
                 "set_subject_alt_name ip");
  }

  Credential ca_;
  uint8_t serial_ = 1;
};

}  // namespace macula::test
