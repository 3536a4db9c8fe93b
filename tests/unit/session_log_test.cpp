// Log lines: one event per line, whatever a client puts in a user name.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

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
