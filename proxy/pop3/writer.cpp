#include "proxy/pop3/writer.h"

#include <cstring>

namespace popbridge::pop3 {

void append_line(std::string& out, std::string_view text) {
  out.append(text);
  out.append("\r\n", 2);
}

MessageEncoder::MessageEncoder(int64_t body_lines) : lines_left_(body_lines) {}

// Only two places in a message need attention: each LF (a CR may be missing;
// TOP counts it) and the byte after each LF (a dot to stuff; the blank line
// that ends the headers). Everything between is copied as it is, so the loop
// jumps from LF to LF with memchr and appends whole runs of lines at once.
bool MessageEncoder::encode(std::string_view in, std::string& out) {
  if (done_ || in.empty()) return done_;
  // Mostly the input as is; a little slack for CRs added to bare-LF mail.
  out.reserve(out.size() + in.size() + in.size() / 16 + 2);

  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;    // scan position
  const char* run = begin;  // first input byte not appended to out yet
  while (p < end) {
    if (line_start_) {
      line_start_ = false;
      if (*p == '.') {
        out.append(run, p);
        out.push_back('.');
        run = p;  // the original dot goes out with the run
      } else if (!in_body_ && (*p == '\r' || *p == '\n')) {
        in_body_ = true;  // an empty line: the headers are over
      }
    }
    const auto* lf = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    if (lf == nullptr) break;
    // The byte before this LF may have come in an earlier call.
    const char before = lf > begin ? lf[-1] : last_;
    if (before != '\r') {
      out.append(run, lf);
      out.push_back('\r');
      run = lf;
    }
    p = lf + 1;
    line_start_ = true;
    if (in_body_ && lines_left_ >= 0 && lines_left_-- == 0) {
      done_ = true;  // TOP: this LF ended the last wanted line
      break;
    }
  }

  const char* stop = done_ ? p : end;
  out.append(run, stop);
  last_ = stop[-1];  // stop > begin: in is not empty, and p passed an LF
  return done_;
}

// The loop of encode() without the changes: it stops where encode() would
// insert a byte, so nothing before that point is looked at twice.
size_t MessageEncoder::consume_clean(std::string_view in) {
  const char* const begin = in.data();
  const char* const end = begin + in.size();
  const char* p = begin;
  while (p < end) {
    if (line_start_) {
      if (*p == '.') break;  // to stuff
      line_start_ = false;
      if (!in_body_ && (*p == '\r' || *p == '\n')) in_body_ = true;
    }
    const auto* lf = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    if (lf == nullptr) {
      p = end;
      break;
    }
    if ((lf > begin ? lf[-1] : last_) != '\r') {
      p = lf;  // a CR to insert
      break;
    }
    p = lf + 1;
    line_start_ = true;
    if (in_body_ && lines_left_ >= 0 && lines_left_-- == 0) {
      done_ = true;
      break;
    }
  }
  if (p > begin) last_ = p[-1];
  return static_cast<size_t>(p - begin);
}

bool MessageEncoder::encode_in_place(std::string& chunk) {
  if (done_) {
    chunk.clear();
    return true;
  }
  const size_t clean = consume_clean(chunk);
  if (done_) {
    chunk.resize(clean);  // TOP: the last wanted line ends here
  } else if (clean < chunk.size()) {
    // From the first change on, the copying path. The same reserve as
    // encode() makes, so its own reserve does not move the prefix again.
    const size_t rest = chunk.size() - clean;
    std::string out;
    out.reserve(chunk.size() + rest / 16 + 2);
    out.append(chunk, 0, clean);
    encode(std::string_view(chunk).substr(clean), out);
    chunk.swap(out);
  }
  return done_;
}

void MessageEncoder::finish(std::string& out) {
  if (last_ != '\n') out.append("\r\n", 2);
  out.append(".\r\n", 3);
}

}  // namespace popbridge::pop3
