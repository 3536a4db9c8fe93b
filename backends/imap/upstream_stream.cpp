#include "backends/imap/upstream_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "backends/imap/fiber.h"

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
  if (address->sa_family != AF_INET6) return host;
  std::string text = "[";  // (not "[" + std::string: GCC 12 -O3 warns, PR 105329)
  text += host;
  text += ']';
  return text;
}

// Waits until `fd` is ready for `events` (POLLIN or POLLOUT) or the
// deadline passes: 1 ready, 0 timed out, -1 poll failed (errno), -2
// cancelled. Inside a fiber it suspends the fiber on the loop (through
// *watch, made on first use when given, else a one-off); elsewhere (the
// unit tests that drive a session directly) it blocks in poll().
int wait_for(int fd, short events, Clock::time_point deadline, std::unique_ptr<FdWait>* watch) {
  if (Fiber* fiber = Fiber::current()) {
    std::unique_ptr<FdWait> one_off;
    if (watch == nullptr) watch = &one_off;
    if (!*watch) *watch = std::make_unique<FdWait>(fiber->loop(), fd);
    switch ((*watch)->wait(events == POLLIN, deadline)) {
      case FdWait::kReady: return 1;
      case FdWait::kTimedOut: return 0;
      case FdWait::kCancelled: return -2;
    }
  }
  for (;;) {
    pollfd pfd{fd, events, 0};
    int ready = poll(&pfd, 1, remaining_ms(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready > 0 && (pfd.revents & POLLNVAL)) {
      errno = EBADF;
      return -1;
    }
    return ready > 0 ? 1 : ready;
  }
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
    const int ready = wait_for(fd, POLLOUT, deadline, nullptr);
    if (ready <= 0) {
      *why = ready == 0   ? "timed out after " + std::to_string(timeout.count()) + " ms"
             : ready == -2 ? std::string("shutting down")
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
  addrinfo* addresses = nullptr;
  std::string port_text = std::to_string(port);
  if (Fiber::current() != nullptr) {
    // On the loop: through libuv's resolver, bounded by connect_timeout.
    int rc = fiber_getaddrinfo(host, port_text, Clock::now() + connect_timeout, &addresses);
    if (rc != 0) {
      *error = "cannot resolve " + host + ": " +
               (rc == UV_ETIMEDOUT ? "timed out after " + std::to_string(connect_timeout.count()) + " ms"
                                   : std::string(uv_strerror(rc)));
      return nullptr;
    }
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &addresses);
    if (rc != 0) {
      *error = "cannot resolve " + host + ": " +
               (rc == EAI_SYSTEM ? errno_text(errno) : std::string(gai_strerror(rc)));
      return nullptr;
    }
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
  freeaddrinfo(addresses);  // (uv_getaddrinfo's result is getaddrinfo's)
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
  if (ssl_ != nullptr) {
    // A courtesy close_notify, never waited for; not after a fatal error
    // (OpenSSL forbids it) nor before the handshake finished.
    if (!tls_dead_ && fd_ >= 0 && SSL_is_init_finished(ssl_)) {
      ERR_set_mark();
      SSL_shutdown(ssl_);
      ERR_pop_to_mark();
    }
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  watch_.reset();  // (its poll handle must go before the descriptor)
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void UpstreamStream::fail(std::string why) {
  if (failure_.empty()) failure_ = std::move(why);
}

bool UpstreamStream::wait(short events, Clock::time_point deadline, Millis budget,
                          const char* what) {
  const int ready = wait_for(fd_, events, deadline, &watch_);
  if (ready > 0) return true;  // readable, writable, or an error that recv/send will report
  if (ready == -2) {
    fail(std::string("shutting down while ") + what);
  } else if (ready < 0) {
    fail(std::string("poll: ") + errno_text(errno) + " while " + what);
  } else {
    fail("timed out after " + std::to_string(budget.count()) + " ms " + what);
  }
  return false;
}

// IMAP is a conversation of commands and answers: a write after a read
// starts a command, and everything until the next such write shares one
// deadline, however slowly the answer trickles in.
Clock::time_point UpstreamStream::command_deadline(bool writing) {
  if (writing && answer_started_) {
    answer_started_ = false;
    deadline_ = Clock::now() + io_timeout_;
  } else if (!writing) {
    answer_started_ = true;
  }
  return deadline_;
}

void UpstreamStream::set_io_timeout(Millis timeout) {
  io_timeout_ = timeout;
  deadline_ = Clock::now() + timeout;
  answer_started_ = false;
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
  const auto deadline = command_deadline(false);
  if (ssl_ != nullptr) return tls_read(buffer, count, deadline);
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
    if (!wait(POLLIN, deadline, io_timeout_, "waiting for the server")) return -1;
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
  const auto deadline = command_deadline(true);
  if (ssl_ != nullptr) return tls_write(buffer, count, deadline);
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
    if (!wait(POLLOUT, deadline, io_timeout_, "sending to the server")) return -1;
  }
}

// ---- TLS ------------------------------------------------------------------

namespace {

// The reasons of the OpenSSL errors queued by the failed call, oldest
// first ("wrong version number", "certificate verify failed").
std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    std::string entry;
    if (ERR_SYSTEM_ERROR(code)) {
      entry = errno_text(ERR_GET_REASON(code));
    } else if (ERR_GET_REASON(code) == ERR_R_SYS_LIB) {
      continue;  // "system lib": the system error before it said it better
    } else if (const char* reason = ERR_reason_error_string(code)) {
      entry = reason;
    } else {
      char buffer[256];
      ERR_error_string_n(code, buffer, sizeof buffer);
      entry = buffer;
    }
    if (text.find(entry) != std::string::npos) continue;
    if (!text.empty()) text += "; ";
    text += entry;
  }
  return text.empty() ? "unknown error" : text;
}

bool is_ip_literal(const std::string& host) {
  unsigned char address[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), address) == 1 ||
         inet_pton(AF_INET6, host.c_str(), address) == 1;
}

std::string name_text(const X509_NAME* name) {
  if (name == nullptr) return "?";
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return "?";
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string text(data != nullptr ? data : "", length > 0 ? static_cast<size_t>(length) : 0);
  BIO_free(bio);
  return text.empty() ? "(empty)" : text;
}

std::string time_text(const ASN1_TIME* time) {
  if (time == nullptr) return "?";
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr) return "?";
  ASN1_TIME_print(bio, time);
  char* data = nullptr;
  long length = BIO_get_mem_data(bio, &data);
  std::string text(data != nullptr ? data : "", length > 0 ? static_cast<size_t>(length) : 0);
  BIO_free(bio);
  return text;
}

// "DNS:localhost, IP:127.0.0.1" (subjectAltName), or "CN=..." without one.
std::string certificate_names(X509* cert) {
  std::string text;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
      std::string entry;
      if (name->type == GEN_DNS) {
        const ASN1_STRING* dns = name->d.dNSName;
        entry = "DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                     static_cast<size_t>(ASN1_STRING_length(dns)));
      } else if (name->type == GEN_IPADD) {
        const ASN1_OCTET_STRING* ip = name->d.iPAddress;
        char buffer[INET6_ADDRSTRLEN] = "?";
        if (ASN1_STRING_length(ip) == 4) {
          inet_ntop(AF_INET, ASN1_STRING_get0_data(ip), buffer, sizeof buffer);
        } else if (ASN1_STRING_length(ip) == 16) {
          inet_ntop(AF_INET6, ASN1_STRING_get0_data(ip), buffer, sizeof buffer);
        }
        entry = std::string("IP:") + buffer;
      }
      if (entry.empty()) continue;
      if (!text.empty()) text += ", ";
      text += entry;
    }
    GENERAL_NAMES_free(names);
  }
  if (text.empty()) text = name_text(X509_get_subject_name(cert));
  return text;
}

}  // namespace

struct TlsGlue {
  static BIO_METHOD* bio_method() {
    // Built once, never freed (shared by every connection).
    static BIO_METHOD* method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                   "popbridge upstream socket");
      if (m != nullptr) {
        BIO_meth_set_write(m, bio_write);
        BIO_meth_set_read(m, bio_read);
        BIO_meth_set_ctrl(m, bio_ctrl);
      }
      return m;
    }();
    return method;
  }

  static UpstreamStream* of(BIO* bio) { return static_cast<UpstreamStream*>(BIO_get_data(bio)); }

  static int bio_read(BIO* bio, char* buffer, int count) {
    UpstreamStream* stream = of(bio);
    BIO_clear_retry_flags(bio);
    if (count <= 0) return 0;
    for (;;) {
      ssize_t n = ::recv(stream->fd_, buffer, static_cast<size_t>(count), 0);
      if (n >= 0) return static_cast<int>(n);  // 0: the server closed the TCP connection
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_read(bio);
      } else {
        stream->socket_errno_ = errno;
      }
      return -1;
    }
  }

  static int bio_write(BIO* bio, const char* buffer, int count) {
    UpstreamStream* stream = of(bio);
    BIO_clear_retry_flags(bio);
    if (count <= 0) return 0;
    for (;;) {
      ssize_t n = ::send(stream->fd_, buffer, static_cast<size_t>(count), MSG_NOSIGNAL);
      if (n >= 0) return static_cast<int>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        BIO_set_retry_write(bio);
      } else {
        stream->socket_errno_ = errno;
      }
      return -1;
    }
  }

  static long bio_ctrl(BIO*, int command, long, void*) {
    return command == BIO_CTRL_FLUSH ? 1 : 0;  // send() has no buffer to flush
  }

  // Keeps OpenSSL's verdict; notes the first certificate that failed.
  static int verify(int ok, X509_STORE_CTX* store) {
    if (ok) return ok;
    auto* ssl = static_cast<SSL*>(
        X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* stream = ssl != nullptr ? static_cast<UpstreamStream*>(SSL_get_app_data(ssl)) : nullptr;
    if (stream == nullptr || !stream->verify_detail_.empty()) return ok;
    X509* cert = X509_STORE_CTX_get_current_cert(store);
    const int error = X509_STORE_CTX_get_error(store);
    const int depth = X509_STORE_CTX_get_error_depth(store);
    if (cert == nullptr) return ok;
    std::string detail;
    if (error == X509_V_ERR_HOSTNAME_MISMATCH || error == X509_V_ERR_IP_ADDRESS_MISMATCH) {
      detail = "the certificate is for " + certificate_names(cert);
    } else {
      detail = (depth == 0 ? std::string("server certificate ")
                           : "certificate at depth " + std::to_string(depth) + " ") +
               name_text(X509_get_subject_name(cert)) + ", issued by " +
               name_text(X509_get_issuer_name(cert));
      if (error == X509_V_ERR_CERT_HAS_EXPIRED) {
        detail += ", expired " + time_text(X509_get0_notAfter(cert));
      } else if (error == X509_V_ERR_CERT_NOT_YET_VALID) {
        detail += ", valid from " + time_text(X509_get0_notBefore(cert));
      }
    }
    stream->verify_detail_ = detail;
    return ok;
  }
};

std::shared_ptr<const UpstreamTls> UpstreamTls::create(bool verify, const std::string& ca_file,
                                                       std::string* error) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) {
    *error = "cannot create a TLS context: " + openssl_errors();
    return nullptr;
  }
  std::shared_ptr<const UpstreamTls> tls(new UpstreamTls(ctx, verify));
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
    *error = "cannot require TLS 1.2: " + openssl_errors();
    return nullptr;
  }
  // Partial writes: our write() returns what was sent, like send(); the
  // buffer may move between retries (libetpan retries from its own).
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    return tls;
  }
  // The CA store, loaded here once for every connection of this upstream.
  if (!ca_file.empty()) {
    if (access(ca_file.c_str(), R_OK) != 0) {
      *error = "cannot read CA file " + ca_file + ": " + errno_text(errno);
      return nullptr;
    }
    if (SSL_CTX_load_verify_locations(ctx, ca_file.c_str(), nullptr) != 1) {
      *error = "cannot load CA certificates from " + ca_file + ": " + openssl_errors();
      return nullptr;
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    *error = "cannot load the system's CA certificates: " + openssl_errors();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, TlsGlue::verify);
  return tls;
}

UpstreamTls::~UpstreamTls() { SSL_CTX_free(ctx_); }

bool UpstreamStream::tls_retry(int rc, Clock::time_point deadline, Millis budget,
                               const char* what) {
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
      return wait(POLLIN, deadline, budget, what);
    case SSL_ERROR_WANT_WRITE:
      return wait(POLLOUT, deadline, budget, what);
    case SSL_ERROR_SYSCALL:
      tls_dead_ = true;
      fail(socket_errno_ != 0 ? "TLS: " + errno_text(socket_errno_)
                              : "connection closed by server " + std::string(what));
      return false;
    case SSL_ERROR_ZERO_RETURN:
      fail("connection closed by server " + std::string(what));
      return false;
    case SSL_ERROR_SSL:
      tls_dead_ = true;
      fail("TLS error " + std::string(what) + ": " + openssl_errors());
      return false;
    default:
      tls_dead_ = true;
      fail("TLS error " + std::string(what));
      return false;
  }
}

bool UpstreamStream::start_tls(const UpstreamTls& tls, const std::string& configured_host,
                               Millis timeout) {
  if (fd_ < 0 || ssl_ != nullptr || failed()) {
    fail(ssl_ != nullptr ? "TLS is already on" : "TLS on a closed connection");
    return false;
  }
  // Bytes read before the switch would be plaintext the server (or a man in
  // the middle) sent ahead of the handshake: never let them pass as TLS data.
  if (!pending_.empty()) {
    fail("the server sent data before the TLS handshake");
    return false;
  }
  std::string host = configured_host;
  if (host.size() > 1 && host.back() == '.') host.pop_back();  // "imap.example.com."
  const bool ip = is_ip_literal(host);

  ERR_clear_error();
  ssl_ = SSL_new(tls.context());
  BIO* bio = TlsGlue::bio_method() != nullptr ? BIO_new(TlsGlue::bio_method()) : nullptr;
  if (ssl_ == nullptr || bio == nullptr) {
    if (bio != nullptr) BIO_free(bio);
    tls_dead_ = true;
    fail("cannot start TLS: " + openssl_errors());
    return false;
  }
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);  // one reference, owned by ssl_
  SSL_set_app_data(ssl_, this);
  SSL_set_connect_state(ssl_);
  // SNI carries host names only (RFC 6066 forbids IP literals).
  if (!ip && SSL_set_tlsext_host_name(ssl_, host.c_str()) != 1) {
    tls_dead_ = true;
    fail("cannot send " + host + " as TLS server name: " + openssl_errors());
    return false;
  }
  if (tls.verify()) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str())
                       : X509_VERIFY_PARAM_set1_host(param, host.c_str(), host.size());
    if (set != 1) {
      tls_dead_ = true;
      verification_failed_ = true;
      fail("cannot check the certificate against the name " + host);
      return false;
    }
  }

  const auto deadline = Clock::now() + timeout;
  for (;;) {
    ERR_clear_error();
    socket_errno_ = 0;
    const int rc = SSL_connect(ssl_);
    if (rc == 1) break;
    if (tls.verify() && SSL_get_error(ssl_, rc) == SSL_ERROR_SSL &&
        SSL_get_verify_result(ssl_) != X509_V_OK) {
      const long result = SSL_get_verify_result(ssl_);
      ERR_clear_error();
      tls_dead_ = true;
      verification_failed_ = true;
      std::string why = "certificate verification failed for " + host + ": " +
                        X509_verify_cert_error_string(result);
      if (!verify_detail_.empty()) why += " (" + verify_detail_ + ")";
      fail(why);
      return false;
    }
    if (!tls_retry(rc, deadline, timeout, "during the TLS handshake")) return false;
  }
  // SSL_VERIFY_PEER already failed the handshake otherwise; belt and braces.
  if (tls.verify() && SSL_get_verify_result(ssl_) != X509_V_OK) {
    tls_dead_ = true;
    verification_failed_ = true;
    fail("certificate verification failed for " + host + ": " +
         X509_verify_cert_error_string(SSL_get_verify_result(ssl_)));
    return false;
  }
  return true;
}

std::string UpstreamStream::tls_description() const {
  if (ssl_ == nullptr) return "no TLS";
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

ssize_t UpstreamStream::tls_read(void* buffer, size_t count, Clock::time_point deadline) {
  if (tls_dead_) {
    fail("read after a TLS error");
    return -1;
  }
  const int length = static_cast<int>(std::min<size_t>(count, INT_MAX));
  for (;;) {
    // SSL_read first: OpenSSL may hold decrypted bytes (SSL_pending) that
    // the socket will never announce again.
    ERR_clear_error();
    socket_errno_ = 0;
    const int n = SSL_read(ssl_, buffer, length);
    if (n > 0) return n;
    const int error = SSL_get_error(ssl_, n);
    // close_notify, or (OpenSSL 3) the TCP connection closed without it, or
    // (OpenSSL 1.1) an EOF reported as SYSCALL with no errno: all "closed".
    const bool unexpected_eof =
        (error == SSL_ERROR_SSL &&
         ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
        (error == SSL_ERROR_SYSCALL && socket_errno_ == 0 && ERR_peek_error() == 0);
    if (error == SSL_ERROR_ZERO_RETURN || unexpected_eof) {
      ERR_clear_error();
      if (unexpected_eof) tls_dead_ = true;
      eof_ = true;
      fail("connection closed by server");
      return 0;
    }
    if (!tls_retry(n, deadline, io_timeout_, "waiting for the server")) return -1;
  }
}

ssize_t UpstreamStream::tls_write(const void* buffer, size_t count, Clock::time_point deadline) {
  if (tls_dead_) {
    fail("write after a TLS error");
    return -1;
  }
  const int length = static_cast<int>(std::min<size_t>(count, INT_MAX));
  for (;;) {
    ERR_clear_error();
    socket_errno_ = 0;
    const int n = SSL_write(ssl_, buffer, length);
    if (n > 0) {
      bytes_written_ += static_cast<uint64_t>(n);
      return n;  // partial writes allowed: libetpan loops
    }
    if (!tls_retry(n, deadline, io_timeout_, "sending to the server")) return -1;
  }
}

}  // namespace popbridge::imap
