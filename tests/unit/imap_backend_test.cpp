// ImapBackend end to end against a fake IMAP server: handlers on the loop,
// a Mailbox destroyed mid-fetch, failed logins, shutdown with work pending.
#include "backends/imap/imap_backend.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "imap_scripted_server.h"
#include "imap_test_loop.h"

namespace popbridge {
namespace {

using namespace std::chrono_literals;
using imap::test_support::FakeImapServer;
using imap::test_support::Loop;

using imap::test_support::Commands;
using imap::test_support::read_line;
using imap::test_support::send_all;

// A mailbox with two messages: UID 3 (hello world, seen) and UID 8.
FakeImapServer::Answer two_messages(Commands* commands,
                                    std::chrono::milliseconds fetch_delay = 0ms) {
  return [commands, fetch_delay](const std::string&, const std::string& command) -> std::string {
    commands->add(command);
    if (command.rfind("LOGIN ", 0) == 0) {
      return command == "LOGIN Alice secret" ? "$TAG OK welcome\r\n"
                                             : "$TAG NO [AUTHENTICATIONFAILED] no\r\n";
    }
    if (command == "SELECT INBOX") {
      return "* 2 EXISTS\r\n* OK [UIDVALIDITY 99] x\r\n$TAG OK [READ-WRITE] done\r\n";
    }
    if (command == "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") {
      return "* 1 FETCH (UID 3 RFC822.SIZE 11 FLAGS (\\Seen))\r\n"
             "* 2 FETCH (UID 8 RFC822.SIZE 5 FLAGS ())\r\n$TAG OK done\r\n";
    }
    if (command == "UID FETCH 3 BODY.PEEK[]<0.6>") {
      std::this_thread::sleep_for(fetch_delay);
      return "* 1 FETCH (UID 3 BODY[]<0> {6}\r\nhello )\r\n$TAG OK done\r\n";
    }
    if (command == "UID FETCH 3 BODY.PEEK[]<6.6>") {
      return "* 1 FETCH (UID 3 BODY[]<6> {5}\r\nworld)\r\n$TAG OK done\r\n";
    }
    if (command == "UID STORE 3,8 +FLAGS.SILENT ($POP3Deleted)") return "$TAG OK done\r\n";
    if (command == "LOGOUT") return "";  // the fake answers it
    return "$TAG BAD unexpected\r\n";
  };
}

UpstreamConfig upstream_for(uint16_t port) {
  UpstreamConfig upstream;
  upstream.name = "main";
  upstream.host = "127.0.0.1";
  upstream.port = port;
  upstream.connect_timeout = 1s;
  upstream.command_timeout = 2s;
  return upstream;
}

TEST(ImapBackend, LogsInFetchesInChunksAndCommits) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n", two_messages(&commands));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  const auto loop_thread = std::this_thread::get_id();

  std::unique_ptr<Mailbox> mailbox;
  Snapshot snapshot;
  bool logged_in = false;
  backend.login({"Alice", "secret"}, [&](Status status, std::unique_ptr<Mailbox> m, Snapshot s) {
    EXPECT_EQ(std::this_thread::get_id(), loop_thread);
    EXPECT_TRUE(status.ok()) << status.detail;
    mailbox = std::move(m);
    snapshot = std::move(s);
    logged_in = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return logged_in; }));
  ASSERT_NE(mailbox, nullptr);
  EXPECT_EQ(mailbox->key(), "main\nalice\nINBOX");
  EXPECT_EQ(snapshot.uidvalidity, 99u);
  ASSERT_EQ(snapshot.messages.size(), 2u);
  EXPECT_TRUE(snapshot.messages[0].seen);

  std::string body;
  int chunks = 0;
  std::function<void()> next = [&] {
    mailbox->fetch(3, body.size(), 6, [&](Status status, std::string data) {
      ASSERT_TRUE(status.ok()) << status.detail;
      ++chunks;
      body += data;
      if (data.size() == 6) next();
    });
  };
  next();
  ASSERT_TRUE(loop.run_until([&] { return chunks == 2; }));
  EXPECT_EQ(body, "hello world");

  bool committed = false;
  mailbox->commit({{8, 3}, {}}, [&](Status status) {
    EXPECT_TRUE(status.ok()) << status.detail;
    committed = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return committed; }));
  bool empty_commit = false;
  mailbox->commit({}, [&](Status status) { empty_commit = status.ok(); });
  ASSERT_TRUE(loop.run_until([&] { return empty_commit; }));

  mailbox.reset();  // LOGOUT on a worker
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("LOGOUT"); }));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, MailboxDestroyedWhileFetchingGetsNoHandlerAndLogsOut) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n", two_messages(&commands, 200ms));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  std::unique_ptr<Mailbox> mailbox;
  backend.login({"Alice", "secret"}, [&](Status, std::unique_ptr<Mailbox> m, Snapshot) {
    mailbox = std::move(m);
  });
  ASSERT_TRUE(loop.run_until([&] { return mailbox != nullptr; }));
  bool handler_ran = false;
  mailbox->fetch(3, 0, 6, [&](Status, std::string) { handler_ran = true; });   // runs
  mailbox->fetch(3, 6, 6, [&](Status, std::string) { handler_ran = true; });   // queued
  mailbox->commit({{3}, {}}, [&](Status) { handler_ran = true; });                   // queued
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("UID FETCH 3 BODY.PEEK[]<0.6>"); }));
  mailbox.reset();
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("LOGOUT"); }));
  loop.run_until([] { return false; }, 50ms);
  EXPECT_FALSE(handler_ran);
  // Nothing queued behind the destroyed mailbox was sent.
  EXPECT_FALSE(commands.saw("UID FETCH 3 BODY.PEEK[]<6.6>"));
  EXPECT_FALSE(commands.saw("UID STORE 3 +FLAGS.SILENT ($POP3Deleted)"));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, WrongPasswordFailsTheLogin) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n", two_messages(&commands));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  bool done = false;
  backend.login({"Alice", "wrong"}, [&](Status status, std::unique_ptr<Mailbox> m, Snapshot) {
    EXPECT_EQ(status.error, UpstreamError::kAuthFailed);
    EXPECT_EQ(status.detail.find("wrong"), std::string::npos);
    EXPECT_EQ(m, nullptr);
    done = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return done; }));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  EXPECT_TRUE(commands.saw("LOGOUT"));
}

// Logs in through the backend; returns the status and snapshot.
Status login_once(Loop& loop, ImapBackend& backend, Credentials credentials,
                  Snapshot* snapshot = nullptr) {
  Status result;
  bool done = false;
  backend.login(std::move(credentials), [&](Status status, std::unique_ptr<Mailbox>, Snapshot s) {
    result = std::move(status);
    if (snapshot != nullptr) *snapshot = std::move(s);
    done = true;
  });
  EXPECT_TRUE(loop.run_until([&] { return done; }));
  return result;
}

// A server that keeps track of its IMAP state like a real one: SELECT and
// FETCH before a successful LOGIN are refused.
FakeImapServer::Answer stateful(Commands* commands, std::string password, std::string select,
                                std::string fetch) {
  auto logged_in = std::make_shared<bool>(false);
  return [=](const std::string&, const std::string& command) -> std::string {
    commands->add(command);
    if (command.rfind("LOGIN ", 0) == 0) {
      *logged_in = command == "LOGIN alice " + password;
      return *logged_in ? "$TAG OK [CAPABILITY IMAP4rev1 UIDPLUS] in\r\n"
                        : "$TAG NO [AUTHENTICATIONFAILED] no\r\n";
    }
    if (command == "LOGOUT") return "";
    if (!*logged_in) return "$TAG BAD not logged in\r\n";
    if (command.rfind("SELECT ", 0) == 0) return select;
    if (command == "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") return fetch;
    return "$TAG BAD unexpected\r\n";
  };
}

TEST(ImapBackend, SelectAndFetchGoOutTogetherAfterLogin) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        stateful(&commands, "secret",
                                 "* 1 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\n$TAG OK done\r\n",
                                 "* 1 FETCH (UID 9 RFC822.SIZE 7 FLAGS ())\r\n$TAG OK done\r\n"));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  Snapshot snapshot;
  Status status = login_once(loop, backend, {"alice", "secret"}, &snapshot);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(snapshot.uidvalidity, 5u);
  ASSERT_EQ(snapshot.messages.size(), 1u);
  EXPECT_EQ(snapshot.messages[0].uid, 9u);
  EXPECT_EQ(snapshot.messages[0].size, 7u);
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("LOGOUT"); }));  // mailbox dropped
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  EXPECT_EQ(commands.get(),
            (std::vector<std::string>{"LOGIN alice secret", "SELECT INBOX",
                                      "UID FETCH 1:* (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
}

// LOGIN goes alone (a server may hand the connection to another process
// once authenticated and lose what was sent behind it): when it is
// refused, nothing else was sent.
TEST(ImapBackend, RefusedLoginSendsNothingBehindIt) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        stateful(&commands, "secret", "$TAG OK done\r\n", "$TAG OK done\r\n"));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  Status status = login_once(loop, backend, {"alice", "wrong"});
  EXPECT_EQ(status.error, UpstreamError::kAuthFailed);
  EXPECT_EQ(status.detail.find("wrong"), std::string::npos);
  // LOGOUT was answered in step (the fake's "* BYE" + OK), not cut short.
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("LOGOUT"); }));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  EXPECT_EQ(commands.get(), (std::vector<std::string>{"LOGIN alice wrong", "LOGOUT"}));
}

TEST(ImapBackend, LoginQuotesWhatIsNotAnAtomAndAnEmptyFolderMayRefuseFetch) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        stateful(&commands, "\"a b\\\"c\"",
                                 "* 0 EXISTS\r\n$TAG OK done\r\n",
                                 "$TAG BAD Invalid messageset\r\n"));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  Snapshot snapshot;
  // An empty folder may refuse "1:*": that is no failure.
  Status status = login_once(loop, backend, {"alice", "a b\"c"}, &snapshot);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_TRUE(snapshot.messages.empty());
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  ASSERT_FALSE(commands.get().empty());
  EXPECT_EQ(commands.get().front(), "LOGIN alice \"a b\\\"c\"");
}

TEST(ImapBackend, RefusedSelectIsNoMailbox) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        stateful(&commands, "secret", "$TAG NO [NONEXISTENT] no such folder\r\n",
                                 "$TAG BAD no folder selected\r\n"));
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(server.port()), MailboxConfig{});
  Status status = login_once(loop, backend, {"alice", "secret"});
  EXPECT_EQ(status.error, UpstreamError::kNoMailbox) << status.detail;
  ASSERT_TRUE(loop.run_until([&] { return commands.saw("LOGOUT"); }));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, UnseenOnlyLogsInOneCommandAtATime) {
  Commands commands;
  auto answer = [&commands](const std::string&, const std::string& command) -> std::string {
    commands.add(command);
    if (command == "LOGIN alice secret") return "$TAG OK in\r\n";
    if (command == "SELECT INBOX") return "* 1 EXISTS\r\n$TAG OK done\r\n";
    if (command.rfind("UID SEARCH", 0) == 0) return "* SEARCH\r\n$TAG OK done\r\n";
    if (command == "LOGOUT") return "";
    return "$TAG BAD unexpected\r\n";
  };
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n", answer);
  Loop loop;
  MailboxConfig mailbox;
  mailbox.visible = Visible::kUnseen;
  ImapBackend backend(loop.get(), upstream_for(server.port()), mailbox);
  Status status = login_once(loop, backend, {"alice", "secret"});
  ASSERT_TRUE(status.ok()) << status.detail;
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  ASSERT_GE(commands.get().size(), 3u);
  EXPECT_EQ(commands.get()[1], "SELECT INBOX");
  EXPECT_EQ(commands.get()[2].rfind("UID SEARCH", 0), 0u) << commands.get()[2];
}

TEST(ImapBackend, UnreachableUpstreamIsUnavailable) {
  Loop loop;
  ImapBackend backend(loop.get(), upstream_for(1), MailboxConfig{});  // port 1: refused
  bool done = false;
  backend.login({"alice", "x"}, [&](Status status, std::unique_ptr<Mailbox>, Snapshot) {
    EXPECT_EQ(status.error, UpstreamError::kUnavailable);
    done = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return done; }));
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, AnAnswerThatTricklesInStillMeetsTheCommandDeadline) {
  // One byte every 50 ms keeps every single read short; the command as a
  // whole still ends at command_timeout.
  std::atomic<bool> stop{false};
  imap::test_support::ScriptedServer server([&](int fd) {
    send_all(fd, "* OK [CAPABILITY IMAP4rev1] hi\r\n");
    read_line(fd);  // LOGIN
    const std::string drip = "* OK still thinking about it, one octet at a time\r\n";
    for (size_t i = 0; !stop; i = (i + 1) % drip.size()) {
      if (::send(fd, &drip[i], 1, MSG_NOSIGNAL) != 1) return;
      std::this_thread::sleep_for(50ms);
    }
  });
  Loop loop;
  UpstreamConfig upstream = upstream_for(server.port());
  upstream.command_timeout = 400ms;
  ImapBackend backend(loop.get(), upstream, MailboxConfig{});
  Status result;
  bool done = false;
  backend.login({"alice", "x"}, [&](Status status, std::unique_ptr<Mailbox>, Snapshot) {
    result = status;
    done = true;
  });
  EXPECT_TRUE(loop.run_until([&] { return done; }, 5s));
  stop = true;
  EXPECT_EQ(result.error, UpstreamError::kUnavailable);
  EXPECT_NE(result.detail.find("timed out"), std::string::npos) << result.detail;
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, LoginsBeyondMaxLoginsInFlightWaitTheirTurn) {
  // A server that completes TCP connections and never greets: each login
  // holds its slot until connect_timeout.
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), length), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length), 0);
  Loop loop;
  UpstreamConfig upstream = upstream_for(ntohs(address.sin_port));
  upstream.connect_timeout = 300ms;
  upstream.max_logins_in_flight = 2;
  ImapBackend backend(loop.get(), upstream, MailboxConfig{});
  int done = 0;
  for (int i = 0; i < 4; ++i) {
    backend.login({"alice", "x"}, [&](Status status, std::unique_ptr<Mailbox>, Snapshot) {
      EXPECT_EQ(status.error, UpstreamError::kUnavailable);
      ++done;
    });
  }
  // Two connect; two wait. (Each connection completed is one we can accept.)
  loop.run_until([] { return false; }, 100ms);
  const auto accept_all = [&] {
    int count = 0;
    for (;;) {
      pollfd pfd{listener, POLLIN, 0};
      if (poll(&pfd, 1, 0) != 1) return count;
      int fd = accept(listener, nullptr, nullptr);
      if (fd < 0) return count;
      ::close(fd);
      ++count;
    }
  };
  EXPECT_EQ(accept_all(), 2);
  EXPECT_EQ(done, 0);
  // As the first two give up, the other two go.
  ASSERT_TRUE(loop.run_until([&] { return done == 4; }, 5s));
  EXPECT_EQ(accept_all(), 2);
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
  ::close(listener);
}

TEST(ImapBackend, MaxConnectionsRefusesTheLoginBeyondIt) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n", two_messages(&commands));
  Loop loop;
  UpstreamConfig upstream = upstream_for(server.port());
  upstream.max_connections = 1;
  ImapBackend backend(loop.get(), upstream, MailboxConfig{});
  std::unique_ptr<Mailbox> first;
  bool first_done = false;
  backend.login({"Alice", "secret"}, [&](Status status, std::unique_ptr<Mailbox> m, Snapshot) {
    EXPECT_TRUE(status.ok()) << status.detail;
    first = std::move(m);
    first_done = true;
  });
  Status second;
  bool second_done = false;
  backend.login({"Alice", "secret"}, [&](Status status, std::unique_ptr<Mailbox>, Snapshot) {
    second = status;
    second_done = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return first_done && second_done; }));
  EXPECT_EQ(second.error, UpstreamError::kUnavailable);
  EXPECT_EQ(second.detail, "upstream max_connections reached");
  const std::vector<std::string> seen = commands.get();
  EXPECT_EQ(std::count(seen.begin(), seen.end(), "LOGIN Alice secret"), 1);
  backend.shutdown();
  loop.run_until([] { return false; }, 20ms);
}

TEST(ImapBackend, ShutdownWithALoginInFlightCallsNothing) {
  Commands commands;
  FakeImapServer server("* OK [CAPABILITY IMAP4rev1] hi\r\n",
                        [&](auto&, const std::string& command) {
                          commands.add(command);
                          return std::string("<stall>");
                        });
  Loop loop;
  auto backend =
      std::make_unique<ImapBackend>(loop.get(), upstream_for(server.port()), MailboxConfig{});
  bool called = false;
  backend->login({"alice", "x"}, [&](Status, std::unique_ptr<Mailbox>, Snapshot) { called = true; });
  backend->login({"bob", "y"}, [&](Status, std::unique_ptr<Mailbox>, Snapshot) { called = true; });
  ASSERT_TRUE(loop.run_until([&] { return !commands.get().empty(); }));
  auto before = std::chrono::steady_clock::now();
  backend->shutdown();  // does not wait for the running login
  backend.reset();
  // The running login's wait is cancelled: the loop ends at once, long
  // before command_timeout.
  EXPECT_TRUE(loop.run_until([&] { return loop.drained(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - before, 500ms);
  EXPECT_FALSE(called);
}

}  // namespace
}  // namespace popbridge
