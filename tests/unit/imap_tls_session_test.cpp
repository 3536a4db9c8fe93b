// ImapSession with upstream TLS against fake IMAP servers on the loopback:
// implicit TLS, STARTTLS (capabilities asked again after it, no plaintext
// fallback, injection after the OK), certificate failures as kUnavailable,
// and fail-over across upstream.hosts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backends/imap/imap_session.h"
#include "backends/imap/upstream_stream.h"
#include "imap_scripted_server.h"
#include "imap_tls_support.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using test_support::closed_port;
using test_support::Identity;
using test_support::ScriptedServer;
using test_support::TestPki;
using test_support::TlsServerConnection;

const TestPki& pki() {
  static TestPki* value = new TestPki();
  static struct Cleanup {
    ~Cleanup() { delete value; }
  } cleanup;
  return *value;
}

using imap::test_support::Commands;

enum class Mode { kPlain, kImplicit, kStartTls };

// A fake IMAP server: like FakeImapServer, but over TLS from the start
// (kImplicit) or after it answered STARTTLS with OK (kStartTls). Records
// every command; answers LOGOUT by default. `accepted` tells whether a
// client connected at all.
class TlsImapServer {
 public:
  using Answer = std::function<std::string(const std::string& command)>;

  TlsImapServer(Mode mode, const Identity& identity, std::string greeting, Answer answer)
      : server_([this, mode, &identity, greeting = std::move(greeting),
                 answer = std::move(answer)](int fd) {
          accepted_ = true;
          std::unique_ptr<TlsServerConnection> tls;
          if (mode == Mode::kImplicit) {
            tls = std::make_unique<TlsServerConnection>(fd, identity);
            if (!tls->accept()) return;
          }
          auto send = [&](const std::string& data) {
            if (tls) {
              tls->send(data);
            } else {
              test_support::send_all(fd, data);
            }
          };
          send(greeting);
          for (;;) {
            std::string line = tls ? tls->read_line() : test_support::read_line(fd);
            if (line.empty()) return;
            while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
            const size_t space = line.find(' ');
            const std::string tag = line.substr(0, space);
            const std::string command = space == std::string::npos ? "" : line.substr(space + 1);
            commands_.add(command);
            std::string reply = answer(command);
            if (reply.empty() && command == "LOGOUT") reply = "* BYE bye\r\n$TAG OK done\r\n";
            if (reply.empty()) reply = "$TAG BAD unexpected\r\n";
            for (size_t at; (at = reply.find("$TAG")) != std::string::npos;) reply.replace(at, 4, tag);
            send(reply);
            if (mode == Mode::kStartTls && !tls && command == "STARTTLS" &&
                reply.rfind(tag + " OK", 0) == 0) {
              tls = std::make_unique<TlsServerConnection>(fd, identity);
              if (!tls->accept()) return;
            }
          }
        }) {}

  bool ok() const { return server_.ok(); }
  uint16_t port() const { return server_.port(); }
  bool accepted() const { return accepted_; }
  std::vector<std::string> commands() { return commands_.get(); }

 private:
  std::atomic<bool> accepted_{false};
  Commands commands_;
  ScriptedServer server_;  // last: its thread stops before the rest goes
};

std::string plain_answers(const std::string& command) {
  if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK logged in\r\n";
  return "";
}

// Answers STARTTLS with `reply`, the rest as plain_answers() does.
auto starttls_answer(std::string reply) {
  return [reply = std::move(reply)](const std::string& command) -> std::string {
    return command == "STARTTLS" ? reply : plain_answers(command);
  };
}

std::shared_ptr<const ImapSettings> settings_for(TlsMode tls, std::vector<HostPort> hosts,
                                                 bool verify = true) {
  UpstreamConfig upstream;
  upstream.tls = tls;
  upstream.verify = verify;
  upstream.ca_file = pki().ca_file();
  upstream.hosts = std::move(hosts);
  upstream.host = upstream.hosts.front().host;
  upstream.port = upstream.hosts.front().port;
  upstream.connect_timeout = 1s;
  upstream.command_timeout = 1s;
  auto settings = make_imap_settings(upstream, MailboxConfig{});
  EXPECT_NE(settings->tls, nullptr) << settings->tls_error;
  return settings;
}

constexpr const char* kGreeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n";
constexpr const char* kStartTlsGreeting =
    "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n";

TEST(ImapTlsSession, ImplicitTlsLogsIn) {
  TlsImapServer server(Mode::kImplicit, pki().good(), kGreeting, plain_answers);
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kImplicit, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  status = session.login({"alice", "secret"});
  ASSERT_TRUE(status.ok()) << status.detail;
  session.logout(1s);
  EXPECT_EQ(server.commands(),
            (std::vector<std::string>{"LOGIN alice secret", "LOGOUT"}));
}

TEST(ImapTlsSession, StartTlsAsksForCapabilitiesAgain) {
  // Before TLS the server says LOGINDISABLED; after it, AUTH=PLAIN only. If
  // the pre-TLS list were kept, LOGIN would be refused locally.
  TlsImapServer server(Mode::kStartTls, pki().good(), kStartTlsGreeting,
                       [](const std::string& command) -> std::string {
                         if (command == "STARTTLS") return "$TAG OK begin TLS\r\n";
                         if (command == "CAPABILITY")
                           return "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n$TAG OK done\r\n";
                         return plain_answers(command);
                       });
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"127.0.0.1", server.port()}}), 1);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  status = session.login({"alice", "secret"});
  ASSERT_TRUE(status.ok()) << status.detail;
  session.logout(1s);
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"STARTTLS", "CAPABILITY",
                                                         "LOGIN alice secret", "LOGOUT"}));
}

TEST(ImapTlsSession, StartTlsAsksForCapabilitiesFirstWhenTheGreetingHasNone) {
  TlsImapServer server(Mode::kStartTls, pki().good(), "* OK ready\r\n",
                       [n = 0](const std::string& command) mutable -> std::string {
                         if (command == "STARTTLS") return "$TAG OK begin TLS\r\n";
                         if (command == "CAPABILITY" && n++ == 0)
                           return "* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n$TAG OK done\r\n";
                         // After TLS: OK without an untagged CAPABILITY (must not crash).
                         if (command == "CAPABILITY") return "$TAG OK nothing to say\r\n";
                         return plain_answers(command);
                       });
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  session.logout(1s);
  EXPECT_EQ(server.commands(),
            (std::vector<std::string>{"CAPABILITY", "STARTTLS", "CAPABILITY",
                                      "LOGIN alice secret", "LOGOUT"}));
}

TEST(ImapTlsSession, StartTlsNotAdvertisedNeverFallsBackToPlaintext) {
  TlsImapServer server(Mode::kStartTls, pki().good(), kGreeting, plain_answers);
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail, "STARTTLS failed: the server does not advertise STARTTLS");
  EXPECT_TRUE(session.broken());
  EXPECT_FALSE(session.login({"alice", "secret"}).ok());
  session.logout(1s);
  EXPECT_TRUE(server.commands().empty());
}

TEST(ImapTlsSession, StartTlsRefusedIsUnavailable) {
  TlsImapServer server(Mode::kStartTls, pki().good(), kStartTlsGreeting,
                       starttls_answer("$TAG NO [UNAVAILABLE] not now\r\n"));
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail.rfind("STARTTLS failed: ", 0), 0u) << status.detail;
  EXPECT_NE(status.detail.find("not now"), std::string::npos) << status.detail;
  session.logout(1s);
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"STARTTLS"}));
}

TEST(ImapTlsSession, DataAfterTheStartTlsOkIsRefused) {
  TlsImapServer server(Mode::kPlain, pki().good(), kStartTlsGreeting,
                       starttls_answer("$TAG OK begin TLS\r\n* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"));
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail.rfind("STARTTLS failed: ", 0), 0u) << status.detail;
  session.logout(1s);
}

TEST(ImapTlsSession, StartTlsWithABadCertificateFailsSayingWhy) {
  TlsImapServer server(Mode::kStartTls, pki().wrong_name(), kStartTlsGreeting,
                       starttls_answer("$TAG OK begin TLS\r\n"));
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(TlsMode::kStartTls, {{"localhost", server.port()}}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail.rfind("STARTTLS failed: certificate verification failed for localhost: "
                                "hostname mismatch",
                                0),
            0u)
      << status.detail;
  session.logout(1s);
  EXPECT_EQ(server.commands(), (std::vector<std::string>{"STARTTLS"}));
}

TEST(ImapTlsSession, ImplicitTlsCertificateFailures) {
  struct Case {
    const Identity* identity;
    const char* reason;
  };
  for (const Case& c : {Case{&pki().wrong_name(), "hostname mismatch"},
                        Case{&pki().unknown_ca(), "unable to get local issuer certificate"},
                        Case{&pki().expired(), "certificate has expired"}}) {
    TlsImapServer server(Mode::kImplicit, *c.identity, kGreeting, plain_answers);
    ASSERT_TRUE(server.ok());
    ImapSession session(settings_for(TlsMode::kImplicit, {{"localhost", server.port()}}), 1);
    Status status = session.connect();
    EXPECT_EQ(status.error, UpstreamError::kUnavailable);
    EXPECT_NE(status.detail.find(std::string("certificate verification failed for localhost: ") +
                                 c.reason),
              std::string::npos)
        << status.detail;
    session.logout(1s);
  }
}

TEST(ImapTlsSession, VerifyFalseAcceptsAWrongName) {
  TlsImapServer server(Mode::kImplicit, pki().wrong_name(), kGreeting, plain_answers);
  ASSERT_TRUE(server.ok());
  ImapSession session(
      settings_for(TlsMode::kImplicit, {{"localhost", server.port()}}, /*verify=*/false), 1);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_TRUE(session.login({"alice", "secret"}).ok());
  session.logout(1s);
}

TEST(ImapTlsSession, FailOverPastAClosedPort) {
  TlsImapServer server(Mode::kImplicit, pki().good(), kGreeting, plain_answers);
  ASSERT_TRUE(server.ok());
  const uint16_t closed = closed_port();
  ImapSession session(
      settings_for(TlsMode::kImplicit, {{"127.0.0.1", closed}, {"localhost", server.port()}}), 7);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(session.name(), "imap#7 localhost:" + std::to_string(server.port()));
  EXPECT_TRUE(session.login({"alice", "secret"}).ok());
  session.logout(1s);
}

TEST(ImapTlsSession, FailOverPastASilentServer) {
  ScriptedServer silent([](int fd) {
    while (!test_support::read_line(fd).empty()) {
    }
  });
  TlsImapServer server(Mode::kPlain, pki().good(), kGreeting, plain_answers);
  ASSERT_TRUE(silent.ok() && server.ok());
  UpstreamConfig upstream;
  upstream.hosts = {{"127.0.0.1", silent.port()}, {"127.0.0.1", server.port()}};
  upstream.connect_timeout = 300ms;
  upstream.command_timeout = 1s;
  ImapSession session(make_imap_settings(upstream, MailboxConfig{}), 1);
  Status status = session.connect();
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_TRUE(session.login({"alice", "secret"}).ok());
  session.logout(1s);
}

TEST(ImapTlsSession, NoFailOverAfterAFailedVerification) {
  TlsImapServer bad(Mode::kImplicit, pki().unknown_ca(), kGreeting, plain_answers);
  TlsImapServer good(Mode::kImplicit, pki().good(), kGreeting, plain_answers);
  ASSERT_TRUE(bad.ok() && good.ok());
  ImapSession session(
      settings_for(TlsMode::kImplicit, {{"localhost", bad.port()}, {"localhost", good.port()}}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("unable to get local issuer certificate"), std::string::npos)
      << status.detail;
  session.logout(1s);
  EXPECT_TRUE(bad.accepted());
  EXPECT_FALSE(good.accepted());
}

TEST(ImapTlsSession, AllHostsDownListsEach) {
  const uint16_t first = closed_port();
  const uint16_t second = closed_port();
  UpstreamConfig upstream;
  upstream.hosts = {{"127.0.0.1", first}, {"::1", second}};
  upstream.connect_timeout = 1s;
  ImapSession session(make_imap_settings(upstream, MailboxConfig{}), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail.rfind("no upstream host reachable (127.0.0.1:" + std::to_string(first) +
                                    ": cannot connect",
                                0),
            0u)
      << status.detail;
  EXPECT_NE(status.detail.find("; [::1]:" + std::to_string(second) + ": "), std::string::npos)
      << status.detail;
  EXPECT_TRUE(session.broken());
}

TEST(ImapTlsSession, SettingsBuildOneContextOrSayWhyNot) {
  UpstreamConfig upstream;
  EXPECT_EQ(make_imap_settings(upstream, MailboxConfig{})->tls, nullptr);  // tls = none
  upstream.tls = TlsMode::kImplicit;
  upstream.ca_file = pki().ca_file();
  auto settings = make_imap_settings(upstream, MailboxConfig{});
  EXPECT_NE(settings->tls, nullptr);
  EXPECT_TRUE(settings->tls->verify());
  upstream.ca_file = "/nonexistent/ca.pem";
  settings = make_imap_settings(upstream, MailboxConfig{});
  EXPECT_EQ(settings->tls, nullptr);
  EXPECT_NE(settings->tls_error.find("/nonexistent/ca.pem"), std::string::npos);
  ImapSession session(settings, 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("/nonexistent/ca.pem"), std::string::npos) << status.detail;
}

}  // namespace
}  // namespace popbridge::imap
