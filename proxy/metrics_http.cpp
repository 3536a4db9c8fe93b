#include "proxy/metrics_http.h"

#include "common/log.h"

namespace popbridge {
namespace {
constexpr size_t kMaxRequest = 8192;
constexpr char kBusy[] =
    "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    "Connection: close\r\n\r\nbusy\n";
}  // namespace

struct MetricsHttp::Count {
  unsigned open = 0;
  bool warned = false;  // the refusals since the count was last below the cap are logged once
};

// One scrape: read the request head, answer, close.
struct MetricsHttp::Request {
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_write_t write{};
  std::string input;
  std::string output;
  Render render;  // a copy: a scrape in flight may outlive the listener
  std::shared_ptr<Count> count;
  int open_handles = 2;
  bool answered = false;

  void close() {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp))) return;
    auto closed = [](uv_handle_t* handle) {
      auto* request = static_cast<Request*>(handle->data);
      if (--request->open_handles != 0) return;
      if (--request->count->open < kMaxConnections) request->count->warned = false;
      delete request;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), closed);
  }

  void answer(int code, const char* reason, const std::string& body, const char* type) {
    answered = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    output = "HTTP/1.0 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type +
             "\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\nConnection: close\r\n\r\n" + body;
    uv_buf_t buffer = uv_buf_init(output.data(), static_cast<unsigned>(output.size()));
    write.data = this;
    if (uv_write(&write, reinterpret_cast<uv_stream_t*>(&tcp), &buffer, 1,
                 [](uv_write_t* w, int) { static_cast<Request*>(w->data)->close(); }) != 0) {
      close();
    }
  }

  void on_input() {
    const size_t end = input.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (input.size() > kMaxRequest) close();
      return;
    }
    const std::string_view line = std::string_view(input).substr(0, input.find("\r\n"));
    if (line.starts_with("GET /metrics ")) {
      answer(200, "OK", render(), "text/plain; version=0.0.4");
    } else if (line.starts_with("GET /healthz ")) {
      answer(200, "OK", "ok\n", "text/plain");
    } else {
      answer(404, "Not Found", "not found\n", "text/plain");
    }
  }
};

MetricsHttp::MetricsHttp(uv_loop_t* loop, Render render)
    : loop_(loop), render_(std::move(render)), count_(std::make_shared<Count>()) {}

MetricsHttp::~MetricsHttp() { stop(); }

int MetricsHttp::start(const MetricsConfig& config) {
  sockaddr_storage address{};
  int rc = config.host.find(':') != std::string::npos
               ? uv_ip6_addr(config.host.c_str(), config.port, reinterpret_cast<sockaddr_in6*>(&address))
               : uv_ip4_addr(config.host.c_str(), config.port, reinterpret_cast<sockaddr_in*>(&address));
  if (rc != 0) return rc;
  tcp_ = new uv_tcp_t{};
  uv_tcp_init(loop_, tcp_);
  tcp_->data = this;
  rc = uv_tcp_bind(tcp_, reinterpret_cast<const sockaddr*>(&address), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 64, &MetricsHttp::on_connection);
  if (rc != 0) {
    stop();
    return rc;
  }
  log::info("metrics on http://", config.address, "/metrics");
  return 0;
}

void MetricsHttp::stop() {
  if (tcp_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); });
  tcp_ = nullptr;
}

// Over the cap: a 503 if the socket takes it at once, then closed. Nothing
// is kept, so a flood of connections costs no memory.
void MetricsHttp::refuse(uv_stream_t* server) {
  auto* tcp = new uv_tcp_t{};
  uv_tcp_init(loop_, tcp);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp)) == 0) {
    uv_buf_t buffer = uv_buf_init(const_cast<char*>(kBusy), sizeof kBusy - 1);
    uv_try_write(reinterpret_cast<uv_stream_t*>(tcp), &buffer, 1);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(tcp),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); });
  if (!count_->warned) {
    count_->warned = true;
    log::warn("metrics: ", kMaxConnections, " connections open; refusing more (503) until one closes");
  }
}

void MetricsHttp::on_connection(uv_stream_t* server, int status) {
  if (status != 0) return;
  auto* self = static_cast<MetricsHttp*>(server->data);
  if (self->count_->open >= kMaxConnections) return self->refuse(server);
  auto* request = new Request;
  request->render = self->render_;
  request->count = self->count_;
  ++request->count->open;
  uv_tcp_init(self->loop_, &request->tcp);
  uv_timer_init(self->loop_, &request->timer);
  request->tcp.data = request;
  request->timer.data = request;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&request->tcp)) != 0) return request->close();
  uv_timer_start(&request->timer, [](uv_timer_t* t) { static_cast<Request*>(t->data)->close(); },
                 kRequestTimeoutMs, 0);
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&request->tcp),
      [](uv_handle_t* handle, size_t, uv_buf_t* buf) {
        static char buffer[4096];
        (void)handle;
        *buf = uv_buf_init(buffer, sizeof buffer);
      },
      [](uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
        auto* request = static_cast<Request*>(stream->data);
        if (n < 0) return request->close();
        if (n == 0 || request->answered) return;
        request->input.append(buf->base, static_cast<size_t>(n));
        request->on_input();
      });
}

}  // namespace popbridge
