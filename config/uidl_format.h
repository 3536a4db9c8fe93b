// How UIDL strings are made from an IMAP message's UID and its folder's
// UIDVALIDITY, so a client moving from another POP3 server keeps its list of
// messages already downloaded. A template with {uid} and {uidvalidity},
// each optionally with a printf-like spec: {uid:08X} is 8 upper-case hex
// digits zero-padded, {uid:x} lower-case hex, {uid} or {uid:d} decimal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge {

class UidlFormat {
 public:
  // A named format (dovecot, courier, cyrus, uw) or a template. nullopt and
  // `error` set when the result could break RFC 1939's 1-70 printable
  // characters (0x21-0x7E).
  static std::optional<UidlFormat> parse(std::string_view spec, std::string& error);
  static UidlFormat dovecot();

  std::string format(uint32_t uid, uint32_t uidvalidity) const;

 private:
  struct Piece {
    enum class Kind { kText, kUid, kUidValidity } kind = Kind::kText;
    std::string text;   // kText
    char base = 'd';    // 'd', 'x' or 'X'
    unsigned width = 0;
    bool zero_pad = false;
  };
  std::vector<Piece> pieces_;
};

}  // namespace popbridge
