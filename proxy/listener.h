// Accepts POP3 clients on one configured address.
#pragma once

#include <uv.h>

#include <memory>

#include "config/config.h"
#include "proxy/client_connection.h"

namespace popbridge {

class Listener {
 public:
  Listener(ServerContext& context, ListenerConfig config);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  // Binds and listens; returns 0 or a libuv error code.
  int start();
  // Stops accepting; the handle is closed asynchronously.
  void stop();

 private:
  static void on_connection(uv_stream_t* server, int status);

  ServerContext& context_;
  std::shared_ptr<const ListenerConfig> config_;  // shared with its connections
  uv_tcp_t* tcp_ = nullptr;  // freed by its close callback, which may outlive us
};

}  // namespace popbridge
