// read_fetch_answer(): the answer to UID FETCH ... BODY.PEEK[]<o.l> as the
// upstream sends it (backends/imap/fetch_reader.h).
//
// Input: 4 header bytes, then the server's byte stream.
//   h[0]  max_body: h[0] % 64, or 1000 when h[0] >= 0xf0
//   h[1]  max_line: h[1] + 1 (1..256, small limits hit the edges)
//   h[2]  bits 0-1: the tag ("1", "12", "A0001", "a"); bits 2-4: the size
//         of libetpan's read buffer for the MailstreamSource run
//   h[3]  seed for the split points of the stream (random piece sizes)
// Checks:
//  - never crashes or hangs (every loop consumes input or fails);
//  - the same result, error, bodies and position at the end with the whole
//    stream in one StringSource, with a source that hands it out in random
//    pieces (peek() returns a piece, read() crosses pieces), one byte at a
//    time, and through MailstreamSource over a libetpan mailstream whose
//    low driver returns random piece sizes (its read buffer as small as
//    one byte);
//  - false comes with an error message, true with none;
//  - true: every body is at most max_body octets, a NIL body is empty,
//    every UID is non-zero, the code is upper-case without ' ' or ']', the
//    reader stopped right after an LF, on a line that starts with the tag
//    and a space, and the rest of the stream is where it was left: in the
//    StringSource, and readable through libetpan's mailstream_read() (its
//    buffer is consistent); the consumed part alone gives the same answer;
//    cut one byte or more short, it fails (end of data is an error).
// FUZZ_TRACE=1 prints the limits, the result and the bodies.
#include <libetpan/libetpan.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "backends/imap/fetch_reader.h"
#include "fuzz_util.h"

using popbridge::fuzz::show;
using popbridge::fuzz::Splitter;
using popbridge::imap::FetchAnswer;
using popbridge::imap::FetchedBody;
using popbridge::imap::FetchLimits;
using popbridge::imap::MailstreamSource;
using popbridge::imap::read_fetch_answer;
using popbridge::imap::ResponseSource;
using popbridge::imap::StringSource;

namespace {

// Hands the data out in pieces, like a socket: peek() shows what "arrived"
// (a random piece when nothing is buffered), read() takes the buffered part
// first and then as much as it needs.
class PieceSource final : public ResponseSource {
 public:
  PieceSource(std::string_view data, Splitter* splitter, bool bytewise)
      : data_(data), splitter_(splitter), bytewise_(bytewise) {}
  std::string_view peek() override {
    if (buffered_ == 0) {
      if (pos_ == data_.size()) return {};
      buffered_ = std::min(data_.size() - pos_, bytewise_ ? size_t{1} : splitter_->chunk());
    }
    return data_.substr(pos_, buffered_);
  }
  void consume(size_t count) override {
    FUZZ_CHECK(count <= buffered_, "consume(%zu) with %zu buffered", count, buffered_);
    pos_ += count;
    buffered_ -= count;
  }
  bool read(char* out, size_t count) override {
    const size_t have = data_.size() - pos_;
    if (count > have) {  // what a socket does at EOF: hand over what is there, then fail
      pos_ = data_.size();
      buffered_ = 0;
      return false;
    }
    std::memcpy(out, data_.data() + pos_, count);
    pos_ += count;
    buffered_ = count < buffered_ ? buffered_ - count : 0;
    return true;
  }
  size_t position() const { return pos_; }

 private:
  std::string_view data_;
  Splitter* splitter_;
  bool bytewise_;
  size_t pos_ = 0;
  size_t buffered_ = 0;
};

// A mailstream_low over memory, each read returning a random piece.
struct MemoryLow {
  std::string_view data;
  size_t pos = 0;
  Splitter splitter;
};

ssize_t low_read(mailstream_low* low, void* buffer, size_t count) {
  auto* m = static_cast<MemoryLow*>(low->data);
  if (m->pos == m->data.size()) return 0;
  const size_t n = std::min({count, m->data.size() - m->pos, m->splitter.chunk()});
  std::memcpy(buffer, m->data.data() + m->pos, n);
  m->pos += n;
  return static_cast<ssize_t>(n);
}
ssize_t low_write(mailstream_low*, const void*, size_t count) {
  return static_cast<ssize_t>(count);
}
int low_close(mailstream_low*) {
  return 0;
}
int low_get_fd(mailstream_low*) {
  return -1;
}
void low_free(mailstream_low* low) {
  free(low);
}  // malloc()ed by mailstream_low_new()

mailstream_low_driver g_memory_driver = {
    low_read, low_write, low_close, low_get_fd, low_free, nullptr,
    nullptr,  nullptr,   nullptr,   nullptr,    nullptr,
};

struct Outcome {
  bool ok = false;
  FetchAnswer answer;
  std::string error;
  size_t consumed = 0;  // meaningful when ok
};

bool same_answer(const FetchAnswer& a, const FetchAnswer& b) {
  if (a.result != b.result || a.code != b.code || a.text != b.text ||
      a.bodies.size() != b.bodies.size()) {
    return false;
  }
  for (size_t i = 0; i < a.bodies.size(); ++i) {
    const FetchedBody& x = a.bodies[i];
    const FetchedBody& y = b.bodies[i];
    if (x.uid != y.uid || x.nil != y.nil || x.data != y.data) return false;
  }
  return true;
}

void check_same(const Outcome& a, const Outcome& b, const char* how, std::string_view stream) {
  FUZZ_CHECK(a.ok == b.ok, "%s: ok %d vs %d (errors '%s' / '%s') on '%s'", how, a.ok, b.ok,
             a.error.c_str(), b.error.c_str(), show(stream).c_str());
  FUZZ_CHECK(a.error == b.error, "%s: error '%s' vs '%s' on '%s'", how, a.error.c_str(),
             b.error.c_str(), show(stream).c_str());
  if (!a.ok) return;
  FUZZ_CHECK(a.consumed == b.consumed, "%s: stopped at %zu vs %zu", how, a.consumed, b.consumed);
  FUZZ_CHECK(same_answer(a.answer, b.answer), "%s: different answers on '%s'", how,
             show(stream).c_str());
}

Outcome run_string(std::string_view stream, std::string_view tag, const FetchLimits& limits) {
  StringSource source(stream);
  Outcome out;
  out.ok = read_fetch_answer(source, tag, limits, &out.answer, &out.error);
  const std::string_view left = source.peek();
  FUZZ_CHECK(
      left.size() <= stream.size() && left.data() == stream.data() + (stream.size() - left.size()),
      "StringSource left something that is not the rest of the stream");
  out.consumed = stream.size() - left.size();
  return out;
}

Outcome run_pieces(std::string_view stream, std::string_view tag, const FetchLimits& limits,
                   uint32_t seed, bool bytewise) {
  Splitter splitter(seed);
  PieceSource source(stream, &splitter, bytewise);
  Outcome out;
  out.ok = read_fetch_answer(source, tag, limits, &out.answer, &out.error);
  out.consumed = source.position();
  return out;
}

Outcome run_mailstream(std::string_view stream, std::string_view tag, const FetchLimits& limits,
                       uint32_t seed, size_t buffer_size) {
  MemoryLow memory{stream, 0, Splitter(seed ^ 0x5a5a)};
  mailstream_low* low = mailstream_low_new(&memory, &g_memory_driver);
  FUZZ_CHECK(low != nullptr, "mailstream_low_new failed");
  mailstream* ms = mailstream_new(low, buffer_size);
  FUZZ_CHECK(ms != nullptr, "mailstream_new failed");
  Outcome out;
  {
    MailstreamSource source(ms);  // gives libetpan its buffer back when it goes
    out.ok = read_fetch_answer(source, tag, limits, &out.answer, &out.error);
  }
  if (out.ok) {
    // libetpan reads on from where the reader stopped: what it gets, its
    // buffer first, is exactly the rest of the stream.
    out.consumed = memory.pos - ms->read_buffer_len;
    std::string rest;
    char piece[37];
    for (;;) {
      const ssize_t got = mailstream_read(ms, piece, sizeof piece);
      if (got <= 0) break;
      rest.append(piece, static_cast<size_t>(got));
    }
    FUZZ_CHECK(rest == stream.substr(out.consumed),
               "libetpan reads '%s' after the answer, the rest is '%s'", show(rest).c_str(),
               show(stream.substr(out.consumed)).c_str());
  }
  mailstream_close(ms);
  return out;
}

void check_success(const Outcome& o, std::string_view stream, std::string_view tag,
                   const FetchLimits& limits) {
  if (!o.ok) {
    FUZZ_CHECK(!o.error.empty(), "false without an error on '%s'", show(stream).c_str());
    return;
  }
  FUZZ_CHECK(o.error.empty(), "true with error '%s'", o.error.c_str());
  for (const FetchedBody& body : o.answer.bodies) {
    FUZZ_CHECK(body.data.size() <= limits.max_body, "body of %zu octets, max_body %llu",
               body.data.size(), static_cast<unsigned long long>(limits.max_body));
    FUZZ_CHECK(!body.nil || body.data.empty(), "NIL body with data");
    FUZZ_CHECK(body.uid != 0, "body without UID");
  }
  for (char c : o.answer.code) {
    FUZZ_CHECK(c != ' ' && c != ']' && !(c >= 'a' && c <= 'z'), "code '%s'", o.answer.code.c_str());
  }
  FUZZ_CHECK(o.consumed > 0 && stream[o.consumed - 1] == '\n', "stopped at %zu, not after an LF",
             o.consumed);
  const std::string_view consumed = stream.substr(0, o.consumed);
  const size_t line_start = consumed.find_last_of('\n', consumed.size() - 2);
  const std::string_view last =
      consumed.substr(line_start == std::string_view::npos ? 0 : line_start + 1);
  FUZZ_CHECK(
      last.size() > tag.size() && last.substr(0, tag.size()) == tag && last[tag.size()] == ' ',
      "stopped after '%s', not a line tagged %.*s", show(last).c_str(),
      static_cast<int>(tag.size()), tag.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  FetchLimits limits;
  limits.max_body = data[0] >= 0xf0 ? 1000 : data[0] % 64;
  limits.max_line = size_t{data[1]} + 1;
  static const char* const kTags[] = {"1", "12", "A0001", "a"};
  const std::string_view tag = kTags[data[2] & 3];
  static const size_t kBufferSizes[] = {1, 2, 3, 7, 16, 64, 512, 8192};
  const size_t buffer_size = kBufferSizes[(data[2] >> 2) & 7];
  const uint32_t seed = data[3];
  const std::string_view stream(reinterpret_cast<const char*>(data) + 4, size - 4);

  const Outcome whole = run_string(stream, tag, limits);
  static const bool trace = std::getenv("FUZZ_TRACE") != nullptr;
  if (trace) {
    std::fprintf(stderr, "max_body %llu max_line %zu tag %.*s buffer %zu: %s%s\n",
                 static_cast<unsigned long long>(limits.max_body), limits.max_line,
                 static_cast<int>(tag.size()), tag.data(), buffer_size, whole.ok ? "ok " : "error ",
                 whole.ok ? show(whole.answer.text).c_str() : whole.error.c_str());
    for (const FetchedBody& body : whole.answer.bodies) {
      std::fprintf(stderr, "  UID %u%s '%s'\n", body.uid, body.nil ? " NIL" : "",
                   show(body.data).c_str());
    }
  }
  check_success(whole, stream, tag, limits);
  check_same(whole, run_pieces(stream, tag, limits, seed, false), "pieces", stream);
  check_same(whole, run_pieces(stream, tag, limits, seed, true), "bytewise", stream);
  check_same(whole, run_mailstream(stream, tag, limits, seed, buffer_size), "mailstream", stream);

  if (whole.ok) {
    // The answer ends at the tagged line: what follows it changes nothing,
    // and cutting it short is an error.
    const std::string_view consumed = stream.substr(0, whole.consumed);
    const Outcome alone = run_string(consumed, tag, limits);
    check_same(whole, alone, "consumed part alone", stream);
    const size_t cut = (seed * 7919u + size) % whole.consumed;  // 0 .. consumed-1
    const Outcome cut_short = run_string(consumed.substr(0, cut), tag, limits);
    FUZZ_CHECK(!cut_short.ok && !cut_short.error.empty(), "accepted when cut at %zu of %zu", cut,
               whole.consumed);
  }
  return 0;
}
