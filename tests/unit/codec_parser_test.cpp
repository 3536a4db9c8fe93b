// LineParser, parse_command, parse_number.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "proxy/pop3/parser.h"

namespace popbridge::pop3 {
namespace {

using Kind = LineParser::Kind;

// An event with its line copied out (views die at the next feed/next).
struct Ev {
  Kind kind;
  std::string line;
  bool operator==(const Ev&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Ev& ev) {
  static const char* const names[] = {"NeedMore", "Line", "TooLong", "Invalid"};
  os << names[static_cast<int>(ev.kind)];
  if (ev.kind == Kind::kLine) os << "(\"" << ev.line << "\")";
  return os;
}

Ev L(std::string line) {
  return {Kind::kLine, std::move(line)};
}
const Ev kTooLongEv{Kind::kTooLong, ""};
const Ev kInvalidEv{Kind::kInvalid, ""};

void drain(LineParser& parser, std::vector<Ev>& events) {
  for (;;) {
    LineParser::Event ev = parser.next();
    if (ev.kind == Kind::kNeedMore) return;
    events.push_back({ev.kind, std::string(ev.line)});
  }
}

// Feeds `input` in pieces of `step` octets (0: all at once), draining after each.
std::vector<Ev> parse(std::string_view input, size_t step, size_t max_line = 255) {
  LineParser parser(max_line);
  std::vector<Ev> events;
  if (step == 0) step = input.size() + 1;
  for (size_t i = 0; i < input.size(); i += step) {
    parser.feed(input.substr(i, step));
    drain(parser, events);
  }
  return events;
}

// Every parser case: the whole input at once, then one octet at a time.
void expect_events(std::string_view input, const std::vector<Ev>& expected, size_t max_line = 255) {
  EXPECT_EQ(parse(input, 0, max_line), expected) << "fed at once";
  EXPECT_EQ(parse(input, 1, max_line), expected) << "fed one octet at a time";
}

TEST(LineParser, Crlf) {
  expect_events("USER bob\r\n", {L("USER bob")});
}

TEST(LineParser, WipeConsumedZeroesTheLinesAlreadyReturned) {
  LineParser parser;
  parser.feed("PASS secret\r\nNOOP\r\nPA");
  const LineParser::Event pass = parser.next();
  ASSERT_EQ(pass.kind, LineParser::Kind::kLine);
  const std::string_view seen = pass.line;  // still points into the buffer
  parser.wipe_consumed();
  EXPECT_EQ(seen, std::string(seen.size(), '\0'));
  EXPECT_EQ(parser.next().line, "NOOP");   // what follows is intact
  parser.feed("SS x\r\n");
  EXPECT_EQ(parser.next().line, "PASS x");
}

TEST(LineParser, BareLf) {
  expect_events("USER bob\n", {L("USER bob")});
}

TEST(LineParser, NoEventBeforeLineEnd) {
  expect_events("USER bob", {});
  expect_events("USER bob\r", {});
}

TEST(LineParser, Pipelined) {
  expect_events("USER bob\r\nPASS x\nSTAT\r\nLIST 1\r\nQUI",
                {L("USER bob"), L("PASS x"), L("STAT"), L("LIST 1")});
}

TEST(LineParser, EmptyLines) {
  expect_events("\r\n\n\r\nNOOP\r\n", {L(""), L(""), L(""), L("NOOP")});
}

TEST(LineParser, MaxLengthCountsTheTerminator) {
  const std::string ok253(253, 'a');
  expect_events(ok253 + "\r\n", {L(ok253)});       // 255 with CRLF
  expect_events(ok253 + "a\n", {L(ok253 + "a")});  // 255 with bare LF
  expect_events(ok253 + "a\r\n", {kTooLongEv});    // 256 with CRLF
  expect_events(ok253 + "aa\n", {kTooLongEv});     // 256 with bare LF
  expect_events(ok253 + "aa\nNOOP\r\n", {kTooLongEv, L("NOOP")});
}

TEST(LineParser, TooLongReportedOnceAndRestSkipped) {
  const std::string big(1000, 'x');
  expect_events("NOOP\r\n" + big + "\r\nSTAT\r\n", {L("NOOP"), kTooLongEv, L("STAT")});
  // Two over-long lines in a row: one event each.
  expect_events(big + "\n" + big + "\r\nSTAT\r\n", {kTooLongEv, kTooLongEv, L("STAT")});
  // The skipped part may contain anything, even a NUL or a CR.
  expect_events(big + std::string("\0\r", 2) + "\r\nSTAT\n", {kTooLongEv, L("STAT")});
}

TEST(LineParser, TooLongReportedBeforeItsEnd) {
  LineParser parser;
  parser.feed(std::string(255, 'x'));
  EXPECT_EQ(parser.next().kind, Kind::kTooLong);
  EXPECT_EQ(parser.next().kind, Kind::kNeedMore);
  parser.feed("more junk\r\nNOOP\r\n");
  LineParser::Event ev = parser.next();
  EXPECT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, "NOOP");
}

TEST(LineParser, TenMegabytesWithoutLfStayBounded) {
  const std::string huge(10 * 1024 * 1024, 'A');
  for (size_t step : {size_t{0}, size_t{1}, size_t{4096}}) {
    SCOPED_TRACE(step);
    LineParser parser;
    std::vector<Ev> events;
    if (step == 0) step = huge.size();
    size_t max_buffered = 0;
    for (size_t i = 0; i < huge.size(); i += step) {
      parser.feed(std::string_view(huge).substr(i, step));
      max_buffered = std::max(max_buffered, parser.buffered());
      drain(parser, events);
    }
    EXPECT_LE(max_buffered, 255u);
    EXPECT_EQ(events, std::vector<Ev>{kTooLongEv});
    parser.feed("\r\nNOOP\r\n");
    drain(parser, events);
    EXPECT_EQ(events, (std::vector<Ev>{kTooLongEv, L("NOOP")}));
  }
}

TEST(LineParser, PipelinedAfterHugeLineInOneFeed) {
  // The over-long line is not buffered even when it comes with others.
  LineParser parser;
  parser.feed("NOOP\r\n" + std::string(1 << 20, 'x') + "\r\nSTAT\r\n");
  EXPECT_LE(parser.buffered(), 32u);
  std::vector<Ev> events;
  drain(parser, events);
  EXPECT_EQ(events, (std::vector<Ev>{L("NOOP"), kTooLongEv, L("STAT")}));
}

TEST(LineParser, PendingTooLongEventsCountAsBuffered) {
  // A caller that is busy and not calling next() still sees buffered() grow,
  // so it stops reading from a client that sends only over-long lines.
  LineParser parser;
  const std::string line = std::string(300, 'x') + "\r\n";
  for (int i = 0; i < 100; ++i) parser.feed(line);
  EXPECT_EQ(parser.buffered(), 800u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(parser.next().kind, Kind::kTooLong);
  EXPECT_EQ(parser.next().kind, Kind::kNeedMore);
  EXPECT_EQ(parser.buffered(), 0u);
}

TEST(LineParser, Nul) {
  expect_events(std::string("US\0ER bob\r\nNOOP\r\n", 17), {kInvalidEv, L("NOOP")});
  expect_events(std::string("\0\n", 2), {kInvalidEv});
}

TEST(LineParser, BareCr) {
  expect_events("USER\rbob\r\nNOOP\r\n", {kInvalidEv, L("NOOP")});
  expect_events("NOOP\r\r\n", {kInvalidEv});
  expect_events("\r\rNOOP\n", {kInvalidEv});
}

TEST(LineParser, Discard) {
  LineParser parser;
  parser.feed("STLS\r\nUSER evil\r\nPASS inj");
  LineParser::Event ev = parser.next();
  ASSERT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, "STLS");
  parser.discard();
  EXPECT_EQ(parser.buffered(), 0u);
  EXPECT_EQ(parser.next().kind, Kind::kNeedMore);
  parser.feed("CAPA\r\n");
  ev = parser.next();
  ASSERT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, "CAPA");
}

TEST(LineParser, DiscardForgetsSkippingAndPendingTooLong) {
  LineParser parser;
  parser.feed(std::string(300, 'x'));  // too long, LF not seen yet
  parser.discard();
  EXPECT_EQ(parser.next().kind, Kind::kNeedMore);
  parser.feed("CAPA\r\n");  // not taken as the tail of the old line
  LineParser::Event ev = parser.next();
  ASSERT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, "CAPA");
}

TEST(LineParser, SetMaxLineRaised) {
  // A SASL response longer than 255 octets is fine once the limit is raised.
  const std::string b64(1000, 'Q');
  LineParser parser;
  parser.feed("AUTH PLAIN\r\n");
  ASSERT_EQ(parser.next().kind, Kind::kLine);
  parser.set_max_line(8192);
  parser.feed(b64.substr(0, 400));
  EXPECT_EQ(parser.next().kind, Kind::kNeedMore);
  parser.feed(b64.substr(400) + "\r\n");
  LineParser::Event ev = parser.next();
  ASSERT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, b64);
  parser.set_max_line(255);
  parser.feed(b64 + "\r\n");
  EXPECT_EQ(parser.next().kind, Kind::kTooLong);
}

TEST(LineParser, SetMaxLineWhilePartialLineBuffered) {
  LineParser parser;
  parser.feed(std::string(200, 'a'));
  parser.set_max_line(100);  // the partial line is already too long
  EXPECT_LE(parser.buffered(), 8u);
  EXPECT_EQ(parser.next().kind, Kind::kTooLong);
  EXPECT_EQ(parser.buffered(), 0u);
  parser.feed("aaa\r\nNOOP\r\n");
  LineParser::Event ev = parser.next();
  ASSERT_EQ(ev.kind, Kind::kLine);
  EXPECT_EQ(ev.line, "NOOP");
}

TEST(LineParser, SetMaxLineLoweredForBufferedCompleteLine) {
  LineParser parser;
  parser.feed(std::string(200, 'a') + "\r\nNOOP\r\n");
  parser.set_max_line(100);
  EXPECT_EQ(parser.next().kind, Kind::kTooLong);
  EXPECT_EQ(parser.next().kind, Kind::kLine);
}

TEST(LineParser, TooLongStaysTooLongWhenLimitRaisedLater) {
  LineParser parser;
  parser.feed(std::string(300, 'a') + "\r\nNOOP\r\n");
  parser.set_max_line(8192);
  EXPECT_EQ(parser.next().kind, Kind::kTooLong);
  EXPECT_EQ(parser.next().kind, Kind::kLine);
}

TEST(LineParser, SmallLimit) {
  expect_events("ab\r\nabc\r\n\r\n", {L("ab"), kTooLongEv, L("")}, 4);
}

TEST(LineParser, ViewValidUntilNext) {
  LineParser parser;
  parser.feed("USER a\r\nUSER b\r\n");
  LineParser::Event first = parser.next();
  EXPECT_EQ(first.line, "USER a");
  EXPECT_EQ(parser.next().line, "USER b");
}

TEST(LineParser, BufferedShrinksAsLinesAreConsumed) {
  LineParser parser;
  parser.feed("NOOP\r\nSTAT\r\n");
  EXPECT_EQ(parser.buffered(), 12u);
  parser.next();
  EXPECT_EQ(parser.buffered(), 6u);
  parser.next();
  EXPECT_EQ(parser.buffered(), 0u);
}

// The rules applied to the whole input at once, line by line.
std::vector<Ev> reference_events(std::string_view input, size_t max_line) {
  std::vector<Ev> events;
  for (;;) {
    const size_t lf = input.find('\n');
    std::string_view line = input.substr(0, lf);
    if (lf == std::string_view::npos) {
      if (line.size() >= max_line) events.push_back(kTooLongEv);  // known before its end
      return events;
    }
    input.remove_prefix(lf + 1);
    if (line.size() + 1 > max_line) {
      events.push_back(kTooLongEv);
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_of(std::string_view("\0\r", 2)) != std::string_view::npos) {
      events.push_back(kInvalidEv);
    } else {
      events.push_back(L(std::string(line)));
    }
  }
}

TEST(LineParser, RandomInputAnySplit) {
  std::mt19937 rng(4242);
  const char alphabet[] = {'a', 'b', ' ', '\r', '\n', '\n', '\0'};
  std::uniform_int_distribution<size_t> pick(0, sizeof alphabet - 1);
  std::uniform_int_distribution<size_t> length(0, 60);
  std::uniform_int_distribution<size_t> step(1, 12);
  for (int round = 0; round < 3000; ++round) {
    std::string input;
    for (size_t n = length(rng); n > 0; --n) input.push_back(alphabet[pick(rng)]);
    const size_t max_line = 1 + round % 10;
    const std::vector<Ev> expected = reference_events(input, max_line);
    ASSERT_EQ(parse(input, 0, max_line), expected) << testing::PrintToString(input);
    ASSERT_EQ(parse(input, 1, max_line), expected) << testing::PrintToString(input);
    ASSERT_EQ(parse(input, step(rng), max_line), expected) << testing::PrintToString(input);
  }
}

// ---- parse_command ----

Command cmd(std::string_view line) {
  Command out;
  EXPECT_TRUE(parse_command(line, out)) << line;
  return out;
}

std::vector<std::string> args_of(const Command& c) {
  return std::vector<std::string>(c.args.begin(), c.args.end());
}

TEST(ParseCommand, VerbIsUpperCased) {
  EXPECT_EQ(cmd("stat").verb, "STAT");
  EXPECT_EQ(cmd("Retr 1").verb, "RETR");
  EXPECT_EQ(cmd("xTnDx").verb, "XTNDX");
  EXPECT_TRUE(cmd("NOOP").args.empty());
}

TEST(ParseCommand, Arguments) {
  EXPECT_EQ(args_of(cmd("TOP 1 10")), (std::vector<std::string>{"1", "10"}));
  EXPECT_EQ(args_of(cmd("TOP   1    10  ")), (std::vector<std::string>{"1", "10"}));
  EXPECT_EQ(args_of(cmd("LIST ")), std::vector<std::string>{});
  EXPECT_EQ(args_of(cmd("APOP bob c4c9334bac560ecc979e58001b3e22fb")),
            (std::vector<std::string>{"bob", "c4c9334bac560ecc979e58001b3e22fb"}));
}

TEST(ParseCommand, ArgsViewIntoTheLine) {
  const std::string line = "RETR 42";
  Command c = cmd(line);
  ASSERT_EQ(c.args.size(), 1u);
  EXPECT_EQ(c.args[0].data(), line.data() + 5);
}

TEST(ParseCommand, UserAndPassTakeTheRestVerbatim) {
  EXPECT_EQ(args_of(cmd("PASS my  secret pass ")), std::vector<std::string>{"my  secret pass "});
  EXPECT_EQ(args_of(cmd("pass a b c d e f g h i j k")),
            std::vector<std::string>{"a b c d e f g h i j k"});
  EXPECT_EQ(args_of(cmd("USER  bob")), std::vector<std::string>{" bob"});
  EXPECT_TRUE(cmd("PASS").args.empty());
  EXPECT_TRUE(cmd("PASS ").args.empty());
}

TEST(ParseCommand, ArgumentLimit) {
  EXPECT_EQ(cmd("XCMD 1 2 3 4 5 6 7 8").args.size(), 8u);
  Command out;
  EXPECT_FALSE(parse_command("XCMD 1 2 3 4 5 6 7 8 9", out));
  EXPECT_TRUE(out.verb.empty());
  EXPECT_TRUE(out.args.empty());
}

TEST(ParseCommand, BadVerbs) {
  Command out;
  EXPECT_FALSE(parse_command("", out));
  EXPECT_FALSE(parse_command(" STAT", out));
  EXPECT_FALSE(parse_command("ST4T", out));
  EXPECT_FALSE(parse_command("STAT\t1", out));
  EXPECT_FALSE(parse_command("ABCDEFGHI", out));
  EXPECT_TRUE(parse_command("ABCDEFGH", out));
  EXPECT_FALSE(parse_command("\xc3\xa9TAT", out));
}

TEST(ParseCommand, ReusedCommandIsReset) {
  Command out;
  ASSERT_TRUE(parse_command("TOP 1 2", out));
  ASSERT_TRUE(parse_command("noop", out));
  EXPECT_EQ(out.verb, "NOOP");
  EXPECT_TRUE(out.args.empty());
}

// ---- parse_number ----

TEST(ParseNumber, Valid) {
  EXPECT_EQ(parse_number("1"), 1u);
  EXPECT_EQ(parse_number("0"), 0u);
  EXPECT_EQ(parse_number("007"), 7u);
  EXPECT_EQ(parse_number("0000000001"), 1u);
  EXPECT_EQ(parse_number("4294967295"), 4294967295u);
}

TEST(ParseNumber, Invalid) {
  for (const char* text : {"", "4294967296", "9999999999", "99999999999999999999", "00000000001",
                           "-1", "+1", "1x", "x1", " 1", "1 ", "1.0", "0x10"}) {
    EXPECT_EQ(parse_number(text), std::nullopt) << text;
  }
}

}  // namespace
}  // namespace popbridge::pop3

namespace popbridge::pop3 {
namespace {

TEST(LineParserPeek, SeesPipelinedLinesWithoutConsumingThem) {
  LineParser parser;
  parser.feed("RETR 1\r\nRETR 2\nRETR 3\r\nRET");
  EXPECT_EQ(parser.peek_lines(8), (std::vector<std::string_view>{"RETR 1", "RETR 2", "RETR 3"}));
  EXPECT_EQ(parser.next().line, "RETR 1");
  EXPECT_EQ(parser.peek_lines(1), (std::vector<std::string_view>{"RETR 2"}));
  EXPECT_EQ(parser.next().line, "RETR 2");
  EXPECT_EQ(parser.next().line, "RETR 3");
  EXPECT_TRUE(parser.peek_lines(8).empty());
}

TEST(LineParserPeek, StopsAtBadLines) {
  LineParser parser(16);
  parser.feed("RETR 1\r\n" + std::string(40, 'x') + "\r\nRETR 2\r\n");
  EXPECT_EQ(parser.peek_lines(8), (std::vector<std::string_view>{"RETR 1"}));
  LineParser nul;
  nul.feed(std::string("RETR 1\r\nRE\0R 2\r\nRETR 3\r\n", 24));
  EXPECT_EQ(nul.peek_lines(8), (std::vector<std::string_view>{"RETR 1"}));
}

}  // namespace
}  // namespace popbridge::pop3
