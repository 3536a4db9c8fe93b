// LineParser, parse_command, parse_number.
//
// Input: 4 header bytes, then the client byte stream.
//   h[0]  max_line: 0 -> 255 (the session's command limit), 255 -> 8192
//         (the SASL limit), else h[0] itself (tiny limits hit the edges)
//   h[1..2] seed for the split points of the stream into feed() calls
//   h[3]  bit 0: also call set_max_line()/discard() at random points
//         (then only invariants are checked, not the event sequence)
// Checks: the events do not depend on how the stream is split (one feed,
// random splits, byte by byte) and equal those of a straightforward reference
// model of the documented behaviour; every line returned obeys the limit and
// holds no CR, LF or NUL; after draining, at most max_line-1 octets stay
// buffered; peek_lines() shows exactly the plain lines next() returns next;
// parse_command and parse_number agree with reference versions.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "proxy/pop3/parser.h"

using popbridge::fuzz::show;
using popbridge::fuzz::Splitter;
using popbridge::pop3::LineParser;

namespace {

struct Ev {
  LineParser::Kind kind;
  std::string line;
  bool operator==(const Ev&) const = default;
};

void check_line(const LineParser& parser, const LineParser::Event& e) {
  if (e.kind != LineParser::Kind::kLine) return;
  FUZZ_CHECK(e.line.size() < parser.max_line(), "line of %zu octets, max_line %zu",
             e.line.size(), parser.max_line());
  FUZZ_CHECK(e.line.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos,
             "line with CR/LF/NUL: %s", show(e.line).c_str());
}

// peek_lines(max) must show exactly the plain lines that next() returns
// next, stopping at the first event that is not one (or at max).
void drain(LineParser& parser, std::vector<Ev>& out, size_t peek = 3) {
  std::vector<std::string> peeked;
  for (std::string_view line : parser.peek_lines(peek)) peeked.emplace_back(line);
  FUZZ_CHECK(peeked.size() <= peek, "peek_lines(%zu) gave %zu lines", peek, peeked.size());
  const size_t first = out.size();
  for (;;) {
    const LineParser::Event e = parser.next();
    if (e.kind == LineParser::Kind::kNeedMore) break;
    check_line(parser, e);
    out.push_back({e.kind, std::string(e.line)});
    FUZZ_CHECK(out.size() < 1000000, "runaway events");
  }
  for (size_t i = 0; i < peeked.size(); ++i) {
    FUZZ_CHECK(first + i < out.size() && out[first + i].kind == LineParser::Kind::kLine &&
                   out[first + i].line == peeked[i],
               "peek_lines()[%zu] = %s is not what next() returned", i, show(peeked[i]).c_str());
  }
  if (peeked.size() < peek && first + peeked.size() < out.size()) {
    FUZZ_CHECK(out[first + peeked.size()].kind != LineParser::Kind::kLine,
               "peek_lines(%zu) stopped after %zu lines before the plain line %s", peek,
               peeked.size(), show(out[first + peeked.size()].line).c_str());
  }
  // Nothing complete is left: only the partial line (shorter than the limit).
  FUZZ_CHECK(parser.buffered() < parser.max_line() || parser.max_line() == 0,
             "buffered %zu after draining, max_line %zu", parser.buffered(), parser.max_line());
}

// The documented behaviour, written plainly.
std::vector<Ev> reference(std::string_view in, size_t max_line) {
  std::vector<Ev> out;
  size_t start = 0;
  for (;;) {
    const size_t lf = in.find('\n', start);
    std::string_view line = in.substr(start, lf == std::string_view::npos ? in.npos : lf - start);
    if (lf == std::string_view::npos) {
      // A partial line is reported too long as soon as it cannot fit.
      if (line.size() >= max_line) out.push_back({LineParser::Kind::kTooLong, {}});
      break;
    }
    if (line.size() + 1 > max_line) {
      out.push_back({LineParser::Kind::kTooLong, {}});
    } else {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.find_first_of(std::string_view("\r\0", 2)) != std::string_view::npos)
        out.push_back({LineParser::Kind::kInvalid, {}});
      else
        out.push_back({LineParser::Kind::kLine, std::string(line)});
    }
    start = lf + 1;
  }
  return out;
}

bool is_letter(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

void check_command(std::string_view line) {
  popbridge::pop3::Command cmd;
  cmd.verb = "STALE";
  cmd.args.push_back("stale");
  const bool ok = popbridge::pop3::parse_command(line, cmd);

  // Reference tokenizer.
  bool ref_ok = true;
  std::string verb;
  std::vector<std::string_view> args;
  const size_t space = line.find(' ');
  const std::string_view v = line.substr(0, space);
  if (v.empty() || v.size() > popbridge::pop3::kMaxVerb) ref_ok = false;
  for (char c : v) {
    if (!is_letter(c)) ref_ok = false;
    verb.push_back(c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c);
  }
  if (ref_ok && space != std::string_view::npos) {
    const std::string_view rest = line.substr(space + 1);
    if (verb == "USER" || verb == "PASS") {
      if (!rest.empty()) args.push_back(rest);
    } else {
      size_t i = 0;
      while (i < rest.size()) {
        if (rest[i] == ' ') {
          ++i;
          continue;
        }
        size_t j = i;
        while (j < rest.size() && rest[j] != ' ') ++j;
        args.push_back(rest.substr(i, j - i));
        i = j;
      }
      if (args.size() > popbridge::pop3::kMaxArgs) ref_ok = false;
    }
  }
  FUZZ_CHECK(ok == ref_ok, "parse_command(%s) = %d, reference %d", show(line).c_str(), ok, ref_ok);
  if (!ok) {
    FUZZ_CHECK(cmd.verb.empty() && cmd.args.empty(), "failed parse left output behind");
    return;
  }
  FUZZ_CHECK(cmd.verb == verb, "verb %s, reference %s", show(cmd.verb).c_str(), show(verb).c_str());
  FUZZ_CHECK(cmd.args.size() == args.size(), "%zu args, reference %zu (%s)", cmd.args.size(),
             args.size(), show(line).c_str());
  for (size_t i = 0; i < args.size(); ++i) {
    FUZZ_CHECK(cmd.args[i] == args[i], "arg %zu differs", i);
    // The arguments view into the line itself.
    FUZZ_CHECK(cmd.args[i].data() >= line.data() &&
                   cmd.args[i].data() + cmd.args[i].size() <= line.data() + line.size(),
               "arg %zu does not view into the line", i);
  }
}

void check_number(std::string_view text) {
  const std::optional<uint32_t> got = popbridge::pop3::parse_number(text);
  std::optional<uint32_t> want;
  if (!text.empty() && text.size() <= 10) {
    uint64_t value = 0;
    bool digits = true;
    for (char c : text) {
      if (c < '0' || c > '9') digits = false;
      else value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    if (digits && value <= UINT32_MAX) want = static_cast<uint32_t>(value);
  }
  FUZZ_CHECK(got == want, "parse_number(%s)", show(text).c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const size_t max_line = data[0] == 0 ? 255 : data[0] == 255 ? 8192 : data[0];
  const uint32_t seed = static_cast<uint32_t>(data[1]) | static_cast<uint32_t>(data[2]) << 8;
  const bool chaos = data[3] & 1;
  const std::string_view in(reinterpret_cast<const char*>(data) + 4, size - 4);

  // Direct calls on bytes that never went through the line splitter.
  check_command(in.substr(0, 300));
  check_number(in.substr(0, 12));

  if (chaos) {
    // set_max_line / discard at random points: invariants only.
    LineParser parser(max_line);
    Splitter split(seed);
    std::vector<Ev> events;
    size_t pos = 0;
    while (pos < in.size()) {
      const size_t n = std::min(split.chunk(), in.size() - pos);
      parser.feed(in.substr(pos, n));
      pos += n;
      const uint32_t r = split.next();
      if ((r & 7) == 0) {
        static const size_t kLimits[] = {1, 2, 3, 5, 16, 255, 256, 8192};
        parser.set_max_line(kLimits[(r >> 3) & 7]);
      } else if ((r & 31) == 1) {
        parser.discard();
        FUZZ_CHECK(parser.buffered() == 0, "discard left %zu", parser.buffered());
        FUZZ_CHECK(parser.next().kind == LineParser::Kind::kNeedMore, "event after discard");
      }
      // Pull a few events, or all of them; peek_lines() first must agree.
      const size_t pulls = (r >> 8) & 3;
      std::vector<std::string> peeked;
      for (std::string_view line : parser.peek_lines((r >> 11) & 7)) peeked.emplace_back(line);
      bool plain = true;  // only plain lines so far
      for (size_t i = 0; i < pulls || ((r >> 10) & 1); ++i) {
        const LineParser::Event e = parser.next();
        if (i < peeked.size() && plain) {
          FUZZ_CHECK(e.kind == LineParser::Kind::kLine && e.line == peeked[i],
                     "peek_lines()[%zu] = %s, next() differs", i, show(peeked[i]).c_str());
        }
        plain &= e.kind == LineParser::Kind::kLine;
        if (e.kind == LineParser::Kind::kNeedMore) break;
        check_line(parser, e);
        if (e.kind == LineParser::Kind::kLine) {
          check_command(e.line);
          check_number(e.line);
        }
      }
    }
    drain(parser, events);
    return 0;
  }

  // 1. One feed().
  std::vector<Ev> whole;
  {
    LineParser parser(max_line);
    parser.feed(in);
    drain(parser, whole);
  }
  const std::vector<Ev> want = reference(in, max_line);
  FUZZ_CHECK(whole == want, "one feed: %zu events, reference %zu", whole.size(), want.size());
  for (const Ev& e : whole) {
    if (e.kind == LineParser::Kind::kLine) {
      check_command(e.line);
      const size_t sp = e.line.find(' ');
      if (sp != std::string::npos) check_number(std::string_view(e.line).substr(sp + 1));
    }
  }

  // 2. Random splits, events pulled after every feed().
  {
    LineParser parser(max_line);
    Splitter split(seed);
    std::vector<Ev> events;
    size_t pos = 0;
    while (pos < in.size()) {
      const size_t n = std::min(split.chunk(), in.size() - pos);
      parser.feed(in.substr(pos, n));
      pos += n;
      drain(parser, events, split.next() % 5);
    }
    FUZZ_CHECK(events == want, "split feeds: %zu events, reference %zu", events.size(), want.size());
  }

  // 3. Byte by byte, events pulled only at the end (everything buffered).
  if (in.size() <= 4096) {
    LineParser parser(max_line);
    std::vector<Ev> events;
    for (size_t i = 0; i < in.size(); ++i) parser.feed(in.substr(i, 1));
    drain(parser, events, 16);
    FUZZ_CHECK(events == want, "byte feeds: %zu events, reference %zu", events.size(), want.size());
  }
  return 0;
}
