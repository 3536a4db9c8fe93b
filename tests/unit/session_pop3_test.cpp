// The POP3 state machine against the in-memory backend: exact reply bytes.
#include <gtest/gtest.h>

#include "backends/memory/memory_backend.h"
#include "proxy/pop3/sasl.h"
#include "proxy/pop3/session.h"
#include "session_fake_io.h"

namespace popbridge {
namespace {

using test_support::FakeIo;

const std::string kMessage1 = "Subject: one\r\n\r\nHello\r\n.dot line\r\n.\r\nbye\r\n";
const std::string kMessage2 = "Subject: two\r\nX: y\r\n\r\nline 1\r\nline 2\r\nline 3\r\n";
const std::string kMessage3 = "Subject: three\r\n\r\nno final newline";

class SessionTest : public testing::Test {
 protected:
  void SetUp() override {
    auto& alice = backend.add_account("alice", "secret");
    alice.uidvalidity = 0x5F00AB12;
    alice.messages = {{4, kMessage1, true, {}},
                      {7, kMessage2, false, {}},
                      {9, "hidden\r\n", false, {"$POP3Deleted"}},
                      {12, kMessage3, false, {}}};
    backend.add_account("bob", "p a\"s\\s\xC3\xA9");
    session = make_session(io);
  }

  std::unique_ptr<Pop3Session> make_session(FakeIo& target) {
    SessionOptions options;
    options.chunk_size = 7;  // many chunks per message: exercises resumption
    options.plaintext_auth_allowed = plaintext_auth_allowed;
    if (tweak) tweak(options);
    options.starttls_available = starttls_available;
    auto made = std::make_unique<Pop3Session>(target, backend, locks, options);
    made->start();
    return made;
  }

  // Sends `input` and lets the backend answer everything it was asked.
  std::string exchange(std::string_view input, Pop3Session* target = nullptr, FakeIo* out = nullptr) {
    target = target ? target : session.get();
    out = out ? out : &io;
    out->out.clear();
    target->on_input(input);
    while (backend.run_pending() > 0) {
    }
    return out->out;
  }

  void login() { ASSERT_EQ(exchange("USER alice\r\nPASS secret\r\n"), "+OK\r\n+OK Logged in.\r\n"); }

  bool plaintext_auth_allowed = true;
  bool starttls_available = false;
  std::function<void(SessionOptions&)> tweak;
  MemoryBackend backend;
  MailboxLocks locks;
  FakeIo io;
  std::unique_ptr<Pop3Session> session;
};

TEST_F(SessionTest, Greeting) { EXPECT_EQ(io.out, "+OK popbridge ready.\r\n"); }

TEST_F(SessionTest, CapaBeforeAndAfterLogin) {
  EXPECT_EQ(exchange("CAPA\r\n"),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            "PIPELINING\r\nUSER\r\nSASL PLAIN\r\nEXPIRE NEVER\r\nIMPLEMENTATION popbridge\r\n.\r\n");
  login();
  EXPECT_EQ(exchange("capa\r\n"),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n"
            "PIPELINING\r\nEXPIRE NEVER\r\nIMPLEMENTATION popbridge\r\n.\r\n");
}

TEST_F(SessionTest, WrongPasswordIsAuthError) {
  EXPECT_EQ(exchange("USER alice\r\nPASS wrong\r\n"), "+OK\r\n-ERR [AUTH] Authentication failed.\r\n");
  EXPECT_EQ(exchange("STAT\r\n"), "-ERR Command not valid in this state.\r\n");
  login();  // a later attempt may still succeed
}

TEST_F(SessionTest, PassWithoutUser) {
  EXPECT_EQ(exchange("PASS secret\r\n"), "-ERR No user name given.\r\n");
}

TEST_F(SessionTest, UnreachableUpstreamIsSysTemp) {
  backend.fail_next(UpstreamError::kUnavailable);
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n"),
            "+OK\r\n-ERR [SYS/TEMP] Mail server unavailable, try again later.\r\n");
}

TEST_F(SessionTest, PasswordWithSpacesQuotesAndUtf8) {
  EXPECT_EQ(exchange("USER bob\r\nPASS p a\"s\\s\xC3\xA9\r\n"), "+OK\r\n+OK Logged in.\r\n");
}

TEST_F(SessionTest, SecondSessionOnSameMailboxIsInUse) {
  login();
  FakeIo io2;
  auto second = make_session(io2);
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n", second.get(), &io2),
            "+OK\r\n-ERR [IN-USE] Mailbox is locked by another POP3 session.\r\n");
  EXPECT_EQ(backend.open_mailboxes(), 1u);  // the refused login was logged out
  session.reset();                          // the first client leaves
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n", second.get(), &io2),
            "+OK\r\n+OK Logged in.\r\n");
}

TEST_F(SessionTest, StatListUidl) {
  login();
  const std::string size1 = std::to_string(kMessage1.size());
  const std::string size2 = std::to_string(kMessage2.size());
  const std::string size3 = std::to_string(kMessage3.size());
  const std::string total = std::to_string(kMessage1.size() + kMessage2.size() + kMessage3.size());
  EXPECT_EQ(exchange("STAT\r\n"), "+OK 3 " + total + "\r\n");
  EXPECT_EQ(exchange("LIST\r\n"), "+OK 3 messages (" + total + " octets)\r\n1 " + size1 + "\r\n2 " +
                                      size2 + "\r\n3 " + size3 + "\r\n.\r\n");
  EXPECT_EQ(exchange("LIST 2\r\n"), "+OK 2 " + size2 + "\r\n");
  EXPECT_EQ(exchange("UIDL\r\n"),
            "+OK\r\n1 000000045f00ab12\r\n2 000000075f00ab12\r\n3 0000000c5f00ab12\r\n.\r\n");
  EXPECT_EQ(exchange("UIDL 3\r\n"), "+OK 3 0000000c5f00ab12\r\n");
}

TEST_F(SessionTest, BadMessageNumbers) {
  login();
  EXPECT_EQ(exchange("LIST 0\r\n"), "-ERR There's no message 0.\r\n");
  EXPECT_EQ(exchange("LIST 4\r\n"), "-ERR There's no message 4.\r\n");
  EXPECT_EQ(exchange("RETR 99999999999999999999\r\n"), "-ERR Invalid message number.\r\n");
  EXPECT_EQ(exchange("RETR -1\r\n"), "-ERR Invalid message number.\r\n");
  EXPECT_EQ(exchange("TOP 1 -1\r\n"), "-ERR Invalid number of lines.\r\n");
  EXPECT_EQ(exchange("RETR\r\n"), "-ERR Usage: RETR <message>\r\n");
}

TEST_F(SessionTest, RetrDotStuffsAcrossChunks) {
  login();
  EXPECT_EQ(exchange("RETR 1\r\n"), "+OK " + std::to_string(kMessage1.size()) +
                                        " octets\r\nSubject: one\r\n\r\nHello\r\n..dot line\r\n"
                                        "..\r\nbye\r\n.\r\n");
  EXPECT_EQ(exchange("RETR 3\r\n"), "+OK " + std::to_string(kMessage3.size()) +
                                        " octets\r\nSubject: three\r\n\r\nno final newline\r\n.\r\n");
}

TEST_F(SessionTest, Top) {
  login();
  EXPECT_EQ(exchange("TOP 2 0\r\n"), "+OK\r\nSubject: two\r\nX: y\r\n\r\n.\r\n");
  EXPECT_EQ(exchange("TOP 2 2\r\n"), "+OK\r\nSubject: two\r\nX: y\r\n\r\nline 1\r\nline 2\r\n.\r\n");
  EXPECT_EQ(exchange("TOP 2 100\r\n"),
            "+OK\r\nSubject: two\r\nX: y\r\n\r\nline 1\r\nline 2\r\nline 3\r\n.\r\n");
}

TEST_F(SessionTest, DeleRsetAndQuitCommitsOnlyDeleted) {
  login();
  EXPECT_EQ(exchange("DELE 2\r\n"), "+OK Marked to be deleted.\r\n");
  EXPECT_EQ(exchange("DELE 2\r\n"), "-ERR Message is deleted.\r\n");
  EXPECT_EQ(exchange("RETR 2\r\n"), "-ERR Message is deleted.\r\n");
  EXPECT_EQ(exchange("STAT\r\n"),
            "+OK 2 " + std::to_string(kMessage1.size() + kMessage3.size()) + "\r\n");
  EXPECT_EQ(exchange("RSET\r\n"), "+OK\r\n");
  EXPECT_EQ(exchange("STAT\r\n").substr(0, 6), "+OK 3 ");
  EXPECT_EQ(exchange("DELE 3\r\nQUIT\r\n"),
            "+OK Marked to be deleted.\r\n+OK Logging out, messages deleted.\r\n");
  EXPECT_TRUE(io.closed);
  const auto& messages = backend.account("alice")->messages;
  EXPECT_TRUE(messages[0].keywords.empty());
  EXPECT_TRUE(messages[1].keywords.empty());
  EXPECT_EQ(messages[3].keywords.count("$POP3Deleted"), 1u);
}

TEST_F(SessionTest, DisconnectBeforeQuitChangesNothing) {
  login();
  exchange("DELE 1\r\nDELE 2\r\n");
  session.reset();
  backend.run_pending();
  for (const auto& message : backend.account("alice")->messages)
    if (message.uid != 9) {
      EXPECT_TRUE(message.keywords.empty());
    }
}

TEST_F(SessionTest, FailedCommitSaysSoAndChangesNothing) {
  login();
  exchange("DELE 1\r\n");
  backend.fail_next(UpstreamError::kUnavailable);
  EXPECT_EQ(exchange("QUIT\r\n"), "-ERR [SYS/TEMP] Some deleted messages may not have been removed.\r\n");
  EXPECT_TRUE(io.closed);
  EXPECT_TRUE(backend.account("alice")->messages[0].keywords.empty());
}

TEST_F(SessionTest, LastStartsAtSeenAndRisesWithRetr) {
  login();
  EXPECT_EQ(exchange("LAST\r\n"), "+OK 1\r\n");
  exchange("TOP 3 0\r\n");
  EXPECT_EQ(exchange("LAST\r\n"), "+OK 1\r\n");
  exchange("RETR 3\r\n");
  EXPECT_EQ(exchange("LAST\r\n"), "+OK 3\r\n");
  exchange("RETR 2\r\n");
  EXPECT_EQ(exchange("LAST\r\n"), "+OK 3\r\n");
  exchange("RSET\r\n");
  EXPECT_EQ(exchange("LAST\r\n"), "+OK 1\r\n");
}

TEST_F(SessionTest, PipelinedCommandsWholeAndByteByByte) {
  const std::string input = "USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nTOP 2 1\r\nNOOP\r\nQUIT\r\n";
  const std::string whole = exchange(input);

  backend.account("alice");  // same data, fresh session and locks
  session.reset();
  FakeIo io2;
  auto second = make_session(io2);
  io2.out.clear();
  for (char c : input) {
    second->on_input(std::string_view(&c, 1));
    while (backend.run_pending() > 0) {
    }
  }
  EXPECT_EQ(io2.out, whole);
  EXPECT_NE(whole.find("+OK Logging out."), std::string::npos);
}

TEST_F(SessionTest, TooManyBadCommandsClose) {
  std::string input;
  for (int i = 0; i < 9; ++i) input += "BOGUS\r\n";
  exchange(input);
  EXPECT_FALSE(io.closed);
  EXPECT_EQ(exchange("BOGUS\r\n"), "-ERR Unknown command.\r\n-ERR Too many bad commands, closing.\r\n");
  EXPECT_TRUE(io.closed);
}

TEST_F(SessionTest, LongLineIsRefusedAndSkipped) {
  EXPECT_EQ(exchange(std::string(300, 'A') + "\r\nNOOP\r\n"),
            "-ERR Line too long.\r\n-ERR Command not valid in this state.\r\n");
}

TEST_F(SessionTest, AuthPlainWithInitialResponse) {
  EXPECT_EQ(exchange("AUTH\r\n"), "+OK\r\nPLAIN\r\n.\r\n");
  const std::string ir = pop3::encode_base64(std::string("\0alice\0secret", 13));
  EXPECT_EQ(exchange("AUTH PLAIN " + ir + "\r\n"), "+OK Logged in.\r\n");
}

TEST_F(SessionTest, AuthPlainWithContinuation) {
  EXPECT_EQ(exchange("AUTH PLAIN\r\n"), "+ \r\n");
  const std::string response = pop3::encode_base64(std::string("alice\0alice\0secret", 18));
  EXPECT_EQ(exchange(response + "\r\n"), "+OK Logged in.\r\n");
}

TEST_F(SessionTest, AuthPlainRefusals) {
  EXPECT_EQ(exchange("AUTH PLAIN\r\n*\r\n"), "+ \r\n-ERR Authentication aborted.\r\n");
  EXPECT_EQ(exchange("AUTH PLAIN !!!!\r\n"), "-ERR [AUTH] Invalid AUTH PLAIN response.\r\n");
  const std::string other = pop3::encode_base64(std::string("bob\0alice\0secret", 16));
  EXPECT_EQ(exchange("AUTH PLAIN " + other + "\r\n"), "-ERR [AUTH] Invalid AUTH PLAIN response.\r\n");
  EXPECT_EQ(exchange("AUTH CRAM-MD5\r\n"), "-ERR Unsupported authentication mechanism.\r\n");
  const std::string wrong = pop3::encode_base64(std::string("\0alice\0nope", 11));
  EXPECT_EQ(exchange("AUTH PLAIN " + wrong + "\r\n"), "-ERR [AUTH] Authentication failed.\r\n");
}

TEST_F(SessionTest, MessageExpungedElsewhere) {
  login();
  auto& messages = backend.account("alice")->messages;
  messages.erase(messages.begin());  // another IMAP client expunged UID 4
  EXPECT_EQ(exchange("RETR 1\r\n"), "-ERR Message no longer exists.\r\n");
  EXPECT_EQ(exchange("NOOP\r\n"), "+OK\r\n");
}

TEST_F(SessionTest, UpstreamFailureMidMessageAbortsWithoutFinalDot) {
  tweak = [](SessionOptions& options) { options.prefetch = 0; };  // the failure hits chunk 2
  session = make_session(io);
  login();
  io.out.clear();
  session->on_input("RETR 1\r\n");
  backend.run_one();  // delivers the first chunk only; the next is queued
  ASSERT_NE(io.out.find("+OK"), std::string::npos);
  backend.fail_next(UpstreamError::kUnavailable);
  backend.run_pending();
  EXPECT_TRUE(io.aborted);
  EXPECT_EQ(io.out.find("\r\n.\r\n"), std::string::npos);
}

TEST_F(SessionTest, SlowReaderPausesTheTransfer) {
  login();
  io.out.clear();
  session->on_input("RETR 1\r\nNOOP\r\n");
  backend.run_one();                   // first chunk out, the second asked for
  io.queued_bytes = 10 * 1024 * 1024;  // now the client stops reading
  while (backend.run_pending() > 0) {
  }
  EXPECT_EQ(backend.pending(), 0u);    // nothing more is asked of the upstream
  const size_t sent = io.out.size();
  EXPECT_LT(sent, kMessage1.size());
  io.queued_bytes = 0;
  session->on_drain();
  while (backend.run_pending() > 0) {
  }
  EXPECT_GT(io.out.size(), sent);
  EXPECT_NE(io.out.find("bye\r\n.\r\n+OK\r\n"), std::string::npos);
}

TEST_F(SessionTest, ClientNotReadingRepliesStopsAnswering) {
  login();
  io.queued_bytes = 10 * 1024 * 1024;
  EXPECT_EQ(exchange("NOOP\r\nNOOP\r\n"), "");
  io.queued_bytes = 0;
  io.out.clear();
  session->on_drain();
  EXPECT_EQ(io.out, "+OK\r\n+OK\r\n");
}

class StlsTest : public SessionTest {
 protected:
  void SetUp() override {
    plaintext_auth_allowed = false;
    starttls_available = true;
    SessionTest::SetUp();
  }
};

TEST_F(StlsTest, CredentialsRefusedBeforeTls) {
  const std::string capa = exchange("CAPA\r\n");
  EXPECT_NE(capa.find("STLS\r\n"), std::string::npos);
  EXPECT_EQ(capa.find("USER\r\n"), std::string::npos);
  EXPECT_EQ(capa.find("SASL"), std::string::npos);
  const std::string refusal =
      "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections, use STLS.\r\n";
  EXPECT_EQ(exchange("USER alice\r\n"), refusal);
  EXPECT_EQ(exchange("PASS secret\r\n"), refusal);
  EXPECT_EQ(exchange("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"), refusal);
  EXPECT_EQ(backend.pending(), 0u);  // nothing reached the upstream
}

TEST_F(StlsTest, PlaintextBehindStlsIsDiscarded) {
  EXPECT_EQ(exchange("STLS\r\nUSER alice\r\nPASS secret\r\n"), "+OK Begin TLS negotiation.\r\n");
  EXPECT_TRUE(io.tls_started);
  EXPECT_EQ(backend.pending(), 0u);
  const std::string capa = exchange("CAPA\r\n");
  EXPECT_EQ(capa.find("STLS"), std::string::npos);
  EXPECT_NE(capa.find("USER\r\n"), std::string::npos);
  EXPECT_EQ(exchange("STLS\r\n"), "-ERR TLS is already active.\r\n");
  login();
}

TEST_F(SessionTest, StlsWhereNotOffered) {
  EXPECT_EQ(exchange("STLS\r\n"), "-ERR STLS is not available on this port.\r\n");
  EXPECT_FALSE(io.tls_started);
}

TEST_F(SessionTest, MailboxOptions) {
  tweak = [](SessionOptions& options) {
    std::string error;
    options.uidl_format = *UidlFormat::parse("courier", error);
    options.enable_last = false;
    options.lock = false;
    options.expire = "30";
  };
  session = make_session(io);
  EXPECT_NE(exchange("CAPA\r\n").find("EXPIRE 30\r\n"), std::string::npos);
  login();
  EXPECT_EQ(exchange("UIDL 1\r\n"), "+OK 1 1593879314-4\r\n");
  EXPECT_EQ(exchange("LAST\r\n"), "-ERR LAST command not enabled.\r\n");
  FakeIo io2;
  auto second = make_session(io2);
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n", second.get(), &io2), "+OK\r\n+OK Logged in.\r\n");
}

TEST_F(SessionTest, IdleTimeoutWhileTheUpstreamWorksIsIgnored) {
  login();
  exchange("DELE 1\r\n");
  io.out.clear();
  session->on_input("QUIT\r\n");  // the commit is now with the upstream
  session->on_idle_timeout();
  EXPECT_FALSE(io.closed);
  backend.run_pending();
  EXPECT_EQ(io.out, "+OK Logging out, messages deleted.\r\n");
  EXPECT_TRUE(io.closed);
}

TEST_F(SessionTest, IdleTimeoutInTheMiddleOfAMessageAborts) {
  login();
  io.out.clear();
  session->on_input("RETR 1\r\n");
  backend.run_one();
  session->on_idle_timeout();
  EXPECT_TRUE(io.aborted);
  EXPECT_EQ(io.out.find("Disconnected"), std::string::npos);
}

TEST_F(SessionTest, QuitReportsWhatRetrSentWhole) {
  login();
  exchange("RETR 1\r\nTOP 2 0\r\nRETR 3\r\nQUIT\r\n");
  const auto& messages = backend.account("alice")->messages;
  EXPECT_TRUE(messages[0].retrieved);
  EXPECT_FALSE(messages[1].retrieved);  // TOP is not a retrieval
  EXPECT_TRUE(messages[3].retrieved);
}

TEST_F(SessionTest, PipelinedRetrsArePrefetched) {
  login();
  io.out.clear();
  session->on_input("RETR 1\r\nRETR 2\r\nRETR 3\r\nQUIT\r\n");
  // The first chunk of message 1, and those of messages 2 and 3 ahead of time.
  EXPECT_EQ(backend.pending(), 3u);
  while (backend.run_pending() > 0) {
  }
  EXPECT_EQ(io.out, "+OK " + std::to_string(kMessage1.size()) +
                        " octets\r\nSubject: one\r\n\r\nHello\r\n..dot line\r\n..\r\nbye\r\n.\r\n"
                        "+OK " + std::to_string(kMessage2.size()) + " octets\r\n" + kMessage2 + ".\r\n"
                        "+OK " + std::to_string(kMessage3.size()) + " octets\r\n" + kMessage3 +
                        "\r\n.\r\n+OK Logging out.\r\n");
}

TEST_F(SessionTest, OneRetrAtATimeGetsTheNextMessageAhead) {
  tweak = [](SessionOptions& options) { options.chunk_size = 4096; };  // one chunk per message
  session = make_session(io);
  login();
  session->on_input("RETR 1\r\n");
  // Message 1, and the next ones on speculation in one batch.
  EXPECT_EQ(backend.pending(), 2u);
  while (backend.run_pending() > 0) {
  }
  io.out.clear();
  session->on_input("RETR 2\r\n");
  // Message 2 is here already: answered at once, nothing new asked for
  // (the rest of the mailbox is on its way too).
  EXPECT_EQ(backend.pending(), 0u);
  EXPECT_EQ(io.out, "+OK " + std::to_string(kMessage2.size()) + " octets\r\n" + kMessage2 + ".\r\n");
}

TEST_F(SessionTest, PrefetchedMessageGoneStillAnswersInTurn) {
  login();
  io.out.clear();
  session->on_input("RETR 2\r\nRETR 1\r\nNOOP\r\n");
  auto& messages = backend.account("alice")->messages;
  messages.erase(messages.begin());  // UID 4 (message 1) expunged by another client
  while (backend.run_pending() > 0) {
  }
  EXPECT_NE(io.out.find(kMessage2 + ".\r\n-ERR Message no longer exists.\r\n+OK\r\n"), std::string::npos)
      << io.out;
}

TEST_F(SessionTest, HugeListingIsWrittenInPiecesAsTheClientReads) {
  auto& carol = backend.add_account("carol", "pw");
  for (uint32_t uid = 1; uid <= 50000; ++uid) carol.messages.push_back({uid, "x\r\n", false, {}});
  ASSERT_EQ(exchange("USER carol\r\nPASS pw\r\n"), "+OK\r\n+OK Logged in.\r\n");
  io.out.clear();
  io.accumulate = true;
  session->on_input("UIDL\r\nNOOP\r\n");
  const size_t first_piece = io.out.size();
  EXPECT_GT(first_piece, 0u);
  EXPECT_LT(first_piece, 1024u * 1024);
  std::string expected = "+OK\r\n";
  for (uint32_t i = 1; i <= 50000; ++i) {
    char line[64];
    snprintf(line, sizeof line, "%u %08x%08x\r\n", i, i, 1u);
    expected += line;
  }
  expected += ".\r\n+OK\r\n";
  EXPECT_LT(first_piece, expected.size());
  session->on_drain();  // still nothing read: nothing more written
  EXPECT_EQ(io.out.size(), first_piece);
  io.accumulate = false;
  io.queued_bytes = 0;
  session->on_drain();
  EXPECT_EQ(io.out, expected);
}

TEST_F(SessionTest, BigMessagesAreFetchedInGrowingPieces) {
  tweak = [](SessionOptions& options) {
    options.chunk_size = 1000;
    options.max_chunk_size = 8000;
    options.prefetch = 0;
  };
  session = make_session(io);
  std::string big;
  for (int i = 0; i < 2000; ++i) big += (i % 50 == 0 ? ".line " : "line ") + std::to_string(i) + "\r\n";
  backend.account("alice")->messages[0].data = big;
  login();
  const std::string out = exchange("RETR 1\r\n");
  std::string stuffed;
  for (size_t at = 0; at < big.size();) {
    const size_t end = big.find("\r\n", at) + 2;
    if (big[at] == '.') stuffed += '.';
    stuffed += big.substr(at, end - at);
    at = end;
  }
  EXPECT_TRUE(out == "+OK " + std::to_string(big.size()) + " octets\r\n" + stuffed + ".\r\n");
  const std::vector<uint64_t> expected = {1000, 2000, 4000, 8000, 8000};
  ASSERT_GE(backend.fetch_lengths().size(), expected.size());
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), backend.fetch_lengths().begin()));
}

TEST_F(SessionTest, ExtraArgumentsAreRefusedLikeDovecot) {
  login();
  EXPECT_EQ(exchange("LIST 1 2 3\r\n"), "-ERR Noise after message number.\r\n");
  EXPECT_EQ(exchange("UIDL 1 2\r\n"), "-ERR Noise after message number.\r\n");
  EXPECT_EQ(exchange("RETR 1 2\r\n"), "-ERR Usage: RETR <message>\r\n");
  EXPECT_EQ(exchange("DELE 1 2\r\n"), "-ERR Usage: DELE <message>\r\n");
  EXPECT_EQ(exchange("TOP 1 2 3\r\n"), "-ERR Usage: TOP <message> <lines>\r\n");
  EXPECT_EQ(exchange("LIST 1\r\nUIDL 1\r\n"),
            "+OK 1 " + std::to_string(kMessage1.size()) + "\r\n+OK 1 000000045f00ab12\r\n");
}

TEST_F(SessionTest, QuitFreesTheMailboxBeforeItsReply) {
  login();
  EXPECT_EQ(exchange("DELE 1\r\n"), "+OK Marked to be deleted.\r\n");
  // The connection still holds the session while the reply is written:
  // a client that logs in again the moment it reads it must get in.
  EXPECT_EQ(exchange("QUIT\r\n"), "+OK Logging out, messages deleted.\r\n");
  FakeIo io2;
  auto second = make_session(io2);
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n", second.get(), &io2),
            "+OK\r\n+OK Logged in.\r\n");
  // A failed commit ends the session too.
  FakeIo io3;
  auto third = make_session(io3);
  backend.fail_next(UpstreamError::kUnavailable);
  EXPECT_EQ(exchange("QUIT\r\n", second.get(), &io2),
            "-ERR [SYS/TEMP] Some deleted messages may not have been removed.\r\n");
  EXPECT_EQ(exchange("USER alice\r\nPASS secret\r\n", third.get(), &io3),
            "+OK\r\n+OK Logged in.\r\n");
}

TEST_F(SessionTest, ControlCharactersInTheUserNameNeverReachTheBackend) {
  backend.add_account(std::string("al\tice"), "secret");  // even if such a mailbox existed
  for (const std::string user : {"al\tice", "alice\x7f", "\x1b[31malice", "alice\x01"}) {
    FakeIo target;
    auto made = make_session(target);
    EXPECT_EQ(exchange("USER " + user + "\r\nPASS secret\r\n", made.get(), &target),
              "+OK\r\n-ERR [AUTH] Authentication failed.\r\n");
    const std::string plain = pop3::encode_base64(std::string(1, '\0') + user + '\0' + "secret");
    EXPECT_EQ(exchange("AUTH PLAIN " + plain + "\r\n", made.get(), &target),
              "-ERR [AUTH] Authentication failed.\r\n");
    EXPECT_EQ(exchange("AUTH PLAIN\r\n" + plain + "\r\n", made.get(), &target),
              "+ \r\n-ERR [AUTH] Authentication failed.\r\n");
    EXPECT_EQ(target.login_attempts, 0);  // never went past the session
    EXPECT_EQ(target.failed_logins, 3);   // each one counted, and delayed, as a failure
  }
  EXPECT_EQ(backend.open_mailboxes(), 0u);
}

TEST(SecretStringTest, KeepsItsValueAcrossCopiesAndMoves) {
  std::string plain = "a password longer than the inline buffer";
  SecretString secret(std::move(plain));
  EXPECT_TRUE(plain.empty());
  SecretString copy = secret;
  SecretString moved = std::move(copy);
  EXPECT_TRUE(copy.empty());
  EXPECT_EQ(moved, "a password longer than the inline buffer");
  moved = SecretString("short");
  EXPECT_EQ(moved, "short");
  std::string text = "abc";
  wipe(text);
  EXPECT_TRUE(text.empty());
}

TEST(SaslTest, Base64RoundTripAndStrictness) {
  EXPECT_EQ(pop3::encode_base64("any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
  EXPECT_EQ(pop3::decode_base64("YW55IGNhcm5hbCBwbGVhcw=="), "any carnal pleas");
  EXPECT_EQ(pop3::decode_base64(""), "");
  EXPECT_FALSE(pop3::decode_base64("YW55"  "I"));
  EXPECT_FALSE(pop3::decode_base64("YW=5"));
  EXPECT_FALSE(pop3::decode_base64("YW 5"));
  EXPECT_FALSE(pop3::decode_sasl_plain(pop3::encode_base64("no nuls")));
  EXPECT_FALSE(pop3::decode_sasl_plain(pop3::encode_base64(std::string("\0\0pw", 4))));
  auto plain = pop3::decode_sasl_plain(pop3::encode_base64(std::string("\0u\0p w", 6)));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->user, "u");
  EXPECT_EQ(plain->password, "p w");
}

}  // namespace
}  // namespace popbridge
