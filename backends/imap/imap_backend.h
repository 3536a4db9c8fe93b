// The libetpan implementation of Backend: POP3 sessions reach an upstream
// IMAP server through it.
//
// Login, fetch and commit are jobs on the upstream connection's strand
// (strand_pool.h): they run one at a time and in order, in the strand's
// fiber on the loop thread, which they leave whenever they wait for the
// server, so no connection ever waits for another. Handlers run on the
// loop's own stack. Destroying a Mailbox is safe at any time: pending
// handlers are dropped, the running job finishes, then LOGOUT (with a short
// timeout) and the freeing happen in the strand's fiber.
//
// After shutdown() no handler runs: jobs not started (logins, fetches,
// LOGOUTs of destroyed Mailboxes) are dropped and their connections closed
// without LOGOUT; jobs running are cancelled, so each of their waits ends at
// once. shutdown() does not block; the loop ends once the last fiber has.
// A Mailbox may outlive the backend.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <uv.h>

#include "backends/backend.h"
#include "config/config.h"

namespace popbridge::imap {
class StrandPool;
struct ImapSettings;
struct UpstreamLoad;
}  // namespace popbridge::imap

namespace popbridge {

// With several upstreams, each login is routed by imap/router.h (the
// user's domain picks the upstream; username "local" drops the domain;
// folder_separator picks the folder).
class ImapBackend final : public Backend {
 public:
  ImapBackend(uv_loop_t* loop, std::vector<UpstreamConfig> upstreams, MailboxConfig mailbox);
  ImapBackend(uv_loop_t* loop, UpstreamConfig upstream, MailboxConfig mailbox);
  // Calls shutdown() if it was not called.
  ~ImapBackend() override;
  void login(const Credentials& credentials, LoginHandler done) override;
  // Drops what is queued and cancels what runs; call before the loop ends.
  void shutdown() override;

  // Why an upstream cannot work as configured (an unusable ca_file, ...),
  // or "" when every one can: the server refuses to start or reload then.
  std::string configuration_error() const;

 private:
  std::vector<UpstreamConfig> upstreams_;  // for routing
  MailboxConfig mailbox_;
  std::vector<std::shared_ptr<const imap::ImapSettings>> settings_;  // one per upstream
  std::vector<std::shared_ptr<imap::UpstreamLoad>> loads_;           // one per upstream
  std::unique_ptr<imap::StrandPool> pool_;
  uint64_t next_connection_id_ = 1;
};

}  // namespace popbridge
