// ImapSession against a fake IMAP server: the commands we send, how the
// answers map to Status, the snapshot's rules, and connection failures.
#include "backends/imap/imap_session.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "imap_scripted_server.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using test_support::FakeImapServer;

constexpr const char* kGreeting = "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n";
constexpr const char* kSelectFive =
    "* 5 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n$TAG OK [READ-WRITE] selected\r\n";
constexpr const char* kSelectEmpty =
    "* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n$TAG OK [READ-WRITE] selected\r\n";

using imap::test_support::Commands;

std::shared_ptr<const ImapSettings> settings_for(uint16_t port) {
  ImapSettings settings;
  settings.upstream.host = "127.0.0.1";
  settings.upstream.port = port;
  settings.upstream.connect_timeout = 1s;
  settings.upstream.command_timeout = 300ms;
  return std::make_shared<const ImapSettings>(settings);
}

// Answers LOGIN, SELECT (an empty folder) and the snapshot's FETCH that
// comes with it with OK, the rest with `more`.
FakeImapServer::Answer logged_in(Commands* commands, FakeImapServer::Answer more) {
  return [commands, more](const std::string& tag, const std::string& command) -> std::string {
    commands->add(command);
    if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK logged in\r\n";
    if (command.rfind("SELECT ", 0) == 0) return kSelectEmpty;
    if (command == "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") return "$TAG OK nothing\r\n";
    return more(tag, command);
  };
}

// A session that is connected, logged in and has selected INBOX.
struct Open {
  explicit Open(FakeImapServer& server) : session(settings_for(server.port()), 1) {
    EXPECT_TRUE(session.connect().ok());
    EXPECT_TRUE(session.login({"alice", "secret"}).ok());
    Snapshot snapshot;
    EXPECT_TRUE(session.snapshot(&snapshot).ok());
  }
  ImapSession session;
};

std::string fetch_all_answer(const std::string& command) {
  if (command != "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") return "$TAG BAD unexpected\r\n";
  return "* 1 FETCH (UID 10 RFC822.SIZE 100 FLAGS (\\Seen))\r\n"
         "* 3 FETCH (UID 30 RFC822.SIZE 300 FLAGS ($pop3DELETED))\r\n"
         "* 2 FETCH (UID 20 FLAGS ())\r\n"
         "* 2 FETCH (RFC822.SIZE 200)\r\n"
         "* 5 FETCH (FLAGS (\\Recent) UID 50 RFC822.SIZE 500)\r\n"
         "* 4 FETCH (UID 40 RFC822.SIZE 400 FLAGS (\\Seen $Junk))\r\n"
         "$TAG OK fetched\r\n";
}

TEST(ImapSession, LogsInSelectsAndTakesTheSnapshot) {
  Commands commands;
  FakeImapServer server(kGreeting, [&](auto&, const std::string& command) -> std::string {
    commands.add(command);
    if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK logged in\r\n";
    if (command.rfind("SELECT ", 0) == 0) return kSelectFive;
    return fetch_all_answer(command);
  });
  ASSERT_TRUE(server.ok());
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "p a\"s\\s"}).ok());
  Snapshot snapshot;
  Status status = session.snapshot(&snapshot);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(snapshot.uidvalidity, 42u);
  ASSERT_EQ(snapshot.messages.size(), 4u);  // UID 30 carries the hide keyword
  EXPECT_EQ(snapshot.messages[0].uid, 10u);
  EXPECT_EQ(snapshot.messages[0].size, 100u);
  EXPECT_TRUE(snapshot.messages[0].seen);
  EXPECT_EQ(snapshot.messages[1].uid, 20u);
  EXPECT_EQ(snapshot.messages[1].size, 200u);  // from two FETCH responses
  EXPECT_FALSE(snapshot.messages[1].seen);
  EXPECT_EQ(snapshot.messages[2].uid, 40u);
  EXPECT_TRUE(snapshot.messages[2].seen);
  EXPECT_EQ(snapshot.messages[3].uid, 50u);
  session.logout(1s);
  auto seen = commands.get();
  ASSERT_GE(seen.size(), 4u);
  EXPECT_EQ(seen[0], "LOGIN alice \"p a\\\"s\\\\s\"");  // quoted and escaped
  EXPECT_EQ(seen[1], "SELECT INBOX");
  EXPECT_EQ(seen[3], "LOGOUT");
}

TEST(ImapSession, AsksForCapabilitiesWhenTheGreetingHasNone) {
  Commands commands;
  FakeImapServer server("* OK hi\r\n", [&](auto&, const std::string& command) -> std::string {
    commands.add(command);
    if (command == "CAPABILITY") return "* CAPABILITY IMAP4rev1 LOGINDISABLED\r\n$TAG OK done\r\n";
    return "$TAG BAD no\r\n";
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  // LOGINDISABLED and no AUTH=PLAIN: nothing we can do, nothing sent.
  Status status = session.login({"alice", "secret"});
  EXPECT_EQ(status.error, UpstreamError::kRefused);
  EXPECT_NE(status.detail.find("LOGINDISABLED"), std::string::npos);
  session.logout(1s);
  EXPECT_EQ(commands.get(), (std::vector<std::string>{"CAPABILITY", "LOGOUT"}));
}

std::string base64_decode(const std::string& in) {
  static const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  int value = 0, bits = -8;
  for (char c : in) {
    size_t index = alphabet.find(c);
    if (index == std::string::npos) break;
    value = (value << 6) + static_cast<int>(index);
    bits += 6;
    if (bits >= 0) {
      out.push_back(static_cast<char>((value >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

TEST(ImapSession, EightBitCredentialsUseAuthenticatePlain) {
  std::string response;
  FakeImapServer server(kGreeting, [&](auto&, const std::string& command) -> std::string {
    if (command == "AUTHENTICATE PLAIN") return "+ \r\n";
    if (command.rfind("<continuation> ", 0) == 0) {
      response = base64_decode(command.substr(15));
      return "$TAG OK welcome\r\n";
    }
    return "$TAG BAD no\r\n";
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  Status status = session.login({"alice", "p\xC3\xA9 \"x\\"});
  EXPECT_TRUE(status.ok()) << status.detail;
  // authzid NUL authcid NUL password; the authzid may be empty or the user.
  const std::string tail = std::string("alice\0p\xC3\xA9 \"x\\", 13);
  ASSERT_GE(response.size(), tail.size());
  EXPECT_EQ(response.substr(response.size() - tail.size()), tail);
  session.logout(1s);
}

TEST(ImapSession, EightBitCredentialsWithoutAuthPlainStillTryLogin) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        [&](auto&, const std::string& command) -> std::string {
                          commands.add(command);
                          return "$TAG OK done\r\n";
                        });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  EXPECT_TRUE(session.login({"alice", "\xC3\xA9"}).ok());
  session.logout(1s);
  EXPECT_EQ(commands.get().front(), "LOGIN alice \"\xC3\xA9\"");
}

TEST(ImapSession, RefusedLoginIsAuthFailedWithoutThePassword) {
  FakeImapServer server(kGreeting, [](auto&, auto&) {
    return std::string("$TAG NO [AUTHENTICATIONFAILED] Authentication failed.\r\n");
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  Status status = session.login({"alice", "hunter2"});
  EXPECT_EQ(status.error, UpstreamError::kAuthFailed);
  EXPECT_NE(status.detail.find("AUTHENTICATIONFAILED"), std::string::npos) << status.detail;
  EXPECT_EQ(status.detail.find("hunter2"), std::string::npos);
}

TEST(ImapSession, LoginUnavailableIsTemporary) {
  FakeImapServer server(kGreeting, [](auto&, auto&) {
    return std::string("$TAG NO [UNAVAILABLE] Try later\r\n");
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  EXPECT_EQ(session.login({"alice", "x"}).error, UpstreamError::kUnavailable);
}

TEST(ImapSession, CredentialsWithLineBreaksAreNeverSent) {
  Commands commands;
  FakeImapServer server(kGreeting, [&](auto&, const std::string& command) {
    commands.add(command);
    return std::string("$TAG OK done\r\n");
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  EXPECT_EQ(session.login({"alice", "x\r\n2 DELETE INBOX"}).error, UpstreamError::kAuthFailed);
  EXPECT_EQ(session.login({"al\nice", "x"}).error, UpstreamError::kAuthFailed);
  EXPECT_EQ(session.login({"alice", std::string("a\0b", 3)}).error, UpstreamError::kAuthFailed);
  session.logout(1s);
  EXPECT_EQ(commands.get(), std::vector<std::string>{"LOGOUT"});
}

TEST(ImapSession, PreauthIsRefused) {
  FakeImapServer server("* PREAUTH [CAPABILITY IMAP4rev1] hello bob\r\n",
                        [](auto&, auto&) { return std::string("$TAG OK done\r\n"); });
  ImapSession session(settings_for(server.port()), 1);
  EXPECT_EQ(session.connect().error, UpstreamError::kRefused);
  EXPECT_TRUE(session.broken());
}

TEST(ImapSession, ByeGreetingIsUnavailable) {
  FakeImapServer server("* BYE [UNAVAILABLE] too busy\r\n",
                        [](auto&, auto&) { return std::string("<close>"); });
  ImapSession session(settings_for(server.port()), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("too busy"), std::string::npos) << status.detail;
}

TEST(ImapSession, SilentServerTimesOutAtConnectTimeout) {
  FakeImapServer server("", [](auto&, auto&) { return std::string("<stall>"); });
  ImapSession session(settings_for(server.port()), 1);
  auto start = std::chrono::steady_clock::now();
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("timed out"), std::string::npos) << status.detail;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(ImapSession, TlsWithoutAContextIsUnavailable) {
  // Settings made without make_imap_settings() (or whose CA file would not
  // load) have no TLS context: never connect in plaintext instead.
  ImapSettings settings = *settings_for(1);
  settings.upstream.tls = TlsMode::kImplicit;
  settings.tls_error = "cannot load CA certificates from /x.pem";
  ImapSession session(std::make_shared<const ImapSettings>(settings), 1);
  Status status = session.connect();
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_EQ(status.detail, "upstream TLS unavailable: cannot load CA certificates from /x.pem");
}

TEST(ImapSession, RefusedSelectIsNoMailbox) {
  FakeImapServer server(kGreeting, [](auto&, const std::string& command) -> std::string {
    if (command.rfind("SELECT", 0) == 0) return "$TAG NO Mailbox doesn't exist\r\n";
    return "$TAG OK done\r\n";
  });
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "x"}).ok());
  Snapshot snapshot;
  Status status = session.snapshot(&snapshot);
  EXPECT_EQ(status.error, UpstreamError::kNoMailbox);
  EXPECT_NE(status.detail.find("doesn't exist"), std::string::npos);
  EXPECT_FALSE(session.broken());
}

// SELECT and the snapshot's FETCH go out together.
TEST(ImapSession, EmptyFolderGivesAnEmptySnapshot) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, auto&) {
                          return std::string("$TAG BAD unexpected\r\n");
                        }));
  ImapSession session(settings_for(server.port()), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  Snapshot snapshot;
  ASSERT_TRUE(session.snapshot(&snapshot).ok());
  EXPECT_EQ(snapshot.uidvalidity, 7u);
  EXPECT_TRUE(snapshot.messages.empty());
  session.logout(1s);
  EXPECT_EQ(commands.get(),
            (std::vector<std::string>{"LOGIN alice secret", "SELECT INBOX",
                                      "UID FETCH 1:* (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
}

TEST(ImapSession, FetchesAPartialBodyPeekAmongOtherResponses) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, const std::string& command) {
                          if (command != "UID FETCH 7 BODY.PEEK[]<100.5>") {
                            return std::string("$TAG BAD unexpected\r\n");
                          }
                          return std::string(
                              "* 1 FETCH (FLAGS (\\Seen))\r\n"
                              "* 3 FETCH (UID 7 BODY[]<100> {5}\r\nhe\r\no)\r\n"
                              "$TAG OK done\r\n");
                        }));
  Open open(server);
  std::string data;
  Status status = open.session.fetch(7, 100, 5, &data);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(data, "he\r\no");
}

TEST(ImapSession, FetchOfAMissingMessageIsMessageGone) {
  int round = 0;
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [&](auto&, auto&) -> std::string {
                          switch (round++) {
                            case 0: return "$TAG OK nothing\r\n";
                            case 1: return "$TAG NO [EXPUNGEISSUED] gone\r\n";
                            case 2: return "$TAG NO something else\r\n";
                            default: return "$TAG BAD what\r\n";
                          }
                        }));
  Open open(server);
  std::string data;
  EXPECT_EQ(open.session.fetch(7, 0, 10, &data).error, UpstreamError::kMessageGone);
  EXPECT_EQ(open.session.fetch(7, 0, 10, &data).error, UpstreamError::kMessageGone);
  EXPECT_EQ(open.session.fetch(7, 0, 10, &data).error, UpstreamError::kRefused);
  EXPECT_EQ(open.session.fetch(7, 0, 10, &data).error, UpstreamError::kRefused);
  EXPECT_FALSE(open.session.broken());
}

TEST(ImapSession, ConnectionLostInsideALiteralIsUnavailableAndFinal) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, auto&) {
                          return std::string("* 3 FETCH (UID 7 BODY[]<0> {100}\r\nabc<close>");
                        }));
  Open open(server);
  std::string data;
  auto start = std::chrono::steady_clock::now();
  Status status = open.session.fetch(7, 0, 100, &data);
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_TRUE(open.session.broken());
  // Later calls fail at once, without another round trip.
  EXPECT_EQ(open.session.fetch(7, 0, 100, &data).error, UpstreamError::kUnavailable);
  EXPECT_EQ(open.session.hide({7}).error, UpstreamError::kUnavailable);
  open.session.logout(1s);
  auto seen = commands.get();
  EXPECT_EQ(seen.back(), "UID FETCH 7 BODY.PEEK[]<0.100>") << "LOGOUT sent on a broken session";
}

TEST(ImapSession, EofInsideALiteralDoesNotSpin) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, const std::string& command) {
                          if (command.rfind("UID FETCH", 0) == 0) return std::string("<close>");
                          return std::string("$TAG OK done\r\n");
                        }));
  Open open(server);
  std::string data;
  Status status = open.session.fetch(7, 0, 100, &data);
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("closed"), std::string::npos) << status.detail;
}

TEST(ImapSession, SlowAnswerTimesOut) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, auto&) {
                          return std::string("<stall>");
                        }));
  Open open(server);
  std::string data;
  auto start = std::chrono::steady_clock::now();
  Status status = open.session.fetch(7, 0, 100, &data);
  auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_NE(status.detail.find("timed out"), std::string::npos) << status.detail;
  EXPECT_GE(waited, 250ms);
  EXPECT_LT(waited, 2s);
}

// fetch_bodies() reads through libetpan's mailstream on its own: what it
// leaves in libetpan's read buffer (and the tag counter) must be exactly
// where libetpan's parser expects them.
TEST(ImapSession, FetchLeavesLibetpanInStep) {
  Commands commands;
  std::mutex mutex;
  std::vector<std::string> tags;
  // Larger than libetpan's 64 KiB buffer: read partly straight from the socket.
  const std::string big(200000, 'b');
  FakeImapServer server(
      kGreeting, logged_in(&commands, [&](const std::string& tag, const std::string& command) {
        {
          std::lock_guard lock(mutex);
          tags.push_back(tag);
        }
        if (command == "UID FETCH 7 BODY.PEEK[]<0.300000>") {
          // One write: the answer, then responses for the next command.
          return "* 1 FETCH (UID 7 BODY[]<0> {" + std::to_string(big.size()) + "}\r\n" + big +
                 ")\r\n$TAG OK done\r\n* 5 EXISTS\r\n"
                 "* 2 FETCH (FLAGS (\\Seen))\r\n";
        }
        if (command.rfind("UID STORE", 0) == 0) {
          // And what follows this one stays for the next fetch.
          return std::string("$TAG OK stored\r\n* 3 EXPUNGE\r\n* OK [ALERT] {5}\r\n");
        }
        if (command == "UID FETCH 8 BODY.PEEK[]<0.10>") {
          return std::string("* 4 FETCH (UID 8 BODY[]<0> {3}\r\nabc)\r\n$TAG OK done\r\n");
        }
        return std::string("$TAG BAD unexpected\r\n");
      }));
  Open open(server);
  std::string data;
  Status status = open.session.fetch(7, 0, 300000, &data);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(data, big);
  status = open.session.hide({7});
  EXPECT_TRUE(status.ok()) << status.detail;
  status = open.session.fetch(8, 0, 10, &data);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(data, "abc");
  status = open.session.hide({8});
  EXPECT_TRUE(status.ok()) << status.detail;
  EXPECT_FALSE(open.session.broken());
  open.session.logout(1s);
  auto seen = commands.get();
  ASSERT_EQ(seen.size(), 8u);  // with the snapshot's UID FETCH 1:*
  EXPECT_EQ(seen[3], "UID FETCH 7 BODY.PEEK[]<0.300000>");
  EXPECT_EQ(seen[4], "UID STORE 7 +FLAGS.SILENT ($POP3Deleted)");
  EXPECT_EQ(seen[5], "UID FETCH 8 BODY.PEEK[]<0.10>");
  EXPECT_EQ(seen[7], "LOGOUT");
  std::lock_guard lock(mutex);
  // Every command its own tag, whichever side sent it.
  std::vector<std::string> sorted = tags;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
}

TEST(ImapSession, BatchFetchWithAMessageExpungedMeanwhile) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, const std::string& command) {
                          if (command != "UID FETCH 7,8,9 BODY.PEEK[]<0.100>") {
                            return std::string("$TAG BAD unexpected\r\n");
                          }
                          return std::string(
                              "* 3 FETCH (UID 9 BODY[]<0> {4}\r\nnine)\r\n"
                              "* 2 FETCH (UID 8 BODY[]<0> NIL)\r\n"
                              "* 2 FETCH (FLAGS (\\Deleted))\r\n"
                              "* 1 FETCH (UID 7 BODY[]<0> {5}\r\nseven)\r\n"
                              "$TAG OK [EXPUNGEISSUED] Some messages were expunged\r\n");
                        }));
  Open open(server);
  std::vector<FetchedChunk> chunks;
  open.session.fetch_bodies({7, 8, 9}, 0, 100, &chunks);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].uid, 7u);
  EXPECT_TRUE(chunks[0].status.ok()) << chunks[0].status.detail;
  EXPECT_EQ(chunks[0].data, "seven");
  EXPECT_EQ(chunks[1].uid, 8u);
  EXPECT_EQ(chunks[1].status.error, UpstreamError::kMessageGone);
  EXPECT_EQ(chunks[1].data, "");
  EXPECT_EQ(chunks[2].uid, 9u);
  EXPECT_TRUE(chunks[2].status.ok()) << chunks[2].status.detail;
  EXPECT_EQ(chunks[2].data, "nine");
  EXPECT_FALSE(open.session.broken());
}

// Under [EXPUNGEISSUED] an empty body is no body, and a single message is
// gone whatever came: a short piece must not end the message early.
TEST(ImapSession, EmptyBodyUnderExpungeIssuedIsGone) {
  int round = 0;
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [&](auto&, auto&) -> std::string {
                          switch (round++) {
                            case 0:
                              return "* 1 FETCH (UID 7 BODY[]<100> \"\")\r\n"
                                     "$TAG OK [EXPUNGEISSUED] gone\r\n";
                            case 1:
                              return "* 1 FETCH (UID 7 BODY[]<100> {3}\r\nabc)\r\n"
                                     "$TAG OK [EXPUNGEISSUED] gone\r\n";
                            default:
                              return "* 1 FETCH (UID 7 BODY[]<0> {3}\r\nabc)\r\n"
                                     "* 2 FETCH (UID 8 BODY[]<0> \"\")\r\n"
                                     "$TAG OK [EXPUNGEISSUED] gone\r\n";
                          }
                        }));
  Open open(server);
  std::string data;
  EXPECT_EQ(open.session.fetch(7, 100, 10, &data).error, UpstreamError::kMessageGone);
  EXPECT_EQ(open.session.fetch(7, 100, 10, &data).error, UpstreamError::kMessageGone);
  std::vector<FetchedChunk> chunks;
  open.session.fetch_bodies({7, 8}, 0, 10, &chunks);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_TRUE(chunks[0].status.ok()) << chunks[0].status.detail;
  EXPECT_EQ(chunks[0].data, "abc");
  EXPECT_EQ(chunks[1].status.error, UpstreamError::kMessageGone);
  EXPECT_FALSE(open.session.broken());
}

TEST(ImapSession, BatchFetchTaggedNoExpungeIssuedWithAMessageLeftOut) {
  Commands commands;
  FakeImapServer server(
      kGreeting, logged_in(&commands, [](auto&, auto&) {
        return std::string(
            "* 1 FETCH (UID 7 BODY[]<0> {5}\r\nseven)\r\n"
            "* 3 FETCH (UID 9 BODY[]<0> {4}\r\nnine)\r\n"
            "$TAG NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n");
      }));
  Open open(server);
  std::vector<FetchedChunk> chunks;
  open.session.fetch_bodies({7, 8, 9}, 0, 100, &chunks);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_TRUE(chunks[0].status.ok()) << chunks[0].status.detail;
  EXPECT_EQ(chunks[0].data, "seven");
  EXPECT_EQ(chunks[1].status.error, UpstreamError::kMessageGone);
  EXPECT_TRUE(chunks[2].status.ok()) << chunks[2].status.detail;
  EXPECT_EQ(chunks[2].data, "nine");
}

TEST(ImapSession, RefusedBatchFetchIsRefusedForAllAndNotFinal) {
  int round = 0;
  Commands commands;
  FakeImapServer server(
      kGreeting, logged_in(&commands, [&](auto&, const std::string& command) {
        if (command.rfind("UID STORE", 0) == 0) return std::string("$TAG OK done\r\n");
        switch (round++) {
          case 0:
            return std::string(
                "* 1 FETCH (UID 7 BODY[]<0> {5}\r\nseven)\r\n"
                "$TAG NO [SERVERBUG] Internal error occurred\r\n");
          case 1:
            return std::string("$TAG BAD Error in IMAP command UID FETCH\r\n");
          default:
            return std::string("* 1 FETCH (UID 7 BODY[]<0> {2}\r\nok)\r\n$TAG OK done\r\n");
        }
      }));
  Open open(server);
  std::vector<FetchedChunk> chunks;
  open.session.fetch_bodies({7, 8, 9}, 0, 100, &chunks);
  ASSERT_EQ(chunks.size(), 3u);
  for (const FetchedChunk& chunk : chunks) {
    EXPECT_EQ(chunk.status.error, UpstreamError::kRefused) << chunk.uid;
    EXPECT_NE(chunk.status.detail.find("Internal error"), std::string::npos) << chunk.status.detail;
  }
  EXPECT_FALSE(open.session.broken());
  EXPECT_TRUE(open.session.hide({1}).ok());

  open.session.fetch_bodies({7, 8, 9}, 0, 100, &chunks);
  ASSERT_EQ(chunks.size(), 3u);
  for (const FetchedChunk& chunk : chunks) {
    EXPECT_EQ(chunk.status.error, UpstreamError::kRefused) << chunk.uid;
    EXPECT_NE(chunk.status.detail.find("Error in IMAP command"), std::string::npos)
        << chunk.status.detail;
  }
  EXPECT_FALSE(open.session.broken());

  std::string data;
  Status status = open.session.fetch(7, 0, 100, &data);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(data, "ok");
  open.session.logout(1s);
  EXPECT_EQ(commands.get().back(), "LOGOUT");
}

TEST(ImapSession, ConnectionLostInsideABatchLiteralIsUnavailableForAll) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, auto&) {
                          return std::string(
                              "* 1 FETCH (UID 7 BODY[]<0> {5}\r\nseven)\r\n"
                              "* 2 FETCH (UID 8 BODY[]<0> {100}\r\nabc<close>");
                        }));
  Open open(server);
  std::vector<FetchedChunk> chunks;
  auto start = std::chrono::steady_clock::now();
  open.session.fetch_bodies({7, 8, 9}, 0, 100, &chunks);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  ASSERT_EQ(chunks.size(), 3u);
  for (const FetchedChunk& chunk : chunks) {
    EXPECT_EQ(chunk.status.error, UpstreamError::kUnavailable) << chunk.uid;
  }
  EXPECT_TRUE(open.session.broken());
  EXPECT_EQ(open.session.hide({7}).error, UpstreamError::kUnavailable);
}

TEST(ImapSession, BatchAnswerBreakingTheProtocolIsFinal) {
  Commands commands;
  FakeImapServer server(
      kGreeting, logged_in(&commands, [](auto&, auto&) {
        // A body larger than asked for.
        return std::string("* 1 FETCH (UID 7 BODY[]<0> {11}\r\nhello world)\r\n$TAG OK done\r\n");
      }));
  Open open(server);
  std::vector<FetchedChunk> chunks;
  open.session.fetch_bodies({7, 8}, 0, 10, &chunks);
  ASSERT_EQ(chunks.size(), 2u);
  for (const FetchedChunk& chunk : chunks) {
    EXPECT_EQ(chunk.status.error, UpstreamError::kUnavailable) << chunk.uid;
    EXPECT_NE(chunk.status.detail.find("more than asked for"), std::string::npos)
        << chunk.status.detail;
  }
  EXPECT_TRUE(open.session.broken());
  open.session.logout(1s);
  EXPECT_EQ(commands.get().back(), "UID FETCH 7,8 BODY.PEEK[]<0.10>")
      << "LOGOUT on a broken session";
}

TEST(ImapSession, HideStoresTheKeywordOnACompactSet) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, const std::string& command) {
                          if (command.rfind("UID STORE", 0) == 0) return std::string("$TAG OK done\r\n");
                          return std::string("$TAG BAD what\r\n");
                        }));
  Open open(server);
  EXPECT_TRUE(open.session.hide({}).ok());
  EXPECT_TRUE(open.session.hide({5, 3, 4, 9, 0, 9}).ok());
  std::vector<uint32_t> scattered;
  for (uint32_t uid = 1; uid <= 5000; uid += 2) scattered.push_back(uid);  // 2500 ranges
  EXPECT_TRUE(open.session.hide(scattered).ok());
  open.session.logout(1s);
  auto seen = commands.get();
  ASSERT_EQ(seen.size(), 8u);  // LOGIN, SELECT, FETCH 1:*, 1 + 3 stores, LOGOUT
  EXPECT_EQ(seen[3], "UID STORE 3:5,9 +FLAGS.SILENT ($POP3Deleted)");
  EXPECT_EQ(seen[4].rfind("UID STORE 1,3,5,", 0), 0u);
  EXPECT_EQ(seen[7], "LOGOUT");
}

TEST(ImapSession, RefusedStoreIsRefused) {
  Commands commands;
  FakeImapServer server(kGreeting, logged_in(&commands, [](auto&, auto&) {
                          return std::string("$TAG NO [CANNOT] read-only\r\n");
                        }));
  Open open(server);
  Status status = open.session.hide({1});
  EXPECT_EQ(status.error, UpstreamError::kRefused);
  EXPECT_NE(status.detail.find("read-only"), std::string::npos);
}

}  // namespace
}  // namespace popbridge::imap
