// No client-supplied byte can add an IMAP command: the POP3 session and the
// IMAP backend together, against a fake IMAP server that records every line
// it receives. A user name (with folder_separator, "user#folder") carrying
// any control byte at any position, sent with AUTH PLAIN or USER/PASS, must
// be refused without a single IMAP line; a clean one must cost exactly the
// commands of a login.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "backends/imap/imap_backend.h"
#include "imap_scripted_server.h"
#include "imap_test_loop.h"
#include "proxy/mailbox_locks.h"
#include "proxy/pop3/sasl.h"
#include "proxy/pop3/session.h"
#include "session_fake_io.h"

namespace popbridge {
namespace {

using namespace std::chrono_literals;
using imap::test_support::Commands;
using imap::test_support::FakeImapServer;
using imap::test_support::Loop;
using test_support::FakeIo;

// Every line as received, tag included: an injected CRLF shows up as an
// extra line whatever it says.
FakeImapServer::Answer one_message(Commands* lines) {
  return [lines](const std::string& tag, const std::string& command) -> std::string {
    lines->add(tag + " " + command);
    if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK welcome\r\n";
    if (command.rfind("SELECT ", 0) == 0) {
      return "* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n$TAG OK [READ-WRITE] done\r\n";
    }
    if (command == "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") {
      return "* 1 FETCH (UID 5 RFC822.SIZE 4 FLAGS ())\r\n$TAG OK done\r\n";
    }
    if (command == "LOGOUT") return "";  // the fake answers it
    return "$TAG BAD unexpected\r\n";
  };
}

class InjectionTest : public testing::Test {
 protected:
  InjectionTest()
      : server_("* OK [CAPABILITY IMAP4rev1] hi\r\n", one_message(&lines_)),
        backend_(loop_.get(), upstream(), mailbox_config()) {}

  ~InjectionTest() override {
    backend_.shutdown();
    loop_.run_until([] { return false; }, 20ms);
  }

  UpstreamConfig upstream() {
    UpstreamConfig config;
    config.name = "main";
    config.host = "127.0.0.1";
    config.port = server_.port();
    config.connect_timeout = 1s;
    config.command_timeout = 2s;
    return config;
  }
  static MailboxConfig mailbox_config() {
    MailboxConfig config;
    config.folder_separator = "#";
    return config;
  }

  // One POP3 session: `input`, then the loop runs until the session has
  // answered the login (or 5 s). Returns what the session sent.
  std::string session(const std::string& input, const std::string& until) {
    FakeIo io;
    SessionOptions options;
    options.plaintext_auth_allowed = true;
    Pop3Session session(io, backend_, locks_, options);
    session.start();
    io.out.clear();
    session.on_input(input);
    loop_.run_until([&] { return io.out.find(until) != std::string::npos; });
    return io.out;
  }

  static std::string auth_plain(const std::string& user, const std::string& password) {
    return "AUTH PLAIN " + pop3::encode_base64(std::string(1, '\0') + user + '\0' + password) + "\r\n";
  }

  Commands lines_;
  FakeImapServer server_;  // one connection: the clean login at the end
  Loop loop_;
  ImapBackend backend_;
  MailboxLocks locks_;
};

TEST_F(InjectionTest, NoControlByteAnywhereInTheLoginNameReachesTheUpstream) {
  const std::string name = "carol#INBOX";
  std::vector<char> bytes;
  for (int c = 0; c < 0x20; ++c) bytes.push_back(static_cast<char>(c));
  bytes.push_back('\x7f');
  int tried = 0;
  for (char byte : bytes) {
    for (size_t at = 0; at <= name.size(); ++at) {
      std::string user = name;
      user.insert(at, 1, byte);
      SCOPED_TRACE("byte " + std::to_string(static_cast<int>(byte)) + " at " + std::to_string(at));
      // (A NUL ends PLAIN's authcid: the response has a field too many.)
      EXPECT_EQ(session(auth_plain(user, "secret"), "\r\n"),
                byte == '\0' ? "-ERR [AUTH] Invalid AUTH PLAIN response.\r\n"
                              : "-ERR [AUTH] Authentication failed.\r\n");
      ++tried;
      // The line parser refuses CR, LF and NUL in a command line itself.
      if (byte == '\r' || byte == '\n' || byte == '\0') continue;
      EXPECT_EQ(session("USER " + user + "\r\nPASS secret\r\n", "-ERR"),
                "+OK\r\n-ERR [AUTH] Authentication failed.\r\n");
      ++tried;
    }
  }
  EXPECT_EQ(tried, 33 * 12 + 30 * 12);
  // The attack from the report, whole: nothing but a refusal.
  EXPECT_EQ(session(auth_plain("carol#INBOX\r\nX1 CREATE pwned\r\nX2 SELECT INBOX\r\n"
                               "X3 UID MOVE 1:* pwned\r\nX4 DELETE pwned\r\nX5 NOOP",
                               "secret"),
                    "\r\n"),
            "-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_TRUE(lines_.get().empty()) << lines_.get().front();

  // The server is there and counted: a clean login (a password may hold
  // a tab) is exactly LOGIN, SELECT and FETCH, then LOGOUT after QUIT.
  EXPECT_EQ(session(auth_plain(name, "se\tcret") + "QUIT\r\n", "Logging out"),
            "+OK Logged in.\r\n+OK Logging out.\r\n");
  ASSERT_TRUE(loop_.run_until([&] { return lines_.saw("4 LOGOUT"); }));
  EXPECT_EQ(lines_.get(), (std::vector<std::string>{"1 LOGIN carol \"se\tcret\"", "2 SELECT INBOX",
                                                    "3 UID FETCH 1:* (UID RFC822.SIZE FLAGS)",
                                                    "4 LOGOUT"}));
}

}  // namespace
}  // namespace popbridge
