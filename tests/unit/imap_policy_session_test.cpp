// ImapSession's mailbox policies against a fake IMAP server: the exact
// commands each on_delete policy sends, MOVE versus the COPY fallback, the
// UIDPLUS refusal at login, vanished UIDs, [TRYCREATE], taking \Deleted
// back, retention's search, mark_seen_on_retr, visible and max_messages.
#include "backends/imap/imap_session.h"

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "imap_scripted_server.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using test_support::FakeImapServer;
using Commands = std::vector<std::string>;

constexpr const char* kAll = "* OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] ready\r\n";
constexpr const char* kUidplusOnly = "* OK [CAPABILITY IMAP4rev1 UIDPLUS] ready\r\n";
constexpr const char* kNone = "* OK [CAPABILITY IMAP4rev1] ready\r\n";

// A fake server: LOGIN, SELECT (5 messages), NOOP and LOGOUT are answered;
// other commands get answers[command] if there is one (each entry may list
// answers for successive calls, the last repeating), else "$TAG OK done".
// Records every command after LOGIN.
class Server {
 public:
  Server(const char* greeting, std::map<std::string, std::vector<std::string>> answers = {})
      : answers_(std::move(answers)),
        fake_(greeting, [this](const std::string&, const std::string& command) -> std::string {
          std::lock_guard lock(mutex_);
          if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK logged in\r\n";
          commands_.push_back(command);
          auto it = answers_.find(command);
          if (it != answers_.end() && !it->second.empty()) {
            std::string answer = it->second.front();
            if (it->second.size() > 1) it->second.erase(it->second.begin());
            return answer;
          }
          if (command.rfind("SELECT ", 0) == 0) {
            return "* 5 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n$TAG OK [READ-WRITE] selected\r\n";
          }
          if (command == "LOGOUT") return "";
          return "$TAG OK done\r\n";
        }) {}

  uint16_t port() const { return fake_.port(); }
  Commands commands() {
    std::lock_guard lock(mutex_);
    return commands_;
  }
  // Commands after SELECT and before LOGOUT.
  Commands commit_commands() {
    Commands all = commands();
    Commands out;
    for (const auto& command : all) {
      if (command.rfind("SELECT ", 0) == 0 || command == "LOGOUT" || command == "CAPABILITY") continue;
      out.push_back(command);
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> answers_;
  Commands commands_;
  FakeImapServer fake_;
};

std::shared_ptr<const ImapSettings> settings(uint16_t port, const MailboxConfig& mailbox,
                                             const std::string& folder = "INBOX") {
  UpstreamConfig upstream;
  upstream.host = "127.0.0.1";
  upstream.port = port;
  upstream.folder = folder;
  upstream.connect_timeout = 1s;
  upstream.command_timeout = 1s;
  return make_imap_settings(upstream, mailbox);
}

// Connected, logged in, extensions checked, folder selected.
struct Open {
  Open(Server& server, const MailboxConfig& mailbox, const std::string& folder = "INBOX")
      : session(settings(server.port(), mailbox, folder), 1) {
    EXPECT_TRUE(session.connect().ok());
    EXPECT_TRUE(session.login({"alice", "secret"}).ok());
    Status status = session.check_extensions();
    EXPECT_TRUE(status.ok()) << status.detail;
    Snapshot snapshot;
    EXPECT_TRUE(session.snapshot(&snapshot).ok());
  }
  ~Open() { session.logout(1s); }
  ImapSession session;
};

MailboxConfig policy(DeletePolicy on_delete) {
  MailboxConfig mailbox;
  mailbox.on_delete = on_delete;
  return mailbox;
}

const std::string kFetchAll = "UID FETCH 1:* (UID RFC822.SIZE FLAGS)";

TEST(ImapPolicy, HideAddsTheKeyword) {
  Server server(kNone);
  {
    Open open(server, policy(DeletePolicy::kHide));
    EXPECT_TRUE(open.session.commit({{8, 3}, {3}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3,8 +FLAGS.SILENT ($POP3Deleted)"}));
}

TEST(ImapPolicy, SeenSetsSeenAndTheKeywordInOneCommand) {
  Server server(kNone);
  {
    Open open(server, policy(DeletePolicy::kSeen));
    EXPECT_TRUE(open.session.commit({{3, 4, 5}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3:5 +FLAGS.SILENT (\\Seen $POP3Deleted)"}));
}

TEST(ImapPolicy, EmptyCommitSendsNothing) {
  Server server(kAll);
  {
    Open open(server, policy(DeletePolicy::kExpunge));
    EXPECT_TRUE(open.session.commit({}).ok());
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll}));
}

TEST(ImapPolicy, MoveUsesUidMoveWhenOffered) {
  Server server(kAll);
  {
    MailboxConfig mailbox = policy(DeletePolicy::kMove);
    mailbox.move_to = "Deleted Items";
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({{3, 8}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll, "UID MOVE 3,8 \"Deleted Items\""}));
}

TEST(ImapPolicy, MoveWithoutMoveCopiesThenExpungesExactlyThose) {
  Server server(kUidplusOnly);
  {
    Open open(server, policy(DeletePolicy::kMove));
    EXPECT_TRUE(open.session.commit({{3, 8}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID COPY 3,8 Trash", "UID SEARCH UID 3,8 DELETED",
                      "UID STORE 3,8 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 3,8"}));
}

TEST(ImapPolicy, ExpungeFlagsThenUidExpunges) {
  Server server(kUidplusOnly);
  {
    Open open(server, policy(DeletePolicy::kExpunge));
    EXPECT_TRUE(open.session.commit({{1, 2, 3, 7}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID SEARCH UID 1:3,7 DELETED",
                      "UID STORE 1:3,7 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 1:3,7"}));
}

TEST(ImapPolicy, RefusedUidExpungeTakesOurDeletedFlagsBack) {
  Server server(kUidplusOnly,
                {{"UID SEARCH UID 3,8 DELETED", {"* SEARCH 8\r\n$TAG OK done\r\n"}},
                 {"UID EXPUNGE 3,8", {"$TAG NO [SERVERBUG] oops\r\n"}},
                 {"UID SEARCH UID 3,8", {"* SEARCH 3 8\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kExpunge));
    Status status = open.session.commit({{3, 8}, {}});
    EXPECT_EQ(status.error, UpstreamError::kRefused);
    EXPECT_NE(status.detail.find("oops"), std::string::npos) << status.detail;
  }
  // 8 was flagged \Deleted by another client before: it keeps the flag.
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID SEARCH UID 3,8 DELETED",
                      "UID STORE 3,8 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 3,8", "NOOP",
                      "UID SEARCH UID 3,8", "UID STORE 3 -FLAGS.SILENT (\\Deleted)"}));
}

TEST(ImapPolicy, RefusedCopyLeavesEverythingInPlace) {
  Server server(kUidplusOnly, {{"UID COPY 3,8 Trash", {"$TAG NO [OVERQUOTA] full\r\n"}},
                               {"UID SEARCH UID 3,8", {"* SEARCH 3 8\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    EXPECT_EQ(open.session.commit({{3, 8}, {}}).error, UpstreamError::kRefused);
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID COPY 3,8 Trash", "NOOP", "UID SEARCH UID 3,8"}));
}

TEST(ImapPolicy, LostConnectionDuringCommitIsUnavailable) {
  Server server(kUidplusOnly, {{"UID EXPUNGE 3", {"<close>"}}});
  Open open(server, policy(DeletePolicy::kExpunge));
  Status status = open.session.commit({{3}, {}});
  EXPECT_EQ(status.error, UpstreamError::kUnavailable);
  EXPECT_TRUE(open.session.broken());
}

TEST(ImapPolicy, VanishedUidsAreDroppedAndTheRestCommitted) {
  Server server(kAll,
                {{"UID MOVE 3,5,8 Trash",
                  {"* 2 EXPUNGE\r\n$TAG NO [EXPUNGEISSUED] Some messages no longer exist\r\n"}},
                 {"UID SEARCH UID 3,5,8", {"* SEARCH 3 8\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    Status status = open.session.commit({{3, 5, 8}, {}});
    EXPECT_TRUE(status.ok()) << status.detail;
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID MOVE 3,5,8 Trash", "NOOP", "UID SEARCH UID 3,5,8",
                      "UID MOVE 3,8 Trash"}));
}

TEST(ImapPolicy, AllVanishedIsNothingToDo) {
  Server server(kAll, {{"UID MOVE 4 Trash", {"$TAG NO [EXPUNGEISSUED] gone\r\n"}},
                       {"UID SEARCH UID 4", {"* SEARCH\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    EXPECT_TRUE(open.session.commit({{4}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID MOVE 4 Trash", "NOOP", "UID SEARCH UID 4"}));
}

TEST(ImapPolicy, TryCreateCreatesMoveToOnce) {
  Server server(kAll, {{"UID MOVE 3 Trash",
                        {"$TAG NO [TRYCREATE] no such mailbox\r\n", "$TAG OK moved\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    EXPECT_TRUE(open.session.commit({{3}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID MOVE 3 Trash", "CREATE Trash", "UID MOVE 3 Trash"}));
}

TEST(ImapPolicy, MoveInsideMoveToItselfHides) {
  Server server(kAll);
  {
    Open open(server, policy(DeletePolicy::kMove), "Trash");
    EXPECT_TRUE(open.session.commit({{3}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3 +FLAGS.SILENT ($POP3Deleted)"}));
}

TEST(ImapPolicy, MarkSeenOnRetrStoresSeenFirst) {
  MailboxConfig mailbox;
  mailbox.mark_seen_on_retr = true;
  Server server(kNone);
  {
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({{4}, {3, 4}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3:4 +FLAGS.SILENT (\\Seen)",
                      "UID STORE 4 +FLAGS.SILENT ($POP3Deleted)"}));
}

TEST(ImapPolicy, MarkSeenSkipsWhatIsExpunged) {
  MailboxConfig mailbox = policy(DeletePolicy::kExpunge);
  mailbox.mark_seen_on_retr = true;
  Server server(kAll);
  {
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({{4}, {3, 4}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3 +FLAGS.SILENT (\\Seen)", "UID SEARCH UID 4 DELETED",
                      "UID STORE 4 +FLAGS.SILENT (\\Deleted)", "UID EXPUNGE 4"}));
}

TEST(ImapPolicy, RetrievedGetNoSeenByDefault) {
  Server server(kNone);
  {
    Open open(server, MailboxConfig{});
    EXPECT_TRUE(open.session.commit({{}, {3, 4}}).ok());
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll}));
}

TEST(ImapPolicy, FailedSeenStopsTheCommitBeforeDeleting) {
  MailboxConfig mailbox;
  mailbox.mark_seen_on_retr = true;
  Server server(kNone, {{"UID STORE 3 +FLAGS.SILENT (\\Seen)", {"$TAG NO read-only\r\n"}},
                        {"UID SEARCH UID 3", {"* SEARCH 3\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, mailbox);
    EXPECT_EQ(open.session.commit({{4}, {3}}).error, UpstreamError::kRefused);
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3 +FLAGS.SILENT (\\Seen)", "NOOP", "UID SEARCH UID 3"}));
}

std::string retention_date(unsigned days) {
  const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  time_t cutoff = time(nullptr) - static_cast<time_t>(days) * 86400;
  struct tm day {};
  gmtime_r(&cutoff, &day);
  return std::to_string(day.tm_mday) + "-" + months[day.tm_mon] + "-" +
         std::to_string(day.tm_year + 1900);
}

TEST(ImapPolicy, RetentionExpungesOldHiddenMessages) {
  const std::string search = "UID SEARCH KEYWORD $POP3Deleted BEFORE " + retention_date(7);
  Server server(kUidplusOnly, {{search, {"* SEARCH 2 4\r\n$TAG OK done\r\n"}}});
  {
    MailboxConfig mailbox;
    mailbox.retention_days = 7;
    mailbox.retention_action = RetentionAction::kExpunge;
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({{5}, {}}).ok());
  }
  // The session's own hide first, then retention.
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 5 +FLAGS.SILENT ($POP3Deleted)", search,
                      "UID SEARCH UID 2,4 DELETED", "UID STORE 2,4 +FLAGS.SILENT (\\Deleted)",
                      "UID EXPUNGE 2,4"}));
}

TEST(ImapPolicy, RetentionMovesOldHiddenMessages) {
  const std::string search = "UID SEARCH KEYWORD $POP3Deleted BEFORE " + retention_date(30);
  Server server(kAll, {{search, {"* SEARCH 9 2\r\n$TAG OK done\r\n"}}});
  {
    MailboxConfig mailbox;
    mailbox.retention_days = 30;
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({}).ok());
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll, search, "UID MOVE 2,9 Trash"}));
}

TEST(ImapPolicy, RetentionFailureDoesNotFailTheCommit) {
  const std::string search = "UID SEARCH KEYWORD $POP3Deleted BEFORE " + retention_date(1);
  Server server(kAll, {{search, {"$TAG NO [SERVERBUG] search failed\r\n"}}});
  {
    MailboxConfig mailbox;
    mailbox.retention_days = 1;
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({{3}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3 +FLAGS.SILENT ($POP3Deleted)", search}));
}

TEST(ImapPolicy, RetentionNothingOldSendsOnlyTheSearch) {
  const std::string search = "UID SEARCH KEYWORD $POP3Deleted BEFORE " + retention_date(3);
  Server server(kAll, {{search, {"* SEARCH\r\n$TAG OK done\r\n"}}});
  {
    MailboxConfig mailbox;
    mailbox.retention_days = 3;
    mailbox.retention_action = RetentionAction::kExpunge;
    Open open(server, mailbox);
    EXPECT_TRUE(open.session.commit({}).ok());
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll, search}));
}

// ---- login: extensions ----

struct LoginOnly {
  LoginOnly(uint16_t port, const MailboxConfig& mailbox) : session(settings(port, mailbox), 1) {
    EXPECT_TRUE(session.connect().ok());
    EXPECT_TRUE(session.login({"alice", "secret"}).ok());
  }
  ~LoginOnly() { session.logout(1s); }
  ImapSession session;
};

TEST(ImapPolicy, ExpungeWithoutUidplusIsRefusedAtLogin) {
  Server server(kNone, {{"CAPABILITY", {"* CAPABILITY IMAP4rev1 MOVE IDLE\r\n$TAG OK done\r\n"}}});
  {
    LoginOnly login(server.port(), policy(DeletePolicy::kExpunge));
    Status status = login.session.check_extensions();
    EXPECT_EQ(status.error, UpstreamError::kRefused);
    EXPECT_NE(status.detail.find("UIDPLUS"), std::string::npos) << status.detail;
  }
  EXPECT_EQ(server.commands(), (Commands{"CAPABILITY", "LOGOUT"}));
}

TEST(ImapPolicy, RetentionExpungeWithoutUidplusIsRefusedToo) {
  Server server(kNone, {{"CAPABILITY", {"* CAPABILITY IMAP4rev1 MOVE\r\n$TAG OK done\r\n"}}});
  MailboxConfig mailbox;
  mailbox.retention_days = 5;
  mailbox.retention_action = RetentionAction::kExpunge;
  LoginOnly login(server.port(), mailbox);
  EXPECT_EQ(login.session.check_extensions().error, UpstreamError::kRefused);
}

TEST(ImapPolicy, MoveNeedsMoveOrUidplus) {
  {
    Server server(kNone, {{"CAPABILITY", {"* CAPABILITY IMAP4rev1\r\n$TAG OK done\r\n"}}});
    LoginOnly login(server.port(), policy(DeletePolicy::kMove));
    EXPECT_EQ(login.session.check_extensions().error, UpstreamError::kRefused);
  }
  {
    Server server(kNone, {{"CAPABILITY", {"* CAPABILITY IMAP4rev1 MOVE\r\n$TAG OK done\r\n"}}});
    LoginOnly login(server.port(), policy(DeletePolicy::kMove));
    EXPECT_TRUE(login.session.check_extensions().ok());
  }
  {
    Server server(kNone, {{"CAPABILITY", {"* CAPABILITY IMAP4rev1 UIDPLUS\r\n$TAG OK done\r\n"}}});
    LoginOnly login(server.port(), policy(DeletePolicy::kMove));
    EXPECT_TRUE(login.session.check_extensions().ok());
  }
}

TEST(ImapPolicy, ExtensionsAlreadyKnownNeedNoCapabilityCommand) {
  Server server(kAll);
  {
    LoginOnly login(server.port(), policy(DeletePolicy::kExpunge));
    EXPECT_TRUE(login.session.check_extensions().ok());
  }
  EXPECT_EQ(server.commands(), (Commands{"LOGOUT"}));
}

TEST(ImapPolicy, HideAndSeenNeedNoExtension) {
  Server server(kNone);
  {
    LoginOnly login(server.port(), policy(DeletePolicy::kSeen));
    EXPECT_TRUE(login.session.check_extensions().ok());
  }
  EXPECT_EQ(server.commands(), (Commands{"LOGOUT"}));
}

TEST(ImapPolicy, CapabilitiesInTheLoginAnswerCount) {
  // What Dovecot does: few capabilities before login, all of them in the
  // LOGIN's OK.
  Commands seen;
  std::mutex mutex;
  FakeImapServer fake(kNone, [&](const std::string&, const std::string& command) -> std::string {
    std::lock_guard lock(mutex);
    seen.push_back(command);
    if (command.rfind("LOGIN ", 0) == 0) {
      return "$TAG OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] Logged in\r\n";
    }
    return "";
  });
  {
    LoginOnly login(fake.port(), policy(DeletePolicy::kExpunge));
    EXPECT_TRUE(login.session.check_extensions().ok());
  }
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen, (Commands{"LOGIN alice secret", "LOGOUT"}));
}

// ---- UIDVALIDITY changed since the snapshot ----
//
// The UIDs a session commits are those of its snapshot. When the server
// says the folder's UIDVALIDITY changed (an untagged OK [UIDVALIDITY n] in
// any answer libetpan reads), they may name other messages now: no STORE,
// MOVE, COPY or EXPUNGE goes out after that, and the commit fails
// (kUnavailable: QUIT answers -ERR [SYS/TEMP]).

constexpr const char* kRenumbered = "* OK [UIDVALIDITY 43] renumbered\r\n";

bool about_uidvalidity(const Status& status) {
  return status.detail.find("UIDVALIDITY") != std::string::npos;
}

// Said with the answer to the snapshot's FETCH, after the SELECT (42): the
// commit sends nothing at all, whatever the policy.
TEST(ImapPolicy, UidvalidityChangedBeforeQuitCommitsNothing) {
  struct Case {
    MailboxConfig mailbox;
    const char* greeting;
  };
  MailboxConfig seen_too = policy(DeletePolicy::kExpunge);
  seen_too.mark_seen_on_retr = true;
  MailboxConfig retention = policy(DeletePolicy::kHide);
  retention.retention_days = 30;
  const Case cases[] = {{policy(DeletePolicy::kHide), kNone},
                        {policy(DeletePolicy::kSeen), kNone},
                        {policy(DeletePolicy::kMove), kAll},
                        {policy(DeletePolicy::kMove), kUidplusOnly},
                        {policy(DeletePolicy::kExpunge), kUidplusOnly},
                        {seen_too, kAll},
                        {retention, kAll}};
  for (const Case& c : cases) {
    Server server(c.greeting, {{kFetchAll, {std::string(kRenumbered) + "$TAG OK done\r\n"}}});
    {
      Open open(server, c.mailbox);
      Status status = open.session.commit({{3, 8}, {3, 4}});
      EXPECT_EQ(status.error, UpstreamError::kUnavailable) << status.detail;
      EXPECT_TRUE(about_uidvalidity(status)) << status.detail;
    }
    EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll}))
        << "on_delete " << static_cast<int>(c.mailbox.on_delete);
  }
}

TEST(ImapPolicy, UidvalidityRepeatedUnchangedIsNoChange) {
  Server server(kNone, {{kFetchAll, {"* OK [UIDVALIDITY 42] same\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kHide));
    EXPECT_TRUE(open.session.commit({{3, 8}, {}}).ok());
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID STORE 3,8 +FLAGS.SILENT ($POP3Deleted)"}));
}

// The snapshot taken with SELECT alone (visible = "unseen") counts too.
TEST(ImapPolicy, UidvalidityChangedAfterAnUnseenSnapshotCommitsNothing) {
  MailboxConfig mailbox = policy(DeletePolicy::kHide);
  mailbox.visible = Visible::kUnseen;
  Server server(kNone,
                {{"UID SEARCH UNSEEN NOT KEYWORD $POP3Deleted", {"* SEARCH 3 8\r\n$TAG OK done\r\n"}},
                 {"UID FETCH 3,8 (UID RFC822.SIZE FLAGS)",
                  {"* 1 FETCH (UID 3 RFC822.SIZE 30 FLAGS ())\r\n"
                   "* 2 FETCH (UID 8 RFC822.SIZE 80 FLAGS ())\r\n" +
                   std::string(kRenumbered) + "$TAG OK done\r\n"}}});
  {
    Open open(server, mailbox);
    EXPECT_EQ(open.session.commit({{3, 8}, {}}).error, UpstreamError::kUnavailable);
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{"UID SEARCH UNSEEN NOT KEYWORD $POP3Deleted",
                      "UID FETCH 3,8 (UID RFC822.SIZE FLAGS)"}));
}

// Said with the answer to a step of the commit itself: nothing after it.
TEST(ImapPolicy, UidvalidityChangedWithTheSeenStoreStopsBeforeHiding) {
  MailboxConfig mailbox;
  mailbox.mark_seen_on_retr = true;
  Server server(kNone, {{"UID STORE 3:4 +FLAGS.SILENT (\\Seen)",
                         {std::string(kRenumbered) + "$TAG OK done\r\n"}}});
  {
    Open open(server, mailbox);
    Status status = open.session.commit({{4}, {3, 4}});
    EXPECT_EQ(status.error, UpstreamError::kUnavailable);
    EXPECT_TRUE(about_uidvalidity(status)) << status.detail;
  }
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll, "UID STORE 3:4 +FLAGS.SILENT (\\Seen)"}));
}

TEST(ImapPolicy, UidvalidityChangedBeforeDeletedIsSetExpungesNothing) {
  Server server(kUidplusOnly, {{"UID SEARCH UID 3,8 DELETED",
                                {std::string(kRenumbered) + "* SEARCH\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kExpunge));
    EXPECT_EQ(open.session.commit({{3, 8}, {}}).error, UpstreamError::kUnavailable);
  }
  // Not even a -FLAGS (\Deleted): none was set.
  EXPECT_EQ(server.commit_commands(), (Commands{kFetchAll, "UID SEARCH UID 3,8 DELETED"}));
}

TEST(ImapPolicy, UidvalidityChangedWithTheCopyDeletesNothing) {
  Server server(kUidplusOnly,
                {{"UID COPY 3,8 Trash", {std::string(kRenumbered) + "$TAG OK copied\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    EXPECT_EQ(open.session.commit({{3, 8}, {}}).error, UpstreamError::kUnavailable);
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID COPY 3,8 Trash", "UID SEARCH UID 3,8 DELETED"}));
}

// A refused command is tried again on the UIDs still there, after a NOOP:
// not when the NOOP's answer tells of a new UIDVALIDITY.
TEST(ImapPolicy, UidvalidityChangedInTheNoopAnswerStopsTheRetry) {
  Server server(kAll, {{"UID MOVE 3,8 Trash", {"$TAG NO [EXPUNGEISSUED] some are gone\r\n"}},
                       {"NOOP", {std::string(kRenumbered) + "$TAG OK done\r\n"}},
                       {"UID SEARCH UID 3,8", {"* SEARCH 3\r\n$TAG OK done\r\n"}}});
  {
    Open open(server, policy(DeletePolicy::kMove));
    Status status = open.session.commit({{3, 8}, {}});
    EXPECT_EQ(status.error, UpstreamError::kUnavailable);
    EXPECT_TRUE(about_uidvalidity(status)) << status.detail;
  }
  EXPECT_EQ(server.commit_commands(),
            (Commands{kFetchAll, "UID MOVE 3,8 Trash", "NOOP", "UID SEARCH UID 3,8"}));
}

// ---- snapshot ----

TEST(ImapPolicy, UnseenWithMaxMessagesSearchesThenFetchesTheOldest) {
  Server server(kNone,
                {{"UID SEARCH UNSEEN NOT KEYWORD $POP3Deleted", {"* SEARCH 9 2 5 7\r\n$TAG OK done\r\n"}},
                 {"UID FETCH 2,5 (UID RFC822.SIZE FLAGS)",
                  {"* 1 FETCH (UID 2 RFC822.SIZE 20 FLAGS ())\r\n"
                   "* 2 FETCH (UID 5 RFC822.SIZE 50 FLAGS (\\Deleted))\r\n"
                   "* 4 FETCH (FLAGS (\\Seen))\r\n"
                   "$TAG OK done\r\n"}}});
  MailboxConfig mailbox;
  mailbox.visible = Visible::kUnseen;
  mailbox.max_messages = 2;
  ImapSession session(settings(server.port(), mailbox), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  Snapshot snapshot;
  Status status = session.snapshot(&snapshot);
  ASSERT_TRUE(status.ok()) << status.detail;
  EXPECT_EQ(snapshot.uidvalidity, 42u);
  ASSERT_EQ(snapshot.messages.size(), 2u);
  EXPECT_EQ(snapshot.messages[0].uid, 2u);
  EXPECT_EQ(snapshot.messages[0].size, 20u);
  EXPECT_EQ(snapshot.messages[1].uid, 5u);
  session.logout(1s);
  EXPECT_EQ(server.commands(),
            (Commands{"SELECT INBOX", "UID SEARCH UNSEEN NOT KEYWORD $POP3Deleted",
                      "UID FETCH 2,5 (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
}

TEST(ImapPolicy, UnseenDropsWhatBecameSeenMeanwhile) {
  Server server(kNone,
                {{"UID SEARCH UNSEEN NOT KEYWORD $POP3Deleted", {"* SEARCH 2 3\r\n$TAG OK done\r\n"}},
                 {"UID FETCH 2:3 (UID RFC822.SIZE FLAGS)",
                  {"* 1 FETCH (UID 2 RFC822.SIZE 20 FLAGS (\\Seen))\r\n"
                   "* 2 FETCH (UID 3 RFC822.SIZE 30 FLAGS ())\r\n$TAG OK done\r\n"}}});
  MailboxConfig mailbox;
  mailbox.visible = Visible::kUnseen;
  ImapSession session(settings(server.port(), mailbox), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  Snapshot snapshot;
  ASSERT_TRUE(session.snapshot(&snapshot).ok());
  ASSERT_EQ(snapshot.messages.size(), 1u);
  EXPECT_EQ(snapshot.messages[0].uid, 3u);
  session.logout(1s);
}

TEST(ImapPolicy, MaxMessagesAloneSearchesUnhidden) {
  Server server(kNone, {{"UID SEARCH NOT KEYWORD $POP3Deleted", {"* SEARCH\r\n$TAG OK done\r\n"}}});
  MailboxConfig mailbox;
  mailbox.max_messages = 100;
  ImapSession session(settings(server.port(), mailbox), 1);
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  Snapshot snapshot;
  ASSERT_TRUE(session.snapshot(&snapshot).ok());
  EXPECT_TRUE(snapshot.messages.empty());
  session.logout(1s);
  EXPECT_EQ(server.commands(),
            (Commands{"SELECT INBOX", "UID SEARCH NOT KEYWORD $POP3Deleted", "LOGOUT"}));
}

TEST(ImapPolicy, SnapshotSelectsTheSessionsFolder) {
  Server server(kNone, {{"SELECT \"Archive/2024\"", {"$TAG NO [NONEXISTENT] no such folder\r\n"}}});
  ImapSession session(settings(server.port(), MailboxConfig{}), 1);
  session.set_folder("Archive/2024");
  ASSERT_TRUE(session.connect().ok());
  ASSERT_TRUE(session.login({"alice", "secret"}).ok());
  Snapshot snapshot;
  EXPECT_EQ(session.snapshot(&snapshot).error, UpstreamError::kNoMailbox);
  session.logout(1s);
  // The snapshot's FETCH went out with the SELECT (and was refused too).
  EXPECT_EQ(server.commands(), (Commands{"SELECT \"Archive/2024\"",
                                         "UID FETCH 1:* (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
}

TEST(ImapPolicy, ManyScatteredUidsGoInSeveralCommands) {
  Server server(kUidplusOnly);
  std::vector<uint32_t> scattered;
  for (uint32_t uid = 1; uid <= 4000; uid += 2) scattered.push_back(uid);  // 2000 ranges
  {
    Open open(server, policy(DeletePolicy::kExpunge));
    EXPECT_TRUE(open.session.commit({scattered, {}}).ok());
  }
  Commands commands = server.commit_commands();
  ASSERT_EQ(commands.size(), 7u);  // FETCH, then 2 searches, 2 stores, 2 expunges
  EXPECT_EQ(commands[1].rfind("UID SEARCH UID 1,3,", 0), 0u);
  EXPECT_EQ(commands[3].rfind("UID STORE 1,3,", 0), 0u);
  EXPECT_EQ(commands[5].rfind("UID EXPUNGE 1,3,", 0), 0u);
  EXPECT_EQ(commands[6].rfind("UID EXPUNGE 2001,", 0), 0u);
  for (const auto& command : commands) EXPECT_NE(command, "EXPUNGE");
}

}  // namespace
}  // namespace popbridge::imap
