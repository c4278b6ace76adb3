#include "node_identity.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <memory>

namespace macula {
namespace {

constexpr long kValiditySeconds = 10L * 365 * 24 * 3600;

struct Pem {
  std::string key;
  std::string cert;
};

bool exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

bool make_dirs(const std::string& dir, std::string& error) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      error = "cannot create certificate directory " + part + ": " + strerror(errno);
      return false;
    }
  }
  return true;
}

std::string datum_string(gnutls_datum_t& d) {
  std::string s(reinterpret_cast<char*>(d.data), d.size);
  gnutls_free(d.data);
  return s;
}

bool generate(Pem& out) {
  gnutls_x509_privkey_t key = nullptr;
  gnutls_x509_crt_t crt = nullptr;
  bool ok = gnutls_x509_privkey_init(&key) == 0 &&
            gnutls_x509_privkey_generate(
                key, GNUTLS_PK_ECDSA,
                GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0) == 0 &&
            gnutls_x509_crt_init(&crt) == 0;
  unsigned char serial[16];
  gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial);
  serial[0] &= 0x7f;
  time_t now = time(nullptr);
  const char cn[] = "macula-node";
  ok = ok && gnutls_x509_crt_set_version(crt, 3) == 0 &&
       gnutls_x509_crt_set_serial(crt, serial, sizeof serial) == 0 &&
       gnutls_x509_crt_set_activation_time(crt, now - 3600) == 0 &&
       gnutls_x509_crt_set_expiration_time(crt, now + kValiditySeconds) == 0 &&
       gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn,
                                     sizeof cn - 1) == 0 &&
       gnutls_x509_crt_set_key(crt, key) == 0 &&
       gnutls_x509_crt_set_basic_constraints(crt, 0, -1) == 0 &&
       gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE) == 0 &&
       gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0) == 0 &&
       gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0) == 0 &&
       gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0) == 0;
  gnutls_datum_t kd{}, cd{};
  ok = ok && gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &kd) == 0;
  if (ok) out.key = datum_string(kd);
  ok = ok && gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &cd) == 0;
  if (ok) out.cert = datum_string(cd);
  if (crt) gnutls_x509_crt_deinit(crt);
  if (key) gnutls_x509_privkey_deinit(key);
  return ok;
}

bool write_new(const std::string& path, const std::string& data, mode_t mode,
               std::string& error) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    error = "cannot create " + path + ": " + strerror(errno);
    return false;
  }
  bool ok = write(fd, data.data(), data.size()) == ssize_t(data.size());
  ok = (fsync(fd) == 0) && ok;
  close(fd);
  if (!ok) error = "cannot write " + path;
  return ok;
}

// Writes both files under temporary names, then links them into place so
// a concurrent starter sees either nothing or a complete pair.
bool create_pair(const IdentityFiles& files, std::string& error) {
  Pem pem;
  if (!generate(pem)) {
    error = "cannot generate the node key and certificate";
    return false;
  }
  std::string suffix = ".tmp." + std::to_string(getpid());
  std::string tmp_key = files.key_path + suffix, tmp_cert = files.cert_path + suffix;
  bool ok = write_new(tmp_key, pem.key, 0600, error) &&
            write_new(tmp_cert, pem.cert, 0644, error);
  if (ok && link(tmp_cert.c_str(), files.cert_path.c_str()) == 0) {
    if (link(tmp_key.c_str(), files.key_path.c_str()) != 0 && errno != EEXIST) {
      error = "cannot create " + files.key_path + ": " + strerror(errno);
      ok = false;
    }
  }
  unlink(tmp_key.c_str());
  unlink(tmp_cert.c_str());
  return ok;
}

}  // namespace

bool ensure_identity(const std::string& dir, IdentityFiles& out,
                     std::string& error) {
  if (dir.empty()) {
    error = "certificate directory is empty";
    return false;
  }
  if (!make_dirs(dir, error)) return false;
  IdentityFiles files{dir + "/node_key.pem", dir + "/node_cert.pem"};
  if (!exists(files.cert_path) && !exists(files.key_path) &&
      !create_pair(files, error))
    return false;
  // Another node may have linked the certificate but not yet the key.
  for (int i = 0; i < 50 && !exists(files.key_path); ++i) usleep(10000);
  for (const std::string& p : {files.key_path, files.cert_path}) {
    if (access(p.c_str(), R_OK) != 0) {
      error = "cannot read " + p + ": " + strerror(errno);
      return false;
    }
  }
  out = files;
  return true;
}

}  // namespace macula
