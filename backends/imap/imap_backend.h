// The libetpan implementation of Backend: POP3 sessions reach an upstream
// IMAP server through it.
//
// Threads: login, fetch and commit run as jobs on a fixed pool of worker
// threads (worker_pool.h); each upstream connection is a strand, so its
// jobs run one at a time and in order. Handlers run on the loop thread.
// Destroying a Mailbox (on the loop thread) is safe at any time: pending
// handlers are dropped, the running job finishes, then LOGOUT (with a short
// timeout) and the freeing happen on a worker.
//
// The backend's uv_async_t keeps the loop alive until shutdown(). After
// shutdown() no handler runs: jobs not started (logins, fetches, LOGOUTs of
// destroyed Mailboxes) are dropped and their connections closed without
// LOGOUT. shutdown() does not block: jobs already running finish on their
// workers, then the loop joins the threads and closes the uv_async_t, so
// the loop ends only after that. A Mailbox may outlive the backend.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <uv.h>

#include "backends/backend.h"
#include "config/config.h"

namespace popbridge::imap {
class WorkerPool;
struct ImapSettings;
}  // namespace popbridge::imap

namespace popbridge {

// With several upstreams, each login is routed by imap/router.h (the
// user's domain picks the upstream; username "local" drops the domain;
// folder_separator picks the folder); all share one pool of `threads`.
class ImapBackend final : public Backend {
 public:
  ImapBackend(uv_loop_t* loop, std::vector<UpstreamConfig> upstreams, MailboxConfig mailbox,
              unsigned threads);
  ImapBackend(uv_loop_t* loop, UpstreamConfig upstream, MailboxConfig mailbox, unsigned threads);
  // Calls shutdown() if it was not called.
  ~ImapBackend() override;
  void login(const Credentials& credentials, LoginHandler done) override;
  // Stops the workers (after the jobs already running) and closes the uv_async_t; call before the loop ends.
  void shutdown() override;

  // Why an upstream cannot work as configured (an unusable ca_file, ...),
  // or "" when every one can: the server refuses to start or reload then.
  std::string configuration_error() const;

 private:
  std::vector<UpstreamConfig> upstreams_;  // for routing
  MailboxConfig mailbox_;
  std::vector<std::shared_ptr<const imap::ImapSettings>> settings_;  // one per upstream
  std::unique_ptr<imap::WorkerPool> pool_;
  uint64_t next_connection_id_ = 1;
};

}  // namespace popbridge
