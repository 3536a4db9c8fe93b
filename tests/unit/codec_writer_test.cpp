// MessageEncoder: exact bytes of RETR/TOP response bodies, as Dovecot sends them.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>
#include <string>

#include "proxy/pop3/writer.h"

namespace popbridge::pop3 {
namespace {

using namespace std::string_literals;

// Encodes `msg` fed in pieces of `step` octets (0: at once), then finishes.
std::string encode_steps(std::string_view msg, int64_t top, size_t step, bool* done = nullptr) {
  MessageEncoder enc(top);
  std::string out;
  if (step == 0) step = msg.size() + 1;
  bool finished = false;
  for (size_t i = 0; i < msg.size(); i += step) {
    finished = enc.encode(msg.substr(i, step), out);
    EXPECT_EQ(finished, enc.done());
  }
  enc.finish(out);
  if (done != nullptr) *done = finished;
  return out;
}

// Encodes `msg` in two calls split at `at`.
std::string encode_split(std::string_view msg, int64_t top, size_t at) {
  MessageEncoder enc(top);
  std::string out;
  enc.encode(msg.substr(0, at), out);
  enc.encode(msg.substr(at), out);
  enc.finish(out);
  return out;
}

// Every encoder case: at once, one octet at a time, and split at every position.
void expect_encoded(std::string_view msg, int64_t top, std::string_view expected) {
  bool done_whole = false;
  EXPECT_EQ(encode_steps(msg, top, 0, &done_whole), expected) << "at once";
  bool done_bytes = false;
  EXPECT_EQ(encode_steps(msg, top, 1, &done_bytes), expected) << "one octet at a time";
  EXPECT_EQ(done_whole, done_bytes);
  for (size_t at = 0; at <= msg.size(); ++at) {
    EXPECT_EQ(encode_split(msg, top, at), expected) << "split at " << at;
  }
}

void expect_retr(std::string_view msg, std::string_view expected) {
  expect_encoded(msg, -1, expected);
}

TEST(MessageEncoder, PlainCrlfMessage) {
  expect_retr("Subject: hi\r\n\r\nbody\r\n", "Subject: hi\r\n\r\nbody\r\n.\r\n");
}

TEST(MessageEncoder, DotAtMessageStart) {
  expect_retr(".hidden: x\r\n\r\nb\r\n", "..hidden: x\r\n\r\nb\r\n.\r\n");
  expect_retr(".\r\n", "..\r\n.\r\n");
  expect_retr(".", "..\r\n.\r\n");
}

TEST(MessageEncoder, DotLine) {
  expect_retr("a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n");
  expect_retr("a\n.\nb\n", "a\r\n..\r\nb\r\n.\r\n");
  expect_retr("a\r\n.", "a\r\n..\r\n.\r\n");
}

TEST(MessageEncoder, DoubleDot) {
  expect_retr("a\r\n..\r\n", "a\r\n...\r\n.\r\n");
  expect_retr("a\r\n...x\r\n", "a\r\n....x\r\n.\r\n");
}

TEST(MessageEncoder, DotNotAtLineStart) {
  expect_retr("a.b\r\n x.\r\n\r.\r\n", "a.b\r\n x.\r\n\r.\r\n.\r\n");
}

TEST(MessageEncoder, BareLf) {
  expect_retr("a\nb\n", "a\r\nb\r\n.\r\n");
  expect_retr("\n", "\r\n.\r\n");
  expect_retr("\n\n\n", "\r\n\r\n\r\n.\r\n");
  expect_retr("a\r\nb\nc\r\n", "a\r\nb\r\nc\r\n.\r\n");
}

TEST(MessageEncoder, BareCrPassesThrough) {
  expect_retr("a\rb\r\n", "a\rb\r\n.\r\n");
  expect_retr("a\r\r\n", "a\r\r\n.\r\n");
  expect_retr("\r", "\r\r\n.\r\n");
  expect_retr("a\r", "a\r\r\n.\r\n");
  expect_retr("a\r\rb\n", "a\r\rb\r\n.\r\n");
}

TEST(MessageEncoder, NoFinalNewline) {
  expect_retr("abc", "abc\r\n.\r\n");
  expect_retr("a\r\nbc", "a\r\nbc\r\n.\r\n");
}

TEST(MessageEncoder, EmptyMessage) {
  expect_retr("", "\r\n.\r\n");
}

TEST(MessageEncoder, EightBitAndNul) {
  const std::string msg = "S: \xe9t\xe9\r\n\r\n\x80\xff\0x\r\n\0.\r\n"s;
  expect_retr(msg, msg + ".\r\n");
  expect_retr("\0"s, "\0\r\n.\r\n"s);
}

const std::string kCrlfMsg = "H1: a\r\nH2: b\r\n\r\nl1\r\nl2\r\nl3\r\n";
const std::string kLfMsg = "H1: a\nH2: b\n\nl1\nl2\nl3\n";

TEST(MessageEncoder, TopCrlf) {
  expect_encoded(kCrlfMsg, 0, "H1: a\r\nH2: b\r\n\r\n.\r\n");
  expect_encoded(kCrlfMsg, 1, "H1: a\r\nH2: b\r\n\r\nl1\r\n.\r\n");
  expect_encoded(kCrlfMsg, 2, "H1: a\r\nH2: b\r\n\r\nl1\r\nl2\r\n.\r\n");
  expect_encoded(kCrlfMsg, 3, kCrlfMsg + ".\r\n");
  expect_encoded(kCrlfMsg, 5, kCrlfMsg + ".\r\n");
}

TEST(MessageEncoder, TopLf) {
  expect_encoded(kLfMsg, 0, "H1: a\r\nH2: b\r\n\r\n.\r\n");
  expect_encoded(kLfMsg, 1, "H1: a\r\nH2: b\r\n\r\nl1\r\n.\r\n");
  expect_encoded(kLfMsg, 5, kCrlfMsg + ".\r\n");
}

TEST(MessageEncoder, TopDoneWhenLinesAreIn) {
  bool done = false;
  encode_steps(kCrlfMsg, 1, 0, &done);
  EXPECT_TRUE(done);
  encode_steps(kCrlfMsg, 3, 0, &done);  // the last LF is the third body line's
  EXPECT_TRUE(done);
  encode_steps(kCrlfMsg, 5, 0, &done);
  EXPECT_FALSE(done);
  encode_steps(kCrlfMsg, -1, 0, &done);
  EXPECT_FALSE(done);
}

TEST(MessageEncoder, TopIgnoresInputAfterDone) {
  MessageEncoder enc(0);
  std::string out;
  EXPECT_TRUE(enc.encode("H: a\r\n\r\nbody", out));
  EXPECT_TRUE(enc.encode("more\r\n", out));
  enc.finish(out);
  EXPECT_EQ(out, "H: a\r\n\r\n.\r\n");
}

TEST(MessageEncoder, TopBodyWithoutFinalNewline) {
  expect_encoded("H: a\n\nl1", 5, "H: a\r\n\r\nl1\r\n.\r\n");
  expect_encoded("H: a\n\n", 5, "H: a\r\n\r\n.\r\n");
}

TEST(MessageEncoder, TopHeaderOnlyMessage) {
  expect_encoded("H1: a\r\nH2: b\r\n", 0, "H1: a\r\nH2: b\r\n.\r\n");
  expect_encoded("H1: a\nH2: b", 0, "H1: a\r\nH2: b\r\n.\r\n");
  expect_encoded("", 0, "\r\n.\r\n");
}

TEST(MessageEncoder, TopMessageStartingWithBlankLine) {
  expect_encoded("\r\nl1\r\nl2\r\n", 0, "\r\n.\r\n");
  expect_encoded("\nl1\nl2\n", 1, "\r\nl1\r\n.\r\n");
}

TEST(MessageEncoder, TopBodyStartsAtCrAfterLf) {
  // A CR right after an LF ends the headers even if no LF follows it.
  expect_encoded("H: a\n\rX\nl1\nl2\n", 0, "H: a\r\n\rX\r\n.\r\n");
  expect_encoded("H: a\n\rX\nl1\nl2\n", 1, "H: a\r\n\rX\r\nl1\r\n.\r\n");
}

TEST(MessageEncoder, TopStuffsDotsInBody) {
  expect_encoded("H: a\n\n.l1\n.\nl3\n", 2, "H: a\r\n\r\n..l1\r\n..\r\n.\r\n");
}

TEST(MessageEncoder, AppendsToExistingOutput) {
  MessageEncoder enc;
  std::string out = "+OK 3 octets\r\n";
  enc.encode("a\n", out);
  enc.finish(out);
  EXPECT_EQ(out, "+OK 3 octets\r\na\r\n.\r\n");
}

// encode_in_place() against encode(): `a` gets encode_in_place(), `b` encode().
// The chunk must come out as what encode() appended, with the same return
// value, and both encoders must then behave the same on any continuation.
void expect_in_place_step(MessageEncoder& a, MessageEncoder& b, std::string_view piece,
                          const std::string& context) {
  std::string chunk(piece);
  std::string out = "prefix";
  const bool ra = a.encode_in_place(chunk);
  const bool rb = b.encode(piece, out);
  ASSERT_EQ(chunk, out.substr(6)) << context;
  ASSERT_EQ(ra, rb) << context;
  ASSERT_EQ(a.done(), b.done()) << context;
  for (std::string_view probe : {"", "\n", ".", "\r", "\r\n.\r\n", "x\n\n.y\nz\r\n.\n"}) {
    MessageEncoder ca = a, cb = b;
    std::string oa, ob;
    ca.encode(probe, oa);
    cb.encode(probe, ob);
    ca.finish(oa);
    cb.finish(ob);
    ASSERT_EQ(oa, ob) << context << " then " << testing::PrintToString(std::string(probe));
  }
}

// Every split of `msg` into three chunks (some of them empty).
void expect_in_place_matches(std::string_view msg, int64_t top) {
  for (size_t i = 0; i <= msg.size(); ++i) {
    for (size_t j = i; j <= msg.size(); ++j) {
      MessageEncoder a(top), b(top);
      const std::string context = "top " + std::to_string(top) + " split " + std::to_string(i) +
                                  "," + std::to_string(j) + " msg " +
                                  testing::PrintToString(std::string(msg));
      expect_in_place_step(a, b, msg.substr(0, i), context);
      expect_in_place_step(a, b, msg.substr(i, j - i), context);
      expect_in_place_step(a, b, msg.substr(j), context);
    }
  }
}

TEST(MessageEncoderInPlace, MatchesEncodeAtEverySplit) {
  const std::string messages[] = {
      "",
      "Subject: hi\r\n\r\nbody\r\n",
      "a\nb\n",
      "\n\n\n",
      "a\r\nb\nc\r\n",
      "a\rb\r\n\r",
      "a\r\r\n\r\r",
      ".",
      ".\r\n",
      ".hidden: x\r\n\r\nb\r\n",
      "a\r\n.\r\nb\r\n..\r\n...x\r\n.",
      "a\n.\nb\n.",
      "a.b\r\n x.\r\n\r.\r\n",
      "S: \xe9t\xe9\r\n\r\n\x80\xff\0x\r\n\0.\r\n"s,
      kCrlfMsg,
      kLfMsg,
      "H: a\n\rX\nl1\nl2\n",
      "H: a\r\n\r\n.l1\r\n.\r\nl3\r\nl4",
      "\r\nl1\r\n.l2\r\nl3\r\n",
      "\nl1\n.l2\nl3\n",
      "H1: a\r\nH2: b\r\n",
  };
  for (const std::string& msg : messages) {
    for (int64_t top : {-1, 0, 1, 2, 3, 5}) expect_in_place_matches(msg, top);
  }
}

TEST(MessageEncoderInPlace, MixedWithEncodeOnRandomMessages) {
  std::mt19937 rng(6789);
  const char alphabet[] = {'\r', '\n', '\n', '.', 'a', 'b', ' ', '\0', '\x80', ':'};
  std::uniform_int_distribution<size_t> pick(0, sizeof alphabet - 1);
  std::uniform_int_distribution<size_t> length(0, 60);
  std::uniform_int_distribution<size_t> chunk(0, 12);  // 0: an empty chunk
  for (int round = 0; round < 3000; ++round) {
    std::string msg;
    for (size_t n = length(rng); n > 0; --n) msg.push_back(alphabet[pick(rng)]);
    for (int64_t top : {-1, 0, 1, 2, 5}) {
      MessageEncoder a(top), b(top);
      std::string out_a, out_b;
      for (size_t pos = 0; pos < msg.size();) {
        const size_t n = std::min(chunk(rng), msg.size() - pos);
        const std::string_view piece = std::string_view(msg).substr(pos, n);
        if (rng() & 1) {
          std::string copy(piece);
          ASSERT_EQ(a.encode_in_place(copy), b.encode(piece, out_b));
          out_a += copy;
        } else {  // the same encoder also through encode()
          ASSERT_EQ(a.encode(piece, out_a), b.encode(piece, out_b));
        }
        pos += n;
      }
      a.finish(out_a);
      b.finish(out_b);
      ASSERT_EQ(out_a, out_b) << "top " << top << " msg " << testing::PrintToString(msg);
    }
  }
}

TEST(MessageEncoderInPlace, CleanChunkIsNotCopied) {
  MessageEncoder enc;
  // The CR of the first CRLF is in the previous chunk; line starts at chunk
  // starts are not dots; 8-bit bytes and a bare CR need no change either.
  for (std::string_view piece :
       {"Subject: a\r", "\nX: \xe9\r\n", "\r\nbody\rx\r\n", "", "x.", "y\r\n"}) {
    std::string chunk(piece);
    chunk.reserve(64);  // not inline (small string), so a copy would show
    const char* data = chunk.data();
    const size_t capacity = chunk.capacity();
    EXPECT_FALSE(enc.encode_in_place(chunk));
    EXPECT_EQ(chunk, piece);
    EXPECT_EQ(chunk.data(), data);
    EXPECT_EQ(chunk.capacity(), capacity);
  }
  std::string out;
  enc.finish(out);
  EXPECT_EQ(out, ".\r\n");  // the last byte was LF
}

TEST(MessageEncoderInPlace, LargeCleanMessageIsNotCopied) {
  std::string msg = "Subject: big\r\n\r\n";
  for (int i = 0; i < 50000; ++i) msg += "line " + std::to_string(i) + " .\r\n";
  MessageEncoder enc;
  std::string sent;
  for (size_t pos = 0; pos < msg.size(); pos += 65536) {
    std::string chunk = msg.substr(pos, 65536);
    const char* data = chunk.data();
    enc.encode_in_place(chunk);
    EXPECT_EQ(chunk.data(), data) << "chunk at " << pos;
    sent += chunk;
  }
  enc.finish(sent);
  EXPECT_TRUE(sent == msg + ".\r\n");  // EXPECT_TRUE: no megabyte diff
}

TEST(MessageEncoderInPlace, TopCutsCleanChunkInPlace) {
  MessageEncoder enc(1);
  std::string chunk = kCrlfMsg;
  const char* data = chunk.data();
  EXPECT_TRUE(enc.encode_in_place(chunk));
  EXPECT_EQ(chunk, "H1: a\r\nH2: b\r\n\r\nl1\r\n");
  EXPECT_EQ(chunk.data(), data);
  // Once done, further input is dropped, as encode() ignores it.
  chunk = "l2\r\n";
  EXPECT_TRUE(enc.encode_in_place(chunk));
  EXPECT_EQ(chunk, "");
  enc.finish(chunk);
  EXPECT_EQ(chunk, ".\r\n");
}

TEST(MessageEncoderInPlace, ChangedChunk) {
  MessageEncoder enc;
  std::string chunk = "a\r\nb\r\n.c\nd\r";
  EXPECT_FALSE(enc.encode_in_place(chunk));
  EXPECT_EQ(chunk, "a\r\nb\r\n..c\r\nd\r");
  chunk = "\n.";  // a CR before the LF, in the previous chunk; a dot after it
  EXPECT_FALSE(enc.encode_in_place(chunk));
  EXPECT_EQ(chunk, "\n..");
  enc.finish(chunk);
  EXPECT_EQ(chunk, "\n..\r\n.\r\n");
}

TEST(AppendLine, AddsCrlf) {
  std::string out;
  append_line(out, "+OK");
  append_line(out, "1 120");
  EXPECT_EQ(out, "+OK\r\n1 120\r\n");
}

// A model of Dovecot's fetch_callback loop, independent of our encoder: it
// reads the message in chunks, scans a chunk byte by byte and, where a byte
// must be inserted, sends what precedes, sends the byte, and restarts the
// scan at the current input byte, comparing against the last byte *sent*
// at a chunk start. Two documented differences are modelled separately:
// "start of message" is a flag (Dovecot looks at last == '\0'), and the
// caller adds the dot Dovecot omits before a leading '.'.
std::string dovecot_model(std::string_view msg, int64_t top, size_t chunk) {
  uint64_t body_lines = top < 0 ? std::numeric_limits<uint64_t>::max() : uint64_t(top) + 1;
  bool in_body = false;
  bool sent_any = false;
  char last = '\0';
  size_t off = 0;
  std::string out;
  while ((body_lines > 0 || !in_body) && off < msg.size()) {
    const size_t size = std::min(chunk, msg.size() - off);
    const char* data = msg.data() + off;
    char add = '\0';
    size_t i = 0;
    for (; i < size; ++i) {
      const char c = data[i];
      const bool first = i == 0 && !sent_any;
      const char prev = i > 0 ? data[i - 1] : last;
      if ((c == '\r' || c == '\n') && !in_body && (first || prev == '\n')) in_body = true;
      if (c == '\n') {
        if (prev != '\r') {
          add = '\r';
          break;
        }
        if (in_body && --body_lines == 0) {
          ++i;
          break;
        }
      } else if (c == '.' && !first && prev == '\n') {
        add = '.';
        break;
      }
    }
    if (i > 0) {
      out.append(data, i);
      last = data[i - 1];
      sent_any = true;
      off += i;
    }
    if (add != '\0') {
      out.push_back(add);
      last = add;
      sent_any = true;
    }
  }
  if (last != '\n') out += "\r\n";
  out += ".\r\n";
  return out;
}

TEST(MessageEncoder, MatchesDovecotModelOnRandomMessages) {
  std::mt19937 rng(12345);
  const char alphabet[] = {'\r', '\n', '\n', '.', 'a', 'b', ' ', '\0', '\x80', ':'};
  std::uniform_int_distribution<size_t> pick(0, sizeof alphabet - 1);
  std::uniform_int_distribution<size_t> length(0, 40);
  std::uniform_int_distribution<size_t> chunk(1, 9);
  for (int round = 0; round < 4000; ++round) {
    std::string msg;
    for (size_t n = length(rng); n > 0; --n) msg.push_back(alphabet[pick(rng)]);
    for (int64_t top : {int64_t{-1}, int64_t{0}, int64_t{1}, int64_t{2}, int64_t{5}}) {
      std::string expected = dovecot_model(msg, top, chunk(rng));
      if (!msg.empty() && msg[0] == '.') expected.insert(0, ".");
      const size_t step = chunk(rng);
      ASSERT_EQ(encode_steps(msg, top, step), expected)
          << "top " << top << " step " << step << " msg " << testing::PrintToString(msg);
    }
  }
}

TEST(MessageEncoder, LargeMessage) {
  // A few MB through 64 KiB chunks: same result as at once, CRs added.
  std::string msg;
  for (int i = 0; i < 50000; ++i)
    msg += (i % 7 == 0 ? ".line " : "line ") + std::to_string(i) + "\n";
  const std::string whole = encode_steps(msg, -1, 0);
  // EXPECT_TRUE: a failing EXPECT_EQ would diff megabytes.
  EXPECT_TRUE(encode_steps(msg, -1, 65536) == whole);
  EXPECT_TRUE(whole == "." + dovecot_model(msg, -1, 4096));           // msg starts with a dot
  EXPECT_EQ(whole.size(), msg.size() + 50000 + (50000 / 7 + 1) + 3);  // CRs, dots, ".\r\n"
}

}  // namespace
}  // namespace popbridge::pop3
