// TlsStream against an OpenSSL client over memory BIOs: handshake, data
// both ways, held-back writes, how a flush's pieces become TLS records, and
// configuration errors that name the file.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string_view>
#include <utility>
#include <vector>

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
  // max_version: e.g. TLS1_2_VERSION; 0 for the newest.
  explicit Client(int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (max_version != 0) SSL_CTX_set_max_proto_version(ctx_, max_version);
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
  // The plaintext of each record, one SSL_read each (one never spans two).
  std::vector<std::string> read_records() {
    std::vector<std::string> records;
    static char buffer[64 * 1024];
    int n;
    while ((n = SSL_read(ssl_, buffer, sizeof buffer)) > 0) records.emplace_back(buffer, n);
    return records;
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

// (content type, length) from each 5-byte record header in `wire`.
std::vector<std::pair<int, size_t>> record_headers(std::string_view wire) {
  std::vector<std::pair<int, size_t>> headers;
  while (wire.size() >= 5) {
    const auto* h = reinterpret_cast<const unsigned char*>(wire.data());
    const size_t length = (size_t{h[3]} << 8) | h[4];
    headers.emplace_back(h[0], length);
    wire.remove_prefix(std::min(wire.size(), 5 + length));
  }
  EXPECT_TRUE(wire.empty()) << "a record is cut short";
  return headers;
}

// A server and a client (capped at `max_version`) past the handshake, with
// nothing left in flight.
struct Connected {
  explicit Connected(int max_version) : client(max_version) {
    std::string error;
    context =
        TlsContext::create({certificate.cert_path(), certificate.key_path(), "1.2", ""}, error);
    EXPECT_TRUE(context) << error;
    server = std::make_unique<TlsStream>(context);
    std::string plain, wire;
    for (int round = 0; round < 5 && !server->established(); ++round) {
      client.handshake();
      wire.clear();
      EXPECT_EQ(server->receive(client.take_output(), plain, wire), TlsStream::Result::kOk);
      client.give_input(wire);
    }
    EXPECT_TRUE(client.handshake());
    EXPECT_EQ(client.read(), "");  // TLS 1.3 session tickets
  }
  TestCertificate certificate;
  std::shared_ptr<TlsContext> context;
  std::unique_ptr<TlsStream> server;
  Client client;
};

class TlsRecordsTest : public ::testing::TestWithParam<int> {};

// What a RETR flush looks like: the status line, the message (which ends in
// CRLF), then ".\r\n". The records are cut every 16 KiB of the flush's
// plaintext, not where the pieces end: the final "." shares its record with
// the message's last bytes (node-pop3 finds the end of a message only then).
TEST_P(TlsRecordsTest, APiecesFlushIsCutIntoFullRecords) {
  Connected tls(GetParam());
  ASSERT_TRUE(tls.server->established());
  std::string body;
  for (int i = 0; body.size() < 3 * 16384 + 1000; ++i) {
    body += "line " + std::to_string(i) + "\r\n";
  }
  const std::vector<std::string> pieces = {"+OK " + std::to_string(body.size()) + " octets\r\n",
                                           body, ".\r\n"};
  std::string all;
  for (const std::string& piece : pieces) all += piece;

  std::string wire;
  ASSERT_EQ(tls.server->send(pieces, wire), TlsStream::Result::kOk) << tls.server->error();
  const auto headers = record_headers(wire);
  tls.client.give_input(wire);
  const std::vector<std::string> records = tls.client.read_records();

  const size_t full = all.size() / 16384, tail = all.size() % 16384;
  ASSERT_NE(tail, 0u);
  ASSERT_EQ(records.size(), full + 1);
  std::string joined;
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].size(), i < full ? 16384 : tail) << "record " << i;
    joined += records[i];
  }
  EXPECT_EQ(joined, all);
  EXPECT_TRUE(records.back().ends_with("\r\n.\r\n"));

  // The same seen on the wire: application data records only, all full-size
  // but the last.
  ASSERT_EQ(headers.size(), full + 1);
  for (size_t i = 0; i < headers.size(); ++i) {
    EXPECT_EQ(headers[i].first, 23) << "record " << i;
    if (i + 1 < full) {
      EXPECT_EQ(headers[i].second, headers[i + 1].second) << "record " << i;
    }
  }
  EXPECT_LT(headers.back().second, headers.front().second);
}

// Many small pieces (LIST, UIDL, short messages) fill whole records too,
// and a flush that fits in one record is one record.
TEST_P(TlsRecordsTest, SmallPiecesShareRecords) {
  Connected tls(GetParam());
  std::vector<std::string> pieces;
  std::string all;
  for (int i = 0; i < 200; ++i) {
    pieces.push_back(std::to_string(i + 1) + " " + std::string(150 + i % 7, 'u') + "\r\n");
    all += pieces.back();
  }
  std::string wire;
  ASSERT_EQ(tls.server->send(pieces, wire), TlsStream::Result::kOk);
  tls.client.give_input(wire);
  std::vector<std::string> records = tls.client.read_records();
  ASSERT_EQ(records.size(), all.size() / 16384 + 1);
  for (size_t i = 0; i + 1 < records.size(); ++i) EXPECT_EQ(records[i].size(), 16384u);
  std::string joined;
  for (const std::string& record : records) joined += record;
  EXPECT_EQ(joined, all);

  wire.clear();
  const std::vector<std::string> list = {"+OK 2 messages\r\n", "1 120\r\n", "2 300\r\n", ".\r\n"};
  ASSERT_EQ(tls.server->send(list, wire), TlsStream::Result::kOk);
  EXPECT_EQ(record_headers(wire).size(), 1u);
  tls.client.give_input(wire);
  records = tls.client.read_records();
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0], "+OK 2 messages\r\n1 120\r\n2 300\r\n.\r\n");
}

// Pieces that are whole multiples of a record, empty pieces, and a flush of
// exactly one record's size.
TEST_P(TlsRecordsTest, RecordBoundariesFollowTheStreamNotThePieces) {
  Connected tls(GetParam());
  const std::vector<std::string> pieces = {std::string(16384, 'a'), "", std::string(10, 'b'),
                                           std::string(2 * 16384 - 10, 'c'), std::string(5, 'd'),
                                           std::string(16384 - 5, 'e')};
  std::string all;
  for (const std::string& piece : pieces) all += piece;
  ASSERT_EQ(all.size(), 4u * 16384);
  std::string wire;
  ASSERT_EQ(tls.server->send(pieces, wire), TlsStream::Result::kOk);
  tls.client.give_input(wire);
  const std::vector<std::string> records = tls.client.read_records();
  ASSERT_EQ(records.size(), 4u);
  std::string joined;
  for (const std::string& record : records) {
    EXPECT_EQ(record.size(), 16384u);
    joined += record;
  }
  EXPECT_EQ(joined, all);
}

INSTANTIATE_TEST_SUITE_P(Versions, TlsRecordsTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == TLS1_2_VERSION ? "Tls12" : "Tls13";
                         });

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
