// Passwords in memory: zeroed as soon as a copy is no longer needed, so
// that they do not linger in freed heap blocks for a later bug to leak.
#pragma once

#include <string.h>  // explicit_bzero

#include <string>
#include <string_view>
#include <utility>

namespace popbridge {

// Zeroes every octet of the string's buffer (its whole capacity, so a
// short string's inline buffer too) and empties it.
inline void wipe(std::string& secret) {
  secret.resize(secret.capacity());
  explicit_bzero(secret.data(), secret.size());
  secret.clear();
}

// A std::string that wipes itself when destroyed or assigned over. Built
// from a plain string, it wipes that one too.
class SecretString : public std::string {
 public:
  SecretString() = default;
  explicit SecretString(std::string_view text) : std::string(text) {}
  SecretString(const char* text) : std::string(text) {}  // NOLINT: implicit, for literals in tests
  // (A moved-from string keeps a short one's octets in its inline buffer.)
  SecretString(std::string&& text) : std::string(std::move(text)) { wipe(text); }  // NOLINT: implicit
  SecretString(const SecretString&) = default;
  SecretString(SecretString&& other) noexcept : std::string(std::move(other)) { wipe(other); }
  SecretString& operator=(SecretString other) noexcept {
    std::string::swap(other);  // the old value is wiped with `other`
    return *this;
  }
  ~SecretString() { wipe(*this); }
};

}  // namespace popbridge
