#include "proxy/pop3/session.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common/log.h"
#include "proxy/pop3/sasl.h"

namespace popbridge {
namespace {

constexpr size_t kCommandLineMax = 255;  // RFC 2449 section 4, CRLF included
constexpr size_t kSaslLineMax = 8192;    // a base64 PLAIN response is longer than a command

std::string to_upper(std::string_view text) {
  std::string upper(text);
  for (char& c : upper)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  return upper;
}

// The text after the command keyword and one space: USER and PASS take the
// whole rest of the line, so a password may contain spaces.
std::string_view rest_of_line(std::string_view line) {
  const size_t space = line.find(' ');
  return space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
}

}  // namespace

enum StateMask : unsigned { kInAuthorization = 1, kInTransaction = 2 };

struct Pop3Session::CommandSpec {
  const char* verb;
  unsigned states;
  void (Pop3Session::*handler)(const pop3::Command&, std::string_view rest);
};

// Each command with the states that allow it (RFC 1939, 2449, 5034; LAST from RFC 1460).
const Pop3Session::CommandSpec Pop3Session::kCommands[] = {
    {"CAPA", kInAuthorization | kInTransaction, &Pop3Session::cmd_capa},
    {"USER", kInAuthorization, &Pop3Session::cmd_user},
    {"PASS", kInAuthorization, &Pop3Session::cmd_pass},
    {"AUTH", kInAuthorization, &Pop3Session::cmd_auth},
    {"STLS", kInAuthorization, &Pop3Session::cmd_stls},
    {"STAT", kInTransaction, &Pop3Session::cmd_stat},
    {"LIST", kInTransaction, &Pop3Session::cmd_list},
    {"UIDL", kInTransaction, &Pop3Session::cmd_uidl},
    {"RETR", kInTransaction, &Pop3Session::cmd_retr},
    {"TOP", kInTransaction, &Pop3Session::cmd_top},
    {"DELE", kInTransaction, &Pop3Session::cmd_dele},
    {"RSET", kInTransaction, &Pop3Session::cmd_rset},
    {"NOOP", kInTransaction, &Pop3Session::cmd_noop},
    {"LAST", kInTransaction, &Pop3Session::cmd_last},
    {"QUIT", kInAuthorization | kInTransaction, &Pop3Session::cmd_quit},
};

// A RETR or TOP in progress: the message comes from upstream a chunk at a
// time and leaves dot-stuffed; the next chunk is asked for only while the
// client keeps up, so memory stays bounded whatever the message size.
struct Pop3Session::Transfer {
  uint32_t index = 0;
  uint32_t uid = 0;
  uint64_t offset = 0;
  pop3::MessageEncoder encoder;
  std::string status_line;
  bool started = false;        // the +OK line is out: errors can no longer be reported
  bool awaiting_drain = false;
  bool is_retr = false;
  uint64_t requested = 0;      // length asked of the fetch in flight (or just answered)
};

template <typename F>
auto Pop3Session::guarded(F handler) {
  return [alive = std::weak_ptr<bool>(alive_), handler = std::move(handler)](auto&&... args) {
    if (auto flag = alive.lock(); flag && *flag) handler(std::forward<decltype(args)>(args)...);
  };
}

Pop3Session::Pop3Session(SessionIo& io, Backend& backend, MailboxLocks& locks,
                         SessionOptions options)
    : io_(io), backend_(backend), locks_(locks), options_(std::move(options)),
      parser_(kCommandLineMax) {}

Pop3Session::~Pop3Session() { *alive_ = false; }

void Pop3Session::start() {
  reply("+OK popbridge ready.");
  flush();
}

void Pop3Session::on_input(std::string_view bytes) {
  if (state_ == State::kClosed) return;
  parser_.feed(bytes);
  pump();
}

void Pop3Session::on_drain() {
  if (state_ == State::kClosed) return;
  if (listing_) {
    if (!continue_listing()) return;
    busy_ = false;
    pump();
  } else if (transfer_ && transfer_->awaiting_drain) {
    transfer_->awaiting_drain = false;
    fetch_next_chunk();
  } else if (waiting_drain_) {
    waiting_drain_ = false;
    pump();
  }
}

void Pop3Session::on_idle_timeout() {
  if (state_ == State::kClosed) return;
  // Waiting for the upstream is not the client being idle: command_timeout
  // bounds that wait, and the reply re-arms the idle timer.
  const bool mid_reply = listing_ || (transfer_ && transfer_->started);
  if (busy_ && !mid_reply) return;
  log::info("pop3 ", options_.peer, ": idle timeout");
  if (mid_reply) {
    // A reply now would land inside a multi-line response.
    state_ = State::kClosed;
    stats_.ended = "idle timeout";
    io_.abort();
    return;
  }
  reply("-ERR Disconnected for inactivity.");
  close("idle timeout");
}

// Answers buffered commands in order until one has to wait for the
// upstream or for the client to read.
void Pop3Session::pump() {
  while (!busy_ && state_ != State::kClosed) {
    if (io_.queued() + unsent() > options_.high_watermark) {
      waiting_drain_ = true;
      break;
    }
    const pop3::LineParser::Event event = parser_.next();
    if (event.kind == pop3::LineParser::Kind::kNeedMore) break;
    if (awaiting_sasl_ && event.kind != pop3::LineParser::Kind::kLine) {
      awaiting_sasl_ = false;
      parser_.set_max_line(kCommandLineMax);
    }
    switch (event.kind) {
      case pop3::LineParser::Kind::kLine:
        handle_line(event.line);
        break;
      case pop3::LineParser::Kind::kTooLong:
        bad_command("-ERR Line too long.");
        break;
      case pop3::LineParser::Kind::kInvalid:
        bad_command("-ERR Invalid characters in line.");
        break;
      case pop3::LineParser::Kind::kNeedMore:
        break;
    }
  }
  flush();
  if (state_ != State::kClosed) io_.set_reading(parser_.buffered() < options_.input_limit);
}

void Pop3Session::handle_line(std::string_view line) {
  if (awaiting_sasl_) {
    awaiting_sasl_ = false;
    parser_.set_max_line(kCommandLineMax);
    finish_sasl(line);
    return;
  }
  pop3::Command command;
  if (!pop3::parse_command(line, command)) {
    bad_command("-ERR Unknown command.");
    return;
  }
  const unsigned state_bit =
      state_ == State::kAuthorization ? kInAuthorization
                                      : (state_ == State::kTransaction ? kInTransaction : 0u);
  for (const CommandSpec& spec : kCommands) {
    if (command.verb != spec.verb) continue;
    if ((spec.states & state_bit) == 0) {
      bad_command("-ERR Command not valid in this state.");
      return;
    }
    (this->*spec.handler)(command, rest_of_line(line));
    return;
  }
  bad_command("-ERR Unknown command.");
}

void Pop3Session::bad_command(std::string_view line) {
  reply(line);
  if (++bad_commands_ >= options_.max_bad_commands) {
    reply("-ERR Too many bad commands, closing.");
    close("too many bad commands");
  }
}

// ---- AUTHORIZATION ----

void Pop3Session::cmd_capa(const pop3::Command&, std::string_view) {
  std::string capa = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
                     "AUTH-RESP-CODE\r\nPIPELINING\r\n";
  if (state_ == State::kAuthorization) {
    // RFC 2595: STLS only before TLS; credentials only where they may be sent.
    if (options_.starttls_available && !options_.tls_active) capa += "STLS\r\n";
    if (options_.tls_active || options_.plaintext_auth_allowed) capa += "USER\r\nSASL PLAIN\r\n";
  }
  capa += "EXPIRE " + options_.expire + "\r\nIMPLEMENTATION " + options_.implementation + "\r\n.\r\n";
  out_ += capa;
}

bool Pop3Session::auth_allowed() {
  if (options_.tls_active || options_.plaintext_auth_allowed) return true;
  reply("-ERR [AUTH] Plaintext authentication disallowed on non-secure connections, use STLS.");
  return false;
}

void Pop3Session::cmd_stls(const pop3::Command&, std::string_view) {
  if (options_.tls_active) return reply("-ERR TLS is already active.");
  if (!options_.starttls_available) return reply("-ERR STLS is not available on this port.");
  reply("+OK Begin TLS negotiation.");
  flush();
  // Whatever the client sent behind STLS arrived in plaintext and must not
  // be read as if it came over TLS.
  parser_.discard();
  user_.clear();
  io_.start_tls();
  options_.tls_active = true;
}

void Pop3Session::cmd_user(const pop3::Command&, std::string_view rest) {
  if (!auth_allowed()) return;
  if (rest.empty()) return reply("-ERR Missing user name.");
  user_.assign(rest);
  reply("+OK");
}

void Pop3Session::cmd_pass(const pop3::Command&, std::string_view rest) {
  if (!auth_allowed()) return;
  if (user_.empty()) return reply("-ERR No user name given.");
  SecretString password(rest);
  parser_.wipe_consumed();  // the line's copy of the password (`rest` with it)
  login(std::exchange(user_, {}), std::move(password));
}

void Pop3Session::cmd_auth(const pop3::Command& command, std::string_view) {
  if (!auth_allowed()) return;
  if (command.args.empty()) {
    out_ += "+OK\r\nPLAIN\r\n.\r\n";
    return;
  }
  if (to_upper(command.args[0]) != "PLAIN" || command.args.size() > 2) {
    return reply("-ERR Unsupported authentication mechanism.");
  }
  if (command.args.size() == 2) {
    // RFC 5034: "=" is an empty initial response, which PLAIN cannot use.
    return finish_sasl(command.args[1] == "=" ? std::string_view{} : command.args[1]);
  }
  awaiting_sasl_ = true;
  parser_.set_max_line(kSaslLineMax);
  reply("+ ");
}

void Pop3Session::finish_sasl(std::string_view response) {
  if (response == "*") return reply("-ERR Authentication aborted.");
  auto credentials = pop3::decode_sasl_plain(response);
  parser_.wipe_consumed();  // the response's copy of the password (`response` with it)
  if (!credentials) return reply("-ERR [AUTH] Invalid AUTH PLAIN response.");
  login(std::move(credentials->user), std::move(credentials->password));
}

void Pop3Session::login(std::string user, SecretString password) {
  busy_ = true;
  log::debug("pop3 ", options_.peer, ": login attempt user=", user);
  stats_.user = user;
  if (has_control_character(user)) {
    // Refused here, before routing: no backend ever sees such a name. It
    // counts as a failed login (the same reply, the same delay).
    return on_login({UpstreamError::kAuthFailed, "user name holds a control character"}, nullptr, {});
  }
  io_.before_login(guarded([this, credentials = Credentials{std::move(user), std::move(password)}] {
    if (state_ == State::kClosed) return;
    const auto started = std::chrono::steady_clock::now();
    backend_.login(credentials, guarded([this, started](Status status, std::unique_ptr<Mailbox> mailbox,
                                                        Snapshot snapshot) {
      if (state_ == State::kClosed) return;
      upstream_done(UpstreamOp::kLogin, status, started);
      on_login(std::move(status), std::move(mailbox), std::move(snapshot));
    }));
  }));
}

void Pop3Session::on_login(Status status, std::unique_ptr<Mailbox> mailbox, Snapshot snapshot) {
  auto finish = [this](bool ok, std::function<void()> send_reply) {
    io_.login_finished(ok, guarded([this, send_reply = std::move(send_reply)] {
      if (state_ == State::kClosed) return;
      busy_ = false;
      send_reply();
      pump();
    }));
  };
  if (!status.ok()) {
    log::info("pop3 ", options_.peer, ": login failed for ", stats_.user, ": ", status.detail);
    if (options_.metrics) {
      options_.metrics->login(status.error == UpstreamError::kAuthFailed    ? LoginOutcome::kAuthFailed
                              : status.error == UpstreamError::kUnavailable ? LoginOutcome::kUnavailable
                                                                            : LoginOutcome::kOther);
    }
    const bool credentials_refused = status.error == UpstreamError::kAuthFailed;
    return finish(!credentials_refused, [this, status] { reply_error(status); });
  }
  auto lock = options_.lock ? locks_.acquire(mailbox->key()) : MailboxLocks::Lock();
  if (options_.lock && !lock) {
    log::info("pop3 ", options_.peer, ": mailbox of ", stats_.user, " in use");
    if (options_.metrics) options_.metrics->login(LoginOutcome::kInUse);
    mailbox.reset();  // log out upstream now, not after the reply
    return finish(true, [this] { reply("-ERR [IN-USE] Mailbox is locked by another POP3 session."); });
  }
  {
    lock_ = std::move(lock);
    mailbox_ = std::move(mailbox);
    snapshot_ = std::move(snapshot);
    deleted_.assign(snapshot_.messages.size(), false);
    retrieved_.assign(snapshot_.messages.size(), false);
    // RFC 1460 LAST: the highest message number already accessed, which
    // across sessions is what the IMAP server marked \Seen.
    for (size_t i = 0; i < snapshot_.messages.size(); ++i)
      if (snapshot_.messages[i].seen) last_at_login_ = static_cast<uint32_t>(i + 1);
    last_ = last_at_login_;
    state_ = State::kTransaction;
    stats_.listed = snapshot_.messages.size();
    stats_.upstream = mailbox_->upstream();
    if (options_.metrics) options_.metrics->login(LoginOutcome::kOk);
    log::info("pop3 ", options_.peer, ": ", stats_.user, " logged in, ", snapshot_.messages.size(),
              " messages");
    finish(true, [this] { reply("+OK Logged in."); });
  }
}

// ---- TRANSACTION ----

std::optional<uint32_t> Pop3Session::message_arg(std::string_view arg) {
  const auto number = pop3::parse_number(arg);
  if (!number) {
    reply("-ERR Invalid message number.");
    return std::nullopt;
  }
  if (*number == 0 || *number > snapshot_.messages.size()) {
    reply("-ERR There's no message " + std::to_string(*number) + ".");
    return std::nullopt;
  }
  const uint32_t index = *number - 1;
  if (deleted_[index]) {
    reply("-ERR Message is deleted.");
    return std::nullopt;
  }
  return index;
}

void Pop3Session::cmd_stat(const pop3::Command&, std::string_view) {
  uint64_t count = 0, octets = 0;
  for (size_t i = 0; i < snapshot_.messages.size(); ++i) {
    if (deleted_[i]) continue;
    ++count;
    octets += snapshot_.messages[i].size;
  }
  reply("+OK " + std::to_string(count) + " " + std::to_string(octets));
}

void Pop3Session::cmd_list(const pop3::Command& command, std::string_view) {
  if (command.args.size() > 1) return bad_command("-ERR Noise after message number.");
  if (!command.args.empty()) {
    const auto index = message_arg(command.args[0]);
    if (!index) return;
    reply("+OK " + std::to_string(*index + 1) + " " +
          std::to_string(snapshot_.messages[*index].size));
    return;
  }
  uint64_t count = 0, octets = 0;
  for (size_t i = 0; i < snapshot_.messages.size(); ++i) {
    if (deleted_[i]) continue;
    ++count;
    octets += snapshot_.messages[i].size;
  }
  reply("+OK " + std::to_string(count) + " messages (" + std::to_string(octets) + " octets)");
  start_listing(false);
}

void Pop3Session::start_listing(bool uidl) {
  listing_ = Listing{uidl, 0};
  if (!continue_listing()) busy_ = true;  // on_drain() goes on
}

bool Pop3Session::continue_listing() {
  constexpr size_t kPiece = 64 * 1024;
  if (io_.queued() > options_.high_watermark) return false;
  Listing& listing = *listing_;
  for (; listing.next < snapshot_.messages.size(); ++listing.next) {
    const uint32_t i = listing.next;
    if (deleted_[i]) continue;
    out_ += std::to_string(i + 1);
    out_ += ' ';
    out_ += listing.uidl ? uidl_of(i) : std::to_string(snapshot_.messages[i].size);
    out_ += "\r\n";
    if (out_.size() >= kPiece) {
      flush();
      if (io_.queued() > options_.high_watermark) {
        ++listing.next;
        return false;
      }
    }
  }
  out_ += ".\r\n";
  listing_.reset();
  return true;
}

// By default Dovecot's pop3_uidl_format, %08Xu%08Xv, so clients moving from
// Dovecot's POP3 keep their "already downloaded" lists.
std::string Pop3Session::uidl_of(uint32_t index) const {
  return options_.uidl_format.format(snapshot_.messages[index].uid, snapshot_.uidvalidity);
}

void Pop3Session::cmd_uidl(const pop3::Command& command, std::string_view) {
  if (command.args.size() > 1) return bad_command("-ERR Noise after message number.");
  if (!command.args.empty()) {
    const auto index = message_arg(command.args[0]);
    if (!index) return;
    reply("+OK " + std::to_string(*index + 1) + " " + uidl_of(*index));
    return;
  }
  reply("+OK");
  start_listing(true);
}

void Pop3Session::cmd_retr(const pop3::Command& command, std::string_view) {
  if (command.args.size() != 1) return bad_command("-ERR Usage: RETR <message>");
  const auto index = message_arg(command.args[0]);
  if (!index) return;
  start_transfer(*index, -1,
                 "+OK " + std::to_string(snapshot_.messages[*index].size) + " octets\r\n");
}

void Pop3Session::cmd_top(const pop3::Command& command, std::string_view) {
  if (command.args.size() != 2) return bad_command("-ERR Usage: TOP <message> <lines>");
  const auto lines = pop3::parse_number(command.args[1]);
  if (!lines) return reply("-ERR Invalid number of lines.");
  const auto index = message_arg(command.args[0]);
  if (!index) return;
  start_transfer(*index, *lines, "+OK\r\n");
}

void Pop3Session::cmd_dele(const pop3::Command& command, std::string_view) {
  if (command.args.size() != 1) return bad_command("-ERR Usage: DELE <message>");
  const auto index = message_arg(command.args[0]);
  if (!index) return;
  deleted_[*index] = true;
  reply("+OK Marked to be deleted.");
}

void Pop3Session::cmd_rset(const pop3::Command&, std::string_view) {
  std::fill(deleted_.begin(), deleted_.end(), false);
  last_ = last_at_login_;
  reply("+OK");
}

void Pop3Session::cmd_noop(const pop3::Command&, std::string_view) { reply("+OK"); }

void Pop3Session::cmd_last(const pop3::Command&, std::string_view) {
  if (!options_.enable_last) return reply("-ERR LAST command not enabled.");
  reply("+OK " + std::to_string(last_));
}

void Pop3Session::cmd_quit(const pop3::Command&, std::string_view) {
  if (state_ == State::kAuthorization) {
    reply("+OK Logging out.");
    return close("quit");
  }
  state_ = State::kUpdate;
  Mailbox::CommitRequest request;
  for (size_t i = 0; i < snapshot_.messages.size(); ++i) {
    if (deleted_[i]) request.deleted.push_back(snapshot_.messages[i].uid);
    if (retrieved_[i]) request.retrieved.push_back(snapshot_.messages[i].uid);
  }
  busy_ = true;
  const size_t deleting = request.deleted.size();
  const auto started = std::chrono::steady_clock::now();
  mailbox_->commit(std::move(request), guarded([this, deleting, started](Status status) {
    if (state_ == State::kClosed) return;
    upstream_done(UpstreamOp::kCommit, status, started);
    if (status.ok()) stats_.deleted = deleting;
    on_commit(std::move(status));
  }));
}

void Pop3Session::on_commit(Status status) {
  busy_ = false;
  // The session is over for the client the moment it reads the reply: a
  // new login must find the mailbox free then, not after the upstream
  // LOGOUT that follows.
  lock_.release();
  if (status.ok()) {
    if (options_.metrics) options_.metrics->messages_deleted += stats_.deleted;
    reply(stats_.deleted ? "+OK Logging out, messages deleted." : "+OK Logging out.");
    close("quit");
  } else {
    log::warn("pop3 ", options_.peer, ": commit failed: ", status.detail);
    // RFC 1939's wording: the outcome upstream is unknown when the answer
    // was lost, so promise nothing either way.
    reply("-ERR [SYS/TEMP] Some deleted messages may not have been removed.");
    close("commit failed");
  }
}

// ---- Message transfer ----

void Pop3Session::start_transfer(uint32_t index, int64_t body_lines, std::string status_line) {
  transfer_ = std::make_unique<Transfer>(Transfer{
      index, snapshot_.messages[index].uid, 0, pop3::MessageEncoder(body_lines),
      std::move(status_line), false, false, body_lines < 0, options_.chunk_size});
  busy_ = true;
  const uint32_t uid = transfer_->uid;
  auto slot = std::find_if(prefetched_.begin(), prefetched_.end(),
                           [uid](const Prefetched& p) { return p.uid == uid; });
  if (slot == prefetched_.end()) {
    fetch_next_chunk();
  } else if (slot->ready) {
    Prefetched ready = std::move(*slot);
    prefetched_.erase(slot);
    prefetch_pipelined();
    return on_chunk(std::move(ready.status), std::move(ready.data));
  }
  // else: its first chunk is on the way and goes to on_chunk when it lands.
  prefetch_pipelined();
}

// Keeps the upstream busy while the client reads: for the next pipelined
// RETR/TOP commands, ask for their first chunk now, several messages in one
// upstream request (a batch of at most chunk_size octets). What waits in
// prefetched_ stays under prefetch x chunk_size octets; a new batch goes out
// only when a whole one fits, so batches stay large. The strand runs them
// after the current message's chunk, so nothing is reordered.
void Pop3Session::prefetch_pipelined() {
  if (options_.prefetch == 0) return;
  constexpr size_t kLookahead = 64;  // pipelined commands looked at
  struct Wanted {
    uint32_t uid;
    uint64_t cost;  // octets its first chunk will hold
  };
  std::vector<Wanted> wanted;  // in the order the client will ask for them
  const auto want = [&](std::optional<uint32_t> number) {
    if (!number || *number == 0 || *number > snapshot_.messages.size() || deleted_[*number - 1])
      return false;
    const MessageEntry& message = snapshot_.messages[*number - 1];
    wanted.push_back({message.uid, std::min<uint64_t>(message.size, options_.chunk_size)});
    return true;
  };
  const std::vector<std::string_view> lines = parser_.peek_lines(kLookahead);
  for (std::string_view line : lines) {
    pop3::Command command;
    if (!pop3::parse_command(line, command) || command.args.empty()) break;
    if (command.verb != "RETR" && command.verb != "TOP") break;
    if (!want(pop3::parse_number(command.args[0]))) break;
  }
  // A client that RETRs one message at a time almost always asks for the
  // next ones: have a few on the way (one batch, a chunk's worth at most).
  constexpr size_t kSpeculate = 8;
  const bool speculating = lines.empty() && transfer_ && transfer_->is_retr;
  if (speculating) {
    uint64_t cost = 0;
    for (uint32_t n = transfer_->index + 2; wanted.size() < kSpeculate && want(n); ++n) {
      cost += wanted.back().cost;
      if (cost > options_.chunk_size && wanted.size() > 1) {
        wanted.pop_back();
        break;
      }
    }
  }

  // A guess the client did not follow is dropped (a fetch still in flight
  // finds no slot and is discarded), so it never blocks a real lookahead.
  const auto is_wanted = [&](uint32_t uid) {
    return std::any_of(wanted.begin(), wanted.end(), [uid](const Wanted& w) { return w.uid == uid; });
  };
  std::erase_if(prefetched_, [&](const Prefetched& p) {
    const bool current = transfer_ && transfer_->uid == p.uid;  // its chunk is on the way
    return !current && !is_wanted(p.uid);
  });
  const uint64_t budget = options_.prefetch * options_.chunk_size;
  uint64_t held = 0;
  for (const Prefetched& p : prefetched_) held += p.cost;

  const size_t waiting = prefetched_.size();  // slots from earlier calls
  const uint64_t waiting_cost = held;
  std::vector<Wanted> batch;
  uint64_t batch_cost = 0;
  const auto send = [&] {
    std::vector<uint32_t> uids;
    for (const Wanted& w : batch) {
      prefetched_.push_back({w.uid, w.cost, false, {}, {}});
      uids.push_back(w.uid);
    }
    fetch_batch(std::move(uids));
    batch.clear();
    batch_cost = 0;
  };
  for (const Wanted& w : wanted) {
    // (The same message may be asked for twice: TOP 6 0, then RETR 6.)
    const bool known = (transfer_ && transfer_->uid == w.uid) ||
                       std::any_of(prefetched_.begin(), prefetched_.end(),
                                   [&w](const Prefetched& p) { return p.uid == w.uid; }) ||
                       std::any_of(batch.begin(), batch.end(),
                                   [&w](const Wanted& b) { return b.uid == w.uid; });
    if (known) continue;
    if (batch.empty() && !prefetched_.empty() && held + options_.chunk_size > budget) break;
    if (!batch.empty() && batch_cost + w.cost > options_.chunk_size) {
      send();
      if (held + options_.chunk_size > budget) break;
    }
    batch.push_back(w);
    held += w.cost;
    batch_cost += w.cost;
  }
  if (batch.empty()) return;
  // With small messages the lookahead (or the speculation), not the
  // budget, ends a batch, and each RETR moves it by one message: a last,
  // partial batch waits while plenty is still on its way, so that batches
  // stay large (about half the window) instead of one message each.
  const size_t window = speculating ? kSpeculate : kLookahead;
  const bool window_full =
      speculating || (lines.size() == kLookahead && wanted.size() == kLookahead);
  const bool plenty_waiting = waiting >= window / 2 || waiting_cost >= budget / 2;
  if (window_full && plenty_waiting && batch_cost < options_.chunk_size) return;
  send();
}

void Pop3Session::fetch_batch(std::vector<uint32_t> uids) {
  const auto started = std::chrono::steady_clock::now();
  mailbox_->fetch_first(std::move(uids), options_.chunk_size,
                        guarded([this, started](std::vector<FetchedChunk> chunks) {
    if (state_ == State::kClosed) return;
    const auto failed = std::find_if(chunks.begin(), chunks.end(),
                                     [](const FetchedChunk& c) { return !c.status.ok(); });
    upstream_done(UpstreamOp::kFetch, failed == chunks.end() ? Status{} : failed->status, started);
    // Each may finish a transfer and start the next: stop if that closed
    // the session (an abort may destroy it).
    const std::shared_ptr<bool> alive = alive_;
    for (FetchedChunk& chunk : chunks) {
      if (!*alive || state_ == State::kClosed) return;
      on_prefetched(chunk.uid, std::move(chunk.status), std::move(chunk.data));
    }
  }));
}

void Pop3Session::on_prefetched(uint32_t uid, Status status, std::string data) {
  auto slot = std::find_if(prefetched_.begin(), prefetched_.end(),
                           [uid](const Prefetched& p) { return p.uid == uid; });
  if (slot == prefetched_.end()) return;
  if (transfer_ && transfer_->uid == uid && transfer_->offset == 0 && !transfer_->started) {
    prefetched_.erase(slot);  // the transfer was waiting for exactly this
    return on_chunk(std::move(status), std::move(data));
  }
  slot->ready = true;
  slot->cost = data.size();  // what it holds, whatever RFC822.SIZE said
  slot->status = std::move(status);
  slot->data = std::move(data);
}

void Pop3Session::fetch_next_chunk() {
  const auto started = std::chrono::steady_clock::now();
  // The first piece is small (it may be all a message has, and prefetched
  // ones wait in memory); a big message gets bigger pieces, up to
  // max_chunk_size, so it costs the upstream few round trips and seeks.
  transfer_->requested = transfer_->offset == 0
                             ? options_.chunk_size
                             : std::min<uint64_t>(options_.max_chunk_size, transfer_->requested * 2);
  mailbox_->fetch(transfer_->uid, transfer_->offset, transfer_->requested,
                  guarded([this, started](Status status, std::string data) {
                    if (state_ == State::kClosed) return;
                    upstream_done(UpstreamOp::kFetch, status, started);
                    on_chunk(std::move(status), std::move(data));
                  }));
}

void Pop3Session::on_chunk(Status status, std::string data) {
  if (!status.ok()) {
    if (transfer_->started) {
      // Half a message must never end in "." as if it were whole: close,
      // and the client keeps its copy for the next try.
      log::warn("pop3 ", options_.peer, ": upstream failed during transfer: ", status.detail);
      transfer_.reset();
      state_ = State::kClosed;
      stats_.ended = "upstream failed";
      io_.abort();
      return;
    }
    transfer_.reset();
    busy_ = false;
    reply_error(status);
    pump();
    return;
  }
  Transfer& transfer = *transfer_;
  if (!transfer.started) {
    out_ += transfer.status_line;
    transfer.started = true;
  }
  const bool eof = data.size() < transfer.requested;
  transfer.offset += data.size();
  // A RETR goes on until the end of the message: ask for the next piece
  // before encoding this one, so the upstream works while we do.
  bool fetching = false;
  if (!eof && transfer.is_retr && io_.queued() + unsent() <= options_.high_watermark) {
    fetch_next_chunk();
    fetching = true;
  }
  const bool done = transfer.encoder.encode_in_place(data) || eof;
  emit(std::move(data));
  if (done) {
    transfer.encoder.finish(out_);
    if (transfer.is_retr) {
      last_ = std::max(last_, transfer.index + 1);
      ++stats_.retrieved;
      retrieved_[transfer.index] = true;
      if (options_.metrics) ++options_.metrics->messages_retrieved;
    }
    transfer_.reset();
    busy_ = false;
    pump();
    return;
  }
  flush();
  if (fetching) return;
  if (io_.queued() > options_.high_watermark) {
    transfer.awaiting_drain = true;
  } else {
    fetch_next_chunk();
  }
}

// ---- Output ----

// The one place where upstream errors become POP3 replies (RFC 2449, 3206).
void Pop3Session::reply_error(const Status& status) {
  switch (status.error) {
    case UpstreamError::kAuthFailed:
      return reply("-ERR [AUTH] Authentication failed.");
    case UpstreamError::kUnavailable:
      return reply("-ERR [SYS/TEMP] Mail server unavailable, try again later.");
    case UpstreamError::kNoMailbox:
      return reply("-ERR [SYS/PERM] Mailbox cannot be opened.");
    case UpstreamError::kMessageGone:
      return reply("-ERR Message no longer exists.");
    case UpstreamError::kRefused:
      return reply("-ERR [SYS/PERM] Mail server refused the request.");
    case UpstreamError::kNone:
      return reply("+OK");
  }
}

void Pop3Session::reply(std::string_view line) {
  out_.append(line);
  out_.append("\r\n");
}

// Message data goes out as the strings it came in (no copy into out_):
// large pieces are queued beside out_ and written together, one writev.
void Pop3Session::emit(std::string data) {
  constexpr size_t kCopyBelow = 4096;  // small ones are cheaper to copy
  if (data.size() < kCopyBelow) {
    out_ += data;
    return;
  }
  if (!out_.empty()) {
    pieces_size_ += out_.size();
    pieces_.push_back(std::move(out_));
    out_.clear();
  }
  pieces_size_ += data.size();
  pieces_.push_back(std::move(data));
}

void Pop3Session::flush() {
  if (pieces_.empty()) {
    if (out_.empty()) return;
    io_.send(std::move(out_));
    out_.clear();
    return;
  }
  if (!out_.empty()) pieces_.push_back(std::move(out_));
  out_.clear();
  io_.send(std::move(pieces_));
  pieces_.clear();
  pieces_size_ = 0;
}

void Pop3Session::close(const char* why) {
  flush();
  state_ = State::kClosed;
  stats_.ended = why;
  io_.close();
}

void Pop3Session::upstream_done(UpstreamOp op, const Status& status,
                                std::chrono::steady_clock::time_point started) {
  if (!options_.metrics) return;
  options_.metrics->upstream_latency(op, std::chrono::steady_clock::now() - started);
  switch (status.error) {
    case UpstreamError::kNone: return;
    case UpstreamError::kAuthFailed: return options_.metrics->upstream_error(UpstreamErrorKind::kAuthFailed);
    case UpstreamError::kUnavailable: return options_.metrics->upstream_error(UpstreamErrorKind::kUnavailable);
    case UpstreamError::kNoMailbox: return options_.metrics->upstream_error(UpstreamErrorKind::kNoMailbox);
    case UpstreamError::kMessageGone: return options_.metrics->upstream_error(UpstreamErrorKind::kMessageGone);
    case UpstreamError::kRefused: return options_.metrics->upstream_error(UpstreamErrorKind::kRefused);
  }
}

}  // namespace popbridge
