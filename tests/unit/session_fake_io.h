// The connection a Pop3Session talks to in unit tests: it records what is
// sent and fails the test on a send after close()/abort() or an empty send.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "proxy/pop3/session.h"

namespace popbridge::test_support {

class FakeIo final : public SessionIo {
 public:
  void send(std::string data) override {
    EXPECT_FALSE(closed || aborted) << "send() after close()/abort(): " << data.substr(0, 80);
    EXPECT_FALSE(data.empty()) << "empty send()";
    if (accumulate) queued_bytes += data.size();  // a client that reads nothing
    out += data;
  }
  void send(std::vector<std::string> pieces) override {
    ++gathered_sends;
    gathered_pieces += pieces.size();
    for (std::string& piece : pieces) send(std::move(piece));
  }
  size_t queued() const override { return queued_bytes; }
  void set_reading(bool on) override { reading = on; }
  void close() override {
    EXPECT_FALSE(closed || aborted) << "close() twice or after abort()";
    closed = true;
  }
  void abort() override {
    EXPECT_FALSE(aborted) << "abort() twice";
    aborted = true;
  }
  void start_tls() override { tls_started = true; }
  void before_login(std::function<void()> go) override {
    ++login_attempts;
    go();
  }
  void login_finished(bool ok, std::function<void()> then) override {
    if (!ok) ++failed_logins;
    then();
  }

  std::string out;
  size_t queued_bytes = 0;
  bool accumulate = false;
  bool reading = true;
  bool closed = false;
  bool aborted = false;
  bool tls_started = false;
  int failed_logins = 0;
  int login_attempts = 0;
  size_t gathered_sends = 0;
  size_t gathered_pieces = 0;
};

}  // namespace popbridge::test_support
