// popbridge: a POP3 server whose mailboxes live on an IMAP server.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "proxy/server.h"
#include "backends/imap/upstream_stream.h"
#include "proxy/tls_stream.h"

namespace {

constexpr const char* kUsage =
    "Usage: popbridge --config FILE        run in the foreground\n"
    "       popbridge --check-config FILE  validate FILE and exit\n"
    "       popbridge --version\n"
    "       popbridge --help\n";

std::optional<popbridge::Config> load_or_report(const std::string& path) {
  popbridge::ConfigResult result = popbridge::load_config_file(path);
  for (const std::string& error : result.errors) fprintf(stderr, "%s\n", error.c_str());
  return std::move(result.config);
}

// Readable is not enough: certificates, keys and CA files must load, as
// they will at start-up and on every reload.
bool tls_files_usable(const popbridge::Config& config, const std::string& path) {
  std::string error;
  if (config.tls && !popbridge::TlsContext::create(*config.tls, error)) {
    fprintf(stderr, "%s: tls: %s\n", path.c_str(), error.c_str());
    return false;
  }
  for (const popbridge::UpstreamConfig& upstream : config.upstreams) {
    if (upstream.tls == popbridge::TlsMode::kNone) continue;
    if (!popbridge::imap::UpstreamTls::create(upstream.verify, upstream.ca_file, &error)) {
      fprintf(stderr, "%s: upstream %s: %s\n", path.c_str(), upstream.name.c_str(), error.c_str());
      return false;
    }
  }
  return true;
}

// Memory holds passwords (and the TLS key): a crash must not write it to a
// core file, and other processes of the same user must not read it
// (ptrace, /proc/PID/mem). Not dumpable makes the kernel refuse both; a
// core limit of 0 also covers systems that dump non-dumpable processes
// (fs.suid_dumpable = 2).
void forbid_core_dumps() {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    fprintf(stderr, "popbridge: warning: prctl(PR_SET_DUMPABLE, 0): %s\n", strerror(errno));
  const rlimit none{0, 0};
  if (setrlimit(RLIMIT_CORE, &none) != 0)
    fprintf(stderr, "popbridge: warning: setrlimit(RLIMIT_CORE, 0): %s\n", strerror(errno));
}

// A busy proxy holds two descriptors per session: use all we may.
void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  forbid_core_dumps();  // first: --check-config loads the TLS key too
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
    auto config = load_or_report(args[1]);
    if (!config || !tls_files_usable(*config, args[1])) return 1;
    for (const std::string& warning : popbridge::config_warnings(*config))
      fprintf(stderr, "%s: warning: %s\n", args[1].c_str(), warning.c_str());
    printf("%s: configuration OK\n", args[1].c_str());
    return 0;
  }
  if (args.size() != 2 || args[0] != "--config") {
    fputs(kUsage, stderr);
    return 2;
  }
  auto config = load_or_report(args[1]);
  if (!config) return 1;
  signal(SIGPIPE, SIG_IGN);
  // Message chunks (up to 2 MiB) are allocated on worker threads and freed
  // on the loop thread. With an arena per worker, each arena keeps its own
  // freed chunks: two arenas keep memory flat whatever the thread count.
  mallopt(M_ARENA_MAX, 2);
  raise_descriptor_limit();
  return popbridge::Server(args[1], std::move(*config)).run();
}
