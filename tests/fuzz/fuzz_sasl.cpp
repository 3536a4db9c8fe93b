// decode_base64, encode_base64, decode_sasl_plain.
//
// Input: 1 mode byte, then data.
//   mode & 1 == 0: data is a client's AUTH PLAIN response (base64 text):
//     decode_base64 / decode_sasl_plain on it, checked against a reference;
//   mode & 1 == 1: data is raw "authzid\0user\0password" material:
//     encode_base64 then decode (round trip), and decode_sasl_plain of the
//     encoding checked against the RFC 4616 rules.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "fuzz_util.h"
#include "proxy/pop3/sasl.h"

using popbridge::fuzz::show;
namespace pop3 = popbridge::pop3;

namespace {

bool is_b64(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

// Strict RFC 4648 shape: groups of 4, '=' only as the last one or two
// characters. (Non-zero bits under the padding are accepted, RFC 4648 3.5
// leaves that to the decoder.)
bool valid_b64(std::string_view s) {
  if (s.size() % 4 != 0) return false;
  size_t pad = 0;
  if (!s.empty() && s.back() == '=') ++pad;
  if (s.size() >= 2 && s[s.size() - 2] == '=') ++pad;
  if (pad == 1 && s.back() != '=') return false;
  for (size_t i = 0; i < s.size() - pad; ++i)
    if (!is_b64(s[i])) return false;
  return true;
}

// RFC 4616: [authzid] NUL authcid NUL passwd, no other NULs; popbridge also
// wants a non-empty authcid and an authzid that is empty or the same user.
std::optional<pop3::PlainCredentials> reference_plain(std::string_view m) {
  const size_t a = m.find('\0');
  if (a == m.npos) return std::nullopt;
  const size_t b = m.find('\0', a + 1);
  if (b == m.npos) return std::nullopt;
  if (m.find('\0', b + 1) != m.npos) return std::nullopt;
  pop3::PlainCredentials c{std::string(m.substr(a + 1, b - a - 1)), std::string(m.substr(b + 1))};
  if (c.user.empty()) return std::nullopt;
  if (a != 0 && m.substr(0, a) != c.user) return std::nullopt;
  return c;
}

void check_plain(std::string_view base64, const std::optional<std::string>& decoded) {
  const auto got = pop3::decode_sasl_plain(base64);
  const auto want = decoded ? reference_plain(*decoded) : std::nullopt;
  FUZZ_CHECK(got.has_value() == want.has_value(), "decode_sasl_plain(%s) = %d, reference %d",
             show(base64).c_str(), got.has_value(), want.has_value());
  if (got) {
    FUZZ_CHECK(got->user == want->user && got->password == want->password,
               "credentials differ for %s", show(base64).c_str());
    FUZZ_CHECK(got->user.find('\0') == std::string::npos &&
                   got->password.find('\0') == std::string::npos,
               "NUL in credentials");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool raw = data[0] & 1;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  if (!raw) {
    const std::optional<std::string> decoded = pop3::decode_base64(in);
    FUZZ_CHECK(decoded.has_value() == valid_b64(in), "decode_base64(%s) = %d, reference %d",
               show(in).c_str(), decoded.has_value(), valid_b64(in));
    if (decoded) {
      FUZZ_CHECK(decoded->size() == in.size() / 4 * 3 - (in.size() - in.find_last_not_of('=') - 1) ||
                     in.empty(),
                 "decoded size %zu for %zu characters", decoded->size(), in.size());
      // Re-encoding gives the same text up to the bits under the padding,
      // and decodes to the same bytes.
      const std::string again = pop3::encode_base64(*decoded);
      FUZZ_CHECK(again.size() == in.size(), "re-encoded size %zu, input %zu", again.size(),
                 in.size());
      const auto twice = pop3::decode_base64(again);
      FUZZ_CHECK(twice && *twice == *decoded, "decode(encode(decode(x))) != decode(x)");
      size_t differ = 0;
      for (size_t i = 0; i < in.size(); ++i) differ += in[i] != again[i];
      FUZZ_CHECK(differ <= 1, "re-encoding differs in %zu characters", differ);
    }
    check_plain(in, decoded);
    return 0;
  }

  const std::string encoded = pop3::encode_base64(in);
  FUZZ_CHECK(encoded.size() == (in.size() + 2) / 3 * 4, "encoded size %zu for %zu", encoded.size(),
             in.size());
  FUZZ_CHECK(valid_b64(encoded), "encode_base64 made invalid base64: %s", show(encoded).c_str());
  const auto decoded = pop3::decode_base64(encoded);
  FUZZ_CHECK(decoded && *decoded == in, "round trip failed for %s", show(in).c_str());
  check_plain(encoded, decoded);
  return 0;
}
