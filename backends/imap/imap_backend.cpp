#include "backends/imap/imap_backend.h"

#include <openssl/crypto.h>

#include <cctype>
#include <chrono>
#include <string>
#include <utility>

#include "backends/imap/imap_session.h"
#include "backends/imap/router.h"
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
              std::string key, std::string upstream)
      : strand_(std::move(strand)), session_(std::move(session)), key_(std::move(key)),
        upstream_(std::move(upstream)) {}

  // Loop thread. Drops pending handlers and queued jobs; the running job (if
  // any) finishes, then LOGOUT runs and the session is freed on a worker.
  ~ImapMailbox() override {
    strand_->cancel();
    strand_->post_detached([session = std::move(session_)] { session->logout(kLogoutTimeout); });
  }

  const std::string& key() const override { return key_; }
  const std::string& upstream() const override { return upstream_; }

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

  void fetch_first(std::vector<uint32_t> uids, uint64_t length, BatchHandler done) override {
    strand_->post(
        [session = session_, uids = std::move(uids), length] {
          std::vector<FetchedChunk> chunks;
          session->fetch_bodies(uids, 0, length, &chunks);
          // A refusal of the whole command (a server without
          // [EXPUNGEISSUED] refusing because one of them is gone) must not
          // fail the others: ask for each on its own.
          if (uids.size() > 1 && !session->broken() &&
              chunks.front().status.error == UpstreamError::kRefused) {
            for (FetchedChunk& chunk : chunks) {
              chunk.status = session->fetch(chunk.uid, 0, length, &chunk.data);
            }
          }
          return chunks;
        },
        [done = std::move(done)](std::vector<FetchedChunk> chunks) { done(std::move(chunks)); });
  }

  void commit(CommitRequest request, CommitHandler done) override {
    // Nothing to store, move or expunge (and no retention): answered
    // without a worker, still later and in order like every other handler.
    if (!session_->commit_needs_upstream(request)) {
      strand_->post_result(Status{}, [done = std::move(done)](Status status) { done(std::move(status)); });
      return;
    }
    strand_->post(
        [session = session_, request = std::move(request)] { return session->commit(request); },
        [done = std::move(done)](Status status) { done(std::move(status)); });
  }

 private:
  std::shared_ptr<Strand> strand_;
  std::shared_ptr<ImapSession> session_;
  std::string key_;
  std::string upstream_;
};

}  // namespace

ImapBackend::ImapBackend(uv_loop_t* loop, std::vector<UpstreamConfig> upstreams,
                         MailboxConfig mailbox, unsigned threads)
    : upstreams_(std::move(upstreams)),
      mailbox_(std::move(mailbox)),
      pool_(std::make_unique<imap::WorkerPool>(loop, threads)) {
  for (const UpstreamConfig& upstream : upstreams_) {
    UpstreamConfig wire = upstream;
    // The folder as SELECT sends it (UTF-8 names in modified UTF-7).
    wire.folder = imap::imap_folder_name(upstream.folder).value_or(upstream.folder);
    settings_.push_back(imap::make_imap_settings(std::move(wire), mailbox_));
  }
}

ImapBackend::ImapBackend(uv_loop_t* loop, UpstreamConfig upstream, MailboxConfig mailbox,
                         unsigned threads)
    : ImapBackend(loop, std::vector<UpstreamConfig>{std::move(upstream)}, std::move(mailbox),
                  threads) {}

ImapBackend::~ImapBackend() { shutdown(); }

void ImapBackend::shutdown() { pool_->shutdown(); }

void ImapBackend::login(const Credentials& credentials, LoginHandler done) {
  auto strand = pool_->make_strand();
  imap::Route route = imap::route_login(upstreams_, mailbox_, credentials.user);
  if (!route.status.ok()) {
    log::debug("login ", credentials.user, " not routed: ", route.status.detail);
    // Through the strand all the same: a handler never runs before login() returns.
    strand->post([status = std::move(route.status)] { return LoginResult{status, Snapshot{}}; },
                 [done = std::move(done)](LoginResult result) {
                   done(std::move(result.status), nullptr, Snapshot{});
                 });
    return;
  }
  const auto& settings = settings_[route.upstream];
  auto session = std::make_shared<ImapSession>(settings, next_connection_id_++);
  session->set_folder(route.folder);
  // Same upstream, IMAP user and folder: same key (INBOX in any case).
  std::string key = settings->upstream.name + '\n' + lower_ascii(route.imap_user) + '\n' +
                    imap::folder_key(route.folder);
  if (upstreams_.size() > 1 || route.imap_user != credentials.user) {
    log::debug("login ", credentials.user, " -> upstream ", settings->upstream.name, " as ",
               route.imap_user, ", folder ", route.folder);
  }
  strand->post(
      [session, credentials = Credentials{std::move(route.imap_user), credentials.password}]() mutable {
        LoginResult result;
        result.status = ImapSession::check_credentials(credentials);
        if (result.status.ok()) result.status = session->connect();
        if (result.status.ok()) result.status = session->login(credentials);
        // This copy of the password is not needed any more.
        OPENSSL_cleanse(credentials.password.data(), credentials.password.size());
        if (result.status.ok()) result.status = session->check_extensions();
        if (result.status.ok()) result.status = session->snapshot(&result.snapshot);
        if (!result.status.ok()) session->logout(kLogoutTimeout);
        return result;
      },
      [strand, session, key = std::move(key), upstream = settings->upstream.name,
       done = std::move(done)](LoginResult result) {
        if (!result.status.ok()) {
          done(std::move(result.status), nullptr, Snapshot{});
          return;
        }
        done(Status{}, std::make_unique<ImapMailbox>(strand, session, key, upstream),
             std::move(result.snapshot));
      });
}

std::string ImapBackend::configuration_error() const {
  for (const auto& settings : settings_) {
    if (!settings->tls_error.empty()) return "upstream " + settings->upstream.name + ": " + settings->tls_error;
  }
  return {};
}

}  // namespace popbridge
