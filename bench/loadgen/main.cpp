// popbridge-loadgen command line.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "loadgen.h"

namespace {

constexpr const char* kUsage = R"(Usage: popbridge-loadgen --port PORT MODE-OPTIONS...

Modes (--mode):
  bulk-pipelined   one session: log in, STAT, all RETRs sent at once, QUIT
  bulk-sequential  one session: log in, STAT, one RETR at a time, QUIT
  big              one session: log in, RETR 1 (reports time to first byte)
  logins           --sessions N x (connect, USER, PASS, STAT, QUIT), --concurrency C at once
  open             --sessions N connections at once, greeting only; prints a
                   "ready" JSON line, holds them until stdin ends or --hold S
                   seconds, then closes them
  sessions         --sessions N logged in at once (a barrier after PASS), each
                   RETRs --retr M messages one at a time

Options:
  --host ADDR          server address (default 127.0.0.1; IPv6 literal allowed)
  --port PORT          server port (required)
  --user U --pass P    credentials (all sessions)
  --users FILE         "user:password" lines; session i uses line i mod n
  --sessions N         sessions in total
  --concurrency C      sessions at once
  --connect-window W   connections not yet greeted at once (default 256)
  --retr M             RETR messages 1..M per session (-1: all, from STAT)
  --depth D            RETRs in flight per session (0: all at once)
  --stat               send STAT after login
  --barrier            start commands only when every session is logged in
  --expect FILE        "MSGNO LENGTH CRC32HEX" lines: the dot-stuffed body as
                       sent (with the CRLF before the final "."); without it the
                       first fetch of each message number is the reference
  --no-hash            check lengths only
  --hold S             open mode: hold for S seconds (default: until stdin ends)
  --timeout S          give up after S seconds (default 600)

Prints one JSON object (bytes, seconds, MB/s, latency percentiles, errors,
time to first byte). Exit status 0 when there was no error, 1 otherwise.
)";

[[noreturn]] void usage_error(const std::string& what) {
  fprintf(stderr, "popbridge-loadgen: %s\n\n%s", what.c_str(), kUsage);
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  loadgen::Options o;
  bool sessions_set = false, concurrency_set = false, retr_set = false, depth_set = false;
  std::string user, pass, users_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("missing value for " + a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      fputs(kUsage, stdout);
      return 0;
    } else if (a == "--mode") {
      o.mode = value();
    } else if (a == "--host") {
      o.host = value();
    } else if (a == "--port") {
      o.port = atoi(value().c_str());
    } else if (a == "--user") {
      user = value();
    } else if (a == "--pass") {
      pass = value();
    } else if (a == "--users") {
      users_file = value();
    } else if (a == "--sessions") {
      o.sessions = atoi(value().c_str());
      sessions_set = true;
    } else if (a == "--concurrency") {
      o.concurrency = atoi(value().c_str());
      concurrency_set = true;
    } else if (a == "--connect-window") {
      o.connect_window = atoi(value().c_str());
    } else if (a == "--retr") {
      o.retr = atoi(value().c_str());
      retr_set = true;
    } else if (a == "--depth") {
      o.depth = atoi(value().c_str());
      depth_set = true;
    } else if (a == "--stat") {
      o.stat = true;
    } else if (a == "--barrier") {
      o.barrier = true;
    } else if (a == "--expect") {
      o.expect_file = value();
    } else if (a == "--no-hash") {
      o.hash = false;
    } else if (a == "--hold") {
      o.hold = atof(value().c_str());
    } else if (a == "--timeout") {
      o.timeout = atof(value().c_str());
    } else {
      usage_error("unknown option " + a);
    }
  }
  if (o.port <= 0 || o.port > 65535) usage_error("--port is required");

  // Mode presets; explicit options win.
  if (o.mode == "bulk-pipelined" || o.mode == "bulk-sequential") {
    if (!retr_set) o.retr = -1;
    if (!depth_set) o.depth = o.mode == "bulk-pipelined" ? 0 : 1;
  } else if (o.mode == "big") {
    if (!retr_set) o.retr = 1;
  } else if (o.mode == "logins") {
    o.stat = true;
    if (!concurrency_set) o.concurrency = 1;
  } else if (o.mode == "open") {
    o.open_only = true;
    if (!concurrency_set) o.concurrency = o.sessions;
  } else if (o.mode == "sessions") {
    if (!concurrency_set) o.concurrency = o.sessions;
    if (!retr_set) o.retr = 20;
    o.barrier = true;
  } else {
    usage_error("unknown mode " + o.mode);
  }
  (void)sessions_set;
  if (o.sessions < 1 || o.concurrency < 1) usage_error("--sessions and --concurrency must be >= 1");
  if (o.barrier && o.concurrency < o.sessions)
    usage_error("--barrier needs --concurrency >= --sessions");
  if (o.connect_window < 1) o.connect_window = 1;

  if (!users_file.empty()) {
    std::ifstream in(users_file);
    if (!in) usage_error("cannot read " + users_file);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      const size_t colon = line.find(':');
      if (colon == std::string::npos) usage_error("bad line in " + users_file + ": " + line);
      o.users.emplace_back(line.substr(0, colon), line.substr(colon + 1));
    }
  }
  if (!user.empty()) o.users.emplace_back(user, pass);
  if (o.users.empty() && !o.open_only) usage_error("--user/--pass or --users is required");
  if (o.users.empty()) o.users.emplace_back("nobody", "");

  loadgen::Runner runner(std::move(o));
  return runner.run();
}
