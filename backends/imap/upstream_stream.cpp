#include "backends/imap/upstream_stream.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace popbridge::imap {
namespace {

using Clock = std::chrono::steady_clock;

std::string errno_text(int error) { return std::strerror(error); }

UpstreamStream* self(mailstream_low* low) { return static_cast<UpstreamStream*>(low->data); }

ssize_t driver_read(mailstream_low* low, void* buffer, size_t count) {
  return self(low)->read(buffer, count);
}
ssize_t driver_write(mailstream_low* low, const void* buffer, size_t count) {
  return self(low)->write(buffer, count);
}
int driver_close(mailstream_low* low) {
  self(low)->close();
  return 0;
}
int driver_get_fd(mailstream_low* low) { return self(low)->fd(); }

// Not const: mailstream_low_new() takes a non-const pointer. cancel, the
// certificate chain and the idle hooks may be NULL (checked by libetpan).
mailstream_low_driver g_driver = {
    driver_read, driver_write, driver_close, driver_get_fd, UpstreamStream::free_low,
    nullptr,     nullptr,      nullptr,      nullptr,       nullptr,     nullptr,
};

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so that we never spin with a 0 ms poll before the deadline.
  return static_cast<int>(std::min<long long>(left.count() + 1, 24 * 3600 * 1000));
}

std::string address_text(const sockaddr* address, socklen_t length) {
  char host[NI_MAXHOST];
  if (getnameinfo(address, length, host, sizeof host, nullptr, 0, NI_NUMERICHOST) != 0) {
    return "?";
  }
  return address->sa_family == AF_INET6 ? "[" + std::string(host) + "]" : std::string(host);
}

// One non-blocking connect attempt; returns the socket or -1 with *why.
int connect_one(const addrinfo* ai, std::chrono::milliseconds timeout, std::string* why) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    *why = "socket: " + errno_text(errno);
    return -1;
  }
  if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS && errno != EINTR) {
      *why = errno_text(errno);
      ::close(fd);
      return -1;
    }
    auto deadline = Clock::now() + timeout;
    for (;;) {
      pollfd pfd{fd, POLLOUT, 0};
      int ready = poll(&pfd, 1, remaining_ms(deadline));
      if (ready > 0) break;
      if (ready < 0 && errno == EINTR) continue;
      *why = ready == 0 ? "timed out after " + std::to_string(timeout.count()) + " ms"
                        : "poll: " + errno_text(errno);
      ::close(fd);
      return -1;
    }
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
    if (error != 0) {
      *why = errno_text(error);
      ::close(fd);
      return -1;
    }
  }
  // IMAP commands are small and we flush whole commands: do not let Nagle
  // hold the second half of a write back for a round trip.
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  return fd;
}

}  // namespace

mailstream_low* UpstreamStream::connect(const std::string& host, uint16_t port,
                                        Millis connect_timeout, Millis io_timeout,
                                        std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  std::string port_text = std::to_string(port);
  int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &addresses);
  if (rc != 0) {
    *error = "cannot resolve " + host + ": " +
             (rc == EAI_SYSTEM ? errno_text(errno) : std::string(gai_strerror(rc)));
    return nullptr;
  }

  std::string failures;
  int fd = -1;
  for (const addrinfo* ai = addresses; ai != nullptr && fd < 0; ai = ai->ai_next) {
    std::string why;
    fd = connect_one(ai, connect_timeout, &why);
    if (fd < 0) {
      if (!failures.empty()) failures += "; ";
      failures += address_text(ai->ai_addr, ai->ai_addrlen) + ": " + why;
    }
  }
  freeaddrinfo(addresses);
  if (fd < 0) {
    *error = "cannot connect to " + host + ":" + port_text + " (" + failures + ")";
    return nullptr;
  }
  return wrap(new UpstreamStream(fd, io_timeout));
}

mailstream_low* UpstreamStream::adopt(int fd, Millis io_timeout) {
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  return wrap(new UpstreamStream(fd, io_timeout));
}

mailstream_low* UpstreamStream::wrap(UpstreamStream* stream) {
  mailstream_low* low = mailstream_low_new(stream, &g_driver);
  if (low == nullptr) delete stream;
  return low;
}

UpstreamStream* UpstreamStream::of(mailstream_low* low) {
  if (low == nullptr || low->driver != &g_driver) return nullptr;
  return self(low);
}

void UpstreamStream::free_low(mailstream_low* low) {
  delete self(low);
  low->data = nullptr;
  free(low);  // allocated with malloc() by mailstream_low_new()
}

UpstreamStream::~UpstreamStream() { close(); }

void UpstreamStream::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void UpstreamStream::fail(std::string why) {
  if (failure_.empty()) failure_ = std::move(why);
}

bool UpstreamStream::wait(short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    pollfd pfd{fd_, events, 0};
    int ready = poll(&pfd, 1, remaining_ms(deadline));
    if (ready > 0) {
      if (pfd.revents & POLLNVAL) {
        fail(std::string("poll: invalid descriptor while ") + what);
        return false;
      }
      return true;  // readable, writable, or an error that recv/send will report
    }
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) {
      fail("poll: " + errno_text(errno));
      return false;
    }
    fail("timed out after " + std::to_string(io_timeout_.count()) + " ms " + what);
    return false;
  }
}

ssize_t UpstreamStream::read(void* buffer, size_t count) {
  if (fd_ < 0) {
    fail("read on a closed connection");
    return -1;
  }
  if (!pending_.empty()) {
    size_t n = std::min(count, pending_.size());
    std::memcpy(buffer, pending_.data(), n);
    pending_.erase(0, n);
    return static_cast<ssize_t>(n);
  }
  // After EOF has been reported once, further reads are errors: libetpan's
  // literal reader treats 0 as "no progress yet" and would spin forever.
  if (eof_) return -1;
  if (count == 0) return 0;
  auto deadline = Clock::now() + io_timeout_;
  for (;;) {
    ssize_t n = ::recv(fd_, buffer, count, 0);
    if (n > 0) return n;
    if (n == 0) {
      eof_ = true;
      fail("connection closed by server");
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      fail("recv: " + errno_text(errno));
      return -1;
    }
    if (!wait(POLLIN, deadline, "waiting for the server")) return -1;
  }
}

bool UpstreamStream::peek_line(std::string* line, size_t max) {
  std::string ahead;
  char buffer[1024];
  // Drain what is already pending first (read() serves it), then the socket.
  while (ahead.find('\n') == std::string::npos) {
    if (ahead.size() >= max) {
      fail("line longer than " + std::to_string(max) + " octets");
      pending_ = ahead + pending_;
      return false;
    }
    ssize_t n = read(buffer, sizeof buffer);
    if (n <= 0) {
      pending_ = ahead + pending_;
      return false;
    }
    ahead.append(buffer, static_cast<size_t>(n));
  }
  *line = ahead.substr(0, ahead.find('\n') + 1);
  pending_ = ahead + pending_;
  return true;
}

ssize_t UpstreamStream::write(const void* buffer, size_t count) {
  if (fd_ < 0) {
    fail("write on a closed connection");
    return -1;
  }
  if (count == 0) return 0;
  auto deadline = Clock::now() + io_timeout_;
  for (;;) {
    // MSG_NOSIGNAL: a server that hung up must give EPIPE, not kill us.
    ssize_t n = ::send(fd_, buffer, count, MSG_NOSIGNAL);
    if (n > 0) {
      bytes_written_ += static_cast<uint64_t>(n);
      return n;  // libetpan loops over partial writes
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      fail("send: " + errno_text(errno));
      return -1;
    }
    if (!wait(POLLOUT, deadline, "sending to the server")) return -1;
  }
}

}  // namespace popbridge::imap
