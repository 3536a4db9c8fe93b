// Log lines: one event per line, whatever a client puts in a user name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/log.h"

namespace popbridge {
namespace {

// Runs `body` with stderr redirected to a temporary file; returns what it wrote.
template <typename F>
std::string capture_stderr(F body) {
  fflush(stderr);
  char path[] = "/tmp/popbridge-log-XXXXXX";
  const int fd = mkstemp(path);
  const int saved = dup(2);
  dup2(fd, 2);
  body();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string text;
  char buffer[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buffer, sizeof buffer)) > 0;) text.append(buffer, static_cast<size_t>(n));
  close(fd);
  unlink(path);
  return text;
}

// A strict UTF-8 decoder (RFC 3629), written apart from log.cpp's: decodes
// each sequence to its code point and refuses overlong forms, surrogates,
// code points above U+10FFFF, stray continuation bytes and truncation.
bool strict_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<unsigned char>(text[i]);
    size_t length = 0;
    uint32_t code = 0;
    if (lead < 0x80) length = 1, code = lead;
    else if ((lead & 0xE0) == 0xC0) length = 2, code = lead & 0x1F;
    else if ((lead & 0xF0) == 0xE0) length = 3, code = lead & 0x0F;
    else if ((lead & 0xF8) == 0xF0) length = 4, code = lead & 0x07;
    else return false;
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    static const uint32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code < kLeast[length] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

TEST(Log, StrictDecoderOfThisTest) {
  EXPECT_TRUE(strict_utf8("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  for (const char* bad : {"\x80", "\xC3", "\xC0\xAF", "\xE0\x80\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80",
                          "\xF8\x88\x80\x80\x80", "\xFF"}) {
    EXPECT_FALSE(strict_utf8(bad)) << bad;
  }
}

// What a client may put in a user name: every kind of invalid UTF-8, and
// valid characters of each length around them.
const std::string kInvalidUtf8[] = {
    "lone\x80" "continuation\xBF",
    "truncated\xC3",
    "truncated3\xE2\x82",
    "truncated4\xF0\x9F\x98 and more",
    "overlong\xC0\xAF and \xC1\xBF and \xE0\x80\xAF and \xF0\x80\x80\xAF",
    "surrogate\xED\xA0\x80\xED\xBF\xBF",
    "above U+10FFFF\xF4\x90\x80\x80 and \xF5\x80\x80\x80",
    "bytes\xFE\xFF\xF8\x88\x80\x80\x80",
    "latin-1 caf\xE9 then valid \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 and \xF4\x8F\xBF\xBF",
};

TEST(Log, JsonLinesAreValidUtf8WhateverTheUserName) {
  log::set_json(true);
  const std::string out = capture_stderr([] {
    for (const std::string& name : kInvalidUtf8) {
      log::info("pop3 127.0.0.1:1: login attempt user=", name);
      log::event(log::Level::kInfo, "logout", {{"user", name}, {name, "key"}});
    }
  });
  log::set_json(false);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2 * std::size(kInvalidUtf8));
  EXPECT_TRUE(strict_utf8(out)) << out;
  // Each byte that is not UTF-8 is \u00XX; valid characters stay as they are.
  EXPECT_NE(out.find("lone\\u0080continuation\\u00bf\""), std::string::npos) << out;
  EXPECT_NE(out.find("truncated4\\u00f0\\u009f\\u0098 and more"), std::string::npos) << out;
  EXPECT_NE(out.find("overlong\\u00c0\\u00af and \\u00c1\\u00bf and \\u00e0\\u0080\\u00af"),
            std::string::npos) << out;
  EXPECT_NE(out.find("surrogate\\u00ed\\u00a0\\u0080\\u00ed\\u00bf\\u00bf"), std::string::npos) << out;
  EXPECT_NE(out.find("above U+10FFFF\\u00f4\\u0090\\u0080\\u0080 and \\u00f5"), std::string::npos) << out;
  EXPECT_NE(out.find("bytes\\u00fe\\u00ff\\u00f8\\u0088"), std::string::npos) << out;
  EXPECT_NE(out.find("caf\\u00e9 then valid \xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80 and \xF4\x8F\xBF\xBF\""),
            std::string::npos) << out;
}

TEST(Log, TextLinesAreValidUtf8WhateverTheUserName) {
  const std::string out = capture_stderr([] {
    for (const std::string& name : kInvalidUtf8) {
      log::info("pop3 127.0.0.1:1: login attempt user=", name);
      log::event(log::Level::kInfo, "logout", {{"user", name}});
    }
    log::event(log::Level::kInfo, "logout", {{"user", "plain\xFF"}, {"ok", "\xC3\xA9"}});
  });
  EXPECT_TRUE(strict_utf8(out)) << out;
  // Messages show such bytes as \xNN, like control bytes; event values
  // holding one are quoted (a JSON string, \u00XX).
  EXPECT_NE(out.find("user=truncated3\\xe2\\x82\n"), std::string::npos) << out;
  EXPECT_NE(out.find(" logout user=\"plain\\u00ff\" ok=\xC3\xA9\n"), std::string::npos) << out;
}

TEST(Log, ControlBytesCannotForgeALine) {
  const std::string out = capture_stderr([] {
    log::info("login failed for ", "x\r\n2026-01-01T00:00:00.000Z info logout user=ceo\x1b[2J");
  });
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_NE(out.find("x\\x0d\\x0a2026-01-01"), std::string::npos) << out;
  EXPECT_NE(out.find("\\x1b[2J"), std::string::npos);
}

TEST(Log, EventValuesAreQuotedWhenNeeded) {
  const std::string out = capture_stderr([] {
    log::event(log::Level::kInfo, "logout", {{"user", "a b"}, {"client", "127.0.0.1:5"}, {"x", "q\"\n"}});
  });
  EXPECT_NE(out.find(" logout user=\"a b\" client=127.0.0.1:5 x=\"q\\\"\\u000a\"\n"), std::string::npos) << out;
}

TEST(Log, JsonLinesAreObjects) {
  log::set_json(true);
  const std::string out = capture_stderr([] {
    log::warn("he said \"hi\"\n");
    log::event(log::Level::kInfo, "logout", {{"user", "\xC3\xA9"}});
  });
  log::set_json(false);
  EXPECT_NE(out.find("\"level\":\"warn\",\"message\":\"he said \\\"hi\\\"\\u000a\"}\n"), std::string::npos) << out;
  EXPECT_NE(out.find("\"event\":\"logout\",\"user\":\"\xC3\xA9\"}\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace popbridge
