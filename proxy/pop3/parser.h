// POP3 client-side input: splitting the byte stream into command lines and
// tokenizing a command line. Pure code, no IO, no exceptions: the session
// feeds whatever it read from the socket and pulls events.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace popbridge::pop3 {

// Resumable line splitter (in the spirit of nginx's mail parser): any split of
// the input into feed() calls yields the same sequence of events.
//
// - A line ends with CRLF or a bare LF (lenient, like Dovecot).
// - A line is too long when it has more than max_line octets, its terminator
//   included (RFC 2449: 255). kTooLong is reported once per such line, as soon
//   as the parser knows (possibly before its LF arrived); the rest of that
//   line up to and including its LF is dropped in feed() without buffering,
//   so an endless line costs at most max_line octets of memory.
// - A line containing NUL, or a CR not directly followed by its LF, is
//   kInvalid (and consumed). Length is checked first: a long line with a NUL
//   is kTooLong.
class LineParser {
 public:
  explicit LineParser(size_t max_line = 255);

  // The limit is checked when octets arrive (feed, which must decide what to
  // keep) and again when a line is returned (next). So lowering it also
  // catches buffered lines, and a partial line already at the new limit
  // becomes too long; raising it cannot revive a line already found too long
  // (e.g. a long SASL response pipelined in the same feed() as its AUTH,
  // which RFC 5034 does not allow: the client waits for "+ ").
  void set_max_line(size_t max_line);
  size_t max_line() const { return max_line_; }

  // Appends bytes. Invalidates the view of the last event.
  void feed(std::string_view bytes);

  enum class Kind { kNeedMore, kLine, kTooLong, kInvalid };
  struct Event {
    Kind kind;
    std::string_view line;  // kLine only: without CRLF; valid until the next feed/next/discard
  };
  // Returns the next event, in input order; kNeedMore when no complete one is buffered.
  Event next();

  // Forgets everything buffered, including a half-skipped over-long line and
  // pending kTooLong events (after STLS no plaintext may survive the handshake).
  void discard();

  // Zeroes the octets of every line already returned by next() (views of
  // them die): for lines that held a password.
  void wipe_consumed();

  // Memory held, so the caller can stop reading from the socket when large:
  // the octets buffered, plus 8 for each kTooLong not yet returned (else a
  // client sending only over-long lines would never meet the caller's limit).
  size_t buffered() const { return buf_.size() - pos_ + too_long_at_.size() * sizeof(uint64_t); }

  // Up to `max` complete lines that next() would return after the current
  // position, without consuming them: for looking ahead at pipelined
  // commands (prefetching the next RETR). Stops at anything but a plain line.
  std::vector<std::string_view> peek_lines(size_t max) const;

 private:
  std::string buf_;        // [0, pos_) consumed; complete lines; then the partial line
  size_t pos_ = 0;         // first unconsumed octet in buf_
  uint64_t base_ = 0;      // stream offset of buf_[0], so offsets survive compaction
  size_t partial_ = 0;     // octets of the unterminated last line held in buf_
  bool skipping_ = false;  // dropping the rest of an over-long line up to its LF
  size_t max_line_;
  // An over-long line is not kept in buf_: it is replaced by a marker, the
  // stream offset where it stood. next() reports kTooLong when it gets there.
  std::deque<uint64_t> too_long_at_;

  void mark_partial_too_long();
};

// A tokenized command line.
//   verb: the keyword, upper-cased. 1-8 ASCII letters (POP3 keywords are 3-4,
//         extensions may be longer; 8 is lenient but still rejects garbage).
//   args: separated by one or more spaces (leading/trailing spaces ignored),
//         at most kMaxArgs. They view into the parsed line.
// USER and PASS are special (RFC 1939 allows a server to treat spaces in the
// PASS argument as part of the password; Dovecot does so for both): their one
// argument is everything after the first space, verbatim, spaces included.
// No argument when that is empty.
struct Command {
  std::string verb;
  std::vector<std::string_view> args;
};
inline constexpr size_t kMaxVerb = 8;
inline constexpr size_t kMaxArgs = 8;

// False when the line is empty, starts with a space, the verb is not 1-8 ASCII
// letters, or there are more than kMaxArgs arguments. `out` is overwritten.
bool parse_command(std::string_view line, Command& out);

// Message numbers and TOP line counts: 1 to 10 decimal digits (leading zeros
// allowed, "007" is 7), no sign, no spaces, value <= UINT32_MAX.
// Zero is returned as 0: whether it is a valid message number is the caller's call.
std::optional<uint32_t> parse_number(std::string_view text);

}  // namespace popbridge::pop3
