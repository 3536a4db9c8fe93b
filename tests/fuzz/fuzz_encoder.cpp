// MessageEncoder (RETR and TOP bodies).
//
// Input: 4 header bytes, then the message as the upstream sends it.
//   h[0]  0xff: RETR; else TOP with h[0] % 8 body lines (h[0] >= 0x80: % 128)
//   h[1..2] seed for the split points of the message into encode() calls
//   h[3]  reserved
// Checks:
//  - one encode() call and encode() calls at random split points (also
//    one byte at a time) give identical output and the same done() state;
//  - encode_in_place() at random split points (some chunks through encode()
//    instead, some empty) turns each chunk into what encode() appends for it,
//    returns the same, and leaves the encoder in the same state: the encoders
//    give the same output for the rest of the message and in finish();
//  - decoding the output as an RFC 1939 client does (lines end with CRLF,
//    a line "." ends the response, a leading "." is removed) ends exactly
//    at the end of the output (so no "\r\n.\r\n" before the end, and the
//    output ends with CRLF.CRLF) and gives back the message with every
//    bare LF turned into CRLF and a final CRLF added when the message does
//    not end with LF; for TOP, the part of the message that the documented
//    rule selects (headers, blank line, n body lines).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "proxy/pop3/writer.h"

using popbridge::fuzz::show;
using popbridge::fuzz::Splitter;
using popbridge::pop3::MessageEncoder;

namespace {

// What TOP sends, by the rule in writer.h: the body starts at the first CR
// or LF that is the first byte or follows an LF; then stop right after the
// (n+1)-th LF at or after that point. No body: the whole message.
std::string_view top_part(std::string_view msg, int64_t n, bool* cut) {
  *cut = false;
  size_t body = std::string_view::npos;
  for (size_t i = 0; i < msg.size(); ++i) {
    if ((i == 0 || msg[i - 1] == '\n') && (msg[i] == '\r' || msg[i] == '\n')) {
      body = i;
      break;
    }
  }
  if (body == std::string_view::npos) return msg;
  int64_t left = n;
  for (size_t i = body; i < msg.size(); ++i) {
    if (msg[i] != '\n') continue;
    if (left-- == 0) {
      *cut = true;
      return msg.substr(0, i + 1);
    }
  }
  return msg;
}

// The message as the client must see it after unstuffing.
std::string expected_text(std::string_view msg) {
  std::string out;
  for (size_t i = 0; i < msg.size(); ++i) {
    if (msg[i] == '\n' && (i == 0 || msg[i - 1] != '\r')) out.push_back('\r');
    out.push_back(msg[i]);
  }
  if (out.empty() || out.back() != '\n') out += "\r\n";
  return out;
}

// RFC 1939 section 3, client side. Returns the unstuffed text (lines with
// their CRLF); fails the check unless the terminating "." line is exactly
// at the end.
std::string unstuff(std::string_view wire) {
  std::string text;
  size_t pos = 0;
  for (;;) {
    const size_t crlf = wire.find("\r\n", pos);
    FUZZ_CHECK(crlf != std::string_view::npos, "no terminating line; output %s",
               show(wire).c_str());
    std::string_view line = wire.substr(pos, crlf - pos);
    pos = crlf + 2;
    if (line == ".") {
      FUZZ_CHECK(pos == wire.size(), "\"\\r\\n.\\r\\n\" at %zu of %zu; output %s", pos - 3,
                 wire.size(), show(wire).c_str());
      return text;
    }
    if (!line.empty() && line[0] == '.') line.remove_prefix(1);
    text.append(line);
    text += "\r\n";
  }
}

std::string encode_split(std::string_view msg, int64_t lines, Splitter split, bool* done,
                         bool bytewise) {
  MessageEncoder enc(lines);
  std::string out;
  size_t pos = 0;
  bool finished = false;
  while (pos < msg.size()) {
    const size_t n = bytewise ? 1 : std::min(split.chunk(), msg.size() - pos);
    const bool r = enc.encode(msg.substr(pos, n), out);
    FUZZ_CHECK(r == enc.done(), "encode() returned %d, done() %d", r, enc.done());
    FUZZ_CHECK(!finished || r, "done went back to false");
    finished = r;
    pos += n;
    // Empty calls in between change nothing.
    if ((split.next() & 7) == 0) {
      const size_t before = out.size();
      FUZZ_CHECK(enc.encode({}, out) == finished && out.size() == before, "empty encode()");
    }
  }
  *done = enc.done();
  enc.finish(out);
  return out;
}

// encode_in_place() on one encoder, encode() on another, over the same
// chunks; each chunk must come out as the bytes encode() appended.
std::string encode_in_place_split(std::string_view msg, int64_t lines, Splitter split) {
  MessageEncoder in_place(lines);
  MessageEncoder copying(lines);
  std::string out;
  std::string chunk;
  size_t pos = 0;
  while (pos < msg.size()) {
    const uint32_t r = split.next();
    const size_t n = (r & 15) == 0 ? 0 : std::min(split.chunk(), msg.size() - pos);
    const std::string_view piece = msg.substr(pos, n);
    const size_t before = out.size();
    const bool want = copying.encode(piece, out);
    bool got;
    if ((r & 48) == 0) {  // now and then the same encoder through encode()
      chunk.clear();
      got = in_place.encode(piece, chunk);
    } else {
      chunk.assign(piece);
      got = in_place.encode_in_place(chunk);
    }
    FUZZ_CHECK(got == want, "encode_in_place() returned %d, encode() %d", got, want);
    FUZZ_CHECK(in_place.done() == copying.done(), "done() differs");
    FUZZ_CHECK(out.compare(before, std::string::npos, chunk) == 0,
               "encode_in_place() of %s at %zu:\n want %s\n got  %s", show(piece).c_str(), pos,
               show(std::string_view(out).substr(before)).c_str(), show(chunk).c_str());
    pos += n;
  }
  std::string tail;
  in_place.finish(tail);
  const size_t before = out.size();
  copying.finish(out);
  FUZZ_CHECK(out.compare(before, std::string::npos, tail) == 0, "finish() differs");
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const int64_t lines = data[0] == 0xff ? -1 : data[0] >= 0x80 ? data[0] % 128 : data[0] % 8;
  const uint32_t seed = static_cast<uint32_t>(data[1]) | static_cast<uint32_t>(data[2]) << 8;
  const std::string_view msg(reinterpret_cast<const char*>(data) + 4, size - 4);

  MessageEncoder enc(lines);
  std::string whole;
  const bool whole_done = enc.encode(msg, whole);
  enc.finish(whole);

  bool split_done = false;
  const std::string split = encode_split(msg, lines, Splitter(seed), &split_done, false);
  FUZZ_CHECK(split == whole, "split output differs:\n whole %s\n split %s", show(whole).c_str(),
             show(split).c_str());
  FUZZ_CHECK(split_done == whole_done, "done() depends on the split");
  const std::string in_place = encode_in_place_split(msg, lines, Splitter(seed ^ 0x5a5a));
  FUZZ_CHECK(in_place == whole, "encode_in_place() output differs:\n whole    %s\n in place %s",
             show(whole).c_str(), show(in_place).c_str());
  if (msg.size() <= 2048) {
    bool bytes_done = false;
    const std::string bytes = encode_split(msg, lines, Splitter(seed), &bytes_done, true);
    FUZZ_CHECK(bytes == whole, "byte-by-byte output differs:\n whole %s\n bytes %s",
               show(whole).c_str(), show(bytes).c_str());
    FUZZ_CHECK(bytes_done == whole_done, "done() depends on the split (bytewise)");
  }

  FUZZ_CHECK(whole.size() >= 5 && whole.compare(whole.size() - 5, 5, "\r\n.\r\n") == 0,
             "output does not end with CRLF.CRLF: %s", show(whole).c_str());
  bool cut = false;
  const std::string_view sent = lines < 0 ? msg : top_part(msg, lines, &cut);
  FUZZ_CHECK(whole_done == cut, "done() %d, but the TOP rule says %d", whole_done, cut);
  const std::string want = expected_text(sent);
  const std::string got = unstuff(whole);
  FUZZ_CHECK(got == want, "unstuffed output differs:\n want %s\n got  %s", show(want).c_str(),
             show(got).c_str());
  return 0;
}
