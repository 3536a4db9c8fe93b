// Starts sessions within the concurrency limits, holds the barrier, and
// reports the results as one JSON object on stdout.
#include <sys/resource.h>

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "loadgen.h"

namespace loadgen {
namespace {

constexpr size_t kMaxErrorSamples = 10;

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank.
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  if (rank == 0) rank = 1;
  return sorted[std::min(rank, sorted.size()) - 1];
}

std::string stats_json(Samples samples) {
  std::vector<double>& v = samples.ms;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  char buf[256];
  snprintf(buf, sizeof buf,
           "{\"n\": %zu, \"mean\": %.3f, \"p50\": %.3f, \"p90\": %.3f, \"p99\": %.3f, "
           "\"max\": %.3f}",
           v.size(), v.empty() ? 0.0 : sum / static_cast<double>(v.size()), percentile(v, 50),
           percentile(v, 90), percentile(v, 99), v.empty() ? 0.0 : v.back());
  return buf;
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

}  // namespace

Runner::Runner(Options options) : opt_(std::move(options)) {}

void Runner::load_expectations() {
  if (opt_.expect_file.empty()) return;
  std::ifstream in(opt_.expect_file);
  if (!in) {
    fprintf(stderr, "cannot read %s\n", opt_.expect_file.c_str());
    exit(2);
  }
  // Lines: MSGNO LENGTH CRC32HEX (the dot-stuffed CRLF body as sent, up to
  // and including the CRLF before the terminating ".").
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    int msg = 0;
    uint64_t length = 0;
    std::string crc;
    if (!(fields >> msg >> length >> crc)) {
      fprintf(stderr, "%s: bad line: %s\n", opt_.expect_file.c_str(), line.c_str());
      exit(2);
    }
    expect_[msg] = {length, static_cast<uint32_t>(strtoul(crc.c_str(), nullptr, 16))};
  }
}

void Runner::check_body(int msg, uint64_t length, uint32_t crc) {
  auto it = expect_.find(msg);
  Expectation* want = nullptr;
  if (it != expect_.end()) {
    want = &it->second;
  } else {
    auto [learned, inserted] = learned_.try_emplace(msg, Expectation{length, crc});
    if (inserted) return;  // the first fetch is the reference for the rest
    want = &learned->second;
  }
  const bool crc_ok = !opt_.hash || want->crc == crc;
  if (want->length == length && crc_ok) {
    res_.verified += 1;
    return;
  }
  char buf[200];
  snprintf(buf, sizeof buf, "RETR %d: got %" PRIu64 " octets crc %08x, expected %" PRIu64
           " octets crc %08x", msg, length, crc, want->length, want->crc);
  error("mismatch", buf);
}

void Runner::error(const std::string& kind, const std::string& detail) {
  res_.errors[kind] += 1;
  if (res_.error_samples.size() < kMaxErrorSamples) res_.error_samples.push_back(kind + ": " + detail);
}

void Runner::launch() {
  while (!finished_ && started_ < opt_.sessions && active_ < opt_.concurrency &&
         ungreeted_ < opt_.connect_window) {
    auto* c = conns_[static_cast<size_t>(started_)].get();
    ++started_;
    ++active_;
    ++ungreeted_;
    c->start();  // may fail at once and call on_session_done
  }
}

void Runner::on_greeted(Connection*) {
  --ungreeted_;
  res_.greeted += 1;
  launch();
  if (opt_.open_only) maybe_finish();
}

void Runner::on_logged_in(Connection* c) {
  if (!opt_.barrier) return;
  ++arrived_;
  if (!c->done()) waiting_.push_back(c);
  if (arrived_ == opt_.sessions && !released_) {
    released_ = true;
    std::vector<Connection*> waiting;
    waiting.swap(waiting_);
    for (Connection* w : waiting) w->release_barrier();
  }
}

void Runner::on_session_done(Connection* c) {
  if (!c->greeted()) --ungreeted_;
  --active_;
  launch();
  maybe_finish();
}

void Runner::maybe_finish() {
  if (finished_) return;
  if (opt_.open_only) {
    // Everyone has either been greeted or failed: report and hold.
    if (started_ == opt_.sessions && ungreeted_ == 0 && !ready_printed_) all_open();
    return;
  }
  if (started_ == opt_.sessions && active_ == 0) finish();
}

void Runner::all_open() {
  ready_printed_ = true;
  t_ready_ = now();
  printf("{\"event\": \"ready\", \"open\": %" PRIu64 ", \"errors\": %zu, \"seconds\": %.3f}\n",
         res_.greeted, static_cast<size_t>(opt_.sessions) - res_.greeted,
         static_cast<double>(t_ready_ - t0_) / 1e9);
  fflush(stdout);
  if (opt_.hold > 0) {
    uv_timer_start(&hold_timer_, &Runner::on_hold, static_cast<uint64_t>(opt_.hold * 1000), 0);
  }
  if (uv_guess_handle(0) == UV_NAMED_PIPE || uv_guess_handle(0) == UV_FILE ||
      uv_guess_handle(0) == UV_TTY) {
    if (uv_guess_handle(0) == UV_NAMED_PIPE && uv_pipe_init(&loop_, &stdin_pipe_, 0) == 0 &&
        uv_pipe_open(&stdin_pipe_, 0) == 0) {
      stdin_pipe_.data = this;
      stdin_open_ = true;
      uv_read_start(
          reinterpret_cast<uv_stream_t*>(&stdin_pipe_),
          [](uv_handle_t*, size_t, uv_buf_t* buf) {
            static char b[256];
            *buf = uv_buf_init(b, sizeof b);
          },
          &Runner::on_stdin);
      return;
    }
  }
  if (opt_.hold <= 0) finish();
}

void Runner::on_stdin(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  if (nread == 0) return;
  static_cast<Runner*>(s->data)->finish();  // any line, or EOF, ends the hold
}

void Runner::on_hold(uv_timer_t* t) { static_cast<Runner*>(t->data)->finish(); }

void Runner::on_timeout(uv_timer_t* t) {
  auto* self = static_cast<Runner*>(t->data);
  if (self->opt_.open_only && self->ready_printed_) return self->finish();
  uint64_t unfinished = static_cast<uint64_t>(self->opt_.sessions - self->started_);
  for (auto& c : self->conns_)
    if (c->started() && !c->done()) ++unfinished;
  self->res_.errors["timeout"] += unfinished;
  if (self->res_.error_samples.size() < kMaxErrorSamples)
    self->res_.error_samples.push_back("timeout: " + std::to_string(unfinished) +
                                       " sessions unfinished after " +
                                       std::to_string(self->opt_.timeout) + " s");
  self->finish();
}

void Runner::finish() {
  if (finished_) return;
  finished_ = true;
  t_end_ = now();
  for (auto& c : conns_) c->close_now();
  uv_timer_stop(&timeout_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timeout_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&hold_timer_), nullptr);
  if (stdin_open_) uv_close(reinterpret_cast<uv_handle_t*>(&stdin_pipe_), nullptr);
}

void Runner::print_result() {
  const double seconds = static_cast<double>(t_end_ - t0_) / 1e9;
  // Time during which at least one session was in its RETR phase (first
  // RETR sent to last RETR answered): with sessions one after another this
  // leaves out their logins; with sessions at once it is the whole span.
  double span = 0;
  if (res_.first_retr_ns != 0 && res_.last_retr_ns > res_.first_retr_ns)
    span = static_cast<double>(res_.last_retr_ns - res_.first_retr_ns) / 1e9;
  auto phases = res_.retr_phases;
  std::sort(phases.begin(), phases.end());
  uint64_t busy_ns = 0, cur_start = 0, cur_end = 0;
  for (const auto& [start, end] : phases) {
    if (cur_end == 0 || start > cur_end) {
      busy_ns += cur_end - cur_start;
      cur_start = start;
      cur_end = end;
    } else if (end > cur_end) {
      cur_end = end;
    }
  }
  busy_ns += cur_end - cur_start;
  double xfer = phases.empty() ? span : static_cast<double>(busy_ns) / 1e9;
  uint64_t error_total = 0;
  for (auto& [k, v] : res_.errors) error_total += v;
  std::string out = "{";
  char buf[2048];
  snprintf(buf, sizeof buf,
           "\"mode\": \"%s\", \"sessions\": %d, \"concurrency\": %d, \"sessions_done\": %" PRIu64
           ", \"greeted\": %" PRIu64 ", \"logins\": %" PRIu64 ", \"messages\": %" PRIu64
           ", \"verified\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"rx_bytes\": %" PRIu64
           ", \"seconds\": %.6f, \"xfer_seconds\": %.6f, \"retr_span_seconds\": %.6f, \"mbps\": %.3f, \"logins_per_s\": %.2f"
           ", \"client_cpu_s\": %.3f, \"error_count\": %" PRIu64,
           json_escape(opt_.mode).c_str(), opt_.sessions, opt_.concurrency, res_.sessions_done,
           res_.greeted, res_.logins, res_.messages, res_.verified, res_.body_bytes, res_.rx_bytes,
           seconds, xfer, span, xfer > 0 ? static_cast<double>(res_.body_bytes) / xfer / 1e6 : 0.0,
           seconds > 0 ? static_cast<double>(res_.logins) / seconds : 0.0, cpu_seconds(),
           error_total);
  out += buf;
  if (opt_.open_only) {
    snprintf(buf, sizeof buf, ", \"open_seconds\": %.6f",
             t_ready_ > t0_ ? static_cast<double>(t_ready_ - t0_) / 1e9 : 0.0);
    out += buf;
  }
  out += ", \"errors\": {";
  bool first = true;
  for (auto& [k, v] : res_.errors) {
    snprintf(buf, sizeof buf, "%s\"%s\": %" PRIu64, first ? "" : ", ", json_escape(k).c_str(), v);
    out += buf;
    first = false;
  }
  out += "}, \"error_samples\": [";
  for (size_t i = 0; i < res_.error_samples.size(); ++i) {
    out += (i ? ", \"" : "\"") + json_escape(res_.error_samples[i]) + "\"";
  }
  out += "], \"latency_ms\": {\"retr\": " + stats_json(res_.retr) +
         ", \"login\": " + stats_json(res_.login) + ", \"other\": " + stats_json(res_.other);
  Samples all;
  for (const Samples* s : {&res_.retr, &res_.other})
    all.ms.insert(all.ms.end(), s->ms.begin(), s->ms.end());
  out += ", \"all\": " + stats_json(all) + "}";
  out += ", \"ttfb_ms\": " + stats_json(res_.ttfb) + ", \"ttfb_first_ms\": " +
         stats_json(res_.ttfb_first) + "}\n";
  fputs(out.c_str(), stdout);
  fflush(stdout);
}

int Runner::run() {
  // 10,000 connections need more descriptors than the usual soft limit.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
      limit.rlim_cur < static_cast<rlim_t>(opt_.concurrency) + 64) {
    fprintf(stderr, "warning: RLIMIT_NOFILE %lu is below the concurrency %d\n",
            static_cast<unsigned long>(limit.rlim_cur), opt_.concurrency);
  }
  load_expectations();
  uv_loop_init(&loop_);
  sockaddr_in6 a6{};
  sockaddr_in a4{};
  if (opt_.host.find(':') != std::string::npos) {
    if (uv_ip6_addr(opt_.host.c_str(), opt_.port, &a6) != 0) {
      fprintf(stderr, "bad address %s\n", opt_.host.c_str());
      return 2;
    }
    memcpy(&addr_, &a6, sizeof a6);
  } else {
    if (uv_ip4_addr(opt_.host.c_str(), opt_.port, &a4) != 0) {
      fprintf(stderr, "bad address %s\n", opt_.host.c_str());
      return 2;
    }
    memcpy(&addr_, &a4, sizeof a4);
  }
  conns_.reserve(static_cast<size_t>(opt_.sessions));
  for (int i = 0; i < opt_.sessions; ++i) conns_.push_back(std::make_unique<Connection>(*this, i));
  uv_timer_init(&loop_, &timeout_timer_);
  uv_timer_init(&loop_, &hold_timer_);
  timeout_timer_.data = this;
  hold_timer_.data = this;
  uv_timer_start(&timeout_timer_, &Runner::on_timeout, static_cast<uint64_t>(opt_.timeout * 1000), 0);
  t0_ = now();
  launch();
  maybe_finish();
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  print_result();
  uint64_t error_total = 0;
  for (auto& [k, v] : res_.errors) error_total += v;
  return error_total == 0 ? 0 : 1;
}

}  // namespace loadgen
