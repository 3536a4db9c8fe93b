// The upstream driver's TLS against a loopback TLS server thread with
// certificates made at test time: chain and host name verification (ca_file
// and the system store), IP literals, SNI, verify = false, TLS versions,
// timeouts, bulk data, and EOF with and without close_notify.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "backends/imap/upstream_stream.h"
#include "imap_tls_support.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using test_support::Identity;
using test_support::ScriptedServer;
using test_support::TestPki;
using test_support::TlsServerConnection;

const TestPki& pki() {
  static TestPki* value = new TestPki();  // shared by the tests; removed at exit
  static struct Cleanup {
    ~Cleanup() { delete value; }
  } cleanup;
  return *value;
}

std::shared_ptr<const UpstreamTls> client_tls(bool verify, const std::string& ca_file) {
  std::string error;
  auto tls = UpstreamTls::create(verify, ca_file, &error);
  EXPECT_NE(tls, nullptr) << error;
  return tls;
}

// A TLS server that greets and then echoes one line.
ScriptedServer greeting_server(const Identity& identity, std::string* sni = nullptr) {
  return ScriptedServer([&identity, sni](int fd) {
    TlsServerConnection tls(fd, identity);
    if (!tls.accept()) return;
    if (sni != nullptr) *sni = tls.sni();
    tls.send("* OK hello over TLS\r\n");
    std::string line = tls.read_line();
    tls.send("echo " + line);
    tls.close_notify();
  });
}

struct Connected {
  mailstream_low* low = nullptr;
  UpstreamStream* stream = nullptr;
  ~Connected() {
    if (low != nullptr) mailstream_low_free(low);
  }
};

void connect_to(Connected* out, uint16_t port, const std::string& host = "127.0.0.1") {
  std::string error;
  out->low = UpstreamStream::connect(host, port, 2s, 2s, &error);
  ASSERT_NE(out->low, nullptr) << error;
  out->stream = UpstreamStream::of(out->low);
}

// A handshake with a server presenting `identity`, verified against
// `ca_file` (empty: the system's store) for `host`, must fail verification.
// Returns why.
std::string verification_failure(const Identity& identity, const std::string& ca_file,
                                 const std::string& host) {
  ScriptedServer server = greeting_server(identity);
  EXPECT_TRUE(server.ok());
  Connected c;
  connect_to(&c, server.port());
  if (c.stream == nullptr) return "";
  auto tls = client_tls(true, ca_file);
  EXPECT_FALSE(c.stream->start_tls(*tls, host, 2s));
  EXPECT_TRUE(c.stream->verification_failed());
  return c.stream->failure();
}

std::string read_line(mailstream_low* low) {
  std::string line;
  char c;
  while (line.empty() || line.back() != '\n') {
    if (mailstream_low_read(low, &c, 1) != 1) break;
    line.push_back(c);
  }
  return line;
}

TEST(ImapTlsStream, GoodCertificateWithCaFile) {
  std::string sni;
  {
    ScriptedServer server = greeting_server(pki().good(), &sni);
    ASSERT_TRUE(server.ok());
    Connected c;
    ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port(), "localhost"));
    auto tls = client_tls(true, pki().ca_file());
    ASSERT_TRUE(c.stream->start_tls(*tls, "localhost", 2s)) << c.stream->failure();
    EXPECT_TRUE(c.stream->tls_active());
    EXPECT_NE(c.stream->tls_description().find("TLSv1."), std::string::npos);
    EXPECT_EQ(read_line(c.low), "* OK hello over TLS\r\n");
    EXPECT_EQ(mailstream_low_write(c.low, "A1 NOOP\r\n", 9), 9);
    EXPECT_EQ(c.stream->bytes_written(), 9u);
    EXPECT_EQ(read_line(c.low), "echo A1 NOOP\r\n");
    // close_notify: EOF once, then errors.
    char buffer[16];
    EXPECT_EQ(mailstream_low_read(c.low, buffer, sizeof buffer), 0);
    EXPECT_EQ(mailstream_low_read(c.low, buffer, sizeof buffer), -1);
    EXPECT_EQ(c.stream->failure(), "connection closed by server");
    EXPECT_FALSE(c.stream->verification_failed());
  }  // the server thread has ended
  EXPECT_EQ(sni, "localhost");
}

TEST(ImapTlsStream, IpLiteralIsCheckedAgainstTheIpAddressAndSendsNoSni) {
  std::string sni = "unset";
  {
    ScriptedServer server = greeting_server(pki().good(), &sni);
    ASSERT_TRUE(server.ok());
    Connected c;
    ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
    auto tls = client_tls(true, pki().ca_file());
    ASSERT_TRUE(c.stream->start_tls(*tls, "127.0.0.1", 2s)) << c.stream->failure();
    EXPECT_EQ(read_line(c.low), "* OK hello over TLS\r\n");
  }
  EXPECT_EQ(sni, "");  // RFC 6066: no IP literals in SNI
}

TEST(ImapTlsStream, WrongHostNameFailsNamingIt) {
  ScriptedServer server = greeting_server(pki().wrong_name());
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port(), "localhost"));
  auto tls = client_tls(true, pki().ca_file());
  EXPECT_FALSE(c.stream->start_tls(*tls, "localhost", 2s));
  EXPECT_TRUE(c.stream->verification_failed());
  const std::string& why = c.stream->failure();
  EXPECT_NE(why.find("certificate verification failed for localhost"), std::string::npos) << why;
  EXPECT_NE(why.find("hostname mismatch"), std::string::npos) << why;
  EXPECT_NE(why.find("DNS:imap.other.example"), std::string::npos) << why;
  // Nothing passes after a failed handshake.
  char buffer[16];
  EXPECT_EQ(mailstream_low_read(c.low, buffer, sizeof buffer), -1);
}

TEST(ImapTlsStream, WrongIpAddressFails) {
  const std::string why = verification_failure(pki().wrong_name(), pki().ca_file(), "127.0.0.1");
  EXPECT_NE(why.find("IP address mismatch"), std::string::npos) << why;
}

TEST(ImapTlsStream, UnknownCaFails) {
  const std::string why = verification_failure(pki().unknown_ca(), pki().ca_file(), "localhost");
  EXPECT_NE(why.find("unable to get local issuer certificate"), std::string::npos) << why;
  EXPECT_NE(why.find("issued by CN=unknown test CA"), std::string::npos) << why;
}

TEST(ImapTlsStream, OurCaIsNotInTheSystemStore) {
  const std::string why = verification_failure(pki().good(), "", "localhost");
  EXPECT_NE(why.find("unable to get local issuer certificate"), std::string::npos) << why;
}

TEST(ImapTlsStream, ExpiredCertificateFails) {
  const std::string why = verification_failure(pki().expired(), pki().ca_file(), "localhost");
  EXPECT_NE(why.find("certificate has expired"), std::string::npos) << why;
}

TEST(ImapTlsStream, VerifyFalseAcceptsAnything) {
  for (const Identity* identity : {&pki().wrong_name(), &pki().unknown_ca(), &pki().expired()}) {
    ScriptedServer server = greeting_server(*identity);
    ASSERT_TRUE(server.ok());
    Connected c;
    ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
    auto tls = client_tls(false, "");
    ASSERT_TRUE(c.stream->start_tls(*tls, "localhost", 2s)) << c.stream->failure();
    EXPECT_EQ(read_line(c.low), "* OK hello over TLS\r\n");
  }
}

TEST(ImapTlsStream, Tls11IsRefused) {
  ScriptedServer server([](int fd) {
    TlsServerConnection tls(fd, pki().good(), TLS1_1_VERSION);
    tls.accept();
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  auto tls = client_tls(false, "");  // even without verification
  EXPECT_FALSE(c.stream->start_tls(*tls, "localhost", 2s));
  EXPECT_FALSE(c.stream->verification_failed());
  EXPECT_NE(c.stream->failure().find("TLS handshake"), std::string::npos) << c.stream->failure();
}

TEST(ImapTlsStream, PlaintextServerIsAHandshakeFailureNotAVerificationFailure) {
  ScriptedServer server([](int fd) {
    test_support::send_all(fd, "* OK plaintext IMAP here\r\n");
    test_support::read_line(fd);
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  auto tls = client_tls(true, pki().ca_file());
  EXPECT_FALSE(c.stream->start_tls(*tls, "localhost", 2s));
  EXPECT_FALSE(c.stream->verification_failed());
  EXPECT_NE(c.stream->failure().find("TLS"), std::string::npos) << c.stream->failure();
}

TEST(ImapTlsStream, SilentServerTimesOutInTheHandshake) {
  ScriptedServer server([](int fd) {  // reads the ClientHello, says nothing
    while (!test_support::read_line(fd).empty()) {
    }
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  auto tls = client_tls(true, pki().ca_file());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(c.stream->start_tls(*tls, "localhost", 300ms));
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 290ms);
  EXPECT_LT(waited, 2s);
  EXPECT_EQ(c.stream->failure(), "timed out after 300 ms during the TLS handshake");
  mailstream_low_close(c.low);  // lets the server's read end
}

TEST(ImapTlsStream, BulkDataBothWays) {
  const std::string big(3 * 1024 * 1024 + 17, 'x');
  std::string received;
  ScriptedServer server([&](int fd) {
    TlsServerConnection tls(fd, pki().good());
    if (!tls.accept()) return;
    tls.send(big + "\r\n");
    received = tls.read_line();
    tls.send("done\r\n");
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  auto tls = client_tls(true, pki().ca_file());
  ASSERT_TRUE(c.stream->start_tls(*tls, "127.0.0.1", 2s)) << c.stream->failure();
  std::string got;
  char buffer[70000];
  while (got.size() < big.size() + 2) {
    ssize_t n = mailstream_low_read(c.low, buffer, sizeof buffer);
    ASSERT_GT(n, 0) << c.stream->failure();
    got.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_EQ(got, big + "\r\n");
  const std::string line = std::string(1024 * 1024, 'y') + "\r\n";
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = mailstream_low_write(c.low, line.data() + done, line.size() - done);
    ASSERT_GT(n, 0) << c.stream->failure();
    done += static_cast<size_t>(n);
  }
  EXPECT_EQ(read_line(c.low), "done\r\n");
  EXPECT_EQ(received, line);
}

TEST(ImapTlsStream, EofWithoutCloseNotifyIsAClosedConnection) {
  ScriptedServer server([](int fd) {
    TlsServerConnection tls(fd, pki().good());
    if (!tls.accept()) return;
    tls.send("* BYE going\r\n");
    // returns: the socket is closed without close_notify
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  auto tls = client_tls(true, pki().ca_file());
  ASSERT_TRUE(c.stream->start_tls(*tls, "localhost", 2s)) << c.stream->failure();
  EXPECT_EQ(read_line(c.low), "* BYE going\r\n");
  char buffer[16];
  EXPECT_EQ(mailstream_low_read(c.low, buffer, sizeof buffer), 0);
  EXPECT_EQ(mailstream_low_read(c.low, buffer, sizeof buffer), -1);
  EXPECT_EQ(c.stream->failure(), "connection closed by server");
}

TEST(ImapTlsStream, PendingPlaintextBlocksTheSwitch) {
  // Bytes read before STARTTLS's handshake (here: peeked) must never pass
  // as if they had come over TLS.
  ScriptedServer server([](int fd) {
    test_support::send_all(fd, "* OK ready\r\nA1 OK injected\r\n");
    test_support::read_line(fd);
  });
  ASSERT_TRUE(server.ok());
  Connected c;
  ASSERT_NO_FATAL_FAILURE(connect_to(&c, server.port()));
  std::string line;
  ASSERT_TRUE(c.stream->peek_line(&line, 100));
  auto tls = client_tls(true, pki().ca_file());
  EXPECT_FALSE(c.stream->start_tls(*tls, "localhost", 2s));
  EXPECT_EQ(c.stream->failure(), "the server sent data before the TLS handshake");
  mailstream_low_close(c.low);
}

TEST(ImapTlsStream, LibetpanOverTlsOnADescriptorAbove1024) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < 2048) {
    limit.rlim_cur = std::min<rlim_t>(2048, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < 2048) GTEST_SKIP() << "cannot raise RLIMIT_NOFILE to 2048";
  ScriptedServer server([](int fd) {
    TlsServerConnection tls(fd, pki().good());
    if (!tls.accept()) return;
    tls.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n");
    for (std::string line; !(line = tls.read_line()).empty();) {
      const std::string tag = line.substr(0, line.find(' '));
      if (line.find(" CAPABILITY") != std::string::npos) {
        tls.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + " OK done\r\n");
      } else if (line.find(" LOGOUT") != std::string::npos) {
        tls.send("* BYE bye\r\n" + tag + " OK done\r\n");
        tls.close_notify();
        return;
      } else {
        tls.send(tag + " BAD what\r\n");
      }
    }
  });
  ASSERT_TRUE(server.ok());
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(server.port());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(dup2(fd, 1500), 1500);
  ::close(fd);
  mailstream_low* low = UpstreamStream::adopt(1500, 2s);
  ASSERT_NE(low, nullptr);
  auto tls = client_tls(true, pki().ca_file());
  ASSERT_TRUE(UpstreamStream::of(low)->start_tls(*tls, "localhost", 2s))
      << UpstreamStream::of(low)->failure();
  mailstream* stream = mailstream_new(low, 8192);
  mailimap* imap = mailimap_new(0, nullptr);
  EXPECT_EQ(mailimap_connect(imap, stream), MAILIMAP_NO_ERROR_NON_AUTHENTICATED);
  mailimap_capability_data* capabilities = nullptr;
  EXPECT_EQ(mailimap_capability(imap, &capabilities), MAILIMAP_NO_ERROR);
  if (capabilities != nullptr) mailimap_capability_data_free(capabilities);
  EXPECT_TRUE(mailimap_has_authentication(imap, const_cast<char*>("PLAIN")));
  EXPECT_EQ(mailimap_logout(imap), MAILIMAP_NO_ERROR);
  mailimap_free(imap);
  EXPECT_EQ(fcntl(1500, F_GETFD), -1) << "descriptor 1500 left open";
}

TEST(ImapTlsContext, CaFileErrorsNameTheFile) {
  std::string error;
  EXPECT_EQ(UpstreamTls::create(true, "/nonexistent/ca.pem", &error), nullptr);
  EXPECT_NE(error.find("/nonexistent/ca.pem"), std::string::npos) << error;
  const std::string junk = pki().dir() + "/junk.pem";
  FILE* f = fopen(junk.c_str(), "w");
  fputs("not a certificate\n", f);
  fclose(f);
  EXPECT_EQ(UpstreamTls::create(true, junk, &error), nullptr);
  EXPECT_NE(error.find(junk), std::string::npos) << error;
  // Without verification the file is not needed.
  EXPECT_NE(UpstreamTls::create(false, "/nonexistent/ca.pem", &error), nullptr);
  EXPECT_NE(UpstreamTls::create(true, "", &error), nullptr) << error;
}

}  // namespace
}  // namespace popbridge::imap
