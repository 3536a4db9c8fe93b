// A scripted TCP server on the loopback for the IMAP backend's tests: it
// accepts one connection and runs a script on it in a thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace popbridge::imap::test_support {

// Records the commands a fake server saw; its thread adds, the test reads.
class Commands {
 public:
  void add(const std::string& command) {
    std::lock_guard lock(mutex_);
    seen_.push_back(command);
  }
  std::vector<std::string> get() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  bool saw(const std::string& command) {
    auto seen = get();
    return std::find(seen.begin(), seen.end(), command) != seen.end();
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> seen_;
};

inline void send_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// One line including its LF; empty at EOF.
inline std::string read_line(int fd) {
  std::string line;
  char c;
  while (::recv(fd, &c, 1, 0) == 1) {
    line.push_back(c);
    if (c == '\n') break;
  }
  return line;
}

inline std::string read_exact(int fd, size_t count) {
  std::string data(count, '\0');
  size_t done = 0;
  while (done < count) {
    ssize_t n = ::recv(fd, data.data() + done, count - done, 0);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

// Accepts one connection on 127.0.0.1 (or ::1) and runs `script` on it;
// the connection is closed when the script returns.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int)> script, int family = AF_INET)
      : script_(std::move(script)) {
    listener_ = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_storage address{};
    socklen_t length;
    if (family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
      in6->sin6_family = AF_INET6;
      in6->sin6_addr = in6addr_loopback;
      length = sizeof *in6;
    } else {
      auto* in = reinterpret_cast<sockaddr_in*>(&address);
      in->sin_family = AF_INET;
      in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      length = sizeof *in;
    }
    ok_ = listener_ >= 0 && bind(listener_, reinterpret_cast<sockaddr*>(&address), length) == 0 &&
          listen(listener_, 4) == 0 &&
          getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) == 0;
    if (!ok_) return;
    port_ = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                     : reinterpret_cast<sockaddr_in*>(&address)->sin_port);
    thread_ = std::thread([this] {
      int client = accept(listener_, nullptr, nullptr);
      if (client < 0) return;
      script_(client);
      ::close(client);
    });
  }
  ~ScriptedServer() {
    if (listener_ >= 0) shutdown(listener_, SHUT_RDWR);  // unblocks accept()
    if (thread_.joinable()) thread_.join();
    if (listener_ >= 0) ::close(listener_);
  }
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  bool ok() const { return ok_; }
  uint16_t port() const { return port_; }

 private:
  std::function<void(int)> script_;
  int listener_ = -1;
  bool ok_ = false;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A fake IMAP server: sends `greeting`, then for each command line calls
// `answer(tag, command)` (command without tag and CRLF) and sends back what
// it returns, with "$TAG" replaced by the tag. Special answers:
//   "<close>"  hang up (text before it is sent first);
//   "<stall>"  read until the client hangs up.
// An answer that starts with "+" is a continuation: the next line is passed
// as "<continuation> LINE" with the same tag. LOGOUT is answered by default.
class FakeImapServer {
 public:
  using Answer = std::function<std::string(const std::string& tag, const std::string& command)>;

  FakeImapServer(std::string greeting, Answer answer)
      : server_([greeting = std::move(greeting), answer = std::move(answer)](int fd) {
          send_all(fd, greeting);
          std::string tag;
          bool continuation = false;
          for (;;) {
            std::string line = read_line(fd);
            if (line.empty()) return;
            while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
            std::string command;
            if (continuation) {
              command = "<continuation> " + line;
            } else {
              size_t space = line.find(' ');
              tag = line.substr(0, space);
              command = space == std::string::npos ? "" : line.substr(space + 1);
            }
            std::string reply = answer(tag, command);
            if (reply.empty() && command == "LOGOUT") reply = "* BYE bye\r\n$TAG OK done\r\n";
            const std::string close_mark = "<close>";
            if (reply.size() >= close_mark.size() &&
                reply.compare(reply.size() - close_mark.size(), close_mark.size(), close_mark) == 0) {
              send_all(fd, reply.substr(0, reply.size() - close_mark.size()));
              return;
            }
            if (reply == "<stall>") {
              while (!read_line(fd).empty()) {
              }
              return;
            }
            continuation = reply.rfind("+", 0) == 0;
            for (size_t at; (at = reply.find("$TAG")) != std::string::npos;) {
              reply.replace(at, 4, tag);
            }
            send_all(fd, reply);
          }
        }) {}

  bool ok() const { return server_.ok(); }
  uint16_t port() const { return server_.port(); }

 private:
  ScriptedServer server_;
};

}  // namespace popbridge::imap::test_support
