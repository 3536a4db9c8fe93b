// A deliberately small HTTP/1.0 responder for Prometheus: GET /metrics and
// GET /healthz, one request per connection, nothing else.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "config/config.h"

namespace popbridge {

class MetricsHttp {
 public:
  using Render = std::function<std::string()>;
  MetricsHttp(uv_loop_t* loop, Render render);
  ~MetricsHttp();
  MetricsHttp(const MetricsHttp&) = delete;
  MetricsHttp& operator=(const MetricsHttp&) = delete;

  int start(const MetricsConfig& config);  // 0 or a libuv error
  void stop();

 private:
  struct Request;
  static void on_connection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  Render render_;
  uv_tcp_t* tcp_ = nullptr;
};

}  // namespace popbridge
