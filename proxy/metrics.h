// Counters for /metrics (Prometheus text format). Loop-thread only: the
// session and connection code that updates them all runs on the loop.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace popbridge {

enum class LoginOutcome { kOk, kAuthFailed, kUnavailable, kInUse, kOther, kCount };
enum class UpstreamOp { kLogin, kFetch, kCommit, kCount };
// Mirrors UpstreamError without kNone, for the upstream_errors counter.
enum class UpstreamErrorKind { kAuthFailed, kUnavailable, kNoMailbox, kMessageGone, kRefused, kCount };

class Metrics {
 public:
  // Upper bounds of the latency buckets, in seconds (+Inf is implicit).
  static constexpr std::array<double, 12> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1,    2.5,   10};

  uint64_t connections_total = 0;
  uint64_t connections_refused = 0;   // over max_sessions / max_sessions_per_ip / untrusted proxy
  uint64_t sessions_open = 0;         // gauge
  std::array<uint64_t, static_cast<size_t>(LoginOutcome::kCount)> logins{};
  uint64_t bytes_out = 0;
  uint64_t messages_retrieved = 0;
  uint64_t messages_deleted = 0;
  std::array<uint64_t, static_cast<size_t>(UpstreamErrorKind::kCount)> upstream_errors{};

  void login(LoginOutcome outcome) { ++logins[static_cast<size_t>(outcome)]; }
  void upstream_latency(UpstreamOp op, std::chrono::steady_clock::duration elapsed);
  void upstream_error(UpstreamErrorKind kind) { ++upstream_errors[static_cast<size_t>(kind)]; }

  std::string render() const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size() + 1> counts{};  // per bucket, last is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  std::array<Histogram, static_cast<size_t>(UpstreamOp::kCount)> latency_{};
};

}  // namespace popbridge
