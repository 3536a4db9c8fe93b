#include "proxy/listener.h"

#include "common/log.h"

namespace popbridge {

Listener::Listener(ServerContext& context, ListenerConfig config)
    : context_(context), config_(std::make_shared<const ListenerConfig>(std::move(config))) {}

Listener::~Listener() { stop(); }

int Listener::start() {
  sockaddr_storage address{};
  const std::string& host = config_->host;
  int rc = host.find(':') != std::string::npos
               ? uv_ip6_addr(host.c_str(), config_->port, reinterpret_cast<sockaddr_in6*>(&address))
               : uv_ip4_addr(host.c_str(), config_->port, reinterpret_cast<sockaddr_in*>(&address));
  if (rc != 0) return rc;

  tcp_ = new uv_tcp_t{};
  uv_tcp_init(context_.loop, tcp_);
  tcp_->data = this;
  rc = uv_tcp_bind(tcp_, reinterpret_cast<const sockaddr*>(&address), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), 511, &Listener::on_connection);
  if (rc != 0) {
    stop();
    return rc;
  }
  log::info("listening on ", config_->address);
  return 0;
}

void Listener::stop() {
  if (tcp_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(tcp_),
           [](uv_handle_t* handle) { delete reinterpret_cast<uv_tcp_t*>(handle); });
  tcp_ = nullptr;
}

void Listener::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Listener*>(server->data);
  if (status != 0) {
    log::warn("listener ", self->config_->address, ": ", uv_strerror(status));
    return;
  }
  ClientConnection::accept(server, self->context_, self->config_);
}

}  // namespace popbridge
