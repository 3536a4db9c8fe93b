// Tests for config/config.cpp: the TOML loader and its error messages.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <tuple>
#include <unistd.h>

#include "config/config.h"

namespace popbridge {
namespace {

using ::testing::ElementsAre;
using namespace std::chrono_literals;

const char kMinimal[] = R"([[listener]]
address = "127.0.0.1:1110"

[[upstream]]
)";

ConfigResult parse(std::string_view text) { return parse_config(text, "popbridge.toml"); }

// The errors for a file that must not load.
std::vector<std::string> errors_of(std::string_view text) {
  ConfigResult result = parse(text);
  EXPECT_FALSE(result.config.has_value()) << "expected errors for:\n" << text;
  return result.errors;
}

Config config_of(std::string_view text) {
  ConfigResult result = parse(text);
  for (const auto& e : result.errors) ADD_FAILURE() << e;
  if (!result.config) {
    ADD_FAILURE() << "no config for:\n" << text;
    return Config{};
  }
  return *result.config;
}

// A file that exists and can be read, for [tls] and ca_file.
std::string readable_path() { return std::string(POPBRIDGE_SOURCE_DIR) + "/config/popbridge.toml"; }

TEST(ConfigTls, SectionAndPlaintextPolicy) {
  const std::string file = readable_path();
  Config c = config_of("[server]\nallow_plaintext_auth = true\n[tls]\ncertificate = \"" + file +
                       "\"\nkey = \"" + file + "\"\nmin_version = \"1.0\"\n" +
                       "[[listener]]\naddress = \"127.0.0.1:995\"\ntls = \"implicit\"\n"
                       "[[upstream]]\ntls = \"implicit\"\nport = 993\nverify = false\nca_file = \"" +
                       file + "\"\n");
  EXPECT_TRUE(c.server.allow_plaintext_auth);
  ASSERT_TRUE(c.tls);
  EXPECT_EQ(c.tls->certificate, file);
  EXPECT_EQ(c.tls->min_version, "1.0");
  EXPECT_FALSE(c.upstreams[0].verify);
  EXPECT_EQ(c.upstreams[0].ca_file, file);
  EXPECT_FALSE(config_of(kMinimal).server.allow_plaintext_auth);
  EXPECT_FALSE(config_of(kMinimal).tls);
}

TEST(ConfigTls, Errors) {
  EXPECT_THAT(errors_of("[[listener]]\naddress = \"127.0.0.1:995\"\ntls = \"implicit\"\n[[upstream]]\n"),
              ElementsAre("popbridge.toml:3:7: listener[0].tls: needs a [tls] section with certificate and key"));
  EXPECT_THAT(errors_of(std::string("[tls]\ncertificate = \"/nonexistent.pem\"\nmin_version = \"2\"\n") + kMinimal),
              ElementsAre("popbridge.toml:1:1: tls.key: missing required key",
                          "popbridge.toml:2:15: tls.certificate: /nonexistent.pem: cannot read: No such file or directory",
                          "popbridge.toml:3:15: tls.min_version: must be one of 1.0, 1.1, 1.2, 1.3 (got \"2\")"));
  EXPECT_THAT(errors_of(std::string("[server]\nallow_plaintext_auth = \"yes\"\n") + kMinimal),
              ElementsAre("popbridge.toml:2:24: server.allow_plaintext_auth: expected true or false"));
}

TEST(ConfigLimits, DefaultsAndValues) {
  Config d = config_of(kMinimal);
  EXPECT_EQ(d.server.max_sessions, 10000u);
  EXPECT_EQ(d.server.max_sessions_per_ip, 100u);
  EXPECT_EQ(d.server.auth_failure_delay, 2s);
  EXPECT_EQ(d.server.auth_failure_delay_max, 15s);
  EXPECT_EQ(d.server.send_timeout, 60s);
  EXPECT_EQ(d.server.shutdown_grace, 30s);
  EXPECT_EQ(d.server.log_format, ServerConfig::LogFormat::kText);
  EXPECT_TRUE(d.metrics.address.empty());

  Config c = config_of(std::string("[server]\nmax_sessions = 5\nmax_sessions_per_ip = 0\n"
                                   "auth_failure_delay = \"0s\"\nshutdown_grace = 0\n"
                                   "log_format = \"json\"\n[metrics]\naddress = \"127.0.0.1:9110\"\n") +
                       "[[listener]]\naddress = \"127.0.0.1:1110\"\nproxy_protocol = true\n"
                       "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1/128\"]\n[[upstream]]\n");
  EXPECT_EQ(c.server.max_sessions, 5u);
  EXPECT_EQ(c.server.max_sessions_per_ip, 0u);
  EXPECT_EQ(c.server.auth_failure_delay, 0s);
  EXPECT_EQ(c.server.shutdown_grace, 0s);
  EXPECT_EQ(c.server.log_format, ServerConfig::LogFormat::kJson);
  EXPECT_EQ(c.metrics.port, 9110);
  ASSERT_EQ(c.listeners[0].trusted_proxies.size(), 3u);
  EXPECT_TRUE(c.listeners[0].proxy_protocol);

  sockaddr_in inside{};
  inside.sin_family = AF_INET;
  inet_pton(AF_INET, "10.20.30.40", &inside.sin_addr);
  sockaddr_in outside = inside;
  inet_pton(AF_INET, "11.0.0.1", &outside.sin_addr);
  EXPECT_TRUE(c.listeners[0].trusted_proxies[1].contains(reinterpret_cast<sockaddr*>(&inside)));
  EXPECT_FALSE(c.listeners[0].trusted_proxies[1].contains(reinterpret_cast<sockaddr*>(&outside)));
  EXPECT_FALSE(c.listeners[0].trusted_proxies[0].contains(reinterpret_cast<sockaddr*>(&inside)));
  sockaddr_in6 mapped{};  // 10.20.30.40 seen on a dual-stack socket
  mapped.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.20.30.40", &mapped.sin6_addr);
  EXPECT_TRUE(c.listeners[0].trusted_proxies[1].contains(reinterpret_cast<sockaddr*>(&mapped)));
}

TEST(ConfigLimits, Errors) {
  EXPECT_THAT(errors_of("[[listener]]\naddress = \"127.0.0.1:1110\"\nproxy_protocol = true\n[[upstream]]\n"),
              ElementsAre("popbridge.toml:1:1: listener[0].trusted_proxies: proxy_protocol needs the load "
                          "balancers' addresses, e.g. [\"127.0.0.1/32\"]"));
  EXPECT_THAT(errors_of("[[listener]]\naddress = \"127.0.0.1:1110\"\ntrusted_proxies = [\"10.0.0.0/33\"]\n[[upstream]]\n"),
              ElementsAre("popbridge.toml:3:20: listener[0].trusted_proxies[0]: \"10.0.0.0/33\" is not an "
                          "address block like \"10.0.0.0/8\""));
  EXPECT_THAT(errors_of(std::string("[server]\nlog_format = \"xml\"\nsend_timeout = \"0s\"\n") + kMinimal),
              ElementsAre("popbridge.toml:2:14: server.log_format: must be one of text, json (got \"xml\")",
                          "popbridge.toml:3:16: server.send_timeout: must be greater than zero"));
}

TEST(ConfigMailbox, PoliciesAndViews) {
  Config d = config_of(kMinimal);
  EXPECT_EQ(d.mailbox.on_delete, DeletePolicy::kHide);
  EXPECT_EQ(d.mailbox.move_to, "Trash");
  EXPECT_EQ(d.mailbox.retention_days, 0u);
  EXPECT_EQ(d.mailbox.retention_action, RetentionAction::kMove);
  EXPECT_FALSE(d.mailbox.mark_seen_on_retr);
  EXPECT_EQ(d.mailbox.visible, Visible::kAll);
  EXPECT_EQ(d.mailbox.max_messages, 0u);
  EXPECT_EQ(d.mailbox.folder_separator, "");
  EXPECT_TRUE(d.mailbox.lock);
  EXPECT_TRUE(d.mailbox.enable_last);
  EXPECT_EQ(d.mailbox.uidl_format.format(0x1F, 0x5F00AB12), "0000001f5f00ab12");
  ASSERT_EQ(d.upstreams[0].hosts.size(), 1u);
  EXPECT_EQ(d.upstreams[0].hosts[0].host, "127.0.0.1");
  EXPECT_EQ(d.upstreams[0].hosts[0].port, 143);

  Config c = config_of(std::string(kMinimal) +
                       "[mailbox]\non_delete = \"move\"\nmove_to = \"Deleted Items\"\nretention_days = 30\n"
                       "retention_action = \"expunge\"\nmark_seen_on_retr = true\nvisible = \"unseen\"\n"
                       "max_messages = 250\nfolder_separator = \"#\"\nuidl_format = \"courier\"\n"
                       "lock = false\nenable_last = false\n");
  EXPECT_EQ(c.mailbox.on_delete, DeletePolicy::kMove);
  EXPECT_EQ(c.mailbox.move_to, "Deleted Items");
  EXPECT_EQ(c.mailbox.retention_days, 30u);
  EXPECT_EQ(c.mailbox.retention_action, RetentionAction::kExpunge);
  EXPECT_TRUE(c.mailbox.mark_seen_on_retr);
  EXPECT_EQ(c.mailbox.visible, Visible::kUnseen);
  EXPECT_EQ(c.mailbox.max_messages, 250u);
  EXPECT_EQ(c.mailbox.folder_separator, "#");
  EXPECT_EQ(c.mailbox.uidl_format.format(7, 1700000000), "1700000000-7");
  EXPECT_FALSE(c.mailbox.lock);
  EXPECT_FALSE(c.mailbox.enable_last);
}

TEST(ConfigMailbox, UidlFormats) {
  std::string error;
  EXPECT_EQ(UidlFormat::parse("cyrus", error)->format(7, 12), "12.7");
  EXPECT_EQ(UidlFormat::parse("uw", error)->format(7, 12), "0000000c00000007");
  EXPECT_EQ(UidlFormat::parse("{uid:08X}", error)->format(171, 12), "000000AB");
  EXPECT_EQ(UidlFormat::parse("{uid:x}-{uidvalidity:010d}", error)->format(255, 12), "ff-0000000012");
  EXPECT_EQ(UidlFormat::parse("u{uid}", error)->format(4294967295u, 1), "u4294967295");
  EXPECT_FALSE(UidlFormat::parse("{uidvalidity}", error));
  EXPECT_NE(error.find("needs {uid}"), std::string::npos);
  EXPECT_FALSE(UidlFormat::parse("{uid} {uidvalidity}", error));
  EXPECT_FALSE(UidlFormat::parse("{uid:8X}", error));
  EXPECT_NE(error.find("{uid:08X}"), std::string::npos);
  EXPECT_FALSE(UidlFormat::parse("{uid}{bogus}", error));
  EXPECT_FALSE(UidlFormat::parse("{uid:070d}{uidvalidity}", error));
  EXPECT_NE(error.find("70"), std::string::npos);
  EXPECT_FALSE(UidlFormat::parse("{uid", error));
}

TEST(ConfigRouting, SeveralUpstreamsByDomain) {
  Config c = config_of(
      "[[listener]]\naddress = \"127.0.0.1:1110\"\n"
      "[[upstream]]\nname = \"corp\"\ndomains = [\"Example.COM\", \"example.org\"]\nusername = \"local\"\n"
      "hosts = [\"imap1.example.com:993\", \"[2001:db8::1]:993\"]\ntls = \"none\"\n"
      "[[upstream]]\nname = \"default\"\n");
  ASSERT_EQ(c.upstreams.size(), 2u);
  EXPECT_EQ(c.upstreams[0].domains, (std::vector<std::string>{"example.com", "example.org"}));
  EXPECT_EQ(c.upstreams[0].username, UpstreamConfig::Username::kLocal);
  ASSERT_EQ(c.upstreams[0].hosts.size(), 2u);
  EXPECT_EQ(c.upstreams[0].hosts[1].host, "2001:db8::1");
  EXPECT_EQ(c.upstreams[0].hosts[1].port, 993);
  EXPECT_EQ(c.upstreams[0].host, "imap1.example.com");
  EXPECT_EQ(c.upstreams[1].username, UpstreamConfig::Username::kFull);
}

TEST(ConfigRouting, Errors) {
  EXPECT_THAT(errors_of("[[listener]]\naddress = \"127.0.0.1:1110\"\n"
                        "[[upstream]]\nname = \"a\"\ndomains = [\"x.com\"]\nhost = \"h\"\nhosts = [\"h:1\"]\n"
                        "[[upstream]]\nname = \"b\"\ndomains = [\"x.com\"]\nhosts = [\"h\", \"bad host:1\"]\n"),
              ElementsAre("popbridge.toml:3:1: upstream[0].hosts: give either hosts or host and port, not both",
                          "popbridge.toml:11:10: upstream[1].hosts[0]: expected \"host:port\" with a port 1-65535, "
                          "e.g. \"imap.example.com:993\"",
                          "popbridge.toml:11:15: upstream[1].hosts[1]: \"bad host\" is not a valid hostname or IP address"));
}

TEST(ConfigUnicode, NonAsciiOnlyInStringsAndComments) {
  Config c = config_of(std::string("# Konfiguration f\xC3\xBCr Ger\xC3\xA4te\n") + kMinimal +
                       "folder = \"Entw\xC3\xBCrfe\"\nname = 'b\xC3\xBCro' # \xC3\xA9\n");
  EXPECT_EQ(c.upstreams[0].folder, "Entw\xC3\xBCrfe");
  EXPECT_EQ(c.upstreams[0].name, "b\xC3\xBCro");
  // Where toml++ 3.3 would test the character for being whitespace (and hit
  // undefined behaviour), it is a syntax error found before parsing.
  EXPECT_THAT(errors_of("\xC3\xA9"), ElementsAre("popbridge.toml:1:1: syntax error: non-ASCII character "
                                                 "outside a string or comment"));
  EXPECT_THAT(errors_of("[server]\nlog_level = \xC3\xA9\n"),
              ElementsAre("popbridge.toml:2:13: syntax error: non-ASCII character outside a string or comment"));
  for (const char* cut : {"x = \"\"\"\\", "x = \"\\", "x = \"\"\"a\\ ", "x = '''"}) {
    EXPECT_FALSE(parse(cut).config) << cut;  // unterminated: an error, read within bounds
  }
  EXPECT_THAT(errors_of("[server]\nlog_level = \"\"\"a\\\n  \xE3\x80\x80" "b\"\"\"\n"),
              ElementsAre("popbridge.toml:3:3: syntax error: non-ASCII character outside a string or comment"));
}

// ---------------------------------------------------------------------------
// Valid files

TEST(ConfigLoader, MinimalFileGetsDefaults) {
  Config c = config_of(kMinimal);
  EXPECT_EQ(c.server.idle_timeout, 10min);
  EXPECT_EQ(c.server.log_level, log::Level::kInfo);
  EXPECT_EQ(c.server.upstream_threads, 8u);

  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address, "127.0.0.1:1110");
  EXPECT_EQ(c.listeners[0].host, "127.0.0.1");
  EXPECT_EQ(c.listeners[0].port, 1110);
  EXPECT_EQ(c.listeners[0].tls, TlsMode::kNone);

  ASSERT_EQ(c.upstreams.size(), 1u);
  EXPECT_EQ(c.upstreams[0].name, "main");
  EXPECT_EQ(c.upstreams[0].host, "127.0.0.1");
  EXPECT_EQ(c.upstreams[0].port, 143);
  EXPECT_EQ(c.upstreams[0].tls, TlsMode::kNone);
  EXPECT_EQ(c.upstreams[0].folder, "INBOX");
  EXPECT_EQ(c.upstreams[0].connect_timeout, 10s);
  EXPECT_EQ(c.upstreams[0].command_timeout, 60s);

  EXPECT_EQ(c.mailbox.on_delete, DeletePolicy::kHide);
  EXPECT_EQ(c.mailbox.hide_keyword, "$POP3Deleted");
}

TEST(ConfigLoader, FullFile) {
  Config c = config_of("[tls]\ncertificate = \"" + readable_path() + "\"\nkey = \"" +
                       readable_path() + "\"\n" + R"(
[server]
idle_timeout = "2h"
log_level = "debug"
upstream_threads = 256

[[listener]]
address = "0.0.0.0:110"
tls = "starttls"

[[listener]]
address = "[::]:995"
tls = "implicit"

[[upstream]]
name = "dovecot"
host = "imap.example.org"
port = 993
tls = "implicit"
folder = "Archive/2024"
connect_timeout = "500ms"
command_timeout = 120

[mailbox]
on_delete = "hide"
hide_keyword = "Popped"
)");
  EXPECT_EQ(c.server.idle_timeout, 2h);
  EXPECT_EQ(c.server.log_level, log::Level::kDebug);
  EXPECT_EQ(c.server.upstream_threads, 256u);
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].host, "0.0.0.0");
  EXPECT_EQ(c.listeners[0].port, 110);
  EXPECT_EQ(c.listeners[0].tls, TlsMode::kStartTls);
  EXPECT_EQ(c.listeners[1].address, "[::]:995");
  EXPECT_EQ(c.listeners[1].host, "::");
  EXPECT_EQ(c.listeners[1].port, 995);
  EXPECT_EQ(c.listeners[1].tls, TlsMode::kImplicit);
  ASSERT_EQ(c.upstreams.size(), 1u);
  EXPECT_EQ(c.upstreams[0].name, "dovecot");
  EXPECT_EQ(c.upstreams[0].host, "imap.example.org");
  EXPECT_EQ(c.upstreams[0].port, 993);
  EXPECT_EQ(c.upstreams[0].tls, TlsMode::kImplicit);
  EXPECT_EQ(c.upstreams[0].folder, "Archive/2024");
  EXPECT_EQ(c.upstreams[0].connect_timeout, 500ms);
  EXPECT_EQ(c.upstreams[0].command_timeout, 120s);
  EXPECT_EQ(c.mailbox.hide_keyword, "Popped");
}

TEST(ConfigLoader, LogLevels) {
  const std::pair<const char*, log::Level> cases[] = {{"debug", log::Level::kDebug},
                                                      {"info", log::Level::kInfo},
                                                      {"warn", log::Level::kWarn},
                                                      {"error", log::Level::kError}};
  for (auto [name, level] : cases) {
    Config c = config_of(std::string("[server]\nlog_level = \"") + name + "\"\n" + kMinimal);
    EXPECT_EQ(c.server.log_level, level) << name;
  }
}

TEST(ConfigLoader, IPv6ListenerAndUpstream) {
  Config c = config_of(R"([[listener]]
address = "[::1]:1110"
[[listener]]
address = "[2001:db8::7]:110"
[[upstream]]
host = "[::1]"
)");
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].host, "::1");
  EXPECT_EQ(c.listeners[0].port, 1110);
  EXPECT_EQ(c.listeners[1].host, "2001:db8::7");
  EXPECT_EQ(c.listeners[1].port, 110);
  EXPECT_EQ(c.upstreams[0].host, "::1");

  Config bare = config_of(std::string("[[listener]]\naddress = \"[::1]:1\"\n[[upstream]]\nhost = \"fe80::1\"\n"));
  EXPECT_EQ(bare.upstreams[0].host, "fe80::1");
}

TEST(ConfigLoader, StarListenerMeansAllIPv4) {
  Config c = config_of("[[listener]]\naddress = \"*:65535\"\n[[upstream]]\n");
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address, "*:65535");
  EXPECT_EQ(c.listeners[0].host, "0.0.0.0");
  EXPECT_EQ(c.listeners[0].port, 65535);
}

TEST(ConfigLoader, InlineTablesWork) {
  Config c = config_of(R"(listener = [{ address = "127.0.0.1:1" }, { address = "127.0.0.1:2" }]
upstream = [{ host = "mail" }]
)");
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[1].port, 2);
  EXPECT_EQ(c.upstreams[0].host, "mail");
}

TEST(ConfigLoader, Durations) {
  const std::pair<const char*, Duration> cases[] = {
      {"\"500ms\"", 500ms}, {"\"30s\"", 30s},   {"\"10m\"", 10min}, {"\"2h\"", 2h},
      {"\"1d\"", 24h},      {"\"1ms\"", 1ms},   {"45", 45s},        {"\"90m\"", 90min},
  };
  for (auto [text, expected] : cases) {
    Config c = config_of(std::string("[server]\nidle_timeout = ") + text + "\n" + kMinimal);
    EXPECT_EQ(c.server.idle_timeout, expected) << text;
  }
  // Shorter than RFC 1939's ten minutes is allowed (tests rely on it).
  Config c = config_of(std::string("[server]\nidle_timeout = \"1s\"\n") + kMinimal);
  EXPECT_EQ(c.server.idle_timeout, 1s);
}

TEST(ConfigLoader, BadDurations) {
  const std::string hint =
      " (use e.g. \"500ms\", \"30s\", \"10m\", \"2h\", \"1d\" or an integer number of seconds)";
  const std::pair<const char*, std::string> cases[] = {
      {"\"0s\"", "must be greater than zero"},
      {"0", "must be greater than zero"},
      {"-5", "must be greater than zero"},
      {"\"-5s\"", "must be greater than zero"},
      {"\"abc\"", "invalid duration \"abc\"" + hint},
      {"\"10\"", "invalid duration \"10\"" + hint},
      {"\"10 m\"", "invalid duration \"10 m\"" + hint},
      {"\"1.5s\"", "invalid duration \"1.5s\"" + hint},
      {"\"10w\"", "invalid duration \"10w\"" + hint},
      {"\"s\"", "invalid duration \"s\"" + hint},
      {"\"\"", "invalid duration \"\"" + hint},
      {"1.5", "expected a duration string or an integer" + hint},
      {"true", "expected a duration string or an integer" + hint},
      {"\"9999999999999999999d\"", "duration \"9999999999999999999d\" is too large"},
      {"\"999999999999999999d\"", "duration is too large"},
      {"9223372036854775807", "duration is too large"},
  };
  for (auto [text, message] : cases) {
    auto errors = errors_of(std::string(kMinimal) + "[server]\nidle_timeout = " + text + "\n");
    EXPECT_THAT(errors, ElementsAre("popbridge.toml:6:16: server.idle_timeout: " + message)) << text;
  }
}

TEST(ConfigLoader, UpstreamDurationsAreChecked) {
  auto errors = errors_of(R"([[listener]]
address = "127.0.0.1:1110"
[[upstream]]
connect_timeout = "soon"
command_timeout = -1
)");
  EXPECT_THAT(errors,
              ElementsAre("popbridge.toml:4:19: upstream[0].connect_timeout: invalid duration "
                          "\"soon\" (use e.g. \"500ms\", \"30s\", \"10m\", \"2h\", \"1d\" or an "
                          "integer number of seconds)",
                          "popbridge.toml:5:19: upstream[0].command_timeout: must be greater than zero"));
}

// ---------------------------------------------------------------------------
// Errors, one kind at a time, with exact text

TEST(ConfigErrors, MissingListenerAndUpstream) {
  EXPECT_THAT(errors_of(""),
              ElementsAre("popbridge.toml:1:1: listener: at least one [[listener]] is required",
                          "popbridge.toml:1:1: upstream: at least one [[upstream]] is required"));
  EXPECT_THAT(errors_of("[[upstream]]\n"),
              ElementsAre("popbridge.toml:1:1: listener: at least one [[listener]] is required"));
  EXPECT_THAT(errors_of("[[listener]]\naddress = \"127.0.0.1:1\"\n"),
              ElementsAre("popbridge.toml:1:1: upstream: at least one [[upstream]] is required"));
}

TEST(ConfigErrors, EmptyOrWronglyShapedArrays) {
  EXPECT_THAT(errors_of("[[upstream]]\n[server]\nx = 1\n[listener]\naddress = \"127.0.0.1:1\"\n"),
              ElementsAre("popbridge.toml:3:1: server.x: unknown key",
                          "popbridge.toml:4:1: listener: expected an array of tables ([[listener]])"));
  EXPECT_THAT(errors_of("listener = []\n[[upstream]]\n"),
              ElementsAre("popbridge.toml:1:12: listener: at least one [[listener]] is required"));
  EXPECT_THAT(errors_of("listener = [1]\n[[upstream]]\n"),
              ElementsAre("popbridge.toml:1:13: listener[0]: expected a table"));
  EXPECT_THAT(errors_of(std::string("server = 3\nmailbox = \"x\"\n") + kMinimal),
              ElementsAre("popbridge.toml:1:10: server: expected a table ([server])",
                          "popbridge.toml:2:11: mailbox: expected a table ([mailbox])"));
  EXPECT_THAT(errors_of(std::string("[[server]]\n") + kMinimal),
              ElementsAre("popbridge.toml:1:1: server: expected a table ([server])"));
}

TEST(ConfigErrors, MoreThanOneUpstream) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "\n[[upstream]]\nname = \"b\"\n"),
              ElementsAre("popbridge.toml:6:1: upstream[1]: only one [[upstream]] may leave out domains "
                          "(upstream[0] already takes every other domain)"));
}

TEST(ConfigErrors, UnknownKeysAtEveryLevel) {
  auto errors = errors_of(R"(bogus = 1
[server]
nope = "x"
[[listener]]
address = "127.0.0.1:1110"
port = 1110
[[upstream]]
user = "alice"
[upstream.sub]
k = 1
[mailbox]
expunge = true
[other]
)");
  EXPECT_THAT(errors, ElementsAre("popbridge.toml:1:1: bogus: unknown key",
                                  "popbridge.toml:3:1: server.nope: unknown key",
                                  "popbridge.toml:6:1: listener[0].port: unknown key",
                                  "popbridge.toml:8:1: upstream[0].user: unknown key",
                                  "popbridge.toml:9:11: upstream[0].sub: unknown key",
                                  "popbridge.toml:12:1: mailbox.expunge: unknown key",
                                  "popbridge.toml:13:2: other: unknown key"));
}

TEST(ConfigErrors, UnknownKeyNeedingQuotesIsQuotedInPath) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "[server]\n\"a b\" = 1\n"),
              ElementsAre("popbridge.toml:6:1: server.\"a b\": unknown key"));
}

TEST(ConfigErrors, WrongTypes) {
  auto errors = errors_of(R"([server]
log_level = 3
upstream_threads = "8"
[[listener]]
address = 1110
tls = false
[[upstream]]
name = 1
host = 127
port = "143"
tls = 0
folder = ["INBOX"]
[mailbox]
on_delete = true
hide_keyword = 1
)");
  EXPECT_THAT(errors, ElementsAre("popbridge.toml:2:13: server.log_level: expected a string",
                                  "popbridge.toml:3:20: server.upstream_threads: expected an integer",
                                  "popbridge.toml:5:11: listener[0].address: expected a string",
                                  "popbridge.toml:6:7: listener[0].tls: expected a string",
                                  "popbridge.toml:8:8: upstream[0].name: expected a string",
                                  "popbridge.toml:9:8: upstream[0].host: expected a string",
                                  "popbridge.toml:10:8: upstream[0].port: expected an integer",
                                  "popbridge.toml:11:7: upstream[0].tls: expected a string",
                                  "popbridge.toml:12:10: upstream[0].folder: expected a string",
                                  "popbridge.toml:14:13: mailbox.on_delete: expected a string",
                                  "popbridge.toml:15:16: mailbox.hide_keyword: expected a string"));
}

TEST(ConfigErrors, FloatIsNotAnInteger) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "[server]\nupstream_threads = 8.0\n"),
              ElementsAre("popbridge.toml:6:20: server.upstream_threads: expected an integer"));
}

TEST(ConfigErrors, BadEnumValues) {
  auto errors = errors_of(R"([server]
log_level = "verbose"
[[listener]]
address = "127.0.0.1:1110"
tls = "ssl"
[[upstream]]
tls = "STARTTLS"
[mailbox]
on_delete = "purge"
)");
  EXPECT_THAT(errors,
              ElementsAre("popbridge.toml:2:13: server.log_level: must be one of debug, info, warn, error (got \"verbose\")",
                          "popbridge.toml:5:7: listener[0].tls: must be one of none, starttls, implicit (got \"ssl\")",
                          "popbridge.toml:7:7: upstream[0].tls: must be one of none, starttls, implicit (got \"STARTTLS\")",
                          "popbridge.toml:9:13: mailbox.on_delete: must be one of hide, seen, move, expunge (got \"purge\")"));
}

TEST(ConfigErrors, UpstreamThreadsRange) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "[server]\nupstream_threads = 0\n"),
              ElementsAre("popbridge.toml:6:20: server.upstream_threads: must be 1-256"));
  EXPECT_THAT(errors_of(std::string(kMinimal) + "[server]\nupstream_threads = 257\n"),
              ElementsAre("popbridge.toml:6:20: server.upstream_threads: must be 1-256"));
  EXPECT_EQ(config_of(std::string(kMinimal) + "[server]\nupstream_threads = 1\n").server.upstream_threads, 1u);
}

TEST(ConfigErrors, ListenerAddresses) {
  const std::pair<const char*, std::string> cases[] = {
      {"127.0.0.1:0", "port must be 1-65535"},
      {"127.0.0.1:65536", "port must be 1-65535"},
      {"127.0.0.1:", "port must be 1-65535"},
      {"127.0.0.1:-1", "port must be 1-65535"},
      {"127.0.0.1:11a", "port must be 1-65535"},
      {"127.0.0.1:0000001110", "port must be 1-65535"},
      {"[::1]:99999", "port must be 1-65535"},
      {"localhost:1110", "\"localhost\" is not an IP address (hostnames are not allowed for listeners)"},
      {"300.1.1.1:1110", "\"300.1.1.1\" is not a valid IPv4 address"},
      {"127.1:1110", "\"127.1\" is not a valid IPv4 address"},
      {"::1:1110", "IPv6 addresses must be in brackets, e.g. \"[::1]:1110\""},
      {"[127.0.0.1]:1110", "\"127.0.0.1\" is not a valid IPv6 address"},
      {"[::g]:1110", "\"::g\" is not a valid IPv6 address"},
      {"127.0.0.1", "expected \"host:port\", e.g. \"127.0.0.1:1110\", \"[::1]:1110\" or \"*:1110\""},
      {":1110", "expected \"host:port\", e.g. \"127.0.0.1:1110\", \"[::1]:1110\" or \"*:1110\""},
      {"[::1]", "expected \"host:port\", e.g. \"127.0.0.1:1110\", \"[::1]:1110\" or \"*:1110\""},
      {"[::1]1110", "expected \"host:port\", e.g. \"127.0.0.1:1110\", \"[::1]:1110\" or \"*:1110\""},
      {"", "must not be empty"},
  };
  for (auto [address, message] : cases) {
    auto errors = errors_of(std::string("[[upstream]]\n[[listener]]\naddress = \"") + address + "\"\n");
    EXPECT_THAT(errors, ElementsAre("popbridge.toml:3:11: listener[0].address: " + message)) << address;
  }
}

TEST(ConfigErrors, ListenerWithoutAddress) {
  EXPECT_THAT(errors_of("[[upstream]]\n[[listener]]\ntls = \"none\"\n"),
              ElementsAre("popbridge.toml:2:1: listener[0].address: missing required key"));
}

TEST(ConfigErrors, DuplicateListenerAddresses) {
  auto errors = errors_of(R"([[upstream]]
[[listener]]
address = "127.0.0.1:1110"
[[listener]]
address = "127.0.0.1:1111"
[[listener]]
address = "127.0.0.1:1110"
[[listener]]
address = "[::1]:1110"
[[listener]]
address = "[0:0::1]:1110"
[[listener]]
address = "*:995"
[[listener]]
address = "0.0.0.0:995"
)");
  EXPECT_THAT(errors,
              ElementsAre("popbridge.toml:7:11: listener[2].address: duplicate of listener[0].address (\"127.0.0.1:1110\")",
                          "popbridge.toml:11:11: listener[4].address: duplicate of listener[3].address (\"[0:0::1]:1110\")",
                          "popbridge.toml:15:11: listener[6].address: duplicate of listener[5].address (\"0.0.0.0:995\")"));
}

TEST(ConfigErrors, UpstreamValues) {
  auto errors = errors_of(R"([[listener]]
address = "127.0.0.1:1110"
[[upstream]]
name = ""
host = "bad host"
port = 0
folder = ""
)");
  EXPECT_THAT(errors, ElementsAre("popbridge.toml:4:8: upstream[0].name: must not be empty",
                                  "popbridge.toml:5:8: upstream[0].host: \"bad host\" is not a valid hostname or IP address",
                                  "popbridge.toml:6:8: upstream[0].port: must be 1-65535",
                                  "popbridge.toml:7:10: upstream[0].folder: must not be empty"));
}

TEST(ConfigErrors, UpstreamHosts) {
  for (const char* good : {"localhost", "imap.example.org", "imap.example.org.", "mail-1",
                           "10.0.0.1", "::1", "[2001:db8::1]", "a_b.example"}) {
    Config c = config_of(std::string(kMinimal) + "host = \"" + good + "\"\n");
    EXPECT_FALSE(c.upstreams.empty()) << good;
  }
  for (const char* bad : {"", " ", "a..b", "-a.example", "a/b", "host:143", "[nope]", "[10.0.0.1]"}) {
    auto errors = errors_of(std::string(kMinimal) + "host = \"" + bad + "\"\n");
    std::string message = *bad ? "\"" + std::string(bad) + "\" is not a valid hostname or IP address"
                               : std::string("must not be empty");
    EXPECT_THAT(errors, ElementsAre("popbridge.toml:5:8: upstream[0].host: " + message)) << bad;
  }
}

TEST(ConfigErrors, UpstreamBadIPv4) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "host = \"300.1.1.1\"\n"),
              ElementsAre("popbridge.toml:5:8: upstream[0].host: \"300.1.1.1\" is not a valid IPv4 address"));
  EXPECT_THAT(errors_of(std::string(kMinimal) + "host = \"10.1\"\n"),
              ElementsAre("popbridge.toml:5:8: upstream[0].host: \"10.1\" is not a valid IPv4 address"));
}

TEST(ConfigErrors, UpstreamPortRange) {
  EXPECT_THAT(errors_of(std::string(kMinimal) + "port = 65536\n"),
              ElementsAre("popbridge.toml:5:8: upstream[0].port: must be 1-65535"));
  EXPECT_THAT(errors_of(std::string(kMinimal) + "port = -143\n"),
              ElementsAre("popbridge.toml:5:8: upstream[0].port: must be 1-65535"));
  EXPECT_EQ(config_of(std::string(kMinimal) + "port = 65535\n").upstreams[0].port, 65535);
}

TEST(ConfigErrors, HideKeyword) {
  for (const char* good : {"$POP3Deleted", "Popped", "$Junk", "a.b-c_d", "x+y"}) {
    Config c = config_of(std::string(kMinimal) + "[mailbox]\nhide_keyword = \"" + good + "\"\n");
    EXPECT_EQ(c.mailbox.hide_keyword, good);
  }
  const std::pair<const char*, std::string> cases[] = {
      {"", "must not be empty"},
      {"\\\\Deleted", "must not start with '\\' (that is an IMAP system flag)"},
      {"a b", "\"a b\" is not a valid IMAP keyword (bad character \" \")"},
      {"a(b", "\"a(b\" is not a valid IMAP keyword (bad character \"(\")"},
      {"a)", "\"a)\" is not a valid IMAP keyword (bad character \")\")"},
      {"{3}", "\"{3}\" is not a valid IMAP keyword (bad character \"{\")"},
      {"50%", "\"50%\" is not a valid IMAP keyword (bad character \"%\")"},
      {"a*", "\"a*\" is not a valid IMAP keyword (bad character \"*\")"},
      {"a\\\"b", "\"a\\\"b\" is not a valid IMAP keyword (bad character \"\\\"\")"},
      {"a\\\\b", "\"a\\\\b\" is not a valid IMAP keyword (bad character \"\\\\\")"},
      {"a]", "\"a]\" is not a valid IMAP keyword (bad character \"]\")"},
      {"a\\tb", "\"a\\x09b\" is not a valid IMAP keyword (bad character \"\\x09\")"},
      {"caf\xc3\xa9", "\"caf\xc3\xa9\" is not a valid IMAP keyword (bad character \"\xc3\")"},
  };
  for (auto [keyword, message] : cases) {
    auto errors = errors_of(std::string(kMinimal) + "[mailbox]\nhide_keyword = \"" + keyword + "\"\n");
    EXPECT_THAT(errors, ElementsAre("popbridge.toml:6:16: mailbox.hide_keyword: " + message)) << keyword;
  }
}

// Folder names and keywords go into IMAP commands: a control character
// would end the command early (CR, LF), cut it (NUL) or confuse the server.
TEST(ConfigErrors, ControlCharactersInImapNames) {
  // What the file says; how the error quotes it; the first control character.
  const std::tuple<const char*, std::string, std::string> cases[] = {
      {"IN\\rBOX", "\"IN\\x0dBOX\"", "\\x0d"},
      {"IN\\nBOX", "\"IN\\x0aBOX\"", "\\x0a"},
      {"a\\r\\nb", "\"a\\x0d\\x0ab\"", "\\x0d"},
      {"IN\\u0000BOX", "\"IN\\x00BOX\"", "\\x00"},
      {"Tab\\tbed", "\"Tab\\x09bed\"", "\\x09"},
      {"Esc\\u001b[2J", "\"Esc\\x1b[2J\"", "\\x1b"},
      {"Del\\u007f", "\"Del\\x7f\"", "\\x7f"},
  };
  for (const auto& [name, quoted, control] : cases) {
    const std::string message =
        quoted + " is not a valid IMAP folder name (control character \"" + control + "\")";
    EXPECT_THAT(errors_of(std::string(kMinimal) + "folder = \"" + name + "\"\n"),
                ElementsAre("popbridge.toml:5:10: upstream[0].folder: " + message))
        << name;
    EXPECT_THAT(errors_of(std::string(kMinimal) + "[mailbox]\nmove_to = \"" + name + "\"\n"),
                ElementsAre("popbridge.toml:6:11: mailbox.move_to: " + message))
        << name;
    const auto keyword = errors_of(std::string(kMinimal) + "[mailbox]\nhide_keyword = \"" + name + "\"\n");
    ASSERT_EQ(keyword.size(), 1u) << name;
    EXPECT_EQ(keyword[0].rfind("popbridge.toml:6:16: mailbox.hide_keyword: ", 0), 0u) << keyword[0];
    EXPECT_NE(keyword[0].find(quoted + " is not a valid IMAP keyword (bad character \"" + control + "\")"),
              std::string::npos)
        << keyword[0];
  }
  // In the second [[upstream]] too, and everything else in a name is fine:
  // spaces, quotes, backslashes, wildcards and UTF-8 are sent quoted or in
  // modified UTF-7.
  EXPECT_THAT(errors_of(std::string(kMinimal) + "[[upstream]]\nname = \"b\"\ndomains = [\"b.example\"]\n"
                                                "folder = \"x\\ny\"\n"),
              ElementsAre("popbridge.toml:8:10: upstream[1].folder: \"x\\x0ay\" is not a valid IMAP folder name "
                          "(control character \"\\x0a\")"));
  const std::string fine = "Deleted Items/\\\"odd\\\\ %*] Entw\xC3\xBCrfe";
  Config c = config_of(std::string(kMinimal) + "folder = \"" + fine + "\"\n[mailbox]\nmove_to = \"" + fine +
                       "\"\n");
  EXPECT_EQ(c.upstreams[0].folder, "Deleted Items/\"odd\\ %*] Entw\xC3\xBCrfe");
  EXPECT_EQ(c.mailbox.move_to, c.upstreams[0].folder);
}

TEST(ConfigWarnings, PlaintextUpstreamNotOnLoopback) {
  for (const char* host : {"127.0.0.1", "127.255.0.9", "::1", "[::1]", "0:0::1", "::ffff:127.0.0.2",
                           "localhost", "LOCALHOST", "localhost."}) {
    EXPECT_TRUE(is_loopback_host(host)) << host;
  }
  for (const char* host : {"192.0.2.1", "128.0.0.1", "10.127.0.1", "::2", "2001:db8::1", "::ffff:10.0.0.1",
                           "imap.example.com", "localhost.example.com", "mylocalhost"}) {
    EXPECT_FALSE(is_loopback_host(host)) << host;
  }
  Config c = config_of(std::string(kMinimal) +
                       "hosts = [\"127.0.0.1:143\", \"192.0.2.1:143\", \"[2001:db8::1]:1143\"]\n"
                       "[[upstream]]\nname = \"b\"\ndomains = [\"b.example\"]\nhost = \"192.0.2.2\"\n"
                       "tls = \"implicit\"\nport = 993\n");
  const std::string clear =
      ": tls = \"none\" to a server not on loopback: user names, passwords and mail cross the "
      "network in clear text (use tls = \"starttls\" or \"implicit\")";
  EXPECT_THAT(config_warnings(c), ElementsAre("upstream main: 192.0.2.1:143" + clear,
                                              "upstream main: [2001:db8::1]:1143" + clear));
  EXPECT_TRUE(config_warnings(config_of(kMinimal)).empty());  // 127.0.0.1 by default
}

TEST(ConfigErrors, SyntaxError) {
  auto errors = errors_of("[server]\nlog_level = \n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0],
            "popbridge.toml:2:13: syntax error: Error while parsing key-value pair: expected value, saw '\\n'");
  // Duplicate keys are a TOML error too.
  errors = errors_of(std::string(kMinimal) + "port = 1\nport = 2\n");
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_THAT(errors[0], ::testing::StartsWith("popbridge.toml:6:"));
  EXPECT_THAT(errors[0], ::testing::HasSubstr("syntax error: "));
}

TEST(ConfigErrors, SourceNameIsUsed) {
  ConfigResult result = parse_config("", "/etc/popbridge/p.toml");
  ASSERT_FALSE(result.errors.empty());
  EXPECT_THAT(result.errors[0], ::testing::StartsWith("/etc/popbridge/p.toml:1:1: "));
}

// Every problem is reported, in file order, and no config is returned.
TEST(ConfigErrors, CollectsAllErrorsInFileOrder) {
  ConfigResult result = parse(R"([server]
upstream_threads = 0
idle_timeout = "0s"
log_level = "loud"

[[listener]]
address = "localhost:1110"
tls = "maybe"

[[listener]]
address = "127.0.0.1:70000"

[[upstream]]
port = "143"
bogus = 1

[mailbox]
hide_keyword = "a b"
)");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_THAT(result.errors,
              ElementsAre("popbridge.toml:2:20: server.upstream_threads: must be 1-256",
                          "popbridge.toml:3:16: server.idle_timeout: must be greater than zero",
                          "popbridge.toml:4:13: server.log_level: must be one of debug, info, warn, error (got \"loud\")",
                          "popbridge.toml:7:11: listener[0].address: \"localhost\" is not an IP address (hostnames are not allowed for listeners)",
                          "popbridge.toml:8:7: listener[0].tls: must be one of none, starttls, implicit (got \"maybe\")",
                          "popbridge.toml:11:11: listener[1].address: port must be 1-65535",
                          "popbridge.toml:14:8: upstream[0].port: expected an integer",
                          "popbridge.toml:15:1: upstream[0].bogus: unknown key",
                          "popbridge.toml:18:16: mailbox.hide_keyword: \"a b\" is not a valid IMAP keyword (bad character \" \")"));
}

// ---------------------------------------------------------------------------
// Files

class TempFile {
 public:
  explicit TempFile(const std::string& content) {
    char name[] = "/tmp/popbridge_config_testXXXXXX";
    int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    path_ = name;
    EXPECT_EQ(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ConfigFile, LoadsFileAndNamesItInErrors) {
  TempFile good(kMinimal);
  ConfigResult ok = load_config_file(good.path());
  EXPECT_TRUE(ok.errors.empty());
  ASSERT_TRUE(ok.config.has_value());
  EXPECT_EQ(ok.config->listeners[0].port, 1110);

  TempFile bad(std::string(kMinimal) + "port = 0\n");
  ConfigResult result = load_config_file(bad.path());
  EXPECT_FALSE(result.config.has_value());
  EXPECT_THAT(result.errors, ElementsAre(bad.path() + ":5:8: upstream[0].port: must be 1-65535"));
}

TEST(ConfigFile, MissingFile) {
  ConfigResult result = load_config_file("/nonexistent/popbridge.toml");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_THAT(result.errors,
              ElementsAre("/nonexistent/popbridge.toml: cannot open: No such file or directory"));
}

TEST(ConfigFile, DirectoryIsUnreadable) {
  ConfigResult result = load_config_file("/tmp");
  EXPECT_FALSE(result.config.has_value());
  EXPECT_THAT(result.errors, ElementsAre("/tmp: cannot read: Is a directory"));
}

// The shipped, documented example loads and matches config.h's defaults.
TEST(ConfigFile, ShippedExampleLoadsWithDefaults) {
  ConfigResult result = load_config_file(POPBRIDGE_SOURCE_DIR "/config/popbridge.toml");
  EXPECT_THAT(result.errors, ElementsAre());
  ASSERT_TRUE(result.config.has_value());
  const Config& c = *result.config;
  const Config defaults;
  EXPECT_EQ(c.server.idle_timeout, defaults.server.idle_timeout);
  EXPECT_EQ(c.server.log_level, defaults.server.log_level);
  EXPECT_EQ(c.server.upstream_threads, defaults.server.upstream_threads);
  ASSERT_EQ(c.listeners.size(), 1u);
  EXPECT_EQ(c.listeners[0].address, "127.0.0.1:1110");
  EXPECT_EQ(c.listeners[0].tls, TlsMode::kNone);
  ASSERT_EQ(c.upstreams.size(), 1u);
  const UpstreamConfig u;
  EXPECT_EQ(c.upstreams[0].name, u.name);
  EXPECT_EQ(c.upstreams[0].host, u.host);
  EXPECT_EQ(c.upstreams[0].port, u.port);
  EXPECT_EQ(c.upstreams[0].tls, u.tls);
  EXPECT_EQ(c.upstreams[0].folder, u.folder);
  EXPECT_EQ(c.upstreams[0].connect_timeout, u.connect_timeout);
  EXPECT_EQ(c.upstreams[0].command_timeout, u.command_timeout);
  EXPECT_EQ(c.mailbox.on_delete, defaults.mailbox.on_delete);
  EXPECT_EQ(c.mailbox.hide_keyword, defaults.mailbox.hide_keyword);
}

}  // namespace
}  // namespace popbridge
