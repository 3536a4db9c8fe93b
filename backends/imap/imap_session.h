// One upstream IMAP connection, driven with blocking libetpan calls.
//
// Runs on a worker thread only (one at a time: the connection's strand).
// Every method returns a Status in the Backend's terms; `detail` holds the
// command and the server's answer or the connection failure, never the
// password. After a connection failure the session is "broken": later
// calls fail at once with kUnavailable.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "backends/imap/uid_set.h"
#include "config/config.h"

typedef struct mailimap mailimap;
typedef struct clist_s clist;
struct mailimap_search_key;

namespace popbridge::imap {

class UpstreamStream;
class UpstreamTls;

struct ImapSettings {
  UpstreamConfig upstream;
  MailboxConfig mailbox;
  // The upstream's TLS client context (tls != none): one per upstream,
  // built once by make_imap_settings(), shared by all its connections.
  std::shared_ptr<const UpstreamTls> tls;
  std::string tls_error;  // why `tls` could not be built
};

// ImapSettings with the TLS context built (when upstream.tls is not none).
// If it cannot be built (unreadable ca_file...), the error is logged and
// every login to that upstream fails with kUnavailable saying why.
std::shared_ptr<const ImapSettings> make_imap_settings(UpstreamConfig upstream,
                                                       MailboxConfig mailbox);

class ImapSession {
 public:
  ImapSession(std::shared_ptr<const ImapSettings> settings, uint64_t id);
  // Drops the connection without LOGOUT (no network IO).
  ~ImapSession();
  ImapSession(const ImapSession&) = delete;
  ImapSession& operator=(const ImapSession&) = delete;

  // Credentials that cannot be sent safely fail with kAuthFailed before any
  // connection: a user name with a control character, a password with CR,
  // LF or NUL (either would end the LOGIN command early).
  static Status check_credentials(const Credentials& credentials);

  // TCP connect, TLS (implicit, or STARTTLS after the greeting),
  // greeting, capabilities. Tries upstream.hosts in order: a host that
  // cannot be reached (refused, timed out, no greeting) gives way to the
  // next; a certificate that fails verification or a failed STARTTLS ends
  // the attempt at once (kUnavailable).
  Status connect();
  // LOGIN, or AUTHENTICATE PLAIN for 8-bit credentials (when the server
  // offers it) or when the server advertises LOGINDISABLED.
  Status login(const Credentials& credentials);
  // ---- imap_policy.cpp: the folder, the snapshot and QUIT's commit ----

  // The folder snapshot() selects, as sent (default: upstream.folder).
  void set_folder(std::string folder) { folder_ = std::move(folder); }
  const std::string& folder() const { return folder_; }
  // After login: the extensions the mailbox policy needs (UIDPLUS for
  // "expunge"; MOVE or UIDPLUS for "move"; the same for retention_action
  // when retention_days > 0). Asks CAPABILITY again when the list known so
  // far lacks them (servers often list them only after login). kRefused
  // when the server does not have them: never a plain EXPUNGE instead.
  Status check_extensions();
  // SELECT the folder and UID FETCH 1:* (UID RFC822.SIZE FLAGS), sent
  // together; with visible = "unseen" or max_messages, SELECT, then UID
  // SEARCH [UNSEEN] NOT KEYWORD <hide keyword> and UID FETCH only the oldest
  // max_messages of those.
  Status snapshot(Snapshot* snapshot);
  // QUIT: \Seen on `retrieved` (mark_seen_on_retr), the delete policy on
  // `deleted`, then retention (whose failure is logged, not returned).
  // Nothing is ever expunged but the given (or retention's) UIDs.
  Status commit(const Mailbox::CommitRequest& request);
  // Whether commit(request) has anything to tell the server; when not, it
  // returns OK without a word upstream (and need not run on a worker).
  bool commit_needs_upstream(const Mailbox::CommitRequest& request) const;
  // UID STORE <set> +FLAGS.SILENT (<hide keyword>).
  Status hide(const std::vector<uint32_t>& uids);

  // UID FETCH uid BODY.PEEK[]<offset.length>: never sets \Seen.
  Status fetch(uint32_t uid, uint64_t offset, uint64_t length, std::string* data);
  // The same for several messages in one command: one chunk per UID, in
  // the order given, each with its own status (a message expunged
  // meanwhile is kMessageGone, the others arrive).
  void fetch_bodies(const std::vector<uint32_t>& uids, uint64_t offset, uint64_t length,
                    std::vector<FetchedChunk>* chunks);
  // LOGOUT waiting at most `timeout` if the connection is healthy, then
  // frees everything. Safe to call twice.
  void logout(std::chrono::milliseconds timeout);

  bool broken() const { return broken_; }
  const std::string& name() const { return name_; }

 private:
  // Maps a libetpan return code. `no_error` is the code libetpan returns
  // when the server answered NO; a BAD answer maps to `on_bad`.
  Status outcome(int rc, const std::string& command, int no_error, UpstreamError on_no,
                 UpstreamError on_bad);
  Status lost(const std::string& command, const std::string& why);
  std::string server_text() const;
  Status authenticate_plain(const Credentials& credentials);
  Status login_outcome(int rc, const std::string& command);
  // Reads, with libetpan's parser, the answer to the command sent earlier
  // with `tag`: libetpan's code, and *state = the tagged OK/NO/BAD.
  int parse_answer(int tag, int* state);
  // One host of connect(); *next: whether the next host may be tried.
  Status connect_host(const HostPort& target, bool* next);
  Status starttls(const HostPort& target);
  Status request_capabilities();
  void close_now();

  // ---- imap_policy.cpp ----
  enum class Removal { kMove, kExpunge };
  // UID STORE <set> +FLAGS.SILENT / -FLAGS.SILENT (flags), in commands of
  // at most kMaxRangesPerCommand ranges, retried without vanished UIDs.
  Status store(const std::vector<uint32_t>& uids, bool add, const std::vector<std::string>& flags);
  // Moves (to move_to) or expunges exactly `uids`, see imap_policy.cpp.
  Status remove(const std::vector<uint32_t>& uids, Removal how, const char* why);
  Status transfer(const std::vector<uint32_t>& uids, bool move);
  Status uid_expunge(const std::vector<uint32_t>& uids);
  Status retention();
  // UID SEARCH <key>: takes ownership of `key`.
  Status uid_search(mailimap_search_key* key, const std::string& command,
                    std::vector<uint32_t>* uids);
  // Which UIDs of `ranges` still exist (NOOP, then UID SEARCH UID <set>).
  Status existing(const std::vector<UidRange>& ranges, std::vector<uint32_t>* alive);
  // Which of `uids` carry \Deleted now (UID SEARCH UID <set> DELETED).
  Status flagged_deleted(const std::vector<uint32_t>& uids, std::vector<uint32_t>* flagged);
  // Runs op(chunk) on chunks of `uids`; when the server refuses one, drops
  // the UIDs that vanished (expunged by another client) and tries again.
  template <typename Op>
  Status on_existing(const std::vector<uint32_t>& uids, const std::string& what, Op op);
  Status fetch_snapshot(const std::vector<uint32_t>* uids, Snapshot* snapshot);
  // snapshot() for visible = "all" and no max_messages (imap_session.cpp).
  Status select_and_fetch_all(Snapshot* snapshot);
  // The snapshot from the answer to a FETCH of every message (frees it).
  Status snapshot_of_all(clist* fetch_list, Snapshot* snapshot);

  std::shared_ptr<const ImapSettings> settings_;
  std::string name_;  // "imap#12 alice@host:143", for logs
  mailimap* imap_ = nullptr;
  UpstreamStream* stream_ = nullptr;  // owned by imap_'s mailstream
  bool broken_ = false;

  // imap_policy.cpp's state. folder_ is initialised after settings_, which
  // is declared before it.
  std::string folder_ = settings_->upstream.folder;
  bool created_move_to_ = false;            // CREATE after [TRYCREATE] is tried once
  // The folder's UIDVALIDITY at the snapshot (0: the server gave none). The
  // commit's UIDs belong to it: no STORE, MOVE, COPY or EXPUNGE is sent once
  // libetpan has recorded another one (an untagged OK [UIDVALIDITY n]).
  uint32_t snapshot_uidvalidity_ = 0;
};

}  // namespace popbridge::imap
