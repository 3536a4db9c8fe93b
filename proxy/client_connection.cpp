#include "proxy/client_connection.h"

#include "common/log.h"
#include "proxy/proxy_protocol.h"

namespace popbridge {
namespace {

constexpr size_t kHighWatermark = 512 * 1024;  // the session stops producing above this
constexpr size_t kLowWatermark = 128 * 1024;   // ... and resumes below this
constexpr uint64_t kLingerMs = 2000;
constexpr uint64_t kProxyHeaderMs = 5000;

// Every read is handed on before the next one, so the whole loop shares
// one read buffer and an idle connection holds none.
char g_read_buffer[64 * 1024];

std::string address_text(const sockaddr_storage& address, bool with_port) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    uv_ip4_name(v4, host, sizeof host);
    return with_port ? std::string(host) + ":" + std::to_string(ntohs(v4->sin_port)) : host;
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  uv_ip6_name(v6, host, sizeof host);
  if (!with_port) return host;
  std::string text = "[";
  text += host;
  text += "]:";
  text += std::to_string(ntohs(v6->sin6_port));
  return text;
}

bool is_loopback(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127;
}

std::string seconds_text(std::chrono::steady_clock::duration elapsed) {
  char text[32];
  snprintf(text, sizeof text, "%.3fs", std::chrono::duration<double>(elapsed).count());
  return text;
}

}  // namespace

struct ClientConnection::WriteRequest {
  uv_write_t request{};
  std::vector<std::string> pieces;
  size_t size = 0;
  ClientConnection* connection = nullptr;
};

void ClientConnection::accept(uv_stream_t* server, ServerContext& context,
                              std::shared_ptr<const ListenerConfig> listener) {
  auto* connection = new ClientConnection(context, std::move(listener));
  if (int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&connection->tcp_)); rc != 0) {
    log::warn("accept failed: ", uv_strerror(rc));
    connection->close_handles();
    return;
  }
  ++context.metrics.connections_total;
  uv_tcp_nodelay(&connection->tcp_, 1);
  sockaddr_storage& peer = connection->address_;
  int length = sizeof peer;
  uv_tcp_getpeername(&connection->tcp_, reinterpret_cast<sockaddr*>(&peer), &length);
  connection->client_ = address_text(peer, true);
  connection->client_ip_ = address_text(peer, false);

  if (connection->listener_->proxy_protocol) {
    bool trusted = false;
    for (const Cidr& cidr : connection->listener_->trusted_proxies)
      trusted = trusted || cidr.contains(reinterpret_cast<const sockaddr*>(&peer));
    if (!trusted) {
      log::warn("connection from ", connection->client_, " refused: not a trusted proxy");
      ++context.metrics.connections_refused;
      connection->close_handles();
      return;
    }
    connection->awaiting_proxy_header_ = true;
    uv_timer_start(&connection->timer_, &ClientConnection::on_idle, kProxyHeaderMs, 0);
    connection->set_reading(true);
    return;
  }
  connection->begin();
}

ClientConnection::ClientConnection(ServerContext& context,
                                   std::shared_ptr<const ListenerConfig> listener)
    : context_(context), listener_(std::move(listener)), runtime_(context.runtime),
      started_(std::chrono::steady_clock::now()) {
  uv_tcp_init(context.loop, &tcp_);
  for (uv_timer_t* timer : {&timer_, &send_timer_, &delay_timer_}) {
    uv_timer_init(context.loop, timer);
    timer->data = this;
  }
  tcp_.data = this;
  shutdown_.data = this;
  open_handles_ = 4;
  context_.connections.insert(this);
  context_.metrics.sessions_open = context_.connections.size();
}

ClientConnection::~ClientConnection() {
  if (session_) log_logout();
  if (counted_) {
    --context_.sessions;
    if (--context_.sessions_per_ip[client_ip_] == 0) context_.sessions_per_ip.erase(client_ip_);
  }
  context_.connections.erase(this);
  context_.metrics.sessions_open = context_.connections.size();
  if (context_.on_connection_closed) context_.on_connection_closed();
}

// The client is known (directly, or from the PROXY header): apply the
// limits and start the POP3 session.
void ClientConnection::begin() {
  const Config& config = runtime_->config;
  if (context_.sessions >= config.server.max_sessions) return refuse("max_sessions");
  unsigned& per_ip = context_.sessions_per_ip[client_ip_];
  if (config.server.max_sessions_per_ip != 0 && per_ip >= config.server.max_sessions_per_ip) {
    if (per_ip == 0) context_.sessions_per_ip.erase(client_ip_);
    return refuse("max_sessions_per_ip");
  }
  ++per_ip;
  ++context_.sessions;
  counted_ = true;
  log::debug("connection from ", client_);

  SessionOptions options;
  options.peer = client_;
  options.metrics = &context_.metrics;
  options.plaintext_auth_allowed =
      config.server.allow_plaintext_auth || (address_known_ && is_loopback(address_));
  options.high_watermark = kHighWatermark;
  options.uidl_format = config.mailbox.uidl_format;
  options.enable_last = config.mailbox.enable_last;
  options.lock = config.mailbox.lock;
  if (config.mailbox.retention_days != 0) options.expire = std::to_string(config.mailbox.retention_days);
  if (runtime_->tls) {
    options.starttls_available = listener_->tls == TlsMode::kStartTls;
    if (listener_->tls == TlsMode::kImplicit) {
      tls_ = std::make_unique<TlsStream>(runtime_->tls);
      options.tls_active = true;
    }
  }
  session_ = std::make_unique<Pop3Session>(*this, *runtime_->backend, context_.locks, options);
  touch();
  set_reading(true);
  session_->start();
}

void ClientConnection::refuse(const char* why) {
  log::warn("connection from ", client_, " refused: ", why, " reached");
  ++context_.metrics.connections_refused;
  // Inside TLS there is nobody to read a plaintext reply: just close.
  if (listener_->tls != TlsMode::kImplicit)
    write_raw("-ERR [SYS/TEMP] Too many connections, try again later.\r\n");
  closing_ = true;
  shutdown_when_flushed();
}

void ClientConnection::touch() {
  if (handles_closing_ || awaiting_proxy_header_) return;
  const uint64_t ms =
      lingering_ ? kLingerMs : static_cast<uint64_t>(runtime_->config.server.idle_timeout.count());
  uv_timer_start(&timer_, &ClientConnection::on_idle, ms, 0);
}

void ClientConnection::set_reading(bool on) {
  if (handles_closing_ || (closing_ && !lingering_) || on == reading_) return;
  reading_ = on;
  if (on) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &ClientConnection::on_alloc,
                  &ClientConnection::on_read);
  } else {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  }
}

void ClientConnection::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(g_read_buffer, sizeof g_read_buffer);
}

void ClientConnection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<ClientConnection*>(stream->data);
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF && !self->lingering_ && self->session_ && self->session_->committing()) {
      // QUIT then a half-close (as `nc -N` does): the commit the client
      // asked for completes, and its reply still goes out.
      self->peer_closed_ = true;
      self->set_reading(false);
      return;
    }
    if (nread != UV_EOF && !self->lingering_)
      log::debug("pop3 ", self->client_, ": read error: ", uv_strerror(static_cast<int>(nread)));
    self->close_handles();  // the client went away: nothing is committed
    return;
  }
  if (self->lingering_) return;  // input after our FIN is discarded
  const std::string_view data(buf->base, static_cast<size_t>(nread));
  if (self->awaiting_proxy_header_) return self->on_proxy_bytes(data);
  self->touch();
  if (self->tls_) {
    self->on_ciphertext(data);
  } else {
    self->deliver(data);
  }
}

void ClientConnection::on_proxy_bytes(std::string_view data) {
  proxy_buffer_.append(data);
  ProxyHeader header;
  switch (parse_proxy_header(proxy_buffer_, header)) {
    case ProxyParse::kNeedMore:
      if (proxy_buffer_.size() < kProxyHeaderMax) return;
      [[fallthrough]];
    case ProxyParse::kInvalid:
      log::warn("connection from proxy ", client_, ": invalid PROXY protocol header");
      return close_handles();
    case ProxyParse::kDone:
      break;
  }
  awaiting_proxy_header_ = false;
  uv_timer_stop(&timer_);
  if (header.has_address) {
    address_ = header.source;
    client_ = address_text(address_, true);
    client_ip_ = address_text(address_, false);
  } else {
    address_known_ = false;  // the balancer's own address says nothing about the client
  }
  const std::string rest = proxy_buffer_.substr(header.length);
  proxy_buffer_.clear();
  proxy_buffer_.shrink_to_fit();
  begin();
  if (session_ && !rest.empty()) {
    tls_ ? on_ciphertext(rest) : deliver(rest);
  }
}

void ClientConnection::deliver(std::string_view plain) {
  if (session_ && !handles_closing_) session_->on_input(plain);
}

void ClientConnection::on_ciphertext(std::string_view data) {
  std::string plain, wire;
  const bool was_established = tls_->established();
  const TlsStream::Result result = tls_->receive(data, plain, wire);
  write_raw(std::move(wire));
  if (result == TlsStream::Result::kError) {
    log::info("pop3 ", client_, ": ", tls_->error());
    return close_handles();
  }
  if (!was_established && tls_->established()) log::debug("pop3 ", client_, ": ", tls_->describe());
  if (!plain.empty()) deliver(plain);
  if (result == TlsStream::Result::kClosed) close_handles();
}

void ClientConnection::start_tls() {
  // The +OK to STLS is already queued as plaintext; from here on every byte
  // in either direction is TLS.
  tls_ = std::make_unique<TlsStream>(runtime_->tls);
}

void ClientConnection::before_login(std::function<void()> go) {
  const ServerConfig& server = runtime_->config.server;
  delay(context_.penalty.owed(client_ip_, server.auth_failure_delay, server.auth_failure_delay_max,
                              AuthPenalty::Clock::now()),
        std::move(go));
}

void ClientConnection::login_finished(bool ok, std::function<void()> then) {
  const ServerConfig& server = runtime_->config.server;
  if (ok) {
    context_.penalty.succeeded(client_ip_);
    return then();
  }
  context_.penalty.failed(client_ip_, AuthPenalty::Clock::now());
  delay(server.auth_failure_delay, std::move(then));
}

// Runs `then` after `wait` on this connection's delay timer; it never runs
// once the connection is closing its handles.
void ClientConnection::delay(Duration wait, std::function<void()> then) {
  if (wait.count() == 0) return then();
  delayed_ = std::move(then);
  uv_timer_start(&delay_timer_, &ClientConnection::on_delay, static_cast<uint64_t>(wait.count()), 0);
}

void ClientConnection::on_delay(uv_timer_t* timer) {
  auto* self = static_cast<ClientConnection*>(timer->data);
  auto then = std::move(self->delayed_);
  self->delayed_ = nullptr;
  if (then && !self->handles_closing_) then();
}

void ClientConnection::send(std::string data) {
  std::vector<std::string> pieces;
  pieces.push_back(std::move(data));
  send(std::move(pieces));
}

void ClientConnection::send(std::vector<std::string> pieces) {
  if (handles_closing_ || lingering_) return;
  if (!tls_) return write_raw(std::move(pieces));
  std::string wire;
  if (tls_->send(pieces, wire) != TlsStream::Result::kOk) {
    log::info("pop3 ", client_, ": ", tls_->error());
    return close_handles();
  }
  write_raw(std::move(wire));
}

void ClientConnection::write_raw(std::string data) {
  std::vector<std::string> pieces;
  pieces.push_back(std::move(data));
  write_raw(std::move(pieces));
}

// One uv_write of all the pieces: libuv sends them with one writev.
void ClientConnection::write_raw(std::vector<std::string> pieces) {
  if (handles_closing_) return;
  std::erase_if(pieces, [](const std::string& piece) { return piece.empty(); });
  if (pieces.empty()) return;
  auto* write = new WriteRequest{{}, std::move(pieces), 0, this};
  std::vector<uv_buf_t> buffers;
  buffers.reserve(write->pieces.size());
  for (std::string& piece : write->pieces) {
    buffers.push_back(uv_buf_init(piece.data(), static_cast<unsigned>(piece.size())));
    write->size += piece.size();
  }
  queued_ += write->size;
  if (int rc = uv_write(&write->request, reinterpret_cast<uv_stream_t*>(&tcp_), buffers.data(),
                        static_cast<unsigned>(buffers.size()), &ClientConnection::on_write);
      rc != 0) {
    queued_ -= write->size;
    delete write;
    log::debug("pop3 ", client_, ": write failed: ", uv_strerror(rc));
    return close_handles();
  }
  if (queued_ > kHighWatermark && !uv_is_active(reinterpret_cast<uv_handle_t*>(&send_timer_))) {
    uv_timer_start(&send_timer_, &ClientConnection::on_send_stalled,
                   static_cast<uint64_t>(runtime_->config.server.send_timeout.count()), 0);
  }
}

void ClientConnection::on_write(uv_write_t* request, int status) {
  auto* write = reinterpret_cast<WriteRequest*>(request);
  ClientConnection* self = write->connection;
  self->queued_ -= write->size;
  if (status == 0) {
    self->bytes_out_ += write->size;
    self->context_.metrics.bytes_out += write->size;
  }
  delete write;
  if (self->handles_closing_) return;
  if (status != 0) {
    log::debug("pop3 ", self->client_, ": write error: ", uv_strerror(status));
    return self->close_handles();
  }
  self->touch();
  if (self->queued_ <= kLowWatermark && !self->closing_) uv_timer_stop(&self->send_timer_);
  if (self->closing_) {
    self->shutdown_when_flushed();
  } else if (self->queued_ <= kLowWatermark && self->session_) {
    self->session_->on_drain();
  }
}

void ClientConnection::on_send_stalled(uv_timer_t* timer) {
  auto* self = static_cast<ClientConnection*>(timer->data);
  log::info("pop3 ", self->client_, ": client stopped reading, dropping it");
  self->end_reason_ = "send timeout";
  self->close_handles();
}

void ClientConnection::close() {
  if (closing_ || handles_closing_) return;
  if (tls_) {
    std::string wire;
    tls_->close_notify(wire);
    write_raw(std::move(wire));
  }
  closing_ = true;
  set_reading(false);
  // A client that stops reading must not keep the session, its mailbox
  // lock and its upstream connection alive: the last reply gets
  // send_timeout to leave.
  if (queued_ > 0) {
    uv_timer_start(&send_timer_, &ClientConnection::on_send_stalled,
                   static_cast<uint64_t>(runtime_->config.server.send_timeout.count()), 0);
  }
  shutdown_when_flushed();
}

void ClientConnection::shutdown_when_flushed() {
  if (queued_ != 0 || lingering_ || handles_closing_) return;
  uv_timer_stop(&send_timer_);
  // FIN first, then wait for the client's: closing a socket with unread
  // input sends a reset, which can destroy our last reply in flight.
  lingering_ = true;
  if (uv_shutdown(&shutdown_, reinterpret_cast<uv_stream_t*>(&tcp_),
                  &ClientConnection::on_shutdown) != 0) {
    close_handles();
  }
}

void ClientConnection::on_shutdown(uv_shutdown_t* request, int status) {
  auto* self = static_cast<ClientConnection*>(request->data);
  if (self->handles_closing_) return;
  if (status != 0 || self->peer_closed_) return self->close_handles();
  self->touch();
  self->set_reading(true);
}

void ClientConnection::abort() {
  if (handles_closing_) return;
  log::debug("pop3 ", client_, ": aborting connection");
  // A reset tells the client plainly that the reply is incomplete.
  handles_closing_ = true;
  close_timers();
  if (uv_tcp_close_reset(&tcp_, &ClientConnection::on_handle_closed) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &ClientConnection::on_handle_closed);
  }
}

void ClientConnection::shut_down() {
  if (!end_reason_) end_reason_ = "shutdown";
  abort();
}

void ClientConnection::on_idle(uv_timer_t* timer) {
  auto* self = static_cast<ClientConnection*>(timer->data);
  if (self->awaiting_proxy_header_) {
    log::warn("connection from proxy ", self->client_, ": no PROXY protocol header in time");
    return self->close_handles();
  }
  if (self->lingering_ || self->closing_ || !self->session_) return self->close_handles();
  self->session_->on_idle_timeout();
}

void ClientConnection::close_handles() {
  if (handles_closing_) return;
  handles_closing_ = true;
  close_timers();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &ClientConnection::on_handle_closed);
}

void ClientConnection::close_timers() {
  for (uv_timer_t* timer : {&timer_, &send_timer_, &delay_timer_})
    uv_close(reinterpret_cast<uv_handle_t*>(timer), &ClientConnection::on_handle_closed);
}

void ClientConnection::on_handle_closed(uv_handle_t* handle) {
  auto* self = static_cast<ClientConnection*>(handle->data);
  if (--self->open_handles_ == 0) delete self;
}

// One line per session, like Dovecot's logout line. Never a password.
void ClientConnection::log_logout() const {
  const SessionStats& stats = session_->stats();
  log::event(log::Level::kInfo, "logout",
             {{"client", client_},
              {"user", stats.user.empty() ? "-" : stats.user},
              {"upstream", stats.upstream.empty() ? "-" : stats.upstream},
              {"tls", session_->tls_active() ? "yes" : "no"},
              {"listed", std::to_string(stats.listed)},
              {"retrieved", std::to_string(stats.retrieved)},
              {"deleted", std::to_string(stats.deleted)},
              {"bytes", std::to_string(bytes_out_)},
              {"duration", seconds_text(std::chrono::steady_clock::now() - started_)},
              {"ended", end_reason_ ? end_reason_ : stats.ended}});
}

}  // namespace popbridge
