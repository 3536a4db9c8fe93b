#include "proxy/server.h"

#include <signal.h>

#include <cstring>

#include "backends/imap/imap_backend.h"
#include "common/log.h"

namespace popbridge {
namespace {

void apply_logging(const ServerConfig& server) {
  log::set_level(server.log_level);
  log::set_json(server.log_format == ServerConfig::LogFormat::kJson);
}

template <typename Handle>
void close_and_delete(Handle* handle) {
  uv_close(reinterpret_cast<uv_handle_t*>(handle),
           [](uv_handle_t* h) { delete reinterpret_cast<Handle*>(h); });
}

}  // namespace

Server::Server(std::string config_path, Config config)
    : config_path_(std::move(config_path)), loop_(uv_default_loop()) {
  context_.loop = loop_;
  apply_logging(config.server);
  context_.runtime = make_runtime(std::move(config));
}

Server::~Server() = default;

std::shared_ptr<Runtime> Server::make_runtime(Config config) {
  auto runtime = std::make_shared<Runtime>();
  if (config.tls) {
    std::string error;
    runtime->tls = TlsContext::create(*config.tls, error);
    if (!runtime->tls) {
      log::error("tls: ", error);
      return nullptr;
    }
    if (config.tls->min_version == "1.0" || config.tls->min_version == "1.1")
      log::warn("tls.min_version = ", config.tls->min_version,
                ": TLS versions with known weaknesses are accepted, for old devices");
  }
  for (const UpstreamConfig& upstream : config.upstreams) {
    if (upstream.tls != TlsMode::kNone && !upstream.verify)
      log::warn("upstream ", upstream.name, ": verify = false: the IMAP server's certificate is "
                "NOT checked; passwords can be intercepted");
  }
  for (const std::string& warning : config_warnings(config)) log::warn(warning);
  auto backend = std::make_unique<ImapBackend>(loop_, config.upstreams, config.mailbox);
  if (std::string error = backend->configuration_error(); !error.empty()) {
    log::error(error);
    backend->shutdown();
    return nullptr;
  }
  runtime->backend = std::move(backend);
  runtime->config = std::move(config);
  return runtime;
}

int Server::run() {
  if (!context_.runtime) return 1;
  const Config& config = context_.runtime->config;
  for (const ListenerConfig& listener_config : config.listeners) {
    auto listener = std::make_unique<Listener>(context_, listener_config);
    if (int rc = listener->start(); rc != 0) {
      log::error("cannot listen on ", listener_config.address, ": ", uv_strerror(rc));
      finish();
      uv_run(loop_, UV_RUN_DEFAULT);
      return 1;
    }
    listeners_.push_back(std::move(listener));
  }
  if (!config.metrics.address.empty()) {
    metrics_http_ = std::make_unique<MetricsHttp>(loop_, [this] { return context_.metrics.render(); });
    if (int rc = metrics_http_->start(config.metrics); rc != 0) {
      log::error("cannot listen on ", config.metrics.address, " for metrics: ", uv_strerror(rc));
      finish();
      uv_run(loop_, UV_RUN_DEFAULT);
      return 1;
    }
  }
  for (int signum : {SIGTERM, SIGINT, SIGHUP}) {
    auto* handle = new uv_signal_t{};
    uv_signal_init(loop_, handle);
    handle->data = this;
    uv_signal_start(handle, &Server::on_signal, signum);
    signals_.push_back(handle);
  }
  const UpstreamConfig& upstream = config.upstreams.front();
  log::info("popbridge ", PROJECT_VERSION, " started, upstream ", upstream.name, " at ",
            upstream.host, ":", upstream.port);
  uv_run(loop_, UV_RUN_DEFAULT);
  uv_loop_close(loop_);
  log::info("popbridge stopped");
  return 0;
}

void Server::on_signal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Server*>(handle->data);
  if (signum == SIGHUP) return self->reload();
  log::info("signal ", signum, ": stopping; open sessions get ",
            self->context_.runtime->config.server.shutdown_grace.count() / 1000, "s to finish");
  self->begin_shutdown();
}

// New sessions get the new configuration and TLS files; open ones keep
// theirs. A file with errors changes nothing. Listeners and metrics
// addresses are bound once: changing them needs a restart.
void Server::reload() {
  log::info("SIGHUP: reloading ", config_path_);
  ConfigResult result = load_config_file(config_path_);
  if (!result.config) {
    for (const std::string& error : result.errors) log::error("reload: ", error);
    log::error("reload: configuration rejected, the running one stays");
    return;
  }
  const Config& old = context_.runtime->config;
  bool listeners_changed = result.config->listeners.size() != old.listeners.size() ||
                           result.config->metrics.address != old.metrics.address;
  for (size_t i = 0; !listeners_changed && i < old.listeners.size(); ++i) {
    const ListenerConfig &a = old.listeners[i], &b = result.config->listeners[i];
    listeners_changed = a.address != b.address || a.tls != b.tls ||
                        a.proxy_protocol != b.proxy_protocol ||
                        a.trusted_proxies.size() != b.trusted_proxies.size();
    for (size_t j = 0; !listeners_changed && j < a.trusted_proxies.size(); ++j) {
      const Cidr &x = a.trusted_proxies[j], &y = b.trusted_proxies[j];
      listeners_changed = x.family != y.family || x.prefix != y.prefix ||
                          std::memcmp(x.bytes, y.bytes, sizeof x.bytes) != 0;
    }
  }
  if (listeners_changed)
    log::warn("reload: [[listener]] and [metrics] changes take effect after a restart");
  auto runtime = make_runtime(std::move(*result.config));
  if (!runtime) {
    log::error("reload: configuration rejected, the running one stays");
    return;
  }
  apply_logging(runtime->config.server);
  context_.runtime = std::move(runtime);
  log::info("reload: done");
}

void Server::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  listeners_.clear();  // stop accepting
  if (metrics_http_) metrics_http_->stop();
  const Duration grace = context_.runtime->config.server.shutdown_grace;
  grace_timer_ = new uv_timer_t{};
  uv_timer_init(loop_, grace_timer_);
  grace_timer_->data = this;
  uv_timer_start(grace_timer_, &Server::on_grace_over, static_cast<uint64_t>(grace.count()), 0);
  context_.on_connection_closed = [this] { finish_if_drained(); };
  // Clients not logged in have nothing to finish.
  for (ClientConnection* connection :
       std::vector<ClientConnection*>(context_.connections.begin(), context_.connections.end())) {
    if (!connection->finishing()) connection->shut_down();
  }
  finish_if_drained();
}

void Server::on_grace_over(uv_timer_t* timer) {
  auto* self = static_cast<Server*>(timer->data);
  log::info("shutdown grace over: closing ", self->context_.connections.size(),
            " sessions without committing");
  // A dropped session changes nothing on the IMAP server.
  for (ClientConnection* connection : std::vector<ClientConnection*>(
           self->context_.connections.begin(), self->context_.connections.end())) {
    connection->shut_down();
  }
}

void Server::finish_if_drained() {
  if (context_.connections.empty()) finish();
}

// Closes what the server itself holds, so the loop runs dry and returns.
void Server::finish() {
  if (finished_) return;
  finished_ = true;
  listeners_.clear();
  metrics_http_.reset();
  for (uv_signal_t* handle : signals_) close_and_delete(handle);
  signals_.clear();
  if (grace_timer_) close_and_delete(grace_timer_);
  grace_timer_ = nullptr;
  context_.runtime.reset();  // the last reference: its backend stops its threads
}

}  // namespace popbridge
