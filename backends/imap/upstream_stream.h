// Our own libetpan mailstream_low driver for upstream connections.
//
// Why not libetpan's socket stream: Debian's build waits with select(),
// which aborts the process on descriptors >= 1024 (a busy proxy gets there),
// and its TLS checks no certificate. This driver owns a non-blocking socket
// and enforces our deadlines (libetpan's own timeout only covers its own
// connect). Inside a fiber (fiber.h, the normal case) every wait suspends
// the fiber on the event loop; elsewhere it blocks in poll(). A command and
// its whole answer share one deadline, io_timeout after the command went
// out, however slowly the answer trickles in.
//
// TLS is OpenSSL inside the same driver (libetpan's own TLS in Debian is
// GnuTLS and checks no certificate): start_tls() puts an SSL* on the socket,
// for implicit TLS right after connect() and for STARTTLS after
// mailimap_starttls() (libetpan's buffers are empty then, so the driver
// switches on the same descriptor and keeps the same mailstream). Reads call
// SSL_read first and poll only when OpenSSL asks for it (WANT_READ or
// WANT_WRITE): bytes OpenSSL has already decrypted (SSL_pending) never wait
// for the socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/imap/fiber.h"

#include <libetpan/libetpan.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace popbridge::imap {

// The TLS client settings of one upstream: one SSL_CTX (TLS 1.2 or later),
// its CA store loaded once (ca_file, or the system's default store when
// empty), shared by every connection to that upstream and by all worker
// threads (an SSL_CTX is thread-safe once built).
class UpstreamTls {
 public:
  // nullptr with *error saying why (unreadable or empty ca_file, ...).
  // verify = false turns the chain and host name checks off.
  static std::shared_ptr<const UpstreamTls> create(bool verify, const std::string& ca_file,
                                                   std::string* error);
  ~UpstreamTls();
  UpstreamTls(const UpstreamTls&) = delete;
  UpstreamTls& operator=(const UpstreamTls&) = delete;

  SSL_CTX* context() const { return ctx_; }
  bool verify() const { return verify_; }

 private:
  UpstreamTls(SSL_CTX* ctx, bool verify) : ctx_(ctx), verify_(verify) {}
  SSL_CTX* ctx_;
  bool verify_;
};

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

  // TLS handshake on the connected socket (implicit TLS, or after the
  // server's OK to STARTTLS), waiting at most `timeout` in all. `host` is
  // the configured name: sent as SNI (unless an IP literal) and checked
  // against the certificate (DNS name or IP address) when tls.verify().
  // False on failure, with failure() saying why; verification_failed()
  // tells a rejected certificate apart from a network failure.
  bool start_tls(const UpstreamTls& tls, const std::string& host, Millis timeout);
  bool tls_active() const { return ssl_ != nullptr; }
  bool verification_failed() const { return verification_failed_; }
  // "TLSv1.3 TLS_AES_256_GCM_SHA384" once TLS is on, for logs.
  std::string tls_description() const;

  // How long a command and its answer may take (changed after the
  // greeting, and for a quick LOGOUT); the current one ends `timeout` from
  // now.
  void set_io_timeout(Millis timeout);
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
  UpstreamStream(int fd, Millis io_timeout)
      : fd_(fd), io_timeout_(io_timeout), deadline_(std::chrono::steady_clock::now() + io_timeout) {}
  ~UpstreamStream();
  static mailstream_low* wrap(UpstreamStream* stream);

  // Waits until `events` are ready or the deadline passes (then fails,
  // saying `budget` was spent).
  bool wait(short events, std::chrono::steady_clock::time_point deadline, Millis budget,
            const char* what);
  // The deadline of the command a read or write belongs to.
  std::chrono::steady_clock::time_point command_deadline(bool writing);
  void fail(std::string why);
  ssize_t tls_read(void* buffer, size_t count, std::chrono::steady_clock::time_point deadline);
  ssize_t tls_write(const void* buffer, size_t count,
                    std::chrono::steady_clock::time_point deadline);
  // Turns a failed SSL_* call into failure(); false if the call should be
  // retried after waiting (WANT_READ/WANT_WRITE, already waited for).
  bool tls_retry(int rc, std::chrono::steady_clock::time_point deadline, Millis budget,
                 const char* what);

  // OpenSSL callbacks: the BIO under the SSL* (recv/send on fd_, send with
  // MSG_NOSIGNAL: a server that hung up must give EPIPE, not SIGPIPE) and
  // the verify callback that notes which certificate failed and why.
  friend struct TlsGlue;

  int fd_;
  Millis io_timeout_;
  std::chrono::steady_clock::time_point deadline_;  // of the command in progress
  bool answer_started_ = false;  // read since the last write: the next write is a new command
  std::unique_ptr<FdWait> watch_;  // inside a fiber: the loop watches fd_ for us
  bool eof_ = false;
  std::string pending_;  // read ahead by peek_line(), served first by read()
  std::string failure_;
  uint64_t bytes_written_ = 0;
  SSL* ssl_ = nullptr;
  bool tls_dead_ = false;        // a fatal TLS error: no more SSL_* calls but free
  bool verification_failed_ = false;
  int socket_errno_ = 0;         // errno of the BIO's last failed recv/send
  std::string verify_detail_;    // the first certificate that failed, for failure()
};

}  // namespace popbridge::imap
