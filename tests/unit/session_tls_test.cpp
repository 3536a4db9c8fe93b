// TlsStream against an OpenSSL client over memory BIOs: handshake, data
// both ways, held-back writes, and configuration errors that name the file.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "proxy/tls_stream.h"

namespace popbridge {
namespace {

namespace fs = std::filesystem;

// A throwaway key and self-signed certificate for "localhost", made in-process.
class TestCertificate {
 public:
  TestCertificate() {
    dir_ = fs::temp_directory_path() / ("popbridge-tls-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    EVP_PKEY* key = EVP_RSA_gen(2048);
    X509* cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    FILE* f = fopen(cert_path().c_str(), "w");
    PEM_write_X509(f, cert);
    fclose(f);
    f = fopen(key_path().c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    fclose(f);
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  ~TestCertificate() { fs::remove_all(dir_); }
  std::string cert_path() const { return (dir_ / "cert.pem").string(); }
  std::string key_path() const { return (dir_ / "key.pem").string(); }

 private:
  fs::path dir_;
};

// The peer: a plain OpenSSL client on memory BIOs.
class Client {
 public:
  Client() {
    ctx_ = SSL_CTX_new(TLS_client_method());
    ssl_ = SSL_new(ctx_);
    in_ = BIO_new(BIO_s_mem());
    out_ = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in_, -1);
    SSL_set_bio(ssl_, in_, out_);
    SSL_set_connect_state(ssl_);
  }
  ~Client() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  std::string take_output() {
    std::string data;
    char buffer[4096];
    int n;
    while ((n = BIO_read(out_, buffer, sizeof buffer)) > 0) data.append(buffer, n);
    return data;
  }
  void give_input(const std::string& data) { BIO_write(in_, data.data(), static_cast<int>(data.size())); }
  bool handshake() { return SSL_do_handshake(ssl_) == 1; }
  void write(const std::string& data) { SSL_write(ssl_, data.data(), static_cast<int>(data.size())); }
  bool received_close_notify() const { return (SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN) != 0; }
  std::string read() {
    std::string data;
    char buffer[4096];
    int n;
    while ((n = SSL_read(ssl_, buffer, sizeof buffer)) > 0) data.append(buffer, n);
    return data;
  }

 private:
  SSL_CTX* ctx_;
  SSL* ssl_;
  BIO* in_;
  BIO* out_;
};

TEST(TlsStreamTest, HandshakeThenDataBothWays) {
  TestCertificate certificate;
  std::string error;
  auto context = TlsContext::create({certificate.cert_path(), certificate.key_path(), "1.2", ""}, error);
  ASSERT_TRUE(context) << error;
  TlsStream server(context);
  Client client;

  std::string wire;
  // Implicit TLS: the greeting is written before the handshake and held back.
  ASSERT_EQ(server.send("+OK ready\r\n", wire), TlsStream::Result::kOk);
  EXPECT_TRUE(wire.empty());

  std::string plain;
  for (int round = 0; round < 5 && !server.established(); ++round) {
    client.handshake();
    wire.clear();
    ASSERT_EQ(server.receive(client.take_output(), plain, wire), TlsStream::Result::kOk)
        << server.error();
    client.give_input(wire);
  }
  ASSERT_TRUE(client.handshake());
  ASSERT_TRUE(server.established());
  EXPECT_EQ(client.read(), "+OK ready\r\n");

  client.write("CAPA\r\n");
  plain.clear();
  wire.clear();
  ASSERT_EQ(server.receive(client.take_output(), plain, wire), TlsStream::Result::kOk);
  EXPECT_EQ(plain, "CAPA\r\n");

  const std::string big(100000, 'x');
  wire.clear();
  ASSERT_EQ(server.send(big, wire), TlsStream::Result::kOk);
  client.give_input(wire);
  EXPECT_EQ(client.read(), big);
  EXPECT_NE(server.describe().find("TLS"), std::string::npos);

  wire.clear();
  server.close_notify(wire);
  client.give_input(wire);
  EXPECT_EQ(client.read(), "");
  EXPECT_TRUE(client.received_close_notify());
}

TEST(TlsStreamTest, GarbageIsAnError) {
  TestCertificate certificate;
  std::string error;
  auto context = TlsContext::create({certificate.cert_path(), certificate.key_path(), "1.2", ""}, error);
  ASSERT_TRUE(context);
  TlsStream server(context);
  std::string plain, wire;
  EXPECT_EQ(server.receive("USER alice\r\nPASS secret\r\n", plain, wire), TlsStream::Result::kError);
  EXPECT_TRUE(plain.empty());
}

TEST(TlsContextTest, ErrorsNameTheFile) {
  TestCertificate certificate;
  std::string error;
  EXPECT_FALSE(TlsContext::create({"/nonexistent/cert.pem", certificate.key_path(), "1.2", ""}, error));
  EXPECT_NE(error.find("/nonexistent/cert.pem"), std::string::npos) << error;
  EXPECT_FALSE(TlsContext::create({certificate.cert_path(), "/nonexistent/key.pem", "1.2", ""}, error));
  EXPECT_NE(error.find("/nonexistent/key.pem"), std::string::npos) << error;
  EXPECT_FALSE(TlsContext::create({certificate.cert_path(), certificate.key_path(), "2.0", ""}, error));
  EXPECT_NE(error.find("min_version"), std::string::npos);
  EXPECT_TRUE(TlsContext::create({certificate.cert_path(), certificate.key_path(), "1.0", ""}, error));
}

}  // namespace
}  // namespace popbridge
