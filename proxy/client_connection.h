// One client TCP connection on the libuv loop: reads into its Pop3Session,
// writes what the session sends, keeps the idle timer, and closes politely.
// It owns the session and deletes itself when its handles are closed.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_set>

#include "config/config.h"
#include "proxy/pop3/session.h"
#include "proxy/tls_stream.h"

namespace popbridge {

class ClientConnection;

// What every connection of one server shares. Loop-thread only.
struct ServerContext {
  uv_loop_t* loop = nullptr;
  const Config* config = nullptr;
  Backend* backend = nullptr;
  std::shared_ptr<TlsContext> tls;  // null when no [tls] is configured; replaced on reload
  MailboxLocks locks;
  std::unordered_set<ClientConnection*> connections;
};

class ClientConnection final : public SessionIo {
 public:
  // Accepts one pending connection from `server`; on failure logs and returns.
  static void accept(uv_stream_t* server, ServerContext& context, const ListenerConfig& listener);

  void send(std::string data) override;
  size_t queued() const override { return queued_; }
  void set_reading(bool on) override;
  void close() override;
  void abort() override;
  void start_tls() override;

 private:
  struct WriteRequest;
  explicit ClientConnection(ServerContext& context);
  ~ClientConnection() override;

  static void on_alloc(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* request, int status);
  static void on_shutdown(uv_shutdown_t* request, int status);
  static void on_idle(uv_timer_t* timer);
  static void on_handle_closed(uv_handle_t* handle);

  void touch();              // restarts the idle timer
  void write_raw(std::string data);
  void on_ciphertext(std::string_view data);
  void shutdown_when_flushed();
  void close_handles();

  ServerContext& context_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uv_shutdown_t shutdown_{};
  std::unique_ptr<Pop3Session> session_;
  std::unique_ptr<TlsStream> tls_;
  std::string peer_;
  size_t queued_ = 0;
  int open_handles_ = 0;
  bool reading_ = false;
  bool closing_ = false;      // close() was called: finish writing, then FIN
  bool lingering_ = false;    // FIN sent: discard input until EOF or the linger timer
  bool handles_closing_ = false;
};

}  // namespace popbridge
