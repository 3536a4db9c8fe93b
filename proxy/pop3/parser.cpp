#include "proxy/pop3/parser.h"

#include <cstring>
#include <limits>

namespace popbridge::pop3 {

namespace {

// An idle session should not keep a large buffer that one burst of
// pipelined commands made it grow to.
constexpr size_t kKeepCapacity = 16 * 1024;

bool is_ascii_letter(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
char ascii_upper(char c) {
  return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

}  // namespace

LineParser::LineParser(size_t max_line) : max_line_(max_line) {}

void LineParser::set_max_line(size_t max_line) {
  max_line_ = max_line;
  // The partial line may already be too long for the new limit (lowered).
  if (!skipping_ && partial_ > 0 && partial_ >= max_line_) mark_partial_too_long();
}

// Replaces the partial line by a too-long marker and skips the rest of it.
void LineParser::mark_partial_too_long() {
  buf_.resize(buf_.size() - partial_);
  partial_ = 0;
  too_long_at_.push_back(base_ + buf_.size());
  skipping_ = true;
}

void LineParser::feed(std::string_view bytes) {
  // Compact only here: feed() is the only place the buffer grows, and the
  // caller's view of the last line is allowed to die here. Erasing only when
  // at least half is consumed keeps the cost amortized O(1) per octet.
  if (pos_ > 0 && pos_ >= buf_.size() - pos_) {
    base_ += pos_;
    if (pos_ == buf_.size() && buf_.capacity() > kKeepCapacity) {
      std::string().swap(buf_);
    } else {
      buf_.erase(0, pos_);
    }
    pos_ = 0;
  }

  // Walk the new bytes one line piece at a time, so that each line's length
  // is known before it is stored: an over-long line is never buffered whole.
  while (!bytes.empty()) {
    const size_t lf = bytes.find('\n');
    const std::string_view piece = bytes.substr(0, lf);  // all of it when no LF
    if (!skipping_) {
      // Content octets >= max_line means that with its LF the line exceeds
      // max_line, whether or not the LF is here yet.
      if (partial_ + piece.size() >= max_line_) {
        mark_partial_too_long();
      } else {
        buf_.append(piece);
        partial_ += piece.size();
      }
    }
    if (lf == std::string_view::npos) break;
    if (skipping_) {
      skipping_ = false;  // the over-long line ends here; its LF is dropped too
    } else {
      buf_.push_back('\n');
    }
    partial_ = 0;
    bytes.remove_prefix(lf + 1);
  }
}

std::vector<std::string_view> LineParser::peek_lines(size_t max) const {
  std::vector<std::string_view> lines;
  size_t at = pos_;
  while (lines.size() < max && at < buf_.size()) {
    if (!too_long_at_.empty() && too_long_at_.front() <= base_ + at) break;
    const char* begin = buf_.data() + at;
    const void* lf = std::memchr(begin, '\n', buf_.size() - at);
    if (lf == nullptr) break;
    const size_t len = static_cast<size_t>(static_cast<const char*>(lf) - begin);
    if (len >= max_line_) break;
    std::string_view line(begin, len);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_of(std::string_view("\0\r", 2)) != std::string_view::npos) break;
    lines.push_back(line);
    at += len + 1;
  }
  return lines;
}

void LineParser::wipe_consumed() { explicit_bzero(buf_.data(), pos_); }

LineParser::Event LineParser::next() {
  if (!too_long_at_.empty() && too_long_at_.front() == base_ + pos_) {
    too_long_at_.pop_front();
    return {Kind::kTooLong, {}};
  }
  const char* begin = buf_.data() + pos_;
  const void* lf = std::memchr(begin, '\n', buf_.size() - pos_);
  if (lf == nullptr) return {Kind::kNeedMore, {}};

  const size_t len = static_cast<size_t>(static_cast<const char*>(lf) - begin);
  pos_ += len + 1;
  // Only reachable when set_max_line() lowered the limit after buffering.
  if (len >= max_line_) return {Kind::kTooLong, {}};

  std::string_view line(begin, len);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  // A NUL or a stray CR has no business in a command; passing it on would
  // let a client smuggle bytes that the IMAP side may read differently.
  if (line.find_first_of(std::string_view("\0\r", 2)) != std::string_view::npos) {
    return {Kind::kInvalid, {}};
  }
  return {Kind::kLine, line};
}

void LineParser::discard() {
  std::string().swap(buf_);
  pos_ = 0;
  base_ = 0;
  partial_ = 0;
  skipping_ = false;
  too_long_at_.clear();
}

bool parse_command(std::string_view line, Command& out) {
  out.verb.clear();
  out.args.clear();
  auto fail = [&out] {
    out.verb.clear();
    out.args.clear();
    return false;
  };

  const size_t space = line.find(' ');
  const std::string_view verb = line.substr(0, space);
  if (verb.empty() || verb.size() > kMaxVerb) return fail();
  for (char c : verb) {
    if (!is_ascii_letter(c)) return fail();
    out.verb.push_back(ascii_upper(c));
  }
  if (space == std::string_view::npos) return true;

  std::string_view rest = line.substr(space + 1);
  if (out.verb == "USER" || out.verb == "PASS") {
    // Verbatim, as Dovecot takes it: a password may contain any spaces.
    if (!rest.empty()) out.args.push_back(rest);
    return true;
  }
  for (;;) {
    const size_t start = rest.find_first_not_of(' ');
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    if (out.args.size() == kMaxArgs) return fail();
    const size_t end = rest.find(' ');
    out.args.push_back(rest.substr(0, end));
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end);
  }
  return true;
}

std::optional<uint32_t> parse_number(std::string_view text) {
  // 10 digits hold every uint32 value; the 64-bit accumulator cannot overflow.
  if (text.empty() || text.size() > 10) return std::nullopt;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  return static_cast<uint32_t>(value);
}

}  // namespace popbridge::pop3
