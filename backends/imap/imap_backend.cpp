#include "backends/imap/imap_backend.h"

#include <cctype>
#include <chrono>
#include <deque>
#include <functional>
#include <string>
#include <utility>

#include "backends/imap/imap_session.h"
#include "backends/imap/router.h"
#include "backends/imap/strand_pool.h"
#include "common/log.h"

namespace popbridge {
namespace imap {

// What one upstream carries: its open connections, and how many of them
// are still logging in. Logins beyond max_logins_in_flight wait their turn
// (a burst must not flood the server's login processes, nor a dead server
// collect sockets); beyond max_connections they are refused. Shared with
// the jobs, which may outlive the backend. Loop thread only.
struct UpstreamLoad {
  size_t max_connections = 0;
  size_t max_logins_in_flight = 0;
  size_t connections = 0;
  size_t logging_in = 0;
  std::deque<std::function<void()>> waiting;  // logins to start, in order

  // Starts `login` now if a slot is free, else queues it.
  void admit(std::function<void()> login) {
    waiting.push_back(std::move(login));
    start_waiting();
  }
  // Starts waiting logins, oldest first, while slots are free.
  void start_waiting() {
    while (!waiting.empty() && logging_in < max_logins_in_flight) {
      auto next = std::move(waiting.front());
      waiting.pop_front();
      ++logging_in;
      next();  // posts the login's job; it runs later
    }
  }
};

}  // namespace imap

namespace {

using imap::ImapSession;
using imap::UpstreamLoad;

// Held while something counts against an upstream's load; gives it back
// when the last holder lets go (a job's captures die in its fiber).
class ConnectionSlot {
 public:
  explicit ConnectionSlot(std::shared_ptr<UpstreamLoad> load) : load_(std::move(load)) {
    ++load_->connections;
  }
  ~ConnectionSlot() { --load_->connections; }
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;

 private:
  std::shared_ptr<UpstreamLoad> load_;
};

class LoginSlot {
 public:
  explicit LoginSlot(std::shared_ptr<UpstreamLoad> load) : load_(std::move(load)) {}
  ~LoginSlot() {
    --load_->logging_in;
    load_->start_waiting();
  }
  LoginSlot(const LoginSlot&) = delete;
  LoginSlot& operator=(const LoginSlot&) = delete;

 private:
  std::shared_ptr<UpstreamLoad> load_;
};
using imap::Strand;

// LOGOUT is a courtesy: a dead upstream must not keep a connection for long.
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
              std::shared_ptr<ConnectionSlot> slot, std::string key, std::string upstream)
      : strand_(std::move(strand)), session_(std::move(session)), slot_(std::move(slot)),
        key_(std::move(key)), upstream_(std::move(upstream)) {}

  // Drops pending handlers and queued jobs; the running job (if any)
  // finishes, then LOGOUT runs and the session is freed, in the fiber.
  ~ImapMailbox() override {
    strand_->cancel();
    strand_->post_detached([session = std::move(session_), slot = std::move(slot_)] {
      session->logout(kLogoutTimeout);
    });
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
    // without a fiber, still later and in order like every other handler.
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
  std::shared_ptr<ConnectionSlot> slot_;  // until the LOGOUT is done
  std::string key_;
  std::string upstream_;
};

}  // namespace

ImapBackend::ImapBackend(uv_loop_t* loop, std::vector<UpstreamConfig> upstreams,
                         MailboxConfig mailbox)
    : upstreams_(std::move(upstreams)),
      mailbox_(std::move(mailbox)),
      pool_(std::make_unique<imap::StrandPool>(loop)) {
  for (const UpstreamConfig& upstream : upstreams_) {
    UpstreamConfig wire = upstream;
    // The folder as SELECT sends it (UTF-8 names in modified UTF-7).
    wire.folder = imap::imap_folder_name(upstream.folder).value_or(upstream.folder);
    settings_.push_back(imap::make_imap_settings(std::move(wire), mailbox_));
    auto load = std::make_shared<UpstreamLoad>();
    load->max_connections = upstream.max_connections;
    load->max_logins_in_flight = std::max<size_t>(1, upstream.max_logins_in_flight);
    loads_.push_back(std::move(load));
  }
}

ImapBackend::ImapBackend(uv_loop_t* loop, UpstreamConfig upstream, MailboxConfig mailbox)
    : ImapBackend(loop, std::vector<UpstreamConfig>{std::move(upstream)}, std::move(mailbox)) {}

ImapBackend::~ImapBackend() { shutdown(); }

void ImapBackend::shutdown() {
  // Logins still waiting for a slot are dropped (they hold their load).
  for (auto& load : loads_) load->waiting.clear();
  pool_->shutdown();
}

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
  const std::shared_ptr<UpstreamLoad>& load = loads_[route.upstream];
  if (load->connections >= load->max_connections) {
    log::warn("upstream ", settings->upstream.name, ": max_connections (", load->max_connections,
              ") reached; login of ", credentials.user, " refused");
    strand->post_result(Status{UpstreamError::kUnavailable, "upstream max_connections reached"},
                        [done = std::move(done)](Status status) {
                          done(std::move(status), nullptr, Snapshot{});
                        });
    return;
  }
  auto slot = std::make_shared<ConnectionSlot>(load);
  auto session = std::make_shared<ImapSession>(settings, next_connection_id_++);
  session->set_folder(route.folder);
  // Same upstream, IMAP user and folder: same key (INBOX in any case).
  std::string key = settings->upstream.name + '\n' + lower_ascii(route.imap_user) + '\n' +
                    imap::folder_key(route.folder);
  if (upstreams_.size() > 1 || route.imap_user != credentials.user) {
    log::debug("login ", credentials.user, " -> upstream ", settings->upstream.name, " as ",
               route.imap_user, ", folder ", route.folder);
  }
  auto start = [strand, session, slot, load,
                credentials = Credentials{std::move(route.imap_user), credentials.password},
                key = std::move(key), upstream = settings->upstream.name,
                done = std::move(done)]() mutable {
    strand->post(
        [session, login_slot = std::make_shared<LoginSlot>(load),
         credentials = std::move(credentials)]() mutable {
          LoginResult result;
          result.status = ImapSession::check_credentials(credentials);
          if (result.status.ok()) result.status = session->connect();
          if (result.status.ok()) result.status = session->login(credentials);
          wipe(credentials.password);  // this copy is not needed any more
          if (result.status.ok()) result.status = session->check_extensions();
          if (result.status.ok()) result.status = session->snapshot(&result.snapshot);
          if (!result.status.ok()) session->logout(kLogoutTimeout);
          return result;
          // (login_slot goes with the job: the next waiting login starts.)
        },
        [strand, session, slot = std::move(slot), key = std::move(key),
         upstream = std::move(upstream), done = std::move(done)](LoginResult result) mutable {
          if (!result.status.ok()) {
            done(std::move(result.status), nullptr, Snapshot{});
            return;
          }
          done(Status{},
               std::make_unique<ImapMailbox>(strand, session, std::move(slot), key, upstream),
               std::move(result.snapshot));
        });
  };
  load->admit(std::move(start));
}

std::string ImapBackend::configuration_error() const {
  for (const auto& settings : settings_) {
    if (!settings->tls_error.empty()) return "upstream " + settings->upstream.name + ": " + settings->tls_error;
  }
  return {};
}

}  // namespace popbridge
