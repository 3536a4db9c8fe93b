// Routing a POP3 login name to an upstream, an IMAP login and a folder
// (pure), and ImapBackend doing it end to end against fake IMAP servers.
#include "backends/imap/router.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "backends/imap/imap_backend.h"
#include "imap_scripted_server.h"
#include "imap_test_loop.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using test_support::FakeImapServer;
using test_support::Loop;

UpstreamConfig upstream(std::string name, std::vector<std::string> domains,
                        UpstreamConfig::Username username = UpstreamConfig::Username::kFull,
                        std::string folder = "INBOX") {
  UpstreamConfig config;
  config.name = std::move(name);
  config.domains = std::move(domains);
  config.username = username;
  config.folder = std::move(folder);
  return config;
}

const std::vector<UpstreamConfig> kTwo = {
    upstream("main", {}),
    upstream("b", {"b.example", "c.example"}, UpstreamConfig::Username::kLocal, "Mail"),
};

TEST(ImapRouter, DomainPicksTheUpstream) {
  Route route = route_login(kTwo, MailboxConfig{}, "carol@B.Example");
  ASSERT_TRUE(route.status.ok()) << route.status.detail;
  EXPECT_EQ(route.upstream, 1u);
  EXPECT_EQ(route.imap_user, "carol");  // username = "local"
  EXPECT_EQ(route.folder, "Mail");      // that upstream's folder
  route = route_login(kTwo, MailboxConfig{}, "dave@c.example");
  EXPECT_EQ(route.upstream, 1u);
}

TEST(ImapRouter, OtherDomainsAndNoDomainGoToTheDefault) {
  for (const char* user : {"alice", "alice@example.org", "x@b.example.org", "x@example@b"}) {
    Route route = route_login(kTwo, MailboxConfig{}, user);
    ASSERT_TRUE(route.status.ok()) << user;
    EXPECT_EQ(route.upstream, 0u) << user;
    EXPECT_EQ(route.imap_user, user);  // username = "full"
    EXPECT_EQ(route.folder, "INBOX");
  }
}

TEST(ImapRouter, TheLastAtSignStartsTheDomain) {
  Route route = route_login(kTwo, MailboxConfig{}, "odd@name@b.example");
  EXPECT_EQ(route.upstream, 1u);
  EXPECT_EQ(route.imap_user, "odd@name");
}

TEST(ImapRouter, NoDefaultMeansUnknownDomainsCannotLogIn) {
  const std::vector<UpstreamConfig> strict = {upstream("a", {"a.example"}),
                                              upstream("b", {"b.example"})};
  EXPECT_EQ(route_login(strict, MailboxConfig{}, "x@other.example").status.error,
            UpstreamError::kAuthFailed);
  EXPECT_EQ(route_login(strict, MailboxConfig{}, "nodomain").status.error,
            UpstreamError::kAuthFailed);
  EXPECT_EQ(route_login(strict, MailboxConfig{}, "x@a.example").upstream, 0u);
}

TEST(ImapRouter, LocalUsernameNeedsALocalPart) {
  EXPECT_EQ(route_login(kTwo, MailboxConfig{}, "@b.example").status.error,
            UpstreamError::kAuthFailed);
  // Without a domain, "local" sends the name as it is.
  const std::vector<UpstreamConfig> local = {
      upstream("main", {}, UpstreamConfig::Username::kLocal)};
  EXPECT_EQ(route_login(local, MailboxConfig{}, "alice").imap_user, "alice");
  EXPECT_EQ(route_login(local, MailboxConfig{}, "alice@x.example").imap_user, "alice");
}

TEST(ImapRouter, FolderSuffix) {
  MailboxConfig mailbox;
  mailbox.folder_separator = "#";
  Route route = route_login(kTwo, mailbox, "alice#Archive/2024");
  ASSERT_TRUE(route.status.ok());
  EXPECT_EQ(route.imap_user, "alice");
  EXPECT_EQ(route.folder, "Archive/2024");
  route = route_login(kTwo, mailbox, "carol@b.example#Lists#Old");
  EXPECT_EQ(route.upstream, 1u);
  EXPECT_EQ(route.imap_user, "carol");
  EXPECT_EQ(route.folder, "Lists#Old");  // split at the first separator
  EXPECT_EQ(route_login(kTwo, mailbox, "alice#").status.error, UpstreamError::kNoMailbox);
  EXPECT_EQ(route_login(kTwo, mailbox, "#Archive").status.error, UpstreamError::kAuthFailed);
  // Off: '#' is part of the name.
  route = route_login(kTwo, MailboxConfig{}, "alice#Archive");
  EXPECT_EQ(route.imap_user, "alice#Archive");
  EXPECT_EQ(route.folder, "INBOX");
}

TEST(ImapRouter, ControlCharactersInTheUserOrTheFolderAreRefused) {
  MailboxConfig mailbox;
  mailbox.folder_separator = "#";
  for (const char* user : {"carol#INBOX\r\nX1 DELETE INBOX", "carol#IN\tBOX", "carol#\x7f",
                           "carol#Entw\xc3\xbcrfe\n"}) {
    EXPECT_EQ(route_login(kTwo, mailbox, user).status.error, UpstreamError::kNoMailbox) << user;
  }
  for (const char* user : {"car\rol#INBOX", "carol\x01", "carol\n@b.example"}) {
    EXPECT_EQ(route_login(kTwo, mailbox, user).status.error, UpstreamError::kAuthFailed) << user;
  }
  EXPECT_EQ(imap_folder_name("A\x1b[0m"), std::nullopt);
  EXPECT_EQ(imap_folder_name(std::string("A\0B", 3)), std::nullopt);
}

TEST(ImapRouter, Utf8FolderNamesGoInModifiedUtf7) {
  EXPECT_EQ(imap_folder_name("Entwürfe"), "Entw&APw-rfe");
  EXPECT_EQ(imap_folder_name("台北"), "&U,BTFw-");             // RFC 3501's example
  EXPECT_EQ(imap_folder_name("A&B ü"), "A&-B &APw-");          // '&' escaped once encoding
  EXPECT_EQ(imap_folder_name("Ünïcödé"), "&ANw-n&AO8-c&APY-d&AOk-");
  EXPECT_EQ(imap_folder_name("😀"), "&2D3eAA-");               // a surrogate pair
  EXPECT_EQ(imap_folder_name("Plain & ASCII"), "Plain & ASCII");  // ASCII as written
  EXPECT_EQ(imap_folder_name("bad\xff"), std::nullopt);
  EXPECT_EQ(imap_folder_name("\xc3"), std::nullopt);
  EXPECT_EQ(imap_folder_name("\xc0\xaf"), std::nullopt);  // overlong
  MailboxConfig mailbox;
  mailbox.folder_separator = "#";
  EXPECT_EQ(route_login(kTwo, mailbox, "alice#Entwürfe").folder, "Entw&APw-rfe");
  EXPECT_EQ(route_login(kTwo, mailbox, "alice#\xff").status.error, UpstreamError::kNoMailbox);
}

TEST(ImapRouter, FolderKeys) {
  EXPECT_EQ(folder_key("inbox"), "INBOX");
  EXPECT_EQ(folder_key("Inbox"), "INBOX");
  EXPECT_EQ(folder_key("Archive"), "Archive");
  EXPECT_TRUE(same_folder("INBOX", "inBox"));
  EXPECT_FALSE(same_folder("Trash", "trash"));
}

// ---- ImapBackend routing end to end ----

class Recorder {
 public:
  FakeImapServer::Answer answer() {
    return [this](const std::string&, const std::string& command) -> std::string {
      {
        std::lock_guard lock(mutex_);
        seen_.push_back(command);
      }
      if (command.rfind("LOGIN ", 0) == 0) return "$TAG OK welcome\r\n";
      if (command.rfind("SELECT ", 0) == 0) {
        return "* 1 EXISTS\r\n* OK [UIDVALIDITY 5] x\r\n$TAG OK [READ-WRITE] done\r\n";
      }
      if (command == "UID FETCH 1:* (UID RFC822.SIZE FLAGS)") {
        return "* 1 FETCH (UID 4 RFC822.SIZE 10 FLAGS ())\r\n$TAG OK done\r\n";
      }
      if (command == "LOGOUT") return "";
      return "$TAG OK done\r\n";
    };
  }
  std::vector<std::string> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> seen_;
};

UpstreamConfig at(uint16_t port, UpstreamConfig config) {
  config.host = "127.0.0.1";
  config.port = port;
  config.connect_timeout = 1s;
  config.command_timeout = 2s;
  return config;
}

struct LoginOutcome {
  bool done = false;
  Status status;
  std::unique_ptr<Mailbox> mailbox;
};

void login(Loop& loop, Backend& backend, const std::string& user, LoginOutcome* out) {
  backend.login({user, "secret"}, [out](Status status, std::unique_ptr<Mailbox> mailbox, Snapshot) {
    out->status = std::move(status);
    out->mailbox = std::move(mailbox);
    out->done = true;
  });
  ASSERT_TRUE(loop.run_until([&] { return out->done; }));
}

TEST(ImapRouter, BackendRoutesByDomainOverOnePool) {
  Recorder a_commands, b_commands;
  FakeImapServer a("* OK [CAPABILITY IMAP4rev1] a\r\n", a_commands.answer());
  FakeImapServer b("* OK [CAPABILITY IMAP4rev1] b\r\n", b_commands.answer());
  Loop loop;
  {
    MailboxConfig mailbox;
    mailbox.folder_separator = "#";
    ImapBackend backend(loop.get(),
                        {at(a.port(), upstream("a", {})),
                         at(b.port(), upstream("b", {"b.example"}, UpstreamConfig::Username::kLocal))},
                        mailbox);
    LoginOutcome carol;
    login(loop, backend, "carol@B.example#Archive", &carol);
    ASSERT_TRUE(carol.status.ok()) << carol.status.detail;
    EXPECT_EQ(carol.mailbox->key(), "b\ncarol\nArchive");
    LoginOutcome alice;
    login(loop, backend, "Alice#inbox", &alice);
    ASSERT_TRUE(alice.status.ok()) << alice.status.detail;
    EXPECT_EQ(alice.mailbox->key(), "a\nalice\nINBOX");
    carol.mailbox.reset();
    alice.mailbox.reset();
    loop.run_until([&] { return b_commands.seen().size() >= 4 && a_commands.seen().size() >= 4; });
    backend.shutdown();
    loop.run_until([] { return false; }, 20ms);
  }
  EXPECT_EQ(b_commands.seen(),
            (std::vector<std::string>{"LOGIN carol secret", "SELECT Archive",
                                      "UID FETCH 1:* (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
  EXPECT_EQ(a_commands.seen(),
            (std::vector<std::string>{"LOGIN Alice secret", "SELECT inbox",
                                      "UID FETCH 1:* (UID RFC822.SIZE FLAGS)", "LOGOUT"}));
}

TEST(ImapRouter, BackendRefusesAnUnroutedLoginWithoutConnecting) {
  Recorder commands;
  FakeImapServer a("* OK [CAPABILITY IMAP4rev1] a\r\n", commands.answer());
  Loop loop;
  {
    ImapBackend backend(loop.get(), {at(a.port(), upstream("a", {"a.example"}))}, MailboxConfig{});
    bool returned = false;
    bool called_early = false;
    LoginOutcome out;
    backend.login({"x@elsewhere.example", "secret"},
                  [&](Status status, std::unique_ptr<Mailbox> mailbox, Snapshot) {
                    called_early = !returned;
                    out.status = std::move(status);
                    out.mailbox = std::move(mailbox);
                    out.done = true;
                  });
    returned = true;
    ASSERT_TRUE(loop.run_until([&] { return out.done; }));
    EXPECT_FALSE(called_early);  // never inside login()
    EXPECT_EQ(out.status.error, UpstreamError::kAuthFailed);
    EXPECT_EQ(out.mailbox, nullptr);
    backend.shutdown();
    loop.run_until([] { return false; }, 20ms);
  }
  EXPECT_TRUE(commands.seen().empty());
}

TEST(ImapRouter, BackendCommitRunsThePolicy) {
  Recorder commands;
  FakeImapServer a("* OK [CAPABILITY IMAP4rev1 UIDPLUS MOVE] a\r\n", commands.answer());
  Loop loop;
  {
    MailboxConfig mailbox;
    mailbox.on_delete = DeletePolicy::kMove;
    mailbox.mark_seen_on_retr = true;
    ImapBackend backend(loop.get(), at(a.port(), upstream("a", {})), mailbox);
    LoginOutcome out;
    login(loop, backend, "alice", &out);
    ASSERT_TRUE(out.status.ok()) << out.status.detail;
    bool committed = false;
    out.mailbox->commit({{4}, {4, 6}}, [&](Status status) {
      EXPECT_TRUE(status.ok()) << status.detail;
      committed = true;
    });
    ASSERT_TRUE(loop.run_until([&] { return committed; }));
    out.mailbox.reset();
    loop.run_until([&] { return commands.seen().size() >= 6; });
    backend.shutdown();
    loop.run_until([] { return false; }, 20ms);
  }
  EXPECT_EQ(commands.seen(),
            (std::vector<std::string>{"LOGIN alice secret", "SELECT INBOX",
                                      "UID FETCH 1:* (UID RFC822.SIZE FLAGS)",
                                      "UID STORE 4,6 +FLAGS.SILENT (\\Seen)", "UID MOVE 4 Trash",
                                      "LOGOUT"}));
}

TEST(ImapRouter, BackendRefusesExpungeWithoutUidplus) {
  Recorder commands;
  FakeImapServer a("* OK [CAPABILITY IMAP4rev1 MOVE] a\r\n", commands.answer());
  Loop loop;
  {
    MailboxConfig mailbox;
    mailbox.on_delete = DeletePolicy::kExpunge;
    ImapBackend backend(loop.get(), at(a.port(), upstream("a", {})), mailbox);
    LoginOutcome out;
    login(loop, backend, "alice", &out);
    EXPECT_EQ(out.status.error, UpstreamError::kRefused);
    EXPECT_EQ(out.mailbox, nullptr);
    backend.shutdown();
    loop.run_until([] { return false; }, 20ms);
  }
  // Asked again after login, then gave up before SELECT.
  EXPECT_EQ(commands.seen(),
            (std::vector<std::string>{"LOGIN alice secret", "CAPABILITY", "LOGOUT"}));
}

}  // namespace
}  // namespace popbridge::imap
