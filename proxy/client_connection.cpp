#include "proxy/client_connection.h"

#include "common/log.h"

namespace popbridge {
namespace {

constexpr size_t kLowWatermark = 128 * 1024;
constexpr uint64_t kLingerMs = 2000;

// Every read is handed to the session before the next one, so the whole
// loop shares one read buffer and an idle connection holds none.
char g_read_buffer[64 * 1024];

std::string peer_name(const uv_tcp_t* tcp) {
  sockaddr_storage address{};
  int length = sizeof address;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    uv_ip4_name(v4, host, sizeof host);
    port = ntohs(v4->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  uv_ip6_name(v6, host, sizeof host);
  port = ntohs(v6->sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

bool is_loopback(const uv_tcp_t* tcp) {
  sockaddr_storage address{};
  int length = sizeof address;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&address), &length) != 0) return false;
  if (address.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&address);
    return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&address);
  if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127;
}

}  // namespace

struct ClientConnection::WriteRequest {
  uv_write_t request{};
  std::string data;
  ClientConnection* connection = nullptr;
};

void ClientConnection::accept(uv_stream_t* server, ServerContext& context,
                              const ListenerConfig& listener) {
  auto* connection = new ClientConnection(context);
  if (int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&connection->tcp_)); rc != 0) {
    log::warn("accept failed: ", uv_strerror(rc));
    connection->close_handles();
    return;
  }
  uv_tcp_nodelay(&connection->tcp_, 1);
  connection->peer_ = peer_name(&connection->tcp_);
  log::debug("connection from ", connection->peer_);

  SessionOptions options;
  options.peer = connection->peer_;
  options.plaintext_auth_allowed =
      context.config->server.allow_plaintext_auth || is_loopback(&connection->tcp_);
  if (context.tls) {
    options.starttls_available = listener.tls == TlsMode::kStartTls;
    if (listener.tls == TlsMode::kImplicit) {
      connection->tls_ = std::make_unique<TlsStream>(context.tls);
      options.tls_active = true;
    }
  }
  connection->session_ =
      std::make_unique<Pop3Session>(*connection, *context.backend, context.locks, options);
  connection->touch();
  connection->set_reading(true);
  connection->session_->start();
}

ClientConnection::ClientConnection(ServerContext& context) : context_(context) {
  uv_tcp_init(context.loop, &tcp_);
  uv_timer_init(context.loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  shutdown_.data = this;
  open_handles_ = 2;
  context_.connections.insert(this);
}

ClientConnection::~ClientConnection() { context_.connections.erase(this); }

void ClientConnection::touch() {
  if (handles_closing_) return;
  const uint64_t ms = lingering_ ? kLingerMs : context_.config->server.idle_timeout.count();
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
    if (nread != UV_EOF && !self->lingering_)
      log::debug("pop3 ", self->peer_, ": read error: ", uv_strerror(static_cast<int>(nread)));
    self->close_handles();  // the client went away: nothing is committed
    return;
  }
  if (self->lingering_) return;  // input after our FIN is discarded
  self->touch();
  const std::string_view data(buf->base, static_cast<size_t>(nread));
  if (self->tls_) {
    self->on_ciphertext(data);
  } else {
    self->session_->on_input(data);
  }
}

void ClientConnection::on_ciphertext(std::string_view data) {
  std::string plain, wire;
  const bool was_established = tls_->established();
  const TlsStream::Result result = tls_->receive(data, plain, wire);
  write_raw(std::move(wire));
  if (result == TlsStream::Result::kError) {
    log::info("pop3 ", peer_, ": ", tls_->error());
    return close_handles();
  }
  if (!was_established && tls_->established()) log::debug("pop3 ", peer_, ": ", tls_->describe());
  if (!plain.empty()) session_->on_input(plain);
  if (result == TlsStream::Result::kClosed && !handles_closing_) close_handles();
}

void ClientConnection::start_tls() {
  // The +OK to STLS is already queued as plaintext; from here on every byte
  // in either direction is TLS.
  tls_ = std::make_unique<TlsStream>(context_.tls);
}

void ClientConnection::send(std::string data) {
  if (handles_closing_ || lingering_ || data.empty()) return;
  if (!tls_) return write_raw(std::move(data));
  std::string wire;
  if (tls_->send(data, wire) != TlsStream::Result::kOk) {
    log::info("pop3 ", peer_, ": ", tls_->error());
    return close_handles();
  }
  write_raw(std::move(wire));
}

void ClientConnection::write_raw(std::string data) {
  if (handles_closing_ || data.empty()) return;
  auto* write = new WriteRequest{{}, std::move(data), this};
  uv_buf_t buffer = uv_buf_init(write->data.data(), static_cast<unsigned>(write->data.size()));
  queued_ += write->data.size();
  if (int rc = uv_write(&write->request, reinterpret_cast<uv_stream_t*>(&tcp_), &buffer, 1,
                        &ClientConnection::on_write);
      rc != 0) {
    queued_ -= write->data.size();
    delete write;
    log::debug("pop3 ", peer_, ": write failed: ", uv_strerror(rc));
    close_handles();
  }
}

void ClientConnection::on_write(uv_write_t* request, int status) {
  auto* write = reinterpret_cast<WriteRequest*>(request);
  ClientConnection* self = write->connection;
  self->queued_ -= write->data.size();
  delete write;
  if (self->handles_closing_) return;
  if (status != 0) {
    log::debug("pop3 ", self->peer_, ": write error: ", uv_strerror(status));
    self->close_handles();
    return;
  }
  self->touch();
  if (self->closing_) {
    self->shutdown_when_flushed();
  } else if (self->queued_ <= kLowWatermark) {
    self->session_->on_drain();
  }
}

void ClientConnection::close() {
  if (closing_ || handles_closing_) return;
  closing_ = true;
  set_reading(false);
  shutdown_when_flushed();
}

void ClientConnection::shutdown_when_flushed() {
  if (queued_ != 0 || lingering_ || handles_closing_) return;
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
  if (status != 0) return self->close_handles();
  self->touch();
  self->set_reading(true);
}

void ClientConnection::abort() {
  if (handles_closing_) return;
  log::debug("pop3 ", peer_, ": aborting connection");
  // A reset tells the client plainly that the reply is incomplete.
  handles_closing_ = true;
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &ClientConnection::on_handle_closed);
  if (uv_tcp_close_reset(&tcp_, &ClientConnection::on_handle_closed) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &ClientConnection::on_handle_closed);
  }
}

void ClientConnection::on_idle(uv_timer_t* timer) {
  auto* self = static_cast<ClientConnection*>(timer->data);
  if (self->lingering_ || self->closing_) return self->close_handles();
  self->session_->on_idle_timeout();
}

void ClientConnection::close_handles() {
  if (handles_closing_) return;
  handles_closing_ = true;
  uv_timer_stop(&timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &ClientConnection::on_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &ClientConnection::on_handle_closed);
}

void ClientConnection::on_handle_closed(uv_handle_t* handle) {
  auto* self = static_cast<ClientConnection*>(handle->data);
  if (--self->open_handles_ == 0) delete self;
}

}  // namespace popbridge
