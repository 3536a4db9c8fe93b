// The whole running proxy: listeners, the current Runtime (configuration,
// upstream backend, TLS context), signals, metrics, and an orderly end.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/client_connection.h"
#include "proxy/listener.h"
#include "proxy/metrics_http.h"

namespace popbridge {

class Server {
 public:
  Server(std::string config_path, Config config);
  ~Server();

  // Runs the loop until SIGTERM/SIGINT and the drain are over. Exit status.
  int run();

 private:
  static void on_signal(uv_signal_t* handle, int signum);
  static void on_grace_over(uv_timer_t* timer);

  std::shared_ptr<Runtime> make_runtime(Config config);  // null on failure (logged)
  void reload();
  void begin_shutdown();
  void finish_if_drained();
  void finish();

  std::string config_path_;
  uv_loop_t* loop_;
  ServerContext context_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<MetricsHttp> metrics_http_;
  std::vector<uv_signal_t*> signals_;
  uv_timer_t* grace_timer_ = nullptr;
  bool shutting_down_ = false;
  bool finished_ = false;
};

}  // namespace popbridge
