#include "backends/imap/imap_backend.h"

#include <openssl/crypto.h>

#include <cctype>
#include <chrono>
#include <string>
#include <utility>

#include "backends/imap/imap_session.h"
#include "backends/imap/worker_pool.h"
#include "common/log.h"

namespace popbridge {
namespace {

using imap::ImapSession;
using imap::Strand;

// LOGOUT is a courtesy: a dead upstream must not hold a worker for long.
constexpr std::chrono::milliseconds kLogoutTimeout{2000};

std::string lower_ascii(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

struct LoginResult {
  Status status;
  Snapshot snapshot;
};

struct FetchResult {
  Status status;
  std::string data;
};

class ImapMailbox final : public Mailbox {
 public:
  ImapMailbox(std::shared_ptr<Strand> strand, std::shared_ptr<ImapSession> session,
              std::string key)
      : strand_(std::move(strand)), session_(std::move(session)), key_(std::move(key)) {}

  // Loop thread. Drops pending handlers and queued jobs; the running job (if
  // any) finishes, then LOGOUT runs and the session is freed on a worker.
  ~ImapMailbox() override {
    strand_->cancel();
    strand_->post_detached([session = std::move(session_)] { session->logout(kLogoutTimeout); });
  }

  const std::string& key() const override { return key_; }

  void fetch(uint32_t uid, uint64_t offset, uint64_t length, ChunkHandler done) override {
    strand_->post(
        [session = session_, uid, offset, length] {
          FetchResult result;
          result.status = session->fetch(uid, offset, length, &result.data);
          return result;
        },
        [done = std::move(done)](FetchResult result) {
          done(std::move(result.status), std::move(result.data));
        });
  }

  void commit(CommitRequest request, CommitHandler done) override {
    // Empty: no upstream command, but still through the strand so that the
    // handler runs later, in order, like every other.
    strand_->post(
        [session = session_, uids = std::move(request.deleted)] {
          return uids.empty() ? Status{} : session->hide(uids);
        },
        [done = std::move(done)](Status status) { done(std::move(status)); });
  }

 private:
  std::shared_ptr<Strand> strand_;
  std::shared_ptr<ImapSession> session_;
  std::string key_;
};

}  // namespace

ImapBackend::ImapBackend(uv_loop_t* loop, UpstreamConfig upstream, MailboxConfig mailbox,
                         unsigned threads)
    : settings_(imap::make_imap_settings(std::move(upstream), std::move(mailbox))),
      pool_(std::make_unique<imap::WorkerPool>(loop, threads)) {}

ImapBackend::~ImapBackend() { shutdown(); }

void ImapBackend::shutdown() { pool_->shutdown(); }

void ImapBackend::login(const Credentials& credentials, LoginHandler done) {
  auto strand = pool_->make_strand();
  auto session = std::make_shared<ImapSession>(settings_, next_connection_id_++);
  std::string key = settings_->upstream.name + '\n' + lower_ascii(credentials.user) + '\n' +
                    settings_->upstream.folder;
  strand->post(
      [session, credentials = Credentials(credentials)]() mutable {
        LoginResult result;
        result.status = ImapSession::check_credentials(credentials);
        if (result.status.ok()) result.status = session->connect();
        if (result.status.ok()) result.status = session->login(credentials);
        // This copy of the password is not needed any more.
        OPENSSL_cleanse(credentials.password.data(), credentials.password.size());
        if (result.status.ok()) result.status = session->snapshot(&result.snapshot);
        if (!result.status.ok()) session->logout(kLogoutTimeout);
        return result;
      },
      [strand, session, key = std::move(key), done = std::move(done)](LoginResult result) {
        if (!result.status.ok()) {
          done(std::move(result.status), nullptr, Snapshot{});
          return;
        }
        done(Status{}, std::make_unique<ImapMailbox>(strand, session, key),
             std::move(result.snapshot));
      });
}

}  // namespace popbridge
