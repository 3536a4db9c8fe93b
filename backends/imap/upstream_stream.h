// Our own libetpan mailstream_low driver for upstream connections.
//
// Why not libetpan's socket stream: Debian's build waits with select(),
// which aborts the process on descriptors >= 1024 (a busy proxy gets there),
// and its TLS checks no certificate. This driver owns a non-blocking socket,
// waits with poll() and enforces our timeouts (libetpan's own timeout only
// covers its own connect). Every read or write waits at most io_timeout.
//
// TLS comes later in the same driver: an SSL* next to the socket, used by
// recv_some()/send_some(), for implicit TLS and for STARTTLS (after
// mailimap_starttls() libetpan's buffers are empty, so the driver can switch
// on the same descriptor and keep the same mailstream).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include <libetpan/libetpan.h>

namespace popbridge::imap {

class UpstreamStream {
 public:
  using Millis = std::chrono::milliseconds;

  // Resolves `host` (IPv4 and IPv6) and tries each address in turn, giving
  // each connect_timeout. Returns a mailstream_low that owns the socket
  // (free it with mailstream_low_free(), or mailstream_close() once wrapped
  // in a mailstream), or nullptr with *error saying why.
  static mailstream_low* connect(const std::string& host, uint16_t port, Millis connect_timeout,
                                 Millis io_timeout, std::string* error);

  // Wraps an already connected socket, taking ownership (made non-blocking).
  static mailstream_low* adopt(int fd, Millis io_timeout);

  // The driver state behind `low`, or nullptr if `low` is not ours.
  static UpstreamStream* of(mailstream_low* low);

  // Reads until a whole line (up to `max` octets) has arrived and copies it
  // to *line without consuming it: later reads return it again. Lets us
  // look at the greeting before libetpan parses it. False on failure.
  bool peek_line(std::string* line, size_t max);

  // How long a single read or write may wait (changed for the greeting and
  // for a quick LOGOUT).
  void set_io_timeout(Millis timeout) { io_timeout_ = timeout; }
  Millis io_timeout() const { return io_timeout_; }

  // Why the connection failed ("timed out ...", "connection closed by
  // server", "recv: ..."); empty while it is healthy.
  const std::string& failure() const { return failure_; }
  bool failed() const { return !failure_.empty(); }
  // Octets handed to the socket so far (tells "nothing was sent" apart).
  uint64_t bytes_written() const { return bytes_written_; }
  int fd() const { return fd_; }

  // The mailstream_low_driver entry points.
  ssize_t read(void* buffer, size_t count);
  ssize_t write(const void* buffer, size_t count);
  void close();
  // Frees the state and the mailstream_low itself (libetpan does not).
  static void free_low(mailstream_low* low);

 private:
  UpstreamStream(int fd, Millis io_timeout) : fd_(fd), io_timeout_(io_timeout) {}
  ~UpstreamStream();
  static mailstream_low* wrap(UpstreamStream* stream);

  // Waits until `events` are ready or the deadline passes (then fails).
  bool wait(short events, std::chrono::steady_clock::time_point deadline, const char* what);
  void fail(std::string why);

  int fd_;
  Millis io_timeout_;
  bool eof_ = false;
  std::string pending_;  // read ahead by peek_line(), served first by read()
  std::string failure_;
  uint64_t bytes_written_ = 0;
};

}  // namespace popbridge::imap
