// The RFC 1939 state machine for one POP3 client: AUTHORIZATION,
// TRANSACTION, UPDATE. It parses what the client sends, answers from a
// Mailbox, and writes through SessionIo; it never touches a socket.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "config/uidl_format.h"
#include "proxy/mailbox_locks.h"
#include "proxy/metrics.h"
#include "proxy/pop3/parser.h"
#include "proxy/pop3/writer.h"

namespace popbridge {

// What a session needs from its connection.
class SessionIo {
 public:
  virtual ~SessionIo() = default;
  virtual void send(std::string data) = 0;
  // Several pieces in order, written together where the connection can.
  virtual void send(std::vector<std::string> pieces) {
    for (std::string& piece : pieces) send(std::move(piece));
  }
  virtual size_t queued() const = 0;        // octets accepted by send() and not yet written
  virtual void set_reading(bool on) = 0;    // stop reading while input piles up
  virtual void close() = 0;                 // after the queued output is written
  virtual void abort() = 0;                 // now, dropping queued output
  // Everything sent so far goes out in plaintext; what follows is TLS (STLS).
  virtual void start_tls() = 0;
  // A login is about to reach the upstream; `go` starts it. A client
  // address with recent failures waits out its penalty first, whatever the
  // password, so guessing cannot go faster than the penalty.
  virtual void before_login(std::function<void()> go) = 0;
  // A login attempt ended; `then` sends its reply. After a failure the
  // connection waits first (auth_failure_delay, growing per client address).
  virtual void login_finished(bool ok, std::function<void()> then) = 0;
};

// What the logout log line reports about a session.
struct SessionStats {
  std::string user;
  std::string upstream;   // the upstream that served the login
  size_t listed = 0;      // messages in the snapshot
  size_t retrieved = 0;   // whole RETRs
  size_t deleted = 0;     // messages the delete policy was applied to at QUIT
  const char* ended = "disconnected";
};

struct SessionOptions {
  std::string peer;                      // client address, for logs
  std::string implementation = "popbridge";
  size_t chunk_size = 256 * 1024;        // octets of a message's first upstream fetch
  size_t max_chunk_size = 2 * 1024 * 1024;  // later fetches double up to this
  size_t high_watermark = 512 * 1024;    // queued output above which we stop producing
  size_t input_limit = 64 * 1024;        // buffered input above which we stop reading
  size_t prefetch = 4;                   // chunk_size units of pipelined RETR/TOPs fetched early
  unsigned max_bad_commands = 10;
  bool tls_active = false;               // implicit TLS: the connection is already secure
  bool starttls_available = false;       // the listener offers STLS
  bool plaintext_auth_allowed = false;   // USER/PASS/AUTH without TLS (loopback or by config)
  Metrics* metrics = nullptr;            // optional
  UidlFormat uidl_format = UidlFormat::dovecot();
  bool enable_last = true;
  bool lock = true;                      // one session per mailbox: -ERR [IN-USE]
  std::string expire = "NEVER";          // CAPA EXPIRE (RFC 2449): "NEVER" or days
};

class Pop3Session {
 public:
  Pop3Session(SessionIo& io, Backend& backend, MailboxLocks& locks, SessionOptions options);
  ~Pop3Session();
  Pop3Session(const Pop3Session&) = delete;
  Pop3Session& operator=(const Pop3Session&) = delete;

  void start();                          // sends the greeting
  void on_input(std::string_view bytes);
  void on_drain();                       // queued output fell below the low watermark
  void on_idle_timeout();

  const SessionStats& stats() const { return stats_; }
  bool tls_active() const { return options_.tls_active; }
  // Logged in and not yet finished: a shutdown lets it QUIT, and a commit
  // in flight (UPDATE) completes even if the client half-closes.
  bool logged_in() const { return state_ == State::kTransaction || state_ == State::kUpdate; }
  bool committing() const { return state_ == State::kUpdate && busy_; }

 private:
  enum class State { kAuthorization, kTransaction, kUpdate, kClosed };
  struct CommandSpec;
  struct Transfer;
  static const CommandSpec kCommands[];

  // Input
  void pump();
  void handle_line(std::string_view line);
  void bad_command(std::string_view reply);

  // Commands
  void cmd_capa(const pop3::Command&, std::string_view);
  void cmd_user(const pop3::Command&, std::string_view rest);
  void cmd_pass(const pop3::Command&, std::string_view rest);
  void cmd_auth(const pop3::Command&, std::string_view);
  void cmd_stat(const pop3::Command&, std::string_view);
  void cmd_list(const pop3::Command&, std::string_view);
  void cmd_uidl(const pop3::Command&, std::string_view);
  void start_listing(bool uidl);
  bool continue_listing();               // true once the listing is complete
  void cmd_retr(const pop3::Command&, std::string_view);
  void cmd_top(const pop3::Command&, std::string_view);
  void cmd_dele(const pop3::Command&, std::string_view);
  void cmd_rset(const pop3::Command&, std::string_view);
  void cmd_noop(const pop3::Command&, std::string_view);
  void cmd_last(const pop3::Command&, std::string_view);
  void cmd_quit(const pop3::Command&, std::string_view);
  void cmd_stls(const pop3::Command&, std::string_view);
  bool auth_allowed();                   // replies -ERR when credentials may not be sent yet

  // Login
  void finish_sasl(std::string_view response);
  void login(std::string user, SecretString password);
  void on_login(Status status, std::unique_ptr<Mailbox> mailbox, Snapshot snapshot);

  // Messages
  std::optional<uint32_t> message_arg(std::string_view arg);  // index 0..n-1, or replies -ERR
  std::string uidl_of(uint32_t index) const;
  void start_transfer(uint32_t index, int64_t body_lines, std::string status_line);
  void fetch_next_chunk();
  void on_chunk(Status status, std::string data);
  void prefetch_pipelined();
  void fetch_batch(std::vector<uint32_t> uids);
  void on_prefetched(uint32_t uid, Status status, std::string data);
  void on_commit(Status status);

  // Output
  void reply(std::string_view line);     // one line, CRLF added
  void reply_error(const Status& status);
  void emit(std::string data);           // message data, after out_
  size_t unsent() const { return out_.size() + pieces_size_; }
  void flush();
  void close(const char* why);
  void upstream_done(UpstreamOp op, const Status& status,
                     std::chrono::steady_clock::time_point started);  // metrics

  // Wraps a backend handler so it does nothing once this session is gone.
  template <typename F>
  auto guarded(F handler);

  SessionIo& io_;
  Backend& backend_;
  MailboxLocks& locks_;
  SessionOptions options_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  pop3::LineParser parser_;
  std::string out_;
  std::vector<std::string> pieces_;      // to send before out_ (emit)
  size_t pieces_size_ = 0;
  State state_ = State::kAuthorization;
  bool busy_ = false;                    // waiting for the upstream; later input waits too
  bool awaiting_sasl_ = false;           // AUTH PLAIN sent "+ ", the response line comes next
  bool waiting_drain_ = false;           // stopped answering until the client reads
  unsigned bad_commands_ = 0;
  std::string user_;                     // from USER, until PASS

  std::unique_ptr<Mailbox> mailbox_;
  MailboxLocks::Lock lock_;
  Snapshot snapshot_;
  std::vector<bool> deleted_;
  std::vector<bool> retrieved_;          // sent whole by RETR, reported at QUIT
  uint32_t last_at_login_ = 0;
  uint32_t last_ = 0;
  std::unique_ptr<Transfer> transfer_;
  // A LIST or UIDL of every message, written a piece at a time like a
  // message, so a huge mailbox costs no more memory than a big message.
  struct Listing {
    bool uidl = false;
    uint32_t next = 0;
  };
  std::optional<Listing> listing_;
  // First chunks of messages that pipelined RETR/TOP commands will ask for,
  // fetched while the current message is still being sent.
  struct Prefetched {
    uint32_t uid = 0;
    uint64_t cost = 0;                   // octets its chunk holds (or will)
    bool ready = false;
    Status status;
    std::string data;
  };
  std::vector<Prefetched> prefetched_;
  SessionStats stats_;
};

}  // namespace popbridge
