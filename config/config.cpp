// Loads popbridge.toml into the structs of config.h.
//
// Every problem becomes one line "FILE:LINE:COL: key.path: message" and all
// problems are collected before giving up. Positions come from toml++ source
// regions: the key's position for unknown keys, the value's position for bad
// values, the [[table]] header's position for a missing key in that table, and
// 1:1 for a missing top-level table. Arrays of tables are named with a 0-based
// index: "listener[0].address", "upstream[1]".
#include "config/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <sstream>
#include <toml++/toml.h>

namespace popbridge {
namespace {

// A key as it appears in a path: bare if TOML would allow it bare, else quoted.
std::string path_key(std::string_view key) {
  bool bare = !key.empty();
  for (char c : key) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-')) {
      bare = false;
      break;
    }
  }
  if (bare) return std::string(key);
  std::string quoted = "\"";
  for (char c : key) {
    if (c == '"' || c == '\\') quoted += '\\';
    quoted += c;
  }
  return quoted + "\"";
}

std::string join(std::string_view parent, std::string_view key) {
  std::string path(parent);
  if (!path.empty()) path += '.';
  return path + path_key(key);
}

std::string indexed(std::string_view name, size_t index) {
  return std::string(name) + "[" + std::to_string(index) + "]";
}

// Quotes a user-supplied string for an error message.
std::string quote(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool is_ipv4(const std::string& s) {
  in_addr addr;
  return inet_pton(AF_INET, s.c_str(), &addr) == 1;
}

bool is_ipv6(const std::string& s) {
  in6_addr addr;
  return inet_pton(AF_INET6, s.c_str(), &addr) == 1;
}

// A DNS name: dot-separated labels of letters, digits, '-' and '_', each
// 1-63 characters, not starting or ending with '-'; at most 253 characters.
bool is_hostname(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  if (s.back() == '.') s.remove_suffix(1);  // fully qualified "example.org."
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    std::string_view label = s.substr(start, dot == std::string_view::npos ? s.npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-')
      return false;
    for (char c : label) {
      if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_'))
        return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// RFC 3501 ATOM-CHAR: any CHAR except atom-specials
// ("(" / ")" / "{" / SP / CTL / "%" / "*" / DQUOTE / "\" / "]").
bool is_atom_char(unsigned char c) {
  if (c <= 0x20 || c >= 0x7f) return false;
  switch (c) {
    case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
      return false;
    default:
      return true;
  }
}

class Loader {
 public:
  explicit Loader(std::string_view file) : file_(file) {}

  // The errors in file order (toml++ tables iterate keys alphabetically).
  std::vector<std::string> take_errors() {
    std::stable_sort(errors_.begin(), errors_.end(), [](const Error& a, const Error& b) {
      return std::pair(a.line, a.column) < std::pair(b.line, b.column);
    });
    std::vector<std::string> out;
    for (auto& e : errors_) out.push_back(std::move(e.text));
    errors_.clear();
    return out;
  }
  bool ok() const { return errors_.empty(); }

  void error(const toml::source_position& pos, std::string_view path, std::string_view message) {
    uint32_t line_no = pos ? pos.line : 1;
    uint32_t column = pos ? pos.column : 1;
    std::ostringstream line;
    line << file_ << ':' << line_no << ':' << column << ": ";
    if (!path.empty()) line << path << ": ";
    line << message;
    errors_.push_back({line_no, column, line.str()});
  }
  void error(const toml::node& node, std::string_view path, std::string_view message) {
    error(node.source().begin, path, message);
  }

  void unknown_key(const toml::key& key, std::string_view path) {
    error(key.source().begin, path, "unknown key");
  }

  // --- typed values -------------------------------------------------------

  std::optional<std::string> string(const toml::node& node, std::string_view path) {
    if (auto s = node.as_string()) return s->get();
    error(node, path, "expected a string");
    return std::nullopt;
  }

  std::optional<std::string> nonempty_string(const toml::node& node, std::string_view path) {
    auto s = string(node, path);
    if (s && s->empty()) {
      error(node, path, "must not be empty");
      return std::nullopt;
    }
    return s;
  }

  // A folder name that goes into IMAP commands (SELECT, MOVE, COPY,
  // CREATE): a control character would end the command early (CR, LF), cut
  // it (NUL) or reach the server as garbage. The rest is sent as a quoted
  // string or, beyond ASCII, in modified UTF-7.
  std::optional<std::string> imap_folder(const toml::node& node, std::string_view path) {
    auto s = nonempty_string(node, path);
    if (!s) return std::nullopt;
    const auto control = std::find_if(s->begin(), s->end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (control != s->end()) {
      error(node, path, quote(*s) + " is not a valid IMAP folder name (control character " +
                            quote(std::string(1, *control)) + ")");
      return std::nullopt;
    }
    return s;
  }

  std::optional<bool> boolean(const toml::node& node, std::string_view path) {
    if (auto b = node.as_boolean()) return b->get();
    error(node, path, "expected true or false");
    return std::nullopt;
  }

  // A file the process must read at start-up (and on reload).
  std::optional<std::string> readable_file(const toml::node& node, std::string_view path) {
    auto s = nonempty_string(node, path);
    if (s && access(s->c_str(), R_OK) != 0) {
      error(node, path, *s + ": cannot read: " + std::strerror(errno));
      return std::nullopt;
    }
    return s;
  }

  std::optional<int64_t> integer(const toml::node& node, std::string_view path) {
    if (auto i = node.as_integer()) return i->get();
    error(node, path, "expected an integer");
    return std::nullopt;
  }

  std::optional<int64_t> integer_in(const toml::node& node, std::string_view path, int64_t lo,
                                    int64_t hi) {
    auto i = integer(node, path);
    if (i && (*i < lo || *i > hi)) {
      error(node, path, "must be " + std::to_string(lo) + "-" + std::to_string(hi));
      return std::nullopt;
    }
    return i;
  }

  std::optional<uint16_t> port(const toml::node& node, std::string_view path) {
    auto i = integer_in(node, path, 1, 65535);
    if (!i) return std::nullopt;
    return static_cast<uint16_t>(*i);
  }

  std::optional<TlsMode> tls(const toml::node& node, std::string_view path) {
    auto s = string(node, path);
    if (!s) return std::nullopt;
    if (*s == "none") return TlsMode::kNone;
    if (*s == "starttls") return TlsMode::kStartTls;
    if (*s == "implicit") return TlsMode::kImplicit;
    error(node, path, "must be one of none, starttls, implicit (got " + quote(*s) + ")");
    return std::nullopt;
  }

  // "500ms", "30s", "10m", "2h", "1d", or an integer number of seconds.
  std::optional<Duration> duration(const toml::node& node, std::string_view path) {
    static constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
    static const char* kHint =
        " (use e.g. \"500ms\", \"30s\", \"10m\", \"2h\", \"1d\" or an integer number of seconds)";
    int64_t count = 0;
    int64_t ms_per_unit = 1000;
    if (auto i = node.as_integer()) {
      count = i->get();
    } else if (auto s = node.as_string()) {
      std::string_view text = s->get();
      size_t digits = 0;
      bool negative = !text.empty() && text.front() == '-';
      std::string_view rest = negative ? text.substr(1) : text;
      while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
      std::string_view number = rest.substr(0, digits);
      std::string_view unit = rest.substr(digits);
      if (unit == "ms") ms_per_unit = 1;
      else if (unit == "s") ms_per_unit = 1000;
      else if (unit == "m") ms_per_unit = 60 * 1000;
      else if (unit == "h") ms_per_unit = 60 * 60 * 1000;
      else if (unit == "d") ms_per_unit = 24 * 60 * 60 * 1000;
      else ms_per_unit = 0;
      if (number.empty() || ms_per_unit == 0) {
        error(node, path, "invalid duration " + quote(text) + kHint);
        return std::nullopt;
      }
      if (negative) {
        error(node, path, "must be greater than zero");
        return std::nullopt;
      }
      if (number.size() > 18) {  // would not fit in milliseconds anyway
        error(node, path, "duration " + quote(text) + " is too large");
        return std::nullopt;
      }
      count = std::stoll(std::string(number));
    } else {
      error(node, path, std::string("expected a duration string or an integer") + kHint);
      return std::nullopt;
    }
    if (count <= 0) {
      error(node, path, "must be greater than zero");
      return std::nullopt;
    }
    if (count > kMax / ms_per_unit) {
      error(node, path, "duration is too large");
      return std::nullopt;
    }
    return Duration(count * ms_per_unit);
  }

  // Like duration(), but zero ("0s", "0", 0) is allowed: it turns the delay off.
  std::optional<Duration> duration_or_zero(const toml::node& node, std::string_view path) {
    if (auto i = node.as_integer(); i && i->get() == 0) return Duration(0);
    if (auto s = node.as_string()) {
      std::string_view text = s->get();
      const size_t digits = text.find_first_not_of('0');
      const std::string_view unit = digits == std::string_view::npos ? "" : text.substr(digits);
      if (digits != 0 && (unit.empty() || unit == "ms" || unit == "s" || unit == "m" ||
                          unit == "h" || unit == "d")) {
        return Duration(0);
      }
    }
    return duration(node, path);
  }

  // Calls each(element, "path[i]", text) for every string of an array;
  // reports a missing array (with `expected`) and elements that are not
  // (non-empty, when asked) strings.
  template <typename Each>
  void string_array(const toml::node& node, std::string_view path, bool allow_empty_array,
                    bool nonempty, std::string_view expected, Each each) {
    const toml::array* array = node.as_array();
    if (!array || (!allow_empty_array && array->empty())) {
      error(node, path, expected);
      return;
    }
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = (*array)[i];
      const std::string element_path = std::string(path) + "[" + std::to_string(i) + "]";
      auto text = nonempty ? nonempty_string(element, element_path) : string(element, element_path);
      if (text) each(element, element_path, *text);
    }
  }

  // ["10.0.0.0/8", "::1/128", "192.0.2.7"] (a bare address is a /32 or /128).
  void cidr_list(const toml::node& node, std::string_view path, std::vector<Cidr>& out) {
    string_array(node, path, true, false, "expected an array of address blocks, e.g. [\"10.0.0.0/8\"]",
                 [&](const toml::node& element, const std::string& element_path, const std::string& text) {
      Cidr cidr;
      const size_t slash = text.find('/');
      const std::string address = text.substr(0, slash);
      cidr.family = address.find(':') != std::string::npos ? AF_INET6 : AF_INET;
      const unsigned max_prefix = cidr.family == AF_INET ? 32 : 128;
      cidr.prefix = max_prefix;
      bool ok = inet_pton(cidr.family, address.c_str(), cidr.bytes) == 1;
      if (ok && slash != std::string::npos) {
        const std::string prefix = text.substr(slash + 1);
        ok = all_digits(prefix) && prefix.size() <= 3 && std::stoul(prefix) <= max_prefix;
        if (ok) cidr.prefix = static_cast<unsigned>(std::stoul(prefix));
      }
      if (!ok) {
        error(element, element_path, quote(text) + " is not an address block like \"10.0.0.0/8\"");
        return;
      }
      out.push_back(cidr);
    });
  }

  void metrics_section(const toml::table& table, MetricsConfig& out) {
    for (auto&& [key, node] : table) {
      std::string path = join("metrics", key.str());
      if (key == "address") {
        if (auto text = node.as_string(); text && text->get().empty()) continue;  // off
        ListenerConfig parsed;
        const size_t before = errors_.size();
        listener_address(node, path, parsed);
        if (errors_.size() == before) {
          out.address = parsed.address;
          out.host = parsed.host;
          out.port = parsed.port;
        }
      } else {
        unknown_key(key, path);
      }
    }
  }

  // --- sections -----------------------------------------------------------

  void server(const toml::table& table, ServerConfig& out) {
    for (auto&& [key, node] : table) {
      std::string path = join("server", key.str());
      if (key == "idle_timeout") {
        if (auto d = duration(node, path)) out.idle_timeout = *d;
      } else if (key == "log_level") {
        if (auto s = string(node, path)) {
          if (*s == "debug") out.log_level = log::Level::kDebug;
          else if (*s == "info") out.log_level = log::Level::kInfo;
          else if (*s == "warn") out.log_level = log::Level::kWarn;
          else if (*s == "error") out.log_level = log::Level::kError;
          else error(node, path, "must be one of debug, info, warn, error (got " + quote(*s) + ")");
        }
      } else if (key == "upstream_threads") {
        if (auto i = integer_in(node, path, 1, 256)) out.upstream_threads = static_cast<unsigned>(*i);
      } else if (key == "allow_plaintext_auth") {
        if (auto b = boolean(node, path)) out.allow_plaintext_auth = *b;
      } else if (key == "max_sessions") {
        if (auto i = integer_in(node, path, 1, 1000000)) out.max_sessions = static_cast<unsigned>(*i);
      } else if (key == "max_sessions_per_ip") {
        if (auto i = integer_in(node, path, 0, 1000000))
          out.max_sessions_per_ip = static_cast<unsigned>(*i);
      } else if (key == "auth_failure_delay") {
        if (auto d = duration_or_zero(node, path)) out.auth_failure_delay = *d;
      } else if (key == "auth_failure_delay_max") {
        if (auto d = duration_or_zero(node, path)) out.auth_failure_delay_max = *d;
      } else if (key == "send_timeout") {
        if (auto d = duration(node, path)) out.send_timeout = *d;
      } else if (key == "shutdown_grace") {
        if (auto d = duration_or_zero(node, path)) out.shutdown_grace = *d;
      } else if (key == "log_format") {
        if (auto f = string(node, path)) {
          if (*f == "text") out.log_format = ServerConfig::LogFormat::kText;
          else if (*f == "json") out.log_format = ServerConfig::LogFormat::kJson;
          else error(node, path, "must be one of text, json (got " + quote(*f) + ")");
        }
      } else {
        unknown_key(key, path);
      }
    }
  }

  // Parses "host:port", "[v6]:port" or "*:port" into out.host / out.port.
  void listener_address(const toml::node& node, std::string_view path, ListenerConfig& out) {
    auto text = nonempty_string(node, path);
    if (!text) return;
    out.address = *text;
    std::string host;
    std::string port_text;
    static const std::string kForm =
        "expected \"host:port\", e.g. \"127.0.0.1:1110\", \"[::1]:1110\" or \"*:1110\"";
    if (text->front() == '[') {
      size_t close = text->find(']');
      if (close == std::string::npos || close + 1 >= text->size() || (*text)[close + 1] != ':') {
        error(node, path, kForm);
        return;
      }
      host = text->substr(1, close - 1);
      port_text = text->substr(close + 2);
      if (!is_ipv6(host)) {
        error(node, path, quote(host) + " is not a valid IPv6 address");
        return;
      }
    } else {
      size_t colon = text->rfind(':');
      if (colon == std::string::npos) {
        error(node, path, kForm);
        return;
      }
      host = text->substr(0, colon);
      port_text = text->substr(colon + 1);
      if (host.find(':') != std::string::npos) {
        error(node, path, "IPv6 addresses must be in brackets, e.g. \"[::1]:1110\"");
        return;
      }
      if (host.empty()) {
        error(node, path, kForm);
        return;
      }
      if (host == "*") {
        host = "0.0.0.0";
      } else if (!is_ipv4(host)) {
        bool looks_numeric = host.find_first_not_of("0123456789.") == std::string::npos;
        error(node, path,
              looks_numeric ? quote(host) + " is not a valid IPv4 address"
                            : quote(host) + " is not an IP address (hostnames are not allowed for listeners)");
        return;
      }
    }
    if (!all_digits(port_text) || port_text.size() > 5 || std::stoi(port_text) < 1 ||
        std::stoi(port_text) > 65535) {
      error(node, path, "port must be 1-65535");
      return;
    }
    out.host = host;
    out.port = static_cast<uint16_t>(std::stoi(port_text));
  }

  void listener(const toml::table& table, std::string_view base, ListenerConfig& out) {
    bool have_address = false;
    for (auto&& [key, node] : table) {
      std::string path = join(base, key.str());
      if (key == "address") {
        have_address = true;
        listener_address(node, path, out);
      } else if (key == "tls") {
        if (auto t = tls(node, path)) out.tls = *t;
      } else if (key == "proxy_protocol") {
        if (auto b = boolean(node, path)) out.proxy_protocol = *b;
      } else if (key == "trusted_proxies") {
        cidr_list(node, path, out.trusted_proxies);
      } else {
        unknown_key(key, path);
      }
    }
    if (!have_address) error(table, join(base, "address"), "missing required key");
    if (out.proxy_protocol && out.trusted_proxies.empty()) {
      error(table, join(base, "trusted_proxies"),
            "proxy_protocol needs the load balancers' addresses, e.g. [\"127.0.0.1/32\"]");
    }
  }

  // An IMAP server's name: a hostname, an IPv4 literal, or IPv6 (bracketed or not).
  std::optional<std::string> upstream_host(const toml::node& node, std::string_view path,
                                           const std::string& text) {
    std::string host = text;
    bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
    if (bracketed) host = host.substr(1, host.size() - 2);  // "[::1]" means "::1"
    bool looks_ipv4 = !bracketed && host.find_first_not_of("0123456789.") == std::string::npos;
    if (looks_ipv4 && !is_ipv4(host)) {
      error(node, path, quote(host) + " is not a valid IPv4 address");
      return std::nullopt;
    }
    if (bracketed ? is_ipv6(host) : (is_ipv4(host) || is_ipv6(host) || is_hostname(host))) return host;
    error(node, path, quote(text) + " is not a valid hostname or IP address");
    return std::nullopt;
  }

  // hosts = ["imap1.example.com:993", "[2001:db8::1]:993"], tried in order.
  void host_list(const toml::node& node, std::string_view path, std::vector<HostPort>& out) {
    string_array(node, path, false, true, "expected a non-empty array of \"host:port\" strings",
                 [&](const toml::node& element, const std::string& element_path, const std::string& text) {
      const size_t colon = text.rfind(':');
      const std::string port_text = colon == std::string::npos ? "" : text.substr(colon + 1);
      if (colon == std::string::npos || !all_digits(port_text) || port_text.size() > 5 ||
          std::stoi(port_text) < 1 || std::stoi(port_text) > 65535 ||
          (text.find(':') != colon && text[0] != '[')) {
        error(element, element_path, "expected \"host:port\" with a port 1-65535, e.g. \"imap.example.com:993\"");
        return;
      }
      if (auto host = upstream_host(element, element_path, text.substr(0, colon)))
        out.push_back({*host, static_cast<uint16_t>(std::stoi(port_text))});
    });
  }

  // domains = ["example.com", "example.org"]: lower-cased, without '@'.
  void domain_list(const toml::node& node, std::string_view path, std::vector<std::string>& out) {
    string_array(node, path, false, true, "expected a non-empty array of domain names",
                 [&](const toml::node& element, const std::string& element_path, const std::string& text) {
      std::string domain = text;
      for (char& c : domain) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!is_hostname(domain)) {
        error(element, element_path, quote(text) + " is not a domain name");
        return;
      }
      out.push_back(domain);
    });
  }

  void upstream(const toml::table& table, std::string_view base, UpstreamConfig& out) {
    bool has_host = false, has_port = false;
    for (auto&& [key, node] : table) {
      std::string path = join(base, key.str());
      if (key == "name") {
        if (auto s = nonempty_string(node, path)) out.name = *s;
      } else if (key == "host") {
        if (auto s = nonempty_string(node, path)) {
          if (auto host = upstream_host(node, path, *s)) out.host = *host;
        }
        has_host = true;
      } else if (key == "port") {
        if (auto p = port(node, path)) out.port = *p;
        has_port = true;
      } else if (key == "tls") {
        if (auto t = tls(node, path)) out.tls = *t;
      } else if (key == "folder") {
        if (auto s = imap_folder(node, path)) out.folder = *s;
      } else if (key == "connect_timeout") {
        if (auto d = duration(node, path)) out.connect_timeout = *d;
      } else if (key == "command_timeout") {
        if (auto d = duration(node, path)) out.command_timeout = *d;
      } else if (key == "hosts") {
        host_list(node, path, out.hosts);
      } else if (key == "domains") {
        domain_list(node, path, out.domains);
      } else if (key == "username") {
        if (auto s = string(node, path)) {
          if (*s == "full") out.username = UpstreamConfig::Username::kFull;
          else if (*s == "local") out.username = UpstreamConfig::Username::kLocal;
          else error(node, path, "must be one of full, local (got " + quote(*s) + ")");
        }
      } else if (key == "verify") {
        if (auto b = boolean(node, path)) out.verify = *b;
      } else if (key == "ca_file") {
        // "" is the default: the system's CA store.
        if (auto text = node.as_string(); text && text->get().empty()) continue;
        if (auto f = readable_file(node, path)) out.ca_file = *f;
      } else {
        unknown_key(key, path);
      }
    }
    if (!out.hosts.empty() && (has_host || has_port)) {
      error(table, join(base, "hosts"), "give either hosts or host and port, not both");
    }
    if (out.hosts.empty()) out.hosts.push_back({out.host, out.port});
    out.host = out.hosts.front().host;
    out.port = out.hosts.front().port;
  }

  void tls_section(const toml::table& table, TlsConfig& out) {
    for (auto&& [key, node] : table) {
      std::string path = join("tls", key.str());
      if (key == "certificate") {
        if (auto f = readable_file(node, path)) out.certificate = *f;
      } else if (key == "key") {
        if (auto f = readable_file(node, path)) out.key = *f;
      } else if (key == "min_version") {
        if (auto v = string(node, path)) {
          if (*v == "1.0" || *v == "1.1" || *v == "1.2" || *v == "1.3") out.min_version = *v;
          else error(node, path, "must be one of 1.0, 1.1, 1.2, 1.3 (got " + quote(*v) + ")");
        }
      } else if (key == "ciphers") {
        if (auto c = string(node, path)) out.ciphers = *c;
      } else {
        unknown_key(key, path);
      }
    }
    for (const char* required : {"certificate", "key"})
      if (!table.contains(required))
        error(table, join("tls", required), "missing required key");
  }

  void mailbox(const toml::table& table, MailboxConfig& out) {
    for (auto&& [key, node] : table) {
      std::string path = join("mailbox", key.str());
      if (key == "on_delete") {
        if (auto s = string(node, path)) {
          if (*s == "hide") out.on_delete = DeletePolicy::kHide;
          else if (*s == "seen") out.on_delete = DeletePolicy::kSeen;
          else if (*s == "move") out.on_delete = DeletePolicy::kMove;
          else if (*s == "expunge") out.on_delete = DeletePolicy::kExpunge;
          else error(node, path, "must be one of hide, seen, move, expunge (got " + quote(*s) + ")");
        }
      } else if (key == "move_to") {
        if (auto s = imap_folder(node, path)) out.move_to = *s;
      } else if (key == "retention_days") {
        if (auto i = integer_in(node, path, 0, 36500)) out.retention_days = static_cast<unsigned>(*i);
      } else if (key == "retention_action") {
        if (auto s = string(node, path)) {
          if (*s == "move") out.retention_action = RetentionAction::kMove;
          else if (*s == "expunge") out.retention_action = RetentionAction::kExpunge;
          else error(node, path, "must be one of move, expunge (got " + quote(*s) + ")");
        }
      } else if (key == "mark_seen_on_retr") {
        if (auto b = boolean(node, path)) out.mark_seen_on_retr = *b;
      } else if (key == "visible") {
        if (auto s = string(node, path)) {
          if (*s == "all") out.visible = Visible::kAll;
          else if (*s == "unseen") out.visible = Visible::kUnseen;
          else error(node, path, "must be one of all, unseen (got " + quote(*s) + ")");
        }
      } else if (key == "max_messages") {
        if (auto i = integer_in(node, path, 0, 10000000)) out.max_messages = static_cast<unsigned>(*i);
      } else if (key == "folder_separator") {
        if (auto s = string(node, path)) {
          if (s->size() > 1 || (s->size() == 1 && ((*s)[0] == '@' || (*s)[0] == ' ')))
            error(node, path, "must be one character other than '@' and space, or \"\" (off)");
          else
            out.folder_separator = *s;
        }
      } else if (key == "uidl_format") {
        if (auto s = nonempty_string(node, path)) {
          std::string why;
          if (auto format = UidlFormat::parse(*s, why)) {
            out.uidl_format_spec = *s;
            out.uidl_format = *format;
          } else {
            error(node, path, why);
          }
        }
      } else if (key == "lock") {
        if (auto b = boolean(node, path)) out.lock = *b;
      } else if (key == "enable_last") {
        if (auto b = boolean(node, path)) out.enable_last = *b;
      } else if (key == "hide_keyword") {
        if (auto s = nonempty_string(node, path)) {
          if (s->front() == '\\') {
            error(node, path, "must not start with '\\' (that is an IMAP system flag)");
          } else {
            size_t bad = 0;
            while (bad < s->size() && is_atom_char(static_cast<unsigned char>((*s)[bad]))) ++bad;
            if (bad < s->size())
              error(node, path, quote(*s) + " is not a valid IMAP keyword (bad character " +
                                    quote(s->substr(bad, 1)) + ")");
            else
              out.hide_keyword = *s;
          }
        }
      } else {
        unknown_key(key, path);
      }
    }
  }

  // [[name]]: calls each(table, "name[i]") for every element; reports a
  // missing or empty array, or elements that are not tables.
  template <typename Each>
  void table_array(const toml::table& root, std::string_view name, Each each) {
    const toml::node* node = root.get(name);
    std::string required = "at least one [[" + std::string(name) + "]] is required";
    if (!node) {
      error(toml::source_position{1, 1}, name, required);
      return;
    }
    const toml::array* array = node->as_array();
    if (!array) {
      error(*node, name, "expected an array of tables ([[" + std::string(name) + "]])");
      return;
    }
    if (array->empty()) {
      error(*node, name, required);
      return;
    }
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = (*array)[i];
      std::string path = indexed(name, i);
      if (auto table = element.as_table()) each(*table, path);
      else error(element, path, "expected a table");
    }
  }

  std::optional<Config> root(const toml::table& root) {
    Config config;
    for (auto&& [key, node] : root) {
      std::string path = path_key(key.str());
      if (key == "server") {
        if (auto t = node.as_table()) server(*t, config.server);
        else error(node, path, "expected a table ([server])");
      } else if (key == "mailbox") {
        if (auto t = node.as_table()) mailbox(*t, config.mailbox);
        else error(node, path, "expected a table ([mailbox])");
      } else if (key == "tls") {
        if (auto t = node.as_table()) tls_section(*t, config.tls.emplace());
        else error(node, path, "expected a table ([tls])");
      } else if (key == "metrics") {
        if (auto t = node.as_table()) metrics_section(*t, config.metrics);
        else error(node, path, "expected a table ([metrics])");
      } else if (key != "listener" && key != "upstream") {
        unknown_key(key, path);
      }
    }

    std::map<std::pair<std::string, uint16_t>, std::string> seen_addresses;
    table_array(root, "listener", [&](const toml::table& table, const std::string& path) {
      ListenerConfig listener_config;
      size_t before = errors_.size();
      listener(table, path, listener_config);
      config.listeners.push_back(listener_config);
      if (errors_.size() != before) return;
      if (listener_config.tls != TlsMode::kNone && !root.contains("tls")) {
        error(*table.get("tls"), path + ".tls", "needs a [tls] section with certificate and key");
      }
      // Compare binary addresses so "[::1]" and "[0::1]" count as the same.
      std::string binary(16, '\0');
      int family = listener_config.host.find(':') != std::string::npos ? AF_INET6 : AF_INET;
      inet_pton(family, listener_config.host.c_str(), binary.data());
      binary += static_cast<char>(family);
      auto [it, inserted] = seen_addresses.emplace(
          std::make_pair(binary, listener_config.port), path + ".address");
      if (!inserted) {
        const toml::node* address = table.get("address");
        error(*address, path + ".address",
              "duplicate of " + it->second + " (" + quote(listener_config.address) + ")");
      }
    });

    std::map<std::string, std::string> seen_names;
    std::map<std::string, std::string> seen_domains;
    std::string default_upstream;
    table_array(root, "upstream", [&](const toml::table& table, const std::string& path) {
      UpstreamConfig upstream_config;
      size_t before = errors_.size();
      upstream(table, path, upstream_config);
      config.upstreams.push_back(upstream_config);
      if (errors_.size() != before) return;
      if (upstream_config.domains.empty()) {
        if (!default_upstream.empty())
          error(table, path, "only one [[upstream]] may leave out domains (" + default_upstream +
                                 " already takes every other domain)");
        default_upstream = path;
      }
      for (const std::string& domain : upstream_config.domains) {
        auto [other, fresh] = seen_domains.emplace(domain, path);
        if (!fresh) error(*table.get("domains"), path + ".domains", quote(domain) + " is already routed by " + other->second);
      }
      auto [it, inserted] = seen_names.emplace(upstream_config.name, path + ".name");
      if (!inserted) {
        const toml::node* name = table.get("name");
        error(name ? *name : static_cast<const toml::node&>(table), path + ".name",
              "duplicate of " + it->second + " (" + quote(upstream_config.name) + ")");
      }
    });

    if (!ok()) return std::nullopt;
    return config;
  }

 private:
  struct Error {
    uint32_t line;
    uint32_t column;
    std::string text;
  };
  std::string file_;
  std::vector<Error> errors_;
};

}  // namespace

bool Cidr::contains(const sockaddr* address) const {
  const unsigned char* candidate = nullptr;
  unsigned char mapped[4];
  if (address->sa_family == AF_INET && family == AF_INET) {
    candidate = reinterpret_cast<const unsigned char*>(
        &reinterpret_cast<const sockaddr_in*>(address)->sin_addr);
  } else if (address->sa_family == AF_INET6) {
    const auto* v6 = &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (family == AF_INET6) {
      candidate = v6->s6_addr;
    } else if (IN6_IS_ADDR_V4MAPPED(v6)) {  // an IPv4 client on a dual-stack socket
      std::memcpy(mapped, v6->s6_addr + 12, 4);
      candidate = mapped;
    }
  }
  if (candidate == nullptr) return false;
  const unsigned whole = prefix / 8, rest = prefix % 8;
  if (std::memcmp(candidate, bytes, whole) != 0) return false;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (candidate[whole] & mask) == (bytes[whole] & mask);
}

namespace {

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable() when it checks
// some non-ASCII characters for being whitespace (upstream issues #190 and
// #295). TOML's syntax is ASCII: other characters belong inside strings and
// comments only, where it never makes that check, except right after a
// line-ending backslash in a """ string. So find any other one first and
// report it as the syntax error it is. Returns its 1-based line and column.
std::optional<std::pair<uint32_t, uint32_t>> misplaced_non_ascii(std::string_view text) {
  enum class In { kCode, kComment, kBasic, kLiteral, kMultiBasic, kMultiLiteral } in = In::kCode;
  uint32_t line = 1, column = 1;
  bool skipping_whitespace = false;  // after a line-ending backslash in """
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool non_ascii = static_cast<unsigned char>(c) >= 0x80;
    const auto starts = [&](std::string_view token) { return text.substr(i, token.size()) == token; };
    if (skipping_whitespace) {
      if (non_ascii) return std::pair{line, column};
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') skipping_whitespace = false;
    }
    switch (in) {
      case In::kCode:
        if (non_ascii) return std::pair{line, column};
        if (c == '#') in = In::kComment;
        else if (starts("\"\"\"")) in = In::kMultiBasic, i += 2, column += 2;
        else if (starts("'''")) in = In::kMultiLiteral, i += 2, column += 2;
        else if (c == '"') in = In::kBasic;
        else if (c == '\'') in = In::kLiteral;
        break;
      case In::kComment:
        if (c == '\n') in = In::kCode;
        break;
      case In::kBasic:
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') ++i, ++column;
        else if (c == '"' || c == '\n') in = In::kCode;
        break;
      case In::kLiteral:
        if (c == '\'' || c == '\n') in = In::kCode;
        break;
      case In::kMultiBasic:
        if (c == '\\') {
          size_t j = i + 1;
          while (j < text.size() && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r')) ++j;
          if (j < text.size() && text[j] == '\n') skipping_whitespace = true;
          else ++i, ++column;
        } else if (starts("\"\"\"")) {
          in = In::kCode, i += 2, column += 2;
        }
        break;
      case In::kMultiLiteral:
        if (starts("'''")) in = In::kCode, i += 2, column += 2;
        break;
    }
    if (i >= text.size()) break;  // an escape's backslash was the last byte
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      ++column;  // columns count characters, not UTF-8 continuation bytes
    }
  }
  return std::nullopt;
}

}  // namespace

ConfigResult parse_config(std::string_view text, std::string_view source_name) {
  Loader loader(source_name);
  ConfigResult result;
  if (auto place = misplaced_non_ascii(text)) {
    loader.error(toml::source_position{place->first, place->second}, "syntax error",
                 "non-ASCII character outside a string or comment");
    result.errors = loader.take_errors();
    return result;
  }
  toml::table table;
  try {
    table = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    loader.error(e.source().begin, "syntax error", e.description());
    result.errors = loader.take_errors();
    return result;
  }
  result.config = loader.root(table);
  result.errors = loader.take_errors();
  if (!result.errors.empty()) result.config.reset();
  return result;
}

bool is_loopback_host(std::string_view host) {
  std::string name(host);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  in_addr v4{};
  if (inet_pton(AF_INET, name.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, name.c_str(), &v6) == 1) {
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
  }
  if (!name.empty() && name.back() == '.') name.pop_back();  // "localhost."
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name == "localhost";
}

std::vector<std::string> config_warnings(const Config& config) {
  std::vector<std::string> warnings;
  for (const UpstreamConfig& upstream : config.upstreams) {
    if (upstream.tls != TlsMode::kNone) continue;
    std::vector<HostPort> targets = upstream.hosts;
    if (targets.empty()) targets.push_back({upstream.host, upstream.port});
    for (const HostPort& target : targets) {
      if (is_loopback_host(target.host)) continue;
      const bool v6 = target.host.find(':') != std::string::npos;
      warnings.push_back("upstream " + upstream.name + ": " + (v6 ? "[" : "") + target.host +
                         (v6 ? "]" : "") + ":" + std::to_string(target.port) +
                         ": tls = \"none\" to a server not on loopback: user names, passwords and "
                         "mail cross the network in clear text (use tls = \"starttls\" or "
                         "\"implicit\")");
    }
  }
  return warnings;
}

ConfigResult load_config_file(const std::string& path) {
  ConfigResult result;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    result.errors.push_back(path + ": cannot open: " + std::strerror(errno));
    return result;
  }
  std::string text;
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      ::close(fd);
      result.errors.push_back(path + ": cannot read: " + std::strerror(saved));
      return result;
    }
    if (n == 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return parse_config(text, path);
}

}  // namespace popbridge
