// A deliberately small HTTP/1.0 responder for Prometheus: GET /metrics and
// GET /healthz, one request per connection, nothing else. At most
// kMaxConnections connections at once (more are answered 503 and closed);
// each gets kRequestTimeoutMs from accept to its answer.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "config/config.h"

namespace popbridge {

class MetricsHttp {
 public:
  using Render = std::function<std::string()>;
  static constexpr unsigned kMaxConnections = 16;
  static constexpr uint64_t kRequestTimeoutMs = 5000;

  MetricsHttp(uv_loop_t* loop, Render render);
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  int start(const MetricsConfig& config);  // 0 or a libuv error
  void stop();

 private:
  struct Request;
  struct Count;
  static void on_connection(uv_stream_t* server, int status);
  void refuse(uv_stream_t* server);

  uv_loop_t* loop_;
  Render render_;
  uv_tcp_t* tcp_ = nullptr;
  // Connections open now; shared with them, as they may outlive the listener.
  std::shared_ptr<Count> count_;
};

}  // namespace popbridge
