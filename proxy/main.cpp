// popbridge: a POP3 server whose mailboxes live on an IMAP server.
#include <signal.h>
#include <sys/resource.h>
#include <uv.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backends/imap/imap_backend.h"
#include "common/log.h"
#include "config/config.h"
#include "proxy/client_connection.h"
#include "proxy/listener.h"

namespace popbridge {
namespace {

constexpr const char* kUsage =
    "Usage: popbridge --config FILE        run in the foreground\n"
    "       popbridge --check-config FILE  validate FILE and exit\n"
    "       popbridge --version\n"
    "       popbridge --help\n";

std::optional<Config> load_or_report(const std::string& path) {
  ConfigResult result = load_config_file(path);
  for (const std::string& error : result.errors) fprintf(stderr, "%s\n", error.c_str());
  return std::move(result.config);
}

// A busy proxy holds two descriptors per session: use all we may.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

class Server {
 public:
  explicit Server(Config config) : config_(std::move(config)) {}

  int run() {
    uv_loop_t* loop = uv_default_loop();
    backend_ = std::make_unique<ImapBackend>(loop, config_.upstreams.front(), config_.mailbox,
                                             config_.server.upstream_threads);
    context_.loop = loop;
    context_.config = &config_;
    context_.backend = backend_.get();
    if (config_.tls && !load_tls()) return 1;
    for (const UpstreamConfig& upstream : config_.upstreams) {
      if (upstream.tls != TlsMode::kNone && !upstream.verify)
        log::warn("upstream ", upstream.name, ": verify = false: the IMAP server's certificate is "
                  "NOT checked; passwords can be intercepted");
    }

    for (const ListenerConfig& listener_config : config_.listeners) {
      auto listener = std::make_unique<Listener>(context_, listener_config);
      if (int rc = listener->start(); rc != 0) {
        log::error("cannot listen on ", listener_config.address, ": ", uv_strerror(rc));
        stop();
        uv_run(loop, UV_RUN_DEFAULT);
        return 1;
      }
      listeners_.push_back(std::move(listener));
    }
    for (int signum : {SIGTERM, SIGINT, SIGHUP}) {
      auto* handle = new uv_signal_t{};
      uv_signal_init(loop, handle);
      handle->data = this;
      uv_signal_start(handle, &Server::on_signal, signum);
      signals_.push_back(handle);
    }
    log::info("popbridge ", PROJECT_VERSION, " started, upstream ", config_.upstreams.front().host,
              ":", config_.upstreams.front().port);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    log::info("popbridge stopped");
    return 0;
  }

 private:
  static void on_signal(uv_signal_t* handle, int signum) {
    auto* self = static_cast<Server*>(handle->data);
    if (signum == SIGHUP) {
      log::info("SIGHUP: reloading TLS certificate and key");
      if (self->config_.tls) self->load_tls();
      return;
    }
    log::info("signal ", signum, ": shutting down");
    self->stop();
  }

  // (Re)reads the certificate and key. Sessions already open keep the
  // context they started with; a broken new pair leaves the old one in use.
  bool load_tls() {
    std::string error;
    auto context = TlsContext::create(*config_.tls, error);
    if (!context) {
      log::error("tls: ", error);
      return false;
    }
    if (config_.tls->min_version == "1.0" || config_.tls->min_version == "1.1")
      log::warn("tls.min_version = ", config_.tls->min_version,
                ": TLS versions with known weaknesses are accepted, for old devices");
    context_.tls = std::move(context);
    return true;
  }

  // Stops accepting, drops open sessions without committing anything (a
  // dropped POP3 session changes nothing) and lets the loop run dry.
  void stop() {
    listeners_.clear();
    for (ClientConnection* connection :
         std::vector<ClientConnection*>(context_.connections.begin(), context_.connections.end()))
      connection->abort();
    for (uv_signal_t* handle : signals_) {
      uv_close(reinterpret_cast<uv_handle_t*>(handle),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_signal_t*>(h); });
    }
    signals_.clear();
    if (backend_) backend_->shutdown();
  }

  Config config_;
  ServerContext context_;
  std::unique_ptr<ImapBackend> backend_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<uv_signal_t*> signals_;
};

}  // namespace
}  // namespace popbridge

int main(int argc, char** argv) {
  using namespace popbridge;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    fputs(kUsage, stdout);
    return 0;
  }
  if (args.size() == 1 && (args[0] == "--version" || args[0] == "-V")) {
    printf("popbridge %s\n", PROJECT_VERSION);
    return 0;
  }
  if (args.size() == 2 && args[0] == "--check-config") {
    if (!load_or_report(args[1])) return 1;
    printf("%s: configuration OK\n", args[1].c_str());
    return 0;
  }
  if (args.size() != 2 || args[0] != "--config") {
    fputs(kUsage, stderr);
    return 2;
  }
  auto config = load_or_report(args[1]);
  if (!config) return 1;
  log::set_level(config->server.log_level);
  signal(SIGPIPE, SIG_IGN);
  raise_descriptor_limit();
  return Server(std::move(*config)).run();
}
