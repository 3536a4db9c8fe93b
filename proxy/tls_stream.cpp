#include "proxy/tls_stream.h"

#include <openssl/err.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"

namespace popbridge {
namespace {

// Mozilla's "intermediate" list: forward secrecy and AEAD only.
constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";
// What TLS 1.0 devices can speak, for admins who opt in with min_version.
constexpr const char* kLegacyCiphers = "DEFAULT:@SECLEVEL=0";

// The most plaintext one record carries (OpenSSL's max_send_fragment). A
// smaller maximum fragment length agreed with the client divides it.
constexpr size_t kRecord = SSL3_RT_MAX_PLAIN_LENGTH;

// Room for `plain` bytes once encrypted: header, nonce, tag, padding.
size_t wire_size(size_t plain) { return plain + (plain / kRecord + 1) * 64; }

std::string openssl_errors() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof buffer);
    if (!text.empty()) text += "; ";
    text += buffer;
  }
  return text.empty() ? "unknown error" : text;
}

int version_number(const std::string& version) {
  if (version == "1.0") return TLS1_VERSION;
  if (version == "1.1") return TLS1_1_VERSION;
  if (version == "1.2") return TLS1_2_VERSION;
  if (version == "1.3") return TLS1_3_VERSION;
  return 0;
}

}  // namespace

std::shared_ptr<TlsContext> TlsContext::create(const TlsConfig& settings, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    error = "cannot create TLS context: " + openssl_errors();
    return nullptr;
  }
  std::shared_ptr<TlsContext> context(new TlsContext(ctx));
  const int min_version = version_number(settings.min_version);
  if (min_version == 0) {
    error = "tls.min_version: expected 1.0, 1.1, 1.2 or 1.3";
    return nullptr;
  }
  const bool legacy = min_version < TLS1_2_VERSION;
  if (legacy) SSL_CTX_set_security_level(ctx, 0);
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                               SSL_OP_NO_RENEGOTIATION);
  // Idle connections keep no read or write buffers.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  const std::string ciphers =
      !settings.ciphers.empty() ? settings.ciphers : (legacy ? kLegacyCiphers : kDefaultCiphers);
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    error = "tls.ciphers: no usable cipher in \"" + ciphers + "\"";
    ERR_clear_error();
    return nullptr;
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, settings.certificate.c_str()) != 1) {
    error = settings.certificate + ": cannot load certificate: " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, settings.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    error = settings.key + ": cannot load private key: " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    error = settings.key + ": private key does not match " + settings.certificate;
    ERR_clear_error();
    return nullptr;
  }
  return context;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

TlsStream::TlsStream(std::shared_ptr<TlsContext> context) : context_(std::move(context)) {
  ssl_ = SSL_new(context_->get());
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(in_, -1);  // an empty input BIO means "wait", not EOF
  SSL_set_bio(ssl_, in_, out_);
  SSL_set_accept_state(ssl_);
}

TlsStream::~TlsStream() { SSL_free(ssl_); }

TlsStream::Result TlsStream::fail(const char* what) {
  error_ = std::string(what) + ": " + openssl_errors();
  return Result::kError;
}

// BIO_read, not BIO_get_mem_data and BIO_reset: a reset clears the BIO's
// whole buffer, as large as the largest write it ever held.
void TlsStream::drain(std::string& wire) {
  const size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return;
  const size_t old = wire.size();
  wire.resize(old + pending);
  const int n = BIO_read(out_, wire.data() + old, static_cast<int>(pending));
  wire.resize(old + static_cast<size_t>(std::max(n, 0)));
}

TlsStream::Result TlsStream::receive(std::string_view ciphertext, std::string& plain,
                                     std::string& wire) {
  if (!ciphertext.empty() &&
      BIO_write(in_, ciphertext.data(), static_cast<int>(ciphertext.size())) <= 0) {
    return fail("TLS input");
  }
  if (!established_) {
    const int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      const int error = SSL_get_error(ssl_, rc);
      drain(wire);  // alerts or the next handshake flight
      if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return Result::kOk;
      return fail("TLS handshake");
    }
    established_ = true;
    if (!held_.empty()) {
      std::string held = std::move(held_);
      held_.clear();
      if (send(held, wire) != Result::kOk) return Result::kError;
    }
  }
  char buffer[16 * 1024];
  for (;;) {
    const int n = SSL_read(ssl_, buffer, sizeof buffer);
    if (n > 0) {
      plain.append(buffer, static_cast<size_t>(n));
      continue;
    }
    const int error = SSL_get_error(ssl_, n);
    drain(wire);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) return Result::kOk;
    if (error == SSL_ERROR_ZERO_RETURN) return Result::kClosed;
    return fail("TLS read");
  }
}

TlsStream::Result TlsStream::send(std::string_view plain, std::string& wire) {
  if (!established_) {
    held_.append(plain);
    return Result::kOk;
  }
  wire.reserve(wire.size() + wire_size(plain.size()));
  return write(plain, wire) ? Result::kOk : fail("TLS write");
}

// One flush is one stream: its records carry kRecord bytes of plaintext
// each, wherever the pieces begin and end, and only the last is shorter.
// (A client that looks for the final ".\r\n" in the same read as the end
// of the message, such as node-pop3, finds it there.) The whole records
// inside a piece are encrypted from the piece itself; only the bytes of a
// record that spans pieces are copied, into `staging`.
TlsStream::Result TlsStream::send(std::span<const std::string> pieces, std::string& wire) {
  size_t total = 0;
  for (const std::string& piece : pieces) total += piece.size();
  if (!established_) {
    held_.reserve(held_.size() + total);
    for (const std::string& piece : pieces) held_.append(piece);
    return Result::kOk;
  }
  wire.reserve(wire.size() + wire_size(total));
  char staging[kRecord];
  size_t staged = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string_view rest = pieces[i];
    if (staged > 0) {
      const size_t n = std::min(rest.size(), kRecord - staged);
      memcpy(staging + staged, rest.data(), n);
      staged += n;
      rest.remove_prefix(n);
      if (staged < kRecord) continue;
      if (!write({staging, kRecord}, wire)) return fail("TLS write");
      staged = 0;
    }
    const size_t whole = rest.size() - rest.size() % kRecord;
    if (whole > 0 && !write(rest.substr(0, whole), wire)) return fail("TLS write");
    rest.remove_prefix(whole);
    if (rest.empty()) continue;
    if (i + 1 == pieces.size()) {  // the flush's last record: no need to copy
      if (!write(rest, wire)) return fail("TLS write");
    } else {
      memcpy(staging, rest.data(), rest.size());
      staged = rest.size();
    }
  }
  if (staged > 0 && !write({staging, staged}, wire)) return fail("TLS write");
  return Result::kOk;
}

// One SSL_write (one record) per kRecord bytes, drained at once: the
// output BIO never holds more than a record, and keeps no larger buffer
// for the rest of the connection.
bool TlsStream::write(std::string_view plain, std::string& wire) {
  while (!plain.empty()) {
    const size_t n = std::min(plain.size(), kRecord);
    if (SSL_write(ssl_, plain.data(), static_cast<int>(n)) <= 0) return false;
    drain(wire);
    plain.remove_prefix(n);
  }
  return true;
}

void TlsStream::close_notify(std::string& wire) {
  if (!established_) return;
  SSL_shutdown(ssl_);  // 0: our alert is out, we do not wait for the peer's
  ERR_clear_error();
  drain(wire);
}

std::string TlsStream::describe() const {
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace popbridge
