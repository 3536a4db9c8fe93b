// One client TCP connection on the libuv loop: an optional PROXY protocol
// header, the connection limits, optional TLS, then a Pop3Session fed with
// what the client sends. It owns the session and deletes itself once its
// handles are closed.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "backends/backend.h"
#include "config/config.h"
#include "proxy/auth_penalty.h"
#include "proxy/metrics.h"
#include "proxy/pop3/session.h"
#include "proxy/tls_stream.h"

namespace popbridge {

class ClientConnection;

// What a configuration reload replaces. A session keeps the Runtime it
// started with until it ends, so a reload never disturbs open sessions.
struct Runtime {
  Config config;
  std::unique_ptr<Backend> backend;
  std::shared_ptr<TlsContext> tls;  // null when no [tls] is configured
  ~Runtime() {
    if (backend) backend->shutdown();
  }
};

// What every connection of one server shares. Loop-thread only.
struct ServerContext {
  uv_loop_t* loop = nullptr;
  std::shared_ptr<Runtime> runtime;
  MailboxLocks locks;
  AuthPenalty penalty;
  Metrics metrics;
  std::unordered_set<ClientConnection*> connections;
  size_t sessions = 0;  // connections past the limits; refused ones do not count
  std::unordered_map<std::string, unsigned> sessions_per_ip;
  std::function<void()> on_connection_closed;  // set while shutting down
};

class ClientConnection final : public SessionIo {
 public:
  // Accepts one pending connection from `server`; on failure logs and returns.
  static void accept(uv_stream_t* server, ServerContext& context,
                     std::shared_ptr<const ListenerConfig> listener);

  // SessionIo
  void send(std::string data) override;
  void send(std::vector<std::string> pieces) override;
  size_t queued() const override { return queued_; }
  void set_reading(bool on) override;
  void close() override;
  void abort() override;
  void start_tls() override;
  void before_login(std::function<void()> go) override;
  void login_finished(bool ok, std::function<void()> then) override;

  // Ends the connection at once, for a shutdown.
  void shut_down();
  // A shutdown lets a logged-in session finish, and a connection already
  // closing write its last reply.
  bool finishing() const { return closing_ || (session_ && session_->logged_in()); }

 private:
  struct WriteRequest;
  ClientConnection(ServerContext& context, std::shared_ptr<const ListenerConfig> listener);
  ~ClientConnection() override;

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* request, int status);
  static void on_shutdown(uv_shutdown_t* request, int status);
  static void on_idle(uv_timer_t* timer);
  static void on_send_stalled(uv_timer_t* timer);
  static void on_delay(uv_timer_t* timer);
  static void on_handle_closed(uv_handle_t* handle);

  void begin();                       // after the PROXY header, if any
  void refuse(const char* why);       // over a limit
  void on_proxy_bytes(std::string_view data);
  void on_ciphertext(std::string_view data);
  void deliver(std::string_view plain);
  void write_raw(std::string data);
  void write_raw(std::vector<std::string> pieces);
  void touch();                       // restarts the idle timer
  void shutdown_when_flushed();
  void close_handles();
  void close_timers();
  void delay(Duration wait, std::function<void()> then);
  void log_logout() const;

  ServerContext& context_;
  std::shared_ptr<const ListenerConfig> listener_;
  // The configuration this connection started with. Declared before
  // session_ so that the session (and its upstream Mailbox) is destroyed
  // first, while the backend it belongs to still exists.
  std::shared_ptr<Runtime> runtime_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};                // idle timeout; PROXY header and linger deadlines
  uv_timer_t send_timer_{};           // output stuck above the high watermark
  uv_timer_t delay_timer_{};          // login penalty and failed-login waits
  uv_shutdown_t shutdown_{};
  std::unique_ptr<Pop3Session> session_;
  std::unique_ptr<TlsStream> tls_;
  std::string proxy_buffer_;          // octets before a complete PROXY header
  std::function<void()> delayed_;
  sockaddr_storage address_{};        // the real client (from the PROXY header when there is one)
  std::string client_;                // "ip:port" of the real client
  std::string client_ip_;             // counted in sessions_per_ip once counted_
  std::chrono::steady_clock::time_point started_;
  uint64_t bytes_out_ = 0;
  size_t queued_ = 0;
  int open_handles_ = 0;
  bool awaiting_proxy_header_ = false;
  bool address_known_ = true;         // false after a PROXY header without one (LOCAL, UNKNOWN)
  bool peer_closed_ = false;          // EOF while a commit was in flight
  bool counted_ = false;
  bool reading_ = false;
  bool closing_ = false;              // close() was called: finish writing, then FIN
  bool lingering_ = false;            // FIN sent: discard input until EOF or the linger timer
  bool handles_closing_ = false;
  const char* end_reason_ = nullptr;  // overrides the session's own account
};

}  // namespace popbridge
