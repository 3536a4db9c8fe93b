#include "backends/imap/imap_session.h"

#include <strings.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

#include <libetpan/libetpan.h>

#include "backends/imap/fetch_reader.h"
#include "backends/imap/fetch_results.h"
#include "backends/imap/uid_set.h"
#include "backends/imap/upstream_stream.h"
#include "common/log.h"

namespace popbridge::imap {
namespace {

// libetpan's buffer between the parser and our driver.
constexpr size_t kStreamBufferSize = 64 * 1024;

// A greeting longer than this is not an IMAP server talking.
constexpr size_t kMaxGreeting = 16 * 1024;

// The longest line of a FETCH answer between literals that we accept.
constexpr size_t kMaxResponseLine = 64 * 1024;

// "imap.example.com:993", "[2001:db8::1]:993".
std::string host_port_text(const HostPort& target) {
  const bool ipv6 = target.host.find(':') != std::string::npos;
  return (ipv6 ? "[" + target.host + "]" : target.host) + ":" + std::to_string(target.port);
}

bool starts_with_bye(const std::string& line) {
  return line.size() >= 5 && strncasecmp(line.c_str(), "* BYE", 5) == 0;
}

// One line for a log: no CRLF, not too long.
std::string trimmed(std::string line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.size() > 200) line = line.substr(0, 200) + "...";
  return line;
}

bool has_8bit(const std::string& text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// libetpan sends credentials as quoted strings without escaping CR or LF:
// such bytes would end the command and let the rest run as a new one.
bool has_line_break_or_nul(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// An IMAP astring as libetpan sends it: an atom when it is a plain word,
// else a quoted string. Only for 7-bit text without CR, LF or NUL (folder names
// are modified UTF-7).
std::string astring(std::string_view text) {
  // (Like libetpan: letters, digits and '-' only, which every server takes.)
  const auto atom_char = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
  };
  if (!text.empty() && std::all_of(text.begin(), text.end(), atom_char)) return std::string(text);
  std::string quoted = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  quoted += '"';
  return quoted;
}

// Response codes (RFC 5530) that say "try again later", not "wrong password".
bool is_temporary_code(const char* atom) {
  if (atom == nullptr) return false;
  for (const char* code : {"UNAVAILABLE", "LIMIT", "INUSE", "SERVERBUG"}) {
    if (strcasecmp(atom, code) == 0) return true;
  }
  return false;
}

}  // namespace

ImapSession::ImapSession(std::shared_ptr<const ImapSettings> settings, uint64_t id)
    : settings_(std::move(settings)) {
  name_ = "imap#" + std::to_string(id) + " " + settings_->upstream.host + ":" +
          std::to_string(settings_->upstream.port);
}

ImapSession::~ImapSession() { close_now(); }

void ImapSession::close_now() {
  if (imap_ == nullptr) return;
  // mailimap_free() would send LOGOUT and wait on a live stream: close and
  // clear the stream first so that freeing does no network IO.
  if (imap_->imap_stream != nullptr) {
    mailstream_close(imap_->imap_stream);
    imap_->imap_stream = nullptr;
  }
  mailimap_free(imap_);
  imap_ = nullptr;
  stream_ = nullptr;
}

void ImapSession::logout(std::chrono::milliseconds timeout) {
  if (imap_ == nullptr) return;
  if (!broken_ && imap_->imap_stream != nullptr && stream_ != nullptr) {
    stream_->set_io_timeout(timeout);
    int rc = mailimap_logout(imap_);  // closes the stream whatever happens
    log::debug(name_, " LOGOUT: ", rc == MAILIMAP_NO_ERROR ? "ok" : "failed");
  }
  close_now();
}

std::string ImapSession::server_text() const {
  std::string text;
  if (imap_ == nullptr) return text;
  if (imap_->imap_response_info != nullptr && imap_->imap_response_info->rsp_atom != nullptr) {
    text += "[";
    text += imap_->imap_response_info->rsp_atom;
    text += "] ";
  }
  if (imap_->imap_response != nullptr) text += imap_->imap_response;
  return text;
}

Status ImapSession::lost(const std::string& command, const std::string& why) {
  broken_ = true;
  std::string detail = command + ": " + why;
  log::debug(name_, " ", detail);
  return {UpstreamError::kUnavailable, detail};
}

Status ImapSession::outcome(int rc, const std::string& command, int no_error,
                            UpstreamError on_no, UpstreamError on_bad) {
  if (rc == MAILIMAP_NO_ERROR) {
    log::debug(name_, " ", command, ": ok");
    return {};
  }
  // A driver failure explains any code libetpan made of it.
  if (stream_ != nullptr && stream_->failed()) return lost(command, stream_->failure());
  if (rc == no_error || rc == MAILIMAP_ERROR_PROTOCOL) {
    const bool bad = rc == MAILIMAP_ERROR_PROTOCOL;
    std::string detail = command + ": " + (bad ? "BAD " : "NO ") + server_text();
    log::debug(name_, " ", detail);
    return {bad ? on_bad : on_no, detail};
  }
  switch (rc) {
    case MAILIMAP_ERROR_FATAL:
      return lost(command, "server closed the session: BYE " + server_text());
    case MAILIMAP_ERROR_PARSE:
      return lost(command, "cannot parse the server's response");
    default:
      return lost(command, "libetpan error " + std::to_string(rc));
  }
}

std::shared_ptr<const ImapSettings> make_imap_settings(UpstreamConfig upstream,
                                                       MailboxConfig mailbox) {
  auto settings = std::make_shared<ImapSettings>();
  settings->upstream = std::move(upstream);
  settings->mailbox = std::move(mailbox);
  if (settings->upstream.tls != TlsMode::kNone) {
    std::string error;
    settings->tls =
        UpstreamTls::create(settings->upstream.verify, settings->upstream.ca_file, &error);
    if (settings->tls == nullptr) settings->tls_error = error;  // the server reports it
  }
  return settings;
}

Status ImapSession::connect() {
  const UpstreamConfig& upstream = settings_->upstream;
  if (upstream.tls != TlsMode::kNone && settings_->tls == nullptr) {
    broken_ = true;
    const std::string why =
        "upstream TLS unavailable: " +
        (settings_->tls_error.empty() ? std::string("no TLS context") : settings_->tls_error);
    log::info(name_, " ", why);
    return {UpstreamError::kUnavailable, why};
  }
  std::vector<HostPort> hosts = upstream.hosts;
  if (hosts.empty()) hosts.push_back({upstream.host, upstream.port});
  Status status;
  std::string failures;
  for (size_t i = 0; i < hosts.size(); ++i) {
    close_now();
    broken_ = false;
    bool next = false;
    status = connect_host(hosts[i], &next);
    if (status.ok()) return status;
    // A certificate that fails verification, or a server that will not do
    // the STARTTLS we asked for, is a security error, not an outage: never
    // try the next host (it could be how an attacker gets us to one that
    // looks better to them), stop and fail.
    if (!next) return status;
    if (!failures.empty()) failures += "; ";
    failures += host_port_text(hosts[i]) + ": " + status.detail;
    if (i + 1 < hosts.size()) {
      log::info(name_, " unreachable; trying ", host_port_text(hosts[i + 1]));
    }
  }
  close_now();
  broken_ = true;
  if (hosts.size() > 1) status.detail = "no upstream host reachable (" + failures + ")";
  return status;
}

Status ImapSession::connect_host(const HostPort& target, bool* next) {
  const UpstreamConfig& upstream = settings_->upstream;
  *next = true;
  name_ = name_.substr(0, name_.find(' ')) + " " + host_port_text(target);
  std::string error;
  // The greeting gets connect_timeout too: a server that accepts and then
  // says nothing is as unreachable as one that does not answer the SYN.
  mailstream_low* low = UpstreamStream::connect(target.host, target.port,
                                                upstream.connect_timeout,
                                                upstream.connect_timeout, &error);
  if (low == nullptr) {
    broken_ = true;
    log::info(name_, " ", error);
    return {UpstreamError::kUnavailable, error};
  }
  stream_ = UpstreamStream::of(low);
  if (upstream.tls == TlsMode::kImplicit &&
      !stream_->start_tls(*settings_->tls, target.host, upstream.connect_timeout)) {
    *next = !stream_->verification_failed();
    Status status = lost("TLS", stream_->failure());
    if (stream_->verification_failed()) {
      log::warn(name_, " ", stream_->failure(), "; not logging in");
    } else {
      log::info(name_, " ", status.detail);
    }
    mailstream_low_free(low);
    stream_ = nullptr;
    return status;
  }
  // libetpan 1.9.4 leaks the parsed greeting when it is a BYE (busy
  // servers say that): look at the greeting first and keep BYE from it.
  std::string greeting;
  if (!stream_->peek_line(&greeting, kMaxGreeting) || starts_with_bye(greeting)) {
    Status status = stream_->failed()
                        ? lost("greeting", stream_->failure())
                        : lost("greeting", "server refused the connection: " + trimmed(greeting));
    mailstream_low_free(low);
    stream_ = nullptr;
    log::info(name_, " ", status.detail);
    return status;
  }
  mailstream* stream = mailstream_new(low, kStreamBufferSize);
  if (stream == nullptr) {
    mailstream_low_free(low);
    stream_ = nullptr;
    return lost("connect", "out of memory");
  }
  imap_ = mailimap_new(0, nullptr);
  if (imap_ == nullptr) {
    mailstream_close(stream);
    stream_ = nullptr;
    return lost("connect", "out of memory");
  }
  // From here the session owns the stream, even if the greeting fails.
  int rc = mailimap_connect(imap_, stream);
  if (rc == MAILIMAP_NO_ERROR_AUTHENTICATED) {
    // PREAUTH: logged in as somebody before we said who. The client's
    // password would go unchecked, so refuse.
    broken_ = true;
    *next = false;
    log::info(name_, " server greeted with PREAUTH; refusing");
    return {UpstreamError::kRefused, "server greeted with PREAUTH; credentials cannot be checked"};
  }
  if (rc != MAILIMAP_NO_ERROR_NON_AUTHENTICATED) {
    Status status = outcome(rc, "greeting", -1, UpstreamError::kUnavailable,
                            UpstreamError::kUnavailable);
    log::info(name_, " ", status.detail);
    return status;
  }
  stream_->set_io_timeout(upstream.command_timeout);

  if (upstream.tls == TlsMode::kStartTls) {
    *next = false;
    Status status = starttls(target);
    if (!status.ok()) return status;
  } else if (imap_->imap_connection_info == nullptr ||
             imap_->imap_connection_info->imap_capability == nullptr) {
    // Capabilities come with the greeting from most servers (Dovecot does).
    if (Status status = request_capabilities(); !status.ok()) {
      *next = false;
      return status;
    }
  }
  log::debug(name_, " connected", stream_->tls_active() ? " (" + stream_->tls_description() + ")"
                                                        : std::string(" (no TLS)"));
  return {};
}

Status ImapSession::starttls(const HostPort& target) {
  const std::string prefix = "STARTTLS failed: ";
  // What the server announced before TLS serves only to see STARTTLS.
  if (imap_->imap_connection_info == nullptr ||
      imap_->imap_connection_info->imap_capability == nullptr) {
    if (Status status = request_capabilities(); !status.ok()) {
      status.error = UpstreamError::kUnavailable;
      status.detail = prefix + status.detail;
      broken_ = true;
      log::warn(name_, " ", status.detail);
      return status;
    }
  }
  Status status;
  if (mailimap_has_extension(imap_, const_cast<char*>("STARTTLS")) == 0) {
    status = {UpstreamError::kUnavailable,
              prefix + "the server does not advertise STARTTLS"};
  } else {
    const int rc = mailimap_starttls(imap_);
    if (rc == MAILIMAP_ERROR_STARTTLS && imap_->imap_stream != nullptr &&
        imap_->imap_stream->read_buffer_len != 0) {
      // libetpan's check: plaintext after the OK would be read as if it had
      // come over TLS (response injection).
      status = {UpstreamError::kUnavailable,
                prefix + "the server sent data after its STARTTLS response"};
    } else if (rc != MAILIMAP_NO_ERROR) {
      status = outcome(rc, "STARTTLS", MAILIMAP_ERROR_STARTTLS, UpstreamError::kUnavailable,
                       UpstreamError::kUnavailable);
      status.error = UpstreamError::kUnavailable;
      status.detail = prefix + status.detail;
    } else if (!stream_->start_tls(*settings_->tls, target.host,
                                   settings_->upstream.connect_timeout)) {
      status = {UpstreamError::kUnavailable, prefix + stream_->failure()};
    }
  }
  if (!status.ok()) {
    // Never fall back to plaintext: the password must not travel in clear.
    broken_ = true;
    log::warn(name_, " ", status.detail, "; not logging in");
    return status;
  }
  // RFC 3501 6.2.1: forget the capabilities learnt before TLS (a man in the
  // middle could have written them) and ask again.
  if (imap_->imap_connection_info != nullptr &&
      imap_->imap_connection_info->imap_capability != nullptr) {
    mailimap_capability_data_free(imap_->imap_connection_info->imap_capability);
    imap_->imap_connection_info->imap_capability = nullptr;
  }
  return request_capabilities();
}

Status ImapSession::request_capabilities() {
  // mailimap_capability() copies the stored list without a NULL check: a
  // server that answers OK without an untagged CAPABILITY would crash it.
  // Store an empty list first (then such a server has no extensions).
  if (imap_->imap_connection_info == nullptr) return lost("CAPABILITY", "out of memory");
  if (imap_->imap_connection_info->imap_capability == nullptr) {
    clist* empty = clist_new();
    mailimap_capability_data* none = empty != nullptr ? mailimap_capability_data_new(empty) : nullptr;
    if (none == nullptr) {
      if (empty != nullptr) clist_free(empty);
      return lost("CAPABILITY", "out of memory");
    }
    imap_->imap_connection_info->imap_capability = none;
  }
  mailimap_capability_data* capabilities = nullptr;
  const int rc = mailimap_capability(imap_, &capabilities);
  if (rc == MAILIMAP_NO_ERROR) mailimap_capability_data_free(capabilities);
  return outcome(rc, "CAPABILITY", MAILIMAP_ERROR_CAPABILITY, UpstreamError::kRefused,
                 UpstreamError::kRefused);
}

Status ImapSession::check_credentials(const Credentials& credentials) {
  if (has_control_character(credentials.user) || has_line_break_or_nul(credentials.password)) {
    return {UpstreamError::kAuthFailed,
            "user name with a control character or password with CR, LF or NUL; not sent upstream"};
  }
  return {};
}

Status ImapSession::login(const Credentials& credentials) {
  if (broken_ || imap_ == nullptr) return {UpstreamError::kUnavailable, "LOGIN: not connected"};
  const std::string command = "LOGIN " + credentials.user;
  if (Status status = check_credentials(credentials); !status.ok()) {
    log::debug(name_, " ", command, ": ", status.detail);
    return status;
  }
  const bool plain = mailimap_has_authentication(imap_, "PLAIN") != 0;
  const bool login_disabled = mailimap_has_extension(imap_, "LOGINDISABLED") != 0;
  const bool eight_bit = has_8bit(credentials.user) || has_8bit(credentials.password);
  // LOGIN sends 8-bit bytes raw inside a quoted string, which RFC 3501 does
  // not allow (Dovecot accepts it, strict servers may not): prefer
  // AUTHENTICATE PLAIN (base64) for those when offered.
  if (login_disabled || (eight_bit && plain)) {
    if (!plain) {
      log::info(name_, " server advertises LOGINDISABLED and no AUTH=PLAIN");
      return {UpstreamError::kRefused,
              "server advertises LOGINDISABLED and offers no AUTH=PLAIN (does it want TLS?)"};
    }
    return authenticate_plain(credentials);
  }
  int rc = mailimap_login(imap_, credentials.user.c_str(), credentials.password.c_str());
  return login_outcome(rc, command);
}

// SELECT and UID FETCH 1:* in one write: one round trip saved; libetpan's
// parser reads the two answers in turn (it checks each answer's tag against
// imap_tag, so that is set for each). Never pipelined behind LOGIN: some
// servers hand the connection to another process once authenticated and
// would lose what was sent behind it.
Status ImapSession::select_and_fetch_all(Snapshot* snapshot) {
  snapshot->messages.clear();
  snapshot->uidvalidity = 0;
  const int tag = imap_->imap_tag;
  const std::string select_command = "SELECT " + folder_;
  const std::string fetch_command = "UID FETCH 1:* (UID RFC822.SIZE FLAGS)";
  const std::string commands = std::to_string(tag + 1) + " SELECT " + astring(folder_) + "\r\n" +
                               std::to_string(tag + 2) + " " + fetch_command + "\r\n";
  mailstream* stream = imap_->imap_stream;
  if (mailstream_write(stream, commands.data(), commands.size()) !=
          static_cast<ssize_t>(commands.size()) ||
      mailstream_flush(stream) != 0) {
    return lost(select_command, stream_->failed() ? stream_->failure() : "cannot send");
  }
  imap_->imap_tag = tag + 2;

  if (imap_->imap_selection_info != nullptr) mailimap_selection_info_free(imap_->imap_selection_info);
  imap_->imap_selection_info = mailimap_selection_info_new();
  int state = 0;
  int rc = parse_answer(tag + 1, &state);
  if (rc == MAILIMAP_NO_ERROR && state != MAILIMAP_RESP_COND_STATE_OK) rc = MAILIMAP_ERROR_SELECT;
  if (rc == MAILIMAP_NO_ERROR) {
    imap_->imap_state = MAILIMAP_STATE_SELECTED;
  } else if (imap_->imap_selection_info != nullptr) {
    mailimap_selection_info_free(imap_->imap_selection_info);
    imap_->imap_selection_info = nullptr;
  }
  Status status = outcome(rc, select_command, MAILIMAP_ERROR_SELECT, UpstreamError::kNoMailbox,
                   UpstreamError::kNoMailbox);
  uint32_t exists = 0;
  if (status.ok() && imap_->imap_selection_info != nullptr) {
    snapshot->uidvalidity = imap_->imap_selection_info->sel_uidvalidity;
    exists = imap_->imap_selection_info->sel_exists;
  }
  if (broken_) return status;  // (BYE, or the stream failed: nothing more to read)

  const int fetch_rc = parse_answer(tag + 2, &state);
  clist* result = nullptr;
  if (imap_->imap_response_info != nullptr) {
    result = imap_->imap_response_info->rsp_fetch_list;
    imap_->imap_response_info->rsp_fetch_list = nullptr;
  }
  if (!status.ok() || exists == 0) {  // (an empty folder may refuse 1:*)
    if (result != nullptr) mailimap_fetch_list_free(result);
    return !status.ok() || fetch_rc == MAILIMAP_NO_ERROR || fetch_rc == MAILIMAP_ERROR_PROTOCOL
               ? status
               : outcome(fetch_rc, fetch_command, -1, UpstreamError::kRefused, UpstreamError::kRefused);
  }
  const bool fetched = fetch_rc == MAILIMAP_NO_ERROR &&
                       (state == MAILIMAP_RESP_COND_STATE_OK ||
                        (result != nullptr && clist_count(result) > 0));
  if (!fetched) {
    if (result != nullptr) mailimap_fetch_list_free(result);
    return outcome(fetch_rc == MAILIMAP_NO_ERROR ? MAILIMAP_ERROR_UID_FETCH : fetch_rc,
                   fetch_command, MAILIMAP_ERROR_UID_FETCH, UpstreamError::kRefused,
                   UpstreamError::kRefused);
  }
  return snapshot_of_all(result, snapshot);
}

int ImapSession::parse_answer(int tag, int* state) {
  imap_->imap_tag = tag;
  if (mailimap_read_line(imap_) == nullptr) {
    broken_ = true;
    return MAILIMAP_ERROR_STREAM;
  }
  mailimap_response* response = nullptr;
  const int rc = mailimap_parse_response(imap_, &response);
  // BAD is an answer; anything else leaves the stream out of step.
  if (rc != MAILIMAP_NO_ERROR && rc != MAILIMAP_ERROR_PROTOCOL) broken_ = true;
  if (rc != MAILIMAP_NO_ERROR) return rc;
  *state = response->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state->rsp_type;
  mailimap_response_free(response);
  return MAILIMAP_NO_ERROR;
}

// A refused login is kAuthFailed, unless the server said the failure is
// temporary ([UNAVAILABLE], [SERVERBUG], ...): then it is kUnavailable.
Status ImapSession::login_outcome(int rc, const std::string& command) {
  Status status = outcome(rc, command, MAILIMAP_ERROR_LOGIN, UpstreamError::kAuthFailed,
                          UpstreamError::kAuthFailed);
  if (status.error == UpstreamError::kAuthFailed && imap_->imap_response_info != nullptr &&
      is_temporary_code(imap_->imap_response_info->rsp_atom)) {
    status.error = UpstreamError::kUnavailable;
  }
  return status;
}

Status ImapSession::authenticate_plain(const Credentials& credentials) {
  const std::string command = "AUTHENTICATE PLAIN " + credentials.user;
  // libetpan returns MAILIMAP_ERROR_LOGIN both for the server's NO and for
  // a local SASL failure. imap_response is set only when a tagged response
  // was parsed, and the byte count tells whether anything was sent.
  imap_->imap_response = nullptr;
  const uint64_t sent_before = stream_->bytes_written();
  int rc = mailimap_authenticate(imap_, "PLAIN", settings_->upstream.host.c_str(), nullptr,
                                 nullptr, credentials.user.c_str(), credentials.user.c_str(),
                                 credentials.password.c_str(), nullptr);
  if (rc == MAILIMAP_ERROR_LOGIN && imap_->imap_response == nullptr && !stream_->failed()) {
    if (stream_->bytes_written() == sent_before) {
      log::warn(name_, " SASL PLAIN unavailable locally (is libsasl2-modules installed?)");
      return {UpstreamError::kUnavailable,
              command + ": SASL PLAIN unavailable locally (libsasl2-modules missing?)"};
    }
    return lost(command, "SASL exchange failed");
  }
  return login_outcome(rc, command);
}

// snapshot(), hide() and the commit policies: imap_policy.cpp.

Status ImapSession::fetch(uint32_t uid, uint64_t offset, uint64_t length, std::string* data) {
  std::vector<FetchedChunk> chunks;
  fetch_bodies({uid}, offset, length, &chunks);
  *data = std::move(chunks.front().data);
  return std::move(chunks.front().status);
}

// Sent and read without libetpan's parser (fetch_reader.h): each literal
// lands once, straight from the socket, in the string handed to the POP3
// side. libetpan's tag counter and read buffer are shared, so its own
// commands go on from where this one left the stream.
void ImapSession::fetch_bodies(const std::vector<uint32_t>& uids, uint64_t offset,
                               uint64_t length, std::vector<FetchedChunk>* chunks) {
  chunks->clear();
  for (uint32_t uid : uids) chunks->push_back({uid, {}, {}});
  const auto all = [&](const Status& status) {
    for (FetchedChunk& chunk : *chunks) chunk.status = status;
  };
  std::string set;
  for (uint32_t uid : uids) {
    if (!set.empty()) set += ',';
    set += std::to_string(uid);
  }
  const std::string command = "UID FETCH " + set + " BODY.PEEK[]<" + std::to_string(offset) +
                              "." + std::to_string(length) + ">";
  if (broken_ || imap_ == nullptr) return all({UpstreamError::kUnavailable, command + ": not connected"});
  // Length 0 would mean "no partial": the whole message. RFC822.SIZE is 32
  // bits in IMAP, so an offset beyond that is past every message's end.
  if (uids.empty() || length == 0 || offset > UINT32_MAX) return;
  length = std::min<uint64_t>(length, UINT32_MAX);

  const std::string tag = std::to_string(++imap_->imap_tag);
  const std::string line = tag + " " + command + "\r\n";
  mailstream* stream = imap_->imap_stream;
  if (mailstream_write(stream, line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
      mailstream_flush(stream) != 0) {
    return all(lost(command, stream_->failed() ? stream_->failure() : "cannot send"));
  }
  FetchAnswer answer;
  std::string error;
  bool answered;
  {
    MailstreamSource source(stream);  // gives libetpan its buffer back when it goes
    answered = read_fetch_answer(source, tag, {length, kMaxResponseLine, &uids}, &answer, &error);
  }
  if (!answered) {
    return all(lost(command, stream_->failed() ? stream_->failure() : error));
  }
  const bool expunge_issued = answer.code == "EXPUNGEISSUED";
  if (answer.result != FetchAnswer::Result::kOk && !expunge_issued) {
    const std::string detail = command + ": " + answer.text;
    log::debug(name_, " ", detail);
    return all({UpstreamError::kRefused, detail});
  }
  log::debug(name_, " ", command, ": ", answer.text);
  // Other responses (flag changes by other clients...) may come along; a
  // message expunged meanwhile comes as BODY[] NIL (Dovecot, with
  // [EXPUNGEISSUED]) or not at all: gone, not empty.
  // Under [EXPUNGEISSUED] an empty body is no body (a server may send ""
  // rather than NIL), and a single message is taken for gone whatever came:
  // a short last piece would otherwise end the message early.
  if (expunge_issued && uids.size() == 1) answer.bodies.clear();
  std::vector<bool> found(chunks->size(), false);
  for (FetchedBody& body : answer.bodies) {
    if (body.nil || (expunge_issued && body.data.empty())) continue;
    for (size_t i = 0; i < chunks->size(); ++i) {
      if ((*chunks)[i].uid != body.uid || found[i]) continue;
      (*chunks)[i].data = std::move(body.data);
      found[i] = true;
      break;
    }
  }
  for (size_t i = 0; i < chunks->size(); ++i) {
    if (found[i]) continue;
    log::debug(name_, " ", command, ": no body for UID ", (*chunks)[i].uid);
    (*chunks)[i].status = {UpstreamError::kMessageGone,
                           command + ": no such message (expunged?)"};
  }
}

}  // namespace popbridge::imap
