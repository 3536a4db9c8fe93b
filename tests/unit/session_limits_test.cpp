// The failed-login penalty and the metrics text.
#include <gtest/gtest.h>

#include "proxy/auth_penalty.h"
#include "proxy/metrics.h"

namespace popbridge {
namespace {

using namespace std::chrono_literals;

TEST(AuthPenalty, DoublesPerFailureUpToTheMaximumPerAddress) {
  AuthPenalty penalty;
  const auto now = AuthPenalty::Clock::now();
  EXPECT_EQ(penalty.owed("192.0.2.1", 2s, 15s, now), 0s);
  const Duration expected[] = {2s, 4s, 8s, 15s, 15s};
  for (Duration owed : expected) {
    penalty.failed("192.0.2.1", now);
    EXPECT_EQ(penalty.owed("192.0.2.1", 2s, 15s, now), owed);
  }
  EXPECT_EQ(penalty.owed("192.0.2.2", 2s, 15s, now), 0s);  // another client is not punished
}

TEST(AuthPenalty, SuccessAndQuietTimeForget) {
  AuthPenalty penalty;
  const auto now = AuthPenalty::Clock::now();
  penalty.failed("192.0.2.1", now);
  penalty.failed("192.0.2.1", now);
  penalty.succeeded("192.0.2.1");
  EXPECT_EQ(penalty.owed("192.0.2.1", 2s, 15s, now), 0s);
  penalty.failed("192.0.2.1", now);
  EXPECT_EQ(penalty.owed("192.0.2.1", 2s, 15s, now + 16min), 0s);
  penalty.failed("192.0.2.1", now + 16min);
  EXPECT_EQ(penalty.owed("192.0.2.1", 2s, 15s, now + 16min), 2s);  // counting starts again
}

TEST(AuthPenalty, ZeroDelayStaysZero) {
  AuthPenalty penalty;
  const auto now = AuthPenalty::Clock::now();
  for (int i = 0; i < 40; ++i) penalty.failed("192.0.2.1", now);
  EXPECT_EQ(penalty.owed("192.0.2.1", 0s, 15s, now), 0s);
}

TEST(Metrics, RendersPrometheusText) {
  Metrics metrics;
  metrics.connections_total = 3;
  metrics.login(LoginOutcome::kOk);
  metrics.login(LoginOutcome::kAuthFailed);
  metrics.login(LoginOutcome::kAuthFailed);
  metrics.upstream_latency(UpstreamOp::kFetch, 3ms);
  metrics.upstream_latency(UpstreamOp::kFetch, 2s);
  metrics.upstream_error(UpstreamErrorKind::kUnavailable);
  const std::string text = metrics.render();
  EXPECT_NE(text.find("popbridge_connections_total 3\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_logins_total{result=\"ok\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_logins_total{result=\"auth_failed\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_errors_total{kind=\"unavailable\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_seconds_bucket{op=\"fetch\",le=\"0.0025\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_seconds_bucket{op=\"fetch\",le=\"0.005\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_seconds_bucket{op=\"fetch\",le=\"2.5\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_seconds_count{op=\"fetch\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("popbridge_upstream_seconds_count{op=\"login\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE popbridge_sessions_open gauge\n"), std::string::npos);
}

}  // namespace
}  // namespace popbridge
