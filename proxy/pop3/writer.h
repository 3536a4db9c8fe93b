// POP3 server-side output: message bytes into a multi-line response body.
// Pure code, no IO, no exceptions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace popbridge::pop3 {

// Appends text and CRLF (a single-line reply or one line of a listing).
void append_line(std::string& out, std::string_view text);

// Encodes a message for RETR or TOP the way Dovecot 2.3's POP3 server does
// (src/pop3/pop3-commands.c, fetch_callback), so clients see the same bytes:
//  - an LF not preceded by CR gets a CR inserted; a CR not followed by LF,
//    8-bit bytes and NULs pass through unchanged;
//  - a '.' that starts a line is doubled. The start of the message counts as
//    a line start here. (Dovecot does not stuff a dot that is the very first
//    byte, which breaks the framing for a message ".\r\n"; we follow RFC 1939.)
//  - TOP: the body starts at the first CR or LF that is the first byte of the
//    message or follows an LF. Then, at each LF in the body: if no more lines
//    are wanted, stop right after it; else count it. So TOP n 0 sends headers
//    and the blank line. A message without a blank line is sent whole.
//  - finish(): CRLF if the last byte sent was not LF (also for an empty
//    message), then ".\r\n".
// The result does not depend on how the message is split into encode() calls.
// (Dovecot itself has one split-dependent quirk, a NUL right before a chunk
// boundary counting as a line start for the body search; not reproduced.)
class MessageEncoder {
 public:
  // body_lines < 0: whole message (RETR); >= 0: TOP with that many body lines.
  explicit MessageEncoder(int64_t body_lines = -1);

  // Appends the encoded form of `in` to `out`. Returns true once TOP has
  // everything it needs; further input is then ignored.
  bool encode(std::string_view in, std::string& out);

  // Encodes `chunk` in place: the result is what encode(chunk, out) would have
  // appended. When nothing in it needs changing (CRLF mail, no line starting
  // with '.'), the string is left as it is: no copy (for TOP, at most shortened
  // after the last wanted line). Returns what encode() returns.
  bool encode_in_place(std::string& chunk);

  bool done() const { return done_; }

  // Appends the end of the response: CRLF if the encoded output does not end
  // with LF, then ".\r\n". Call once, after the last encode().
  void finish(std::string& out);

 private:
  // Consumes the longest prefix of `in` that encode() would send unchanged,
  // updating the state as encode() would, and returns its length.
  size_t consume_clean(std::string_view in);

  int64_t lines_left_;      // body lines still wanted; < 0: no limit
  bool in_body_ = false;    // past the end of the headers
  bool line_start_ = true;  // the next input byte starts a line
  bool done_ = false;       // TOP got its lines
  char last_ = '\0';        // last input byte consumed, which is also the last
                            // byte sent; '\0' before the first one
};

}  // namespace popbridge::pop3
