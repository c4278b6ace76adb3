#include "tls_context.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <string>

#include "test_util.h"

namespace macula {
namespace {

using test::TempDir;
using test::TestCa;
using test::write_file;

mode_t file_mode(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

bool same_secret(const TlsContext& a, const TlsContext& b) {
  return std::memcmp(a.reset_secret(), b.reset_secret(), 32) == 0;
}

std::unique_ptr<TlsContext> create(const TlsConfig& config, std::string& error) {
  error.clear();
  return TlsContext::create(config, error);
}

TEST(TlsContextCookie, CreatesAPrivateIdentityInAFreshDirectory) {
  TempDir tmp;
  TlsConfig config;
  config.cert_dir = tmp.file("certs/nested");  // does not exist yet
  std::string error;
  auto ctx = create(config, error);
  ASSERT_NE(ctx, nullptr) << error;
  EXPECT_EQ(ctx->mode(), TrustMode::kCookie);
  EXPECT_EQ(file_mode(config.cert_dir + "/node_key.pem"), 0600u);
  EXPECT_NE(file_mode(config.cert_dir + "/node_cert.pem"), 0u);
  EXPECT_EQ(file_mode(config.cert_dir), 0700u);
  EXPECT_NE(test::read_file(config.cert_dir + "/node_key.pem").find("PRIVATE KEY"),
            std::string::npos);
}

TEST(TlsContextCookie, SecondCreateReusesTheIdentity) {
  TempDir tmp;
  TlsConfig config;
  config.cert_dir = tmp.file("certs");
  std::string error;
  auto first = create(config, error);
  ASSERT_NE(first, nullptr) << error;
  std::string key = test::read_file(config.cert_dir + "/node_key.pem");
  auto second = create(config, error);
  ASSERT_NE(second, nullptr) << error;
  EXPECT_TRUE(same_secret(*first, *second));
  EXPECT_EQ(test::read_file(config.cert_dir + "/node_key.pem"), key);
}

TEST(TlsContextCookie, DifferentIdentitiesHaveDifferentResetSecrets) {
  TempDir tmp;
  TlsConfig a, b;
  a.cert_dir = tmp.file("a");
  b.cert_dir = tmp.file("b");
  std::string error;
  auto ca = create(a, error);
  ASSERT_NE(ca, nullptr) << error;
  auto cb = create(b, error);
  ASSERT_NE(cb, nullptr) << error;
  EXPECT_FALSE(same_secret(*ca, *cb));
}

TEST(TlsContextCookie, EmptyCertDirIsAnError) {
  TlsConfig config;
  std::string error;
  EXPECT_EQ(create(config, error), nullptr);
  EXPECT_FALSE(error.empty());
}

TEST(TlsContextCookie, UncreatableCertDirIsNamed) {
  TempDir tmp;
  write_file(tmp.file("plain"), "a file, not a directory");
  TlsConfig config;
  config.cert_dir = tmp.file("plain/certs");
  std::string error;
  EXPECT_EQ(create(config, error), nullptr);
  EXPECT_NE(error.find(tmp.file("plain")), std::string::npos) << error;
}

TEST(TlsContextCookie, GarbageKeyFileGivesAClearError) {
  TempDir tmp;
  TestCa ca("ca");
  auto leaf = ca.issue("leaf", {"127.0.0.1"}, {});
  std::string key, cert;
  leaf->write(tmp, "leaf", key, cert);
  write_file(key, "-----BEGIN PRIVATE KEY-----\nnot base64 at all\n"
                  "-----END PRIVATE KEY-----\n");
  TlsConfig config;
  config.certfile = cert;
  config.keyfile = key;
  std::string error;
  EXPECT_EQ(create(config, error), nullptr);
  EXPECT_NE(error.find(key), std::string::npos) << error;
}

// Helpers for CA mode: a CA, a leaf for 127.0.0.1/localhost, all on disk.
class TlsContextCa : public ::testing::Test {
 protected:
  void SetUp() override {
    auto leaf = ca_.issue("node", {"127.0.0.1"}, {"localhost"});
    leaf->write(tmp_, "node", config_.keyfile, config_.certfile);
    der_ = leaf->cert_der();
    config_.mode = TrustMode::kCa;
    config_.cacertfile = tmp_.file("ca.pem");
    write_file(config_.cacertfile, ca_.cert_pem());
  }

  TempDir tmp_;
  TestCa ca_{"test ca"};
  TlsConfig config_;
  std::vector<uint8_t> der_;
  std::string error_;
};

TEST_F(TlsContextCa, LoadsGeneratedMaterial) {
  auto ctx = create(config_, error_);
  ASSERT_NE(ctx, nullptr) << error_;
  EXPECT_EQ(ctx->mode(), TrustMode::kCa);
  gnutls_session_t client = ctx->new_session(Role::kClient, "localhost");
  gnutls_session_t server = ctx->new_session(Role::kServer, "");
  EXPECT_NE(client, nullptr);
  EXPECT_NE(server, nullptr);
  if (client) gnutls_deinit(client);
  if (server) gnutls_deinit(server);
}

TEST_F(TlsContextCa, MissingCacertfileNamesTheSetting) {
  config_.cacertfile.clear();
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("cacertfile"), std::string::npos) << error_;
}

TEST_F(TlsContextCa, NonexistentCacertfileNamesSettingAndFile) {
  config_.cacertfile = tmp_.file("no_such_ca.pem");
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("cacertfile"), std::string::npos) << error_;
  EXPECT_NE(error_.find(config_.cacertfile), std::string::npos) << error_;
}

TEST_F(TlsContextCa, MissingCertfileNamesTheSetting) {
  config_.certfile.clear();
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("certfile"), std::string::npos) << error_;
}

TEST_F(TlsContextCa, MissingKeyfileNamesTheSetting) {
  config_.keyfile.clear();
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("keyfile"), std::string::npos) << error_;
}

TEST_F(TlsContextCa, NonexistentKeyfileNamesSettingAndFile) {
  config_.keyfile = tmp_.file("no_such_key.pem");
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("keyfile"), std::string::npos) << error_;
  EXPECT_NE(error_.find(config_.keyfile), std::string::npos) << error_;
}

TEST_F(TlsContextCa, KeyfileThatIsADirectoryGivesAClearError) {
  // Root ignores chmod 000, so make the key unreadable another way.
  config_.keyfile = tmp_.path();
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find(config_.keyfile), std::string::npos) << error_;
}

TEST_F(TlsContextCa, GarbageKeyfileGivesAClearError) {
  write_file(config_.keyfile, "this is not a PEM key\n");
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find(config_.keyfile), std::string::npos) << error_;
}

TEST_F(TlsContextCa, KeyOfAnotherCertificateIsRefused) {
  auto other = ca_.issue("other", {"127.0.0.1"}, {});
  std::string other_key, other_cert;
  other->write(tmp_, "other", other_key, other_cert);
  config_.keyfile = other_key;
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find(other_key), std::string::npos) << error_;
}

TEST_F(TlsContextCa, GarbageCacertfileNamesTheSetting) {
  write_file(config_.cacertfile, "no certificates in here\n");
  EXPECT_EQ(create(config_, error_), nullptr);
  EXPECT_NE(error_.find("cacertfile"), std::string::npos) << error_;
}

TEST_F(TlsContextCa, CertificateMatchesItsSanHosts) {
  EXPECT_TRUE(certificate_matches_host(der_, "127.0.0.1"));
  EXPECT_TRUE(certificate_matches_host(der_, "localhost"));
  EXPECT_FALSE(certificate_matches_host(der_, "127.0.0.2"));
  EXPECT_FALSE(certificate_matches_host(der_, "wrong.example"));
  EXPECT_FALSE(certificate_matches_host(der_, "::1"));
}

TEST(CertificateMatchesHost, RejectsEmptyAndGarbageDer) {
  EXPECT_FALSE(certificate_matches_host({}, "localhost"));
  EXPECT_FALSE(certificate_matches_host({0x30, 0x03, 0x01, 0x02, 0x03}, "localhost"));
}

TEST(CertificateMatchesHost, Ipv6San) {
  TestCa ca("ca6");
  auto leaf = ca.issue("v6", {"::1"}, {"node.example"});
  std::vector<uint8_t> der = leaf->cert_der();
  EXPECT_TRUE(certificate_matches_host(der, "::1"));
  EXPECT_TRUE(certificate_matches_host(der, "node.example"));
  EXPECT_FALSE(certificate_matches_host(der, "127.0.0.1"));
}

}  // namespace
}  // namespace macula
