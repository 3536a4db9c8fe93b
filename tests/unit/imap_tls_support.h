// Test support for upstream TLS: certificates made in-process with the
// OpenSSL API (a CA, server certificates signed by it, expired or for other
// names, an unknown CA) and a loopback TLS server on top of ScriptedServer.
#pragma once

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "imap_scripted_server.h"

namespace popbridge::imap::test_support {

// The fake servers write to connections the client may have dropped.
inline const bool kIgnoreSigpipe = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct CertFree {
  void operator()(X509* cert) const { X509_free(cert); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;

// A key and its certificate.
struct Identity {
  KeyPtr key;
  CertPtr cert;
};

inline void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (extension == nullptr) throw std::runtime_error("bad extension " + value);
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

// A certificate for `common_name`, valid from now+not_before to
// now+not_after (seconds), signed by `issuer` (self-signed when null).
// `san`: "DNS:localhost,IP:127.0.0.1" or empty.
inline Identity make_identity(const std::string& common_name, const Identity* issuer, bool ca,
                              const std::string& san, long not_before = -3600,
                              long not_after = 86400) {
  static std::atomic<long> serial{1000};
  Identity identity;
  identity.key.reset(EVP_EC_gen("P-256"));
  identity.cert.reset(X509_new());
  X509* cert = identity.cert.get();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert), not_before);
  X509_gmtime_adj(X509_getm_notAfter(cert), not_after);
  X509_set_pubkey(cert, identity.key.get());
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509* issuer_cert = issuer != nullptr ? issuer->cert.get() : cert;
  X509_set_issuer_name(cert, X509_get_subject_name(issuer_cert));
  add_extension(cert, issuer_cert, NID_subject_key_identifier, "hash");
  add_extension(cert, issuer_cert, NID_authority_key_identifier, "keyid:always");
  if (ca) {
    add_extension(cert, issuer_cert, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert, issuer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert, issuer_cert, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert, issuer_cert, NID_ext_key_usage, "serverAuth");
    if (!san.empty()) add_extension(cert, issuer_cert, NID_subject_alt_name, san);
  }
  X509_sign(cert, issuer != nullptr ? issuer->key.get() : identity.key.get(), EVP_sha256());
  return identity;
}

// The certificates the tests use, and the CA written to a file for ca_file.
class TestPki {
 public:
  TestPki()
      : ca_(make_identity("popbridge test CA", nullptr, true, "")),
        other_ca_(make_identity("unknown test CA", nullptr, true, "")),
        good_(make_identity("localhost", &ca_, false, "DNS:localhost,IP:127.0.0.1")),
        wrong_name_(make_identity("imap.other.example", &ca_, false, "DNS:imap.other.example")),
        expired_(make_identity("localhost", &ca_, false, "DNS:localhost,IP:127.0.0.1",
                               -10 * 86400, -86400)),
        unknown_ca_(make_identity("localhost", &other_ca_, false, "DNS:localhost,IP:127.0.0.1")) {
    dir_ = std::filesystem::temp_directory_path() /
           ("popbridge-utls-" + std::to_string(getpid()) + "-" + std::to_string(counter()++));
    std::filesystem::create_directories(dir_);
    FILE* f = fopen(ca_file().c_str(), "w");
    PEM_write_X509(f, ca_.cert.get());
    fclose(f);
  }
  ~TestPki() { std::filesystem::remove_all(dir_); }

  std::string ca_file() const { return (dir_ / "ca.pem").string(); }
  std::string dir() const { return dir_.string(); }
  const Identity& good() const { return good_; }
  const Identity& wrong_name() const { return wrong_name_; }
  const Identity& expired() const { return expired_; }
  const Identity& unknown_ca() const { return unknown_ca_; }

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> value{0};
    return value;
  }
  Identity ca_;
  Identity other_ca_;
  Identity good_;
  Identity wrong_name_;
  Identity expired_;
  Identity unknown_ca_;
  std::filesystem::path dir_;
};

// One TLS connection on the server side of a blocking socket.
class TlsServerConnection {
 public:
  // max_version 0: any. Does not handshake yet.
  TlsServerConnection(int fd, const Identity& identity, int max_version = 0) {
    ctx_ = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx_, identity.cert.get());
    SSL_CTX_use_PrivateKey(ctx_, identity.key.get());
    if (max_version != 0) {
      SSL_CTX_set_security_level(ctx_, 0);
      SSL_CTX_set_min_proto_version(ctx_, 0);
      SSL_CTX_set_max_proto_version(ctx_, max_version);
    }
    ssl_ = SSL_new(ctx_);
    SSL_set_fd(ssl_, fd);
  }
  ~TlsServerConnection() {
    SSL_free(ssl_);
    SSL_CTX_free(ctx_);
  }
  bool accept() {
    ok_ = SSL_accept(ssl_) == 1;
    if (const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name)) sni_ = name;
    ERR_clear_error();
    return ok_;
  }
  const std::string& sni() const { return sni_; }
  void send(const std::string& data) {
    size_t done = 0;
    while (ok_ && done < data.size()) {
      int n = SSL_write(ssl_, data.data() + done, static_cast<int>(data.size() - done));
      if (n <= 0) {
        ok_ = false;
        break;
      }
      done += static_cast<size_t>(n);
    }
  }
  // One line including its LF; empty at EOF or error.
  std::string read_line() {
    std::string line;
    char c;
    while (ok_ && SSL_read(ssl_, &c, 1) == 1) {
      line.push_back(c);
      if (c == '\n') break;
    }
    return line;
  }
  void close_notify() { SSL_shutdown(ssl_); }

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  bool ok_ = false;
  std::string sni_;
};

// A port on 127.0.0.1 where nothing listens (connect: refused).
inline uint16_t closed_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  bind(fd, reinterpret_cast<sockaddr*>(&address), length);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace popbridge::imap::test_support
