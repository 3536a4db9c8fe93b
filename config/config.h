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

namespace popbridge {

using Duration = std::chrono::milliseconds;

enum class TlsMode { kNone, kStartTls, kImplicit };

enum class DeletePolicy { kHide };

struct ServerConfig {
  Duration idle_timeout = std::chrono::minutes(10);  // RFC 1939: at least 10 minutes
  log::Level log_level = log::Level::kInfo;
  unsigned upstream_threads = 8;  // libetpan worker threads
  // USER/PASS/AUTH on a connection without TLS from a non-loopback client.
  bool allow_plaintext_auth = false;
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
};

struct UpstreamConfig {
  std::string name = "main";
  std::string host = "127.0.0.1";
  uint16_t port = 143;
  TlsMode tls = TlsMode::kNone;
  std::string folder = "INBOX";
  Duration connect_timeout = std::chrono::seconds(10);
  Duration command_timeout = std::chrono::seconds(60);
  // TLS to the upstream: the certificate chain and host name are checked
  // against ca_file (empty: the system store) unless verify is false.
  bool verify = true;
  std::string ca_file;
};

struct MailboxConfig {
  DeletePolicy on_delete = DeletePolicy::kHide;
  std::string hide_keyword = "$POP3Deleted";
};

struct Config {
  ServerConfig server;
  std::vector<ListenerConfig> listeners;
  std::vector<UpstreamConfig> upstreams;
  MailboxConfig mailbox;
  std::optional<TlsConfig> tls;  // required when a listener uses TLS
};

// The outcome of loading: a config, or every problem found, each as
// "FILE:LINE:COL: key.path: what is wrong".
struct ConfigResult {
  std::optional<Config> config;
  std::vector<std::string> errors;
};

ConfigResult load_config_file(const std::string& path);
ConfigResult parse_config(std::string_view text, std::string_view source_name);

}  // namespace popbridge
