// popbridge's configuration: the TOML file parsed into plain structs,
// validated once at start-up. Everything after loading reads these structs.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.h"
#include "config/uidl_format.h"

struct sockaddr;

namespace popbridge {

using Duration = std::chrono::milliseconds;

enum class TlsMode { kNone, kStartTls, kImplicit };

// What QUIT does to the messages a client deleted (and retention to old hidden ones).
enum class DeletePolicy { kHide, kSeen, kMove, kExpunge };
enum class RetentionAction { kMove, kExpunge };
enum class Visible { kAll, kUnseen };

struct ServerConfig {
  Duration idle_timeout = std::chrono::minutes(10);  // RFC 1939: at least 10 minutes
  log::Level log_level = log::Level::kInfo;
  unsigned upstream_threads = 8;  // libetpan worker threads
  // USER/PASS/AUTH on a connection without TLS from a non-loopback client.
  bool allow_plaintext_auth = false;
  unsigned max_sessions = 10000;        // open client connections, all listeners together
  unsigned max_sessions_per_ip = 100;   // 0: no limit
  Duration auth_failure_delay = std::chrono::seconds(2);       // before -ERR [AUTH]
  Duration auth_failure_delay_max = std::chrono::seconds(15);  // doubles per failure from one IP
  Duration send_timeout = std::chrono::seconds(60);  // output stuck above the watermark this long: drop
  Duration shutdown_grace = std::chrono::seconds(30);  // SIGTERM: time open sessions get to finish
  enum class LogFormat { kText, kJson } log_format = LogFormat::kText;
};

// An address block such as 10.0.0.0/8 or 2001:db8::/32.
struct Cidr {
  int family = 0;              // AF_INET or AF_INET6
  unsigned char bytes[16]{};
  unsigned prefix = 0;
  bool contains(const sockaddr* address) const;
};

// [tls]: the certificate clients see on STLS and implicit-TLS listeners.
struct TlsConfig {
  std::string certificate;  // PEM, chain allowed
  std::string key;          // PEM
  std::string min_version = "1.2";  // "1.0" | "1.1" | "1.2" | "1.3"
  std::string ciphers;      // OpenSSL cipher list for TLS <= 1.2; empty: a sane default
};

struct ListenerConfig {
  std::string address;  // as written: "127.0.0.1:1110" or "[::1]:1110"
  std::string host;     // "127.0.0.1" or "::1" (brackets removed)
  uint16_t port = 0;
  TlsMode tls = TlsMode::kNone;
  // A load balancer in front sends a PROXY protocol header (v1 or v2) naming
  // the real client; accepted only from trusted_proxies, others are refused.
  bool proxy_protocol = false;
  std::vector<Cidr> trusted_proxies;
};

// [metrics]: Prometheus text format at /metrics and a /healthz probe.
struct MetricsConfig {
  std::string address;  // "127.0.0.1:9110"; empty: no metrics listener
  std::string host;
  uint16_t port = 0;
};

struct HostPort {
  std::string host;
  uint16_t port = 0;
};

struct UpstreamConfig {
  std::string name = "main";
  std::string host = "127.0.0.1";
  uint16_t port = 143;
  // Where to connect, tried in order: `hosts`, or else host and port.
  std::vector<HostPort> hosts;
  // Users whose domain (after the last '@') is listed here use this
  // upstream; the one upstream without domains takes everyone else.
  std::vector<std::string> domains;
  // The IMAP login: the name as the client typed it ("full") or without its
  // "@domain" ("local").
  enum class Username { kFull, kLocal } username = Username::kFull;
  TlsMode tls = TlsMode::kNone;
  std::string folder = "INBOX";
  Duration connect_timeout = std::chrono::seconds(10);
  Duration command_timeout = std::chrono::seconds(60);
  // Connections open to this upstream at most (more logins: -ERR [SYS/TEMP]),
  // and of them still logging in (more logins wait their turn).
  size_t max_connections = 5000;
  size_t max_logins_in_flight = 32;
  // TLS to the upstream: the certificate chain and host name are checked
  // against ca_file (empty: the system store) unless verify is false.
  bool verify = true;
  std::string ca_file;
};

struct MailboxConfig {
  DeletePolicy on_delete = DeletePolicy::kHide;
  std::string hide_keyword = "$POP3Deleted";
  std::string move_to = "Trash";                  // for on_delete / retention_action "move"
  unsigned retention_days = 0;                    // 0: hidden messages stay forever
  RetentionAction retention_action = RetentionAction::kMove;
  bool mark_seen_on_retr = false;                 // \Seen on what RETR sent whole, at QUIT
  Visible visible = Visible::kAll;
  unsigned max_messages = 0;                      // 0: no limit; else the oldest N
  std::string folder_separator;                   // "#": "alice#Archive" opens Archive; "": off
  std::string uidl_format_spec = "dovecot";
  UidlFormat uidl_format = UidlFormat::dovecot();
  bool lock = true;                               // one POP3 session per mailbox ([IN-USE])
  bool enable_last = true;                        // RFC 1460 LAST
};

struct Config {
  ServerConfig server;
  std::vector<ListenerConfig> listeners;
  std::vector<UpstreamConfig> upstreams;
  MailboxConfig mailbox;
  std::optional<TlsConfig> tls;  // required when a listener uses TLS
  MetricsConfig metrics;
};

// The outcome of loading: a config, or every problem found, each as
// "FILE:LINE:COL: key.path: what is wrong".
struct ConfigResult {
  std::optional<Config> config;
  std::vector<std::string> errors;
};

ConfigResult load_config_file(const std::string& path);
ConfigResult parse_config(std::string_view text, std::string_view source_name);

// What a valid configuration does that an admin should know about, one
// message each: logged as warnings at start and on reload, printed by
// --check-config (which still succeeds). Today: an upstream host reached
// with tls = "none" that is not on loopback (credentials in clear text).
std::vector<std::string> config_warnings(const Config& config);
// An upstream host on this machine: 127.0.0.0/8, ::1 (bracketed or not,
// also as ::ffff:127.x.y.z) or "localhost".
bool is_loopback_host(std::string_view host);

}  // namespace popbridge
