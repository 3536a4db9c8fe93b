#include "backends/imap/fetch_reader.h"

#include <libetpan/libetpan.h>
#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace popbridge::imap {

// ---- sources ----

// Our position in libetpan's read buffer is offset_: consuming a line does
// not move the rest of the buffer (up to 64 KiB) each time, as libetpan's
// own reads do; the destructor moves what is left to the front once.
MailstreamSource::~MailstreamSource() {
  if (offset_ == 0) return;
  std::memmove(stream_->read_buffer, stream_->read_buffer + offset_,
               stream_->read_buffer_len - offset_);
  stream_->read_buffer_len -= offset_;
}

std::string_view MailstreamSource::peek() {
  if (offset_ == stream_->read_buffer_len) {
    offset_ = 0;
    stream_->read_buffer_len = 0;
    const ssize_t got =
        mailstream_low_read(stream_->low, stream_->read_buffer, stream_->buffer_max_size);
    if (got <= 0) return {};
    stream_->read_buffer_len = static_cast<size_t>(got);
  }
  return {stream_->read_buffer + offset_, stream_->read_buffer_len - offset_};
}

void MailstreamSource::consume(size_t count) {
  offset_ += std::min(count, stream_->read_buffer_len - offset_);
}

bool MailstreamSource::read(char* out, size_t count) {
  const size_t buffered = std::min(count, stream_->read_buffer_len - offset_);
  std::memcpy(out, stream_->read_buffer + offset_, buffered);
  offset_ += buffered;
  out += buffered;
  count -= buffered;
  if (count == 0) return true;
  // The buffer is used up: hand it back empty and read the rest straight
  // into `out` (never more than asked for, so nothing is left over).
  offset_ = 0;
  stream_->read_buffer_len = 0;
  while (count > 0) {
    const ssize_t got = mailstream_low_read(stream_->low, out, count);
    if (got <= 0) return false;
    out += got;
    count -= static_cast<size_t>(got);
  }
  return true;
}

bool StringSource::read(char* out, size_t count) {
  if (count > data_.size()) return false;
  std::memcpy(out, data_.data(), count);
  data_.remove_prefix(count);
  return true;
}

namespace {

bool equals_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && equals_nocase(text.substr(0, prefix.size()), prefix);
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// An IMAP response, one line (between literals) at a time.
class Parser {
 public:
  Parser(ResponseSource& source, const FetchLimits& limits, std::string* error)
      : source_(source), limits_(limits), error_(error) {}

  // The next line up to LF into line_, without CRLF.
  bool read_line() {
    line_.clear();
    pos_ = 0;
    for (;;) {
      const std::string_view available = source_.peek();
      if (available.empty()) return fail("connection lost");
      const size_t lf = available.find('\n');
      const size_t take = lf == std::string_view::npos ? available.size() : lf + 1;
      if (line_.size() + take > limits_.max_line) return fail("response line too long");
      line_.append(available.data(), take);
      source_.consume(take);
      if (lf != std::string_view::npos) break;
    }
    line_.pop_back();
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    return true;
  }

  std::string_view rest() const { return std::string_view(line_).substr(pos_); }
  bool at_end() const { return pos_ >= line_.size(); }
  char peek_char() const { return at_end() ? '\0' : line_[pos_]; }
  void skip(size_t count) { pos_ = std::min(line_.size(), pos_ + count); }

  bool space() {
    if (peek_char() != ' ') return fail("expected a space: " + context());
    while (peek_char() == ' ') ++pos_;  // tolerate doubled spaces
    return true;
  }

  bool number(uint64_t* value) {
    if (!is_digit(peek_char())) return fail("expected a number: " + context());
    uint64_t n = 0;
    while (is_digit(peek_char())) {
      n = n * 10 + static_cast<uint64_t>(line_[pos_++] - '0');
      if (n > UINT32_MAX) return fail("number too large: " + context());
    }
    *value = n;
    return true;
  }

  // An atom, a number, NIL, or a fetch item name such as BODY[]<0> or
  // BODY[HEADER.FIELDS (DATE)]: up to a space or parenthesis outside [].
  bool atom(std::string_view* out) {
    const size_t start = pos_;
    int brackets = 0;
    // '[' opens a section only after a name that takes one (BODY[...]);
    // elsewhere it is an ordinary atom character (a keyword "a[b").
    const auto takes_section = [&] {
      const std::string_view name = std::string_view(line_).substr(start, pos_ - start);
      return equals_nocase(name, "BODY") || equals_nocase(name, "BODY.PEEK") ||
             equals_nocase(name, "BINARY") || equals_nocase(name, "BINARY.PEEK") ||
             equals_nocase(name, "BINARY.SIZE");
    };
    while (!at_end()) {
      const char c = line_[pos_];
      if (c == '[' && (brackets > 0 || takes_section())) {
        ++brackets;
      } else if (c == ']') {
        if (brackets == 0) break;
        --brackets;
      } else if (brackets == 0 && (c == ' ' || c == '(' || c == ')' || c == '"' || c == '{')) {
        break;
      }
      ++pos_;
    }
    if (brackets != 0 || pos_ == start) return fail("expected an atom: " + context());
    *out = std::string_view(line_).substr(start, pos_ - start);
    return true;
  }

  // NIL, a quoted string or a literal. With `keep`, its bytes go to *out
  // (at most `max` of them); otherwise they are read and dropped.
  bool nstring(bool keep, uint64_t max, std::string* out, bool* nil) {
    *nil = false;
    if (peek_char() == '"') {
      if (!quoted(keep, out)) return false;
      if (keep && out->size() > max) {
        return fail("string of " + std::to_string(out->size()) + " octets, more than asked for");
      }
      return true;
    }
    if (peek_char() == '{') return literal(keep, max, out);
    std::string_view word;
    if (!atom(&word) || !equals_nocase(word, "NIL")) return fail("expected a string: " + context());
    *nil = true;
    return true;
  }

  // Any value of a FETCH item: atom, number, NIL, string, literal, or a
  // parenthesised list of those, nested.
  bool skip_value() {
    int depth = 0;
    for (;;) {
      const char c = peek_char();
      bool nil;
      if (c == '(') {
        ++pos_;
        ++depth;
        continue;
      }
      if (c == ')' && depth > 0) {
        ++pos_;
        --depth;
      } else if (c == ' ' && depth > 0) {
        ++pos_;
        continue;
      } else if (c == '"' || c == '{') {
        if (!nstring(false, 0, nullptr, &nil)) return false;
      } else {
        std::string_view word;
        if (!atom(&word)) return false;
      }
      if (depth == 0) return true;
    }
  }

  // A response that carries no FETCH data: read through its literals.
  bool skip_response(bool text_only) {
    for (;;) {
      if (text_only) return true;  // resp-text (OK, NO, BYE...) has no literals
      uint64_t size = 0;
      if (!trailing_literal(&size)) return true;
      if (!discard(size) || !read_line()) return false;
    }
  }

  bool fail(std::string why) {
    if (error_->empty()) *error_ = std::move(why);
    return false;
  }

  std::string context() const {
    std::string near = line_.substr(pos_ > 20 ? pos_ - 20 : 0, 60);
    for (char& c : near) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return "\"" + near + "\"";
  }

 private:
  bool quoted(bool keep, std::string* out) {
    ++pos_;  // the opening quote
    while (!at_end()) {
      char c = line_[pos_++];
      if (c == '"') return true;
      if (c == '\\' && !at_end()) c = line_[pos_++];
      if (keep) out->push_back(c);
    }
    return fail("unterminated string: " + context());
  }

  // "{n}" or "{n+}" ending the line; the n bytes follow, then the line goes on.
  bool literal(bool keep, uint64_t max, std::string* out) {
    uint64_t size = 0;
    size_t start = 0;
    if (!trailing_literal(&size, &start) || pos_ != start) {
      return fail("malformed literal: " + context());
    }
    if (keep) {
      if (size > max)
        return fail("literal of " + std::to_string(size) + " octets, more than asked for");
      out->resize(static_cast<size_t>(size));
      if (!source_.read(out->data(), out->size())) return fail("connection lost inside a literal");
    } else if (!discard(size)) {
      return false;
    }
    return read_line();
  }

  // Whether the line ends with a literal's size, "{n}" or "{n+}"; *start:
  // where its "{" is.
  bool trailing_literal(uint64_t* size, size_t* start = nullptr) const {
    if (line_.empty() || line_.back() != '}') return false;
    size_t i = line_.size() - 1;
    if (i > 0 && line_[i - 1] == '+') --i;
    const size_t digits_end = i;
    while (i > 0 && is_digit(line_[i - 1])) --i;
    if (i == digits_end || i == 0 || line_[i - 1] != '{' || digits_end - i > 10) return false;
    uint64_t n = 0;
    for (size_t k = i; k < digits_end; ++k) n = n * 10 + static_cast<uint64_t>(line_[k] - '0');
    *size = n;
    if (start != nullptr) *start = i - 1;
    return true;
  }

  bool discard(uint64_t size) {
    char scratch[16 * 1024];
    while (size > 0) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(size, sizeof scratch));
      if (!source_.read(scratch, take)) return fail("connection lost inside a literal");
      size -= take;
    }
    return true;
  }

  ResponseSource& source_;
  const FetchLimits& limits_;
  std::string* error_;
  std::string line_;
  size_t pos_ = 0;
};

// "BODY[]" or "BODY[]<origin>": the whole message, or a part of it.
bool is_whole_body(std::string_view name) {
  if (!starts_with_nocase(name, "BODY[]")) return false;
  name.remove_prefix(6);
  if (name.empty()) return true;
  if (name.size() < 3 || name.front() != '<' || name.back() != '>') return false;
  return std::all_of(name.begin() + 1, name.end() - 1, is_digit);
}

// Whether a body for `uid` is one we asked for and do not have yet.
bool wanted(const FetchLimits& limits, const FetchAnswer& answer, uint64_t uid) {
  if (limits.wanted == nullptr) return true;
  const auto& asked = *limits.wanted;
  if (std::find(asked.begin(), asked.end(), uid) == asked.end()) return false;
  return std::none_of(answer.bodies.begin(), answer.bodies.end(),
                      [uid](const FetchedBody& body) { return body.uid == uid; });
}

// After "* n FETCH ": the parenthesised message data.
bool read_fetch(Parser& p, const FetchLimits& limits, FetchAnswer* answer) {
  if (p.peek_char() != '(') return p.fail("expected '(' after FETCH: " + p.context());
  p.skip(1);
  uint64_t uid = 0;
  bool seen_body = false;
  bool has_body = false;  // seen, and kept
  FetchedBody body;
  while (p.peek_char() != ')') {
    if (p.at_end()) return p.fail("unterminated FETCH response");
    std::string_view name;
    if (!p.atom(&name)) return false;
    const bool is_uid = equals_nocase(name, "UID");
    const bool is_body = !is_uid && is_whole_body(name);
    if (!p.space()) return false;
    if (is_uid) {
      if (!p.number(&uid)) return false;
    } else if (is_body) {
      if (seen_body) return p.fail("two BODY[] items in one FETCH response");
      seen_body = true;
      // (A body before its UID is held until the UID says whether we want it.)
      const bool keep = uid == 0 || wanted(limits, *answer, uid);
      if (!p.nstring(keep, limits.max_body, &body.data, &body.nil)) return false;
      has_body = keep;
    } else if (!p.skip_value()) {
      return false;
    }
    if (p.peek_char() == ' ') p.skip(1);
  }
  p.skip(1);
  // The response ends here: anything after it (a literal announced there
  // would leave its octets to be read as responses) is a protocol error.
  if (!p.at_end()) return p.fail("unexpected data after FETCH response: " + p.context());
  // A body without a UID cannot be told apart from others: UID FETCH
  // responses always carry one (RFC 3501 6.4.8).
  if (has_body && uid != 0 && wanted(limits, *answer, uid)) {
    body.uid = static_cast<uint32_t>(uid);
    answer->bodies.push_back(std::move(body));
  }
  return true;
}

bool read_untagged(Parser& p, const FetchLimits& limits, FetchAnswer* answer) {
  p.skip(2);  // "* "
  const std::string_view rest = p.rest();
  if (!rest.empty() && is_digit(rest.front())) {
    uint64_t number = 0;
    std::string_view kind;
    if (!p.number(&number) || !p.space() || !p.atom(&kind)) return false;
    if (equals_nocase(kind, "FETCH")) return p.space() && read_fetch(p, limits, answer);
    return p.skip_response(false);  // EXISTS, EXPUNGE, RECENT...
  }
  std::string_view kind;
  if (!p.atom(&kind)) return false;
  const bool text_only = equals_nocase(kind, "OK") || equals_nocase(kind, "NO") ||
                         equals_nocase(kind, "BAD") || equals_nocase(kind, "BYE") ||
                         equals_nocase(kind, "PREAUTH");
  return p.skip_response(text_only);
}

bool read_tagged(Parser& p, std::string_view tag, FetchAnswer* answer) {
  p.skip(tag.size() + 1);
  answer->text = std::string(p.rest());
  std::string_view result;
  if (!p.atom(&result)) return false;
  if (equals_nocase(result, "OK")) {
    answer->result = FetchAnswer::Result::kOk;
  } else if (equals_nocase(result, "NO")) {
    answer->result = FetchAnswer::Result::kNo;
  } else if (equals_nocase(result, "BAD")) {
    answer->result = FetchAnswer::Result::kBad;
  } else {
    return p.fail("tagged response is not OK, NO or BAD: " + p.context());
  }
  if (p.peek_char() == ' ') p.skip(1);
  if (p.peek_char() == '[') {
    p.skip(1);
    const std::string_view text = p.rest();
    const size_t end = text.find_first_of(" ]");
    for (char c : text.substr(0, end)) {
      answer->code.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    }
  }
  return true;
}

}  // namespace

bool read_fetch_answer(ResponseSource& source, std::string_view tag, const FetchLimits& limits,
                       FetchAnswer* answer, std::string* error) {
  error->clear();
  Parser p(source, limits, error);
  for (;;) {
    if (!p.read_line()) return false;
    const std::string_view line = p.rest();
    if (line.size() > tag.size() && line.substr(0, tag.size()) == tag && line[tag.size()] == ' ') {
      return read_tagged(p, tag, answer);
    }
    if (line.size() >= 2 && line[0] == '*' && line[1] == ' ') {
      if (!read_untagged(p, limits, answer)) return false;
      continue;
    }
    return p.fail("unexpected response: " + p.context());
  }
}

}  // namespace popbridge::imap
