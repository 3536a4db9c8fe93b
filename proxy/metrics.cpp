#include "proxy/metrics.h"

#include <cstdio>

namespace popbridge {
namespace {

constexpr const char* kLoginLabels[] = {"ok", "auth_failed", "unavailable", "in_use", "other"};
constexpr const char* kOpLabels[] = {"login", "fetch", "commit"};
constexpr const char* kErrorLabels[] = {"auth_failed", "unavailable", "no_mailbox", "message_gone",
                                        "refused"};

void counter(std::string& out, const char* name, const char* help, uint64_t value,
             const char* type = "counter") {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
         name + " " + std::to_string(value) + "\n";
}

std::string number(double value) {
  char text[32];
  snprintf(text, sizeof text, "%g", value);
  return text;
}

}  // namespace

void Metrics::upstream_latency(UpstreamOp op, std::chrono::steady_clock::duration elapsed) {
  Histogram& histogram = latency_[static_cast<size_t>(op)];
  const double seconds = std::chrono::duration<double>(elapsed).count();
  size_t bucket = 0;
  while (bucket < kBuckets.size() && seconds > kBuckets[bucket]) ++bucket;
  ++histogram.counts[bucket];
  histogram.sum += seconds;
  ++histogram.count;
}

std::string Metrics::render() const {
  std::string out;
  counter(out, "popbridge_connections_total", "Client connections accepted.", connections_total);
  counter(out, "popbridge_connections_refused_total",
          "Client connections refused by a limit or as an untrusted proxy.", connections_refused);
  counter(out, "popbridge_sessions_open", "Client connections open now.", sessions_open, "gauge");

  out += "# HELP popbridge_logins_total POP3 logins by outcome.\n# TYPE popbridge_logins_total counter\n";
  for (size_t i = 0; i < logins.size(); ++i)
    out += std::string("popbridge_logins_total{result=\"") + kLoginLabels[i] + "\"} " +
           std::to_string(logins[i]) + "\n";

  counter(out, "popbridge_bytes_out_total", "Octets written to POP3 clients.", bytes_out);
  counter(out, "popbridge_messages_retrieved_total", "Messages sent whole by RETR.",
          messages_retrieved);
  counter(out, "popbridge_messages_deleted_total",
          "Messages the delete policy was applied to at QUIT.", messages_deleted);

  out += "# HELP popbridge_upstream_errors_total Upstream failures by kind.\n"
         "# TYPE popbridge_upstream_errors_total counter\n";
  for (size_t i = 0; i < upstream_errors.size(); ++i)
    out += std::string("popbridge_upstream_errors_total{kind=\"") + kErrorLabels[i] + "\"} " +
           std::to_string(upstream_errors[i]) + "\n";

  out += "# HELP popbridge_upstream_seconds Time from asking the upstream to having its answer.\n"
         "# TYPE popbridge_upstream_seconds histogram\n";
  for (size_t op = 0; op < latency_.size(); ++op) {
    const Histogram& histogram = latency_[op];
    const std::string label = std::string("op=\"") + kOpLabels[op] + "\"";
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kBuckets.size(); ++b) {
      cumulative += histogram.counts[b];
      out += "popbridge_upstream_seconds_bucket{" + label + ",le=\"" + number(kBuckets[b]) + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += "popbridge_upstream_seconds_bucket{" + label + ",le=\"+Inf\"} " +
           std::to_string(histogram.count) + "\n";
    out += "popbridge_upstream_seconds_sum{" + label + "} " + number(histogram.sum) + "\n";
    out += "popbridge_upstream_seconds_count{" + label + "} " + std::to_string(histogram.count) + "\n";
  }
  return out;
}

}  // namespace popbridge
