// TLS for a client connection, with OpenSSL over two memory BIOs: the
// socket code moves ciphertext in and out, this class turns it into
// plaintext and back. No IO here, so STLS, implicit TLS (port 995) and the
// tests all use the same code.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "config/config.h"

namespace popbridge {

// An SSL_CTX built from the settings. Connections take a reference, so a
// reload (SIGHUP) never disturbs sessions already open.
class TlsContext {
 public:
  // nullptr and `error` set when a file cannot be read or does not fit.
  static std::shared_ptr<TlsContext> create(const TlsConfig& settings, std::string& error);
  ~TlsContext();
  SSL_CTX* get() const { return ctx_; }

 private:
  explicit TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}
  SSL_CTX* ctx_;
};

class TlsStream {
 public:
  explicit TlsStream(std::shared_ptr<TlsContext> context);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  enum class Result { kOk, kClosed, kError };

  // Takes ciphertext read from the socket. Appends decrypted application
  // data to `plain` and whatever must go back to the peer (handshake,
  // alerts, tickets, held-back writes) to `wire`.
  Result receive(std::string_view ciphertext, std::string& plain, std::string& wire);

  // Encrypts `plain` into `wire`. Before the handshake completes the data is
  // held back and released by receive().
  Result send(std::string_view plain, std::string& wire);
  // The same for the pieces of one flush, in order, as one stream: every
  // record but the last carries 16 KiB of plaintext, wherever the pieces
  // end, so a short last piece (".\r\n") shares its record with the bytes
  // before it.
  Result send(std::span<const std::string> pieces, std::string& wire);

  // Appends a close_notify alert to `wire`: the peer can tell a complete
  // session from a truncated one.
  void close_notify(std::string& wire);

  bool established() const { return established_; }
  std::string describe() const;     // "TLSv1.3 TLS_AES_256_GCM_SHA384", for logs
  const std::string& error() const { return error_; }

 private:
  Result fail(const char* what);
  bool write(std::string_view plain, std::string& wire);  // SSL_write, then drain
  void drain(std::string& wire);

  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // ciphertext from the peer, owned by ssl_
  BIO* out_ = nullptr;  // ciphertext to the peer, owned by ssl_
  bool established_ = false;
  std::string held_;    // plaintext written before the handshake completed
  std::string error_;
};

}  // namespace popbridge
