// Helpers shared by the fuzz targets.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace popbridge::fuzz {

// An invariant of the code under test. abort() makes libFuzzer save the input.
#define FUZZ_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                            \
      std::fprintf(stderr, "\n");                                                   \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Printable form of a byte string for failure messages (truncated).
inline std::string show(std::string_view s, size_t max = 200) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r') out += "\\r";
    else if (c == '\n') out += "\\n";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c >= 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

// Deterministic split points: chunk sizes drawn from a small xorshift
// generator seeded by the input, mostly tiny (1-4), sometimes larger.
class Splitter {
 public:
  explicit Splitter(uint32_t seed) : state_(seed * 2654435761u + 0x9e3779b9u) {
    if (state_ == 0) state_ = 1;
  }
  uint32_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 17;
    state_ ^= state_ << 5;
    return state_;
  }
  size_t chunk() {
    const uint32_t r = next();
    switch (r & 3) {
      case 0: return 1;
      case 1: return 1 + (r >> 8) % 4;
      case 2: return 1 + (r >> 8) % 32;
      default: return 1 + (r >> 8) % 300;
    }
  }

 private:
  uint32_t state_;
};

}  // namespace popbridge::fuzz
