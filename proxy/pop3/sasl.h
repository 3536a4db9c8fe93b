// SASL PLAIN (RFC 4616) as carried by POP3 AUTH (RFC 5034).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/secret.h"

namespace popbridge::pop3 {

// Strict base64 (RFC 4648, padding required, no whitespace). nullopt on bad input.
std::optional<std::string> decode_base64(std::string_view text);
std::string encode_base64(std::string_view data);

struct PlainCredentials {
  std::string user;
  SecretString password;
};

// Decodes a PLAIN response "authzid NUL authcid NUL passwd" from base64.
// An authorization identity other than empty or the user itself is refused:
// popbridge cannot act for another user upstream.
std::optional<PlainCredentials> decode_sasl_plain(std::string_view base64);

}  // namespace popbridge::pop3
