// read_fetch_answer() over bytes in memory: the BODY[] bodies it collects,
// everything it must skip, the tagged completion, the limits, and every way
// the server can break the protocol or the connection can end.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "backends/imap/fetch_reader.h"

namespace popbridge::imap {
namespace {

using Result = FetchAnswer::Result;

// A literal as a server sends it: "{n}" CRLF and the n octets.
std::string lit(std::string_view data) {
  return "{" + std::to_string(data.size()) + "}\r\n" + std::string(data);
}

struct Read {
  bool ok = false;
  FetchAnswer answer;
  std::string error;
  std::string left;  // what stayed in the source
};

Read run(std::string_view input, std::string_view tag = "1", FetchLimits limits = {100, 1024}) {
  StringSource source(input);
  Read read;
  read.ok = read_fetch_answer(source, tag, limits, &read.answer, &read.error);
  read.left = std::string(source.peek());
  return read;
}

// Reading `input` must fail, with an error message.
void expect_fails(const std::string& input, std::string_view tag = "1",
                  FetchLimits limits = {100, 1024}) {
  const Read r = run(input, tag, limits);
  EXPECT_FALSE(r.ok) << "accepted: " << ::testing::PrintToString(input);
  EXPECT_FALSE(r.error.empty()) << "no error for " << ::testing::PrintToString(input);
}

std::vector<uint32_t> uids(const FetchAnswer& answer) {
  std::vector<uint32_t> out;
  for (const FetchedBody& body : answer.bodies) out.push_back(body.uid);
  return out;
}

// ---- bodies ----

TEST(FetchReader, SingleBody) {
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit("hello\r\nworld") + ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.error.empty());
  EXPECT_EQ(r.answer.result, Result::kOk);
  EXPECT_EQ(r.answer.code, "");
  EXPECT_EQ(r.answer.text, "OK done");
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].uid, 7u);
  EXPECT_FALSE(r.answer.bodies[0].nil);
  EXPECT_EQ(r.answer.bodies[0].data, "hello\r\nworld");
  EXPECT_EQ(r.left, "");
}

TEST(FetchReader, KeepsOnlyTheBodiesAskedForOnceEach) {
  // A hostile server answers with bodies for UIDs never asked for, and
  // twice for one that was: only the first body of each UID asked for is
  // kept; the rest is read and dropped, whatever its size.
  const std::vector<uint32_t> asked = {7, 9};
  std::string input;
  for (uint32_t uid = 100; uid < 140; ++uid) {
    input += "* 1 FETCH (UID " + std::to_string(uid) + " BODY[] " + lit(std::string(90, 'x')) + ")\r\n";
  }
  input += "* 2 FETCH (UID 7 BODY[] " + lit("seven") + ")\r\n";
  input += "* 2 FETCH (UID 7 BODY[] " + lit("seven again") + ")\r\n";
  input += "* 3 FETCH (BODY[] " + lit("nine, UID after") + " UID 9)\r\n";
  input += "* 4 FETCH (BODY[] " + lit("unasked, UID after") + " UID 11)\r\n";
  input += "1 OK done\r\n";
  const Read r = run(input, "1", {100, 1024, &asked});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(uids(r.answer), (std::vector<uint32_t>{7, 9}));
  EXPECT_EQ(r.answer.bodies[0].data, "seven");
  EXPECT_EQ(r.answer.bodies[1].data, "nine, UID after");
  // Unasked literals may even be larger than what was asked for.
  const Read big = run("* 1 FETCH (UID 5 BODY[] " + lit(std::string(5000, 'y')) +
                           ")\r\n* 2 FETCH (UID 7 BODY[] " + lit("ok") + ")\r\n1 OK done\r\n",
                       "1", {100, 1024, &asked});
  ASSERT_TRUE(big.ok) << big.error;
  EXPECT_EQ(uids(big.answer), std::vector<uint32_t>{7});
}

// '[' is an atom character; it opens a section only after BODY and the
// like, so a keyword such as "a[b" in a flag update is no error.
TEST(FetchReader, BracketInAKeywordIsAnAtomCharacter) {
  const Read r = run("* 2 FETCH (FLAGS (\\Seen a[b $x[1))\r\n* 3 FETCH (UID 7 BODY[] " + lit("hi") +
                     ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(uids(r.answer), std::vector<uint32_t>{7});
}

TEST(FetchReader, PartialBodyWithOrigin) {
  const Read r = run("* 3 FETCH (UID 7 BODY[]<100> " + lit("abc") + ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, "abc");
}

TEST(FetchReader, SeveralBodiesInTheOrderTheyCame) {
  const Read r =
      run("* 9 FETCH (UID 90 BODY[]<0> " + lit("nine") + ")\r\n" + "* 2 FETCH (UID 20 BODY[]<0> " +
          lit("two") + ")\r\n" + "* 5 FETCH (UID 50 BODY[]<0> " + lit("five") + ")\r\n" +
          "1 OK Fetch completed.\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(uids(r.answer), (std::vector<uint32_t>{90, 20, 50}));
  EXPECT_EQ(r.answer.bodies[0].data, "nine");
  EXPECT_EQ(r.answer.bodies[1].data, "two");
  EXPECT_EQ(r.answer.bodies[2].data, "five");
}

TEST(FetchReader, UidAfterTheBody) {
  const Read r = run("* 3 FETCH (BODY[]<0> " + lit("x y") + " UID 7)\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].uid, 7u);
  EXPECT_EQ(r.answer.bodies[0].data, "x y");
}

TEST(FetchReader, BodyNil) {
  const Read r =
      run("* 3 FETCH (UID 8 BODY[]<0> NIL)\r\n"
          "* 4 FETCH (UID 9 BODY[] nil)\r\n"
          "1 OK [EXPUNGEISSUED] Some messages were expunged\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 2u);
  EXPECT_EQ(r.answer.bodies[0].uid, 8u);
  EXPECT_TRUE(r.answer.bodies[0].nil);
  EXPECT_EQ(r.answer.bodies[0].data, "");
  EXPECT_TRUE(r.answer.bodies[1].nil);
  EXPECT_EQ(r.answer.result, Result::kOk);
  EXPECT_EQ(r.answer.code, "EXPUNGEISSUED");
}

TEST(FetchReader, QuotedBodyWithEscapes) {
  const Read r = run("* 3 FETCH (UID 7 BODY[] \"a \\\"q\\\" \\\\ (b) {3}\")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, "a \"q\" \\ (b) {3}");
  const Read empty = run("* 3 FETCH (UID 7 BODY[] \"\")\r\n1 OK done\r\n");
  ASSERT_TRUE(empty.ok) << empty.error;
  ASSERT_EQ(empty.answer.bodies.size(), 1u);
  EXPECT_EQ(empty.answer.bodies[0].data, "");
  EXPECT_FALSE(empty.answer.bodies[0].nil);
}

TEST(FetchReader, QuotedBodyIsBoundByMaxBody) {
  const std::string ten(10, 'q');
  const Read r = run("* 3 FETCH (UID 7 BODY[] \"" + ten + "\")\r\n1 OK done\r\n", "1", {10, 1024});
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.answer.bodies[0].data, ten);
  expect_fails("* 3 FETCH (UID 7 BODY[] \"" + ten + "q\")\r\n1 OK done\r\n", "1", {10, 1024});
  // Escapes count once.
  const Read escaped =
      run("* 3 FETCH (UID 7 BODY[] \"\\\\\\\\\")\r\n1 OK done\r\n", "1", {2, 1024});
  ASSERT_TRUE(escaped.ok) << escaped.error;
  EXPECT_EQ(escaped.answer.bodies[0].data, "\\\\");
}

TEST(FetchReader, EmptyLiteral) {
  const Read r = run("* 3 FETCH (UID 7 BODY[]<500> {0}\r\n)\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, "");
  EXPECT_FALSE(r.answer.bodies[0].nil);
}

TEST(FetchReader, LiteralOfExactlyMaxBody) {
  const std::string body(100, 'b');
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit(body) + ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.answer.bodies[0].data, body);
  // The body is not a line: max_line does not apply to it.
  const Read small_lines =
      run("* 3 FETCH (UID 7 BODY[] " + lit(body) + ")\r\n1 OK done\r\n", "1", {100, 40});
  ASSERT_TRUE(small_lines.ok) << small_lines.error;
}

TEST(FetchReader, LiteralLargerThanMaxBodyIsAnError) {
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit(std::string(101, 'b')) + ")\r\n1 OK\r\n");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("101"), std::string::npos) << r.error;
  // Refused from the announced size, before reading: no hang on a huge one.
  expect_fails("* 3 FETCH (UID 7 BODY[] {4294967295}\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {9999999999}\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {1}\r\nx)\r\n1 OK\r\n", "1", {0, 1024});
}

TEST(FetchReader, BodyWithoutUidIsDropped) {
  const Read r = run("* 3 FETCH (BODY[] " + lit("x") + ")\r\n* 4 FETCH (UID 0 BODY[] " + lit("y") +
                     ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.answer.bodies.empty());
}

TEST(FetchReader, TwoBodiesInOneResponseIsAnError) {
  expect_fails("* 3 FETCH (UID 7 BODY[] " + lit("a") + " BODY[]<0> " + lit("b") +
               ")\r\n1 OK done\r\n");
}

TEST(FetchReader, SameUidTwiceGivesTwoBodies) {
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit("a") + ")\r\n* 3 FETCH (UID 7 BODY[] " +
                     lit("b") + ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 2u);
  EXPECT_EQ(r.answer.bodies[0].data, "a");
  EXPECT_EQ(r.answer.bodies[1].data, "b");
}

TEST(FetchReader, ResponsesInsideALiteralAreData) {
  const std::string body = "1 OK fake\r\n* 4 FETCH (UID 9 BODY[] {1}\r\nx)\r\n";
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit(body) + ")\r\n1 OK real\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, body);
  EXPECT_EQ(r.answer.text, "OK real");
}

// ---- what is skipped ----

TEST(FetchReader, OtherFetchItemsAreSkipped) {
  const std::string input =
      "* 3 FETCH (FLAGS (\\Seen $Junk \\*) RFC822.SIZE 4711 MODSEQ (12345) "
      "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" UID 7 "
      "BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 10 1 NIL "
      "NIL NIL) (\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" " +
      lit("a (b) \"c\"") +
      ") NIL NIL \"BASE64\" 20 NIL (\"attachment\" (\"FILENAME\" \"x\\\"y\")) NIL) \"MIXED\" "
      "(\"BOUNDARY\" \"--\") NIL NIL) "
      "ENVELOPE (\"date\" " +
      lit("subject\r\nline") +
      " ((NIL NIL \"a\" \"b.example\")) NIL NIL NIL NIL NIL NIL \"<id>\") "
      "BODY[HEADER.FIELDS (DATE FROM)] " +
      lit("Date: x\r\n\r\n") + " BODY[TEXT]<0> " + lit("text part") + " BODY[]<0> " +
      lit("the body") + " X-GM-LABELS (\\Inbox \"a b\"))\r\n1 OK done\r\n";
  const Read r = run(input);
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].uid, 7u);
  EXPECT_EQ(r.answer.bodies[0].data, "the body");
}

TEST(FetchReader, FetchResponsesWithoutBodyAreSkipped) {
  const Read r =
      run("* 1 FETCH (FLAGS (\\Seen))\r\n"
          "* 2 FETCH (UID 5 FLAGS ())\r\n"
          "* 3 FETCH (UID 7 MODSEQ (3) FLAGS (\\Deleted))\r\n"
          "1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_TRUE(r.answer.bodies.empty());
}

TEST(FetchReader, UnsolicitedResponsesAreSkipped) {
  const Read r =
      run("* 5 EXISTS\r\n* 3 EXPUNGE\r\n* 2 RECENT\r\n* OK [ALERT] System going down\r\n"
          "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Junk)\r\n"
          "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Flags permitted.\r\n"
          "* NO [OVERQUOTA] Quota exceeded\r\n* BAD something\r\n"
          "* CAPABILITY IMAP4rev1 LITERAL+\r\n* 4 FETCH (UID 7 BODY[] " +
          lit("ok") + ")\r\n* VANISHED (EARLIER) 1:3\r\n* 6 EXISTS\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, "ok");
  EXPECT_EQ(r.left, "");
}

TEST(FetchReader, UnknownResponseWithTrailingLiteralsIsSkipped) {
  const Read r = run("* XLIST (\\Noselect) \"/\" " + lit("1 OK fake\r\n") + " more " +
                     lit("* 9 FETCH (UID 9 BODY[] {1}\r\nx)\r\n") + "\r\n" +
                     "* 7 XNUMBERED (a b) {3+}\r\nabc\r\n" +  // a non-synchronizing literal
                     "* 8 FETCH (UID 7 BODY[] " + lit("real") + ")\r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].uid, 7u);
  EXPECT_EQ(r.answer.bodies[0].data, "real");
  EXPECT_EQ(r.answer.text, "OK done");
}

TEST(FetchReader, TextResponsesHaveNoLiterals) {
  // resp-text (OK, NO, BAD, BYE, PREAUTH) cannot end in a literal: "{5}" is
  // text, and the next line is the next response, not 5 octets of data.
  for (const char* kind : {"OK", "NO", "BAD", "BYE", "PREAUTH", "ok", "bye"}) {
    const Read r = run(std::string("* ") + kind + " look at this {5}\r\n1 OK done\r\nafter");
    ASSERT_TRUE(r.ok) << kind << ": " << r.error;
    EXPECT_EQ(r.answer.result, Result::kOk) << kind;
    EXPECT_EQ(r.left, "after") << kind;
  }
  const Read code = run("* OK [ALERT] {5}\r\n1 OK done\r\n");
  ASSERT_TRUE(code.ok) << code.error;
}

TEST(FetchReader, ALiteralAfterAnUnknownResponseIsNotTaggedText) {
  // The same text in a response that can carry literals: 5 octets of data.
  const Read r = run("* XFOO look {5}\r\n1 OK \r\n1 OK done\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.answer.text, "OK done");
}

// ---- the tagged completion ----

TEST(FetchReader, TaggedOkNoBadWithAndWithoutCode) {
  struct Case {
    const char* line;
    Result result;
    const char* code;
  };
  const Case cases[] = {
      {"1 OK done", Result::kOk, ""},
      {"1 OK", Result::kOk, ""},
      {"1 NO failed", Result::kNo, ""},
      {"1 BAD Error in IMAP command", Result::kBad, ""},
      {"1 OK [READ-ONLY] done", Result::kOk, "READ-ONLY"},
      {"1 NO [EXPUNGEISSUED] Some of the requested messages no longer exist", Result::kNo,
       "EXPUNGEISSUED"},
      {"1 OK [expungeissued] lower", Result::kOk, "EXPUNGEISSUED"},
      {"1 NO [ServerBug] mixed", Result::kNo, "SERVERBUG"},
      {"1 BAD [PARSE]", Result::kBad, "PARSE"},
      {"1 NO [BADCHARSET (UTF-8 US-ASCII)] x", Result::kNo, "BADCHARSET"},
      {"1 NO [UNAVAILABLE]", Result::kNo, "UNAVAILABLE"},
      {"1 no try later", Result::kNo, ""},
      {"1 bad what", Result::kBad, ""},
      {"1 Ok fine", Result::kOk, ""},
  };
  for (const Case& c : cases) {
    const Read r = run(std::string(c.line) + "\r\n");
    ASSERT_TRUE(r.ok) << c.line << ": " << r.error;
    EXPECT_EQ(r.answer.result, c.result) << c.line;
    EXPECT_EQ(r.answer.code, c.code) << c.line;
    EXPECT_EQ(r.answer.text, std::string(c.line).substr(2)) << c.line;
  }
}

TEST(FetchReader, TaggedResponseMustBeOkNoOrBad) {
  expect_fails("1 PREAUTH hi\r\n");
  expect_fails("1 BYE\r\n");
  expect_fails("1 OKAY\r\n");
  expect_fails("1 \r\n");
}

TEST(FetchReader, LowercaseKeywords) {
  const Read r =
      run("* 3 fetch (uid 7 rfc822.size 4 flags (\\seen) body[]<0> " + lit("mail") +
          ")\r\n* 4 exists\r\n* 1 expunge\r\n* ok [alert] hi\r\n1 ok [expungeissued] x\r\n");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].uid, 7u);
  EXPECT_EQ(r.answer.bodies[0].data, "mail");
  EXPECT_EQ(r.answer.result, Result::kOk);
  EXPECT_EQ(r.answer.code, "EXPUNGEISSUED");
}

TEST(FetchReader, TagThatIsAPrefixOfAnotherIsNotOurs) {
  // Only our command is in flight: another tag is a protocol error, never
  // the end of our answer.
  expect_fails("12 OK done\r\n1 OK done\r\n", "1");
  expect_fails("1 OK done\r\n12 OK done\r\n", "12");
  expect_fails("1OK done\r\n", "1");
  expect_fails("A1 OK done\r\n", "1");
  const Read r = run("12 OK done\r\n", "12");
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.answer.text, "OK done");
  const Read word =
      run("* 1 FETCH (UID 1 BODY[] " + lit("b") + ")\r\na001 NO [ALERT] x\r\n", "a001");
  ASSERT_TRUE(word.ok) << word.error;
  EXPECT_EQ(word.answer.result, Result::kNo);
  EXPECT_EQ(word.answer.code, "ALERT");
}

TEST(FetchReader, ContinuationIsAnError) {
  expect_fails("+ go ahead\r\n1 OK done\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] " + lit("x") + ")\r\n+\r\n1 OK done\r\n");
}

TEST(FetchReader, StopsRightAfterTheTaggedLine) {
  const std::string after = "* 6 EXISTS\r\n2 OK next\r\n";
  const Read r = run("* 3 FETCH (UID 7 BODY[] " + lit("x") + ")\r\n1 OK done\r\n" + after);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.left, after);
  const Read lf = run("1 NO no\n* partial respo");
  ASSERT_TRUE(lf.ok) << lf.error;
  EXPECT_EQ(lf.left, "* partial respo");
}

TEST(FetchReader, LfOnlyLineEnds) {
  const Read r =
      run("* 5 EXISTS\n* 3 FETCH (UID 7 BODY[] {4}\nab\r\n)\n* 4 FETCH (FLAGS ())\n"
          "* XFOO {2}\nzz\n1 OK done\nrest");
  ASSERT_TRUE(r.ok) << r.error;
  ASSERT_EQ(r.answer.bodies.size(), 1u);
  EXPECT_EQ(r.answer.bodies[0].data, "ab\r\n");
  EXPECT_EQ(r.answer.text, "OK done");
  EXPECT_EQ(r.left, "rest");
}

TEST(FetchReader, ErrorIsClearedOnSuccess) {
  StringSource source("1 OK done\r\n");
  FetchAnswer answer;
  std::string error = "left over";
  ASSERT_TRUE(read_fetch_answer(source, "1", {10, 100}, &answer, &error));
  EXPECT_TRUE(error.empty());
}

// ---- limits ----

TEST(FetchReader, OverlongLineIsAnError) {
  // max_line counts the octets of a line with its CRLF.
  const std::string fits = "1 OK " + std::string(13, 'x') + "\r\n";  // 20 octets
  ASSERT_EQ(fits.size(), 20u);
  const Read r = run(fits, "1", {10, 20});
  ASSERT_TRUE(r.ok) << r.error;
  const Read longer = run("1 OK " + std::string(14, 'x') + "\r\n", "1", {10, 20});
  EXPECT_FALSE(longer.ok);
  EXPECT_NE(longer.error.find("too long"), std::string::npos) << longer.error;
  // An untagged one, one without a line end, and the line after a literal.
  expect_fails("* OK " + std::string(100, 'x') + "\r\n1 OK\r\n", "1", {10, 50});
  expect_fails(std::string(100, 'x'), "1", {10, 50});
  expect_fails("* 3 FETCH (UID 7 BODY[] {1}\r\nx FLAGS (" + std::string(60, 'x') + "))\r\n1 OK\r\n",
               "1", {10, 50});
}

// ---- the server breaks the protocol ----

TEST(FetchReader, MalformedResponsesAreErrors) {
  expect_fails("\r\n1 OK\r\n");
  expect_fails("*\r\n1 OK\r\n");
  expect_fails("* \r\n1 OK\r\n");
  expect_fails("*5 EXISTS\r\n1 OK\r\n");
  expect_fails("* 5\r\n1 OK\r\n");
  expect_fails("* 99999999999 EXISTS\r\n1 OK\r\n");
  expect_fails("* 3 FETCH\r\n1 OK\r\n");
  expect_fails("* 3 FETCH UID 7\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[]\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID x BODY[] {1}\r\nx)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 4294967296 BODY[] {1}\r\nx)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] \"unterminated)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] \"escaped end\\\")\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] ATOM)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {x}\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {}\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {3} \r\nabc)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 FLAGS (\\Seen)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 FLAGS ((a)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[HEADER {1}\r\nx)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 ) BODY[] {1}\r\nx)\r\n1 OK\r\n");
}

TEST(FetchReader, ALiteralMustEndItsLine) {
  // "{3}" followed by more text is no literal; neither is a later "{n}" on
  // the same line the announcement of this one.
  expect_fails("* 3 FETCH (UID 7 BODY[] {3}abc {2}\r\nxy)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 X {3}abc Y {2}\r\nxy BODY[] {1}\r\nz)\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7 BODY[] {3}) X {2}\r\nxy)\r\n1 OK\r\n");
}

TEST(FetchReader, NothingMayFollowTheFetchData) {
  // After ")" the response is over: a literal announced there would leave
  // its octets to be read as responses.
  expect_fails("* 3 FETCH (UID 7 BODY[] {1}\r\nx) {9}\r\n1 OK fake\r\n1 OK\r\n");
  expect_fails("* 3 FETCH (UID 7) junk\r\n1 OK\r\n");
}

// ---- the connection ends ----

TEST(FetchReader, EndOfDataAnywhereIsAnErrorNotAHang) {
  const std::string full = "* 5 EXISTS\r\n* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[]<0> " +
                           lit("line one\r\nline two\r\n") + " BODYSTRUCTURE (\"X\" " + lit("abc") +
                           "))\r\n* XFOO " + lit("zz") + "\r\n* OK text {3}\r\n" + "1 OK done\r\n";
  ASSERT_TRUE(run(full).ok);
  for (size_t cut = 0; cut < full.size(); ++cut) {
    const std::string prefix = full.substr(0, cut);
    const Read r = run(prefix);
    EXPECT_FALSE(r.ok) << "cut at " << cut;
    EXPECT_FALSE(r.error.empty()) << "cut at " << cut;
  }
}

TEST(FetchReader, EndOfDataInsideASkippedLiteral) {
  expect_fails("* XFOO {9999999999}\r\nabc");
  expect_fails("* 3 FETCH (UID 7 X {100000}\r\nabc");
  const Read r = run("* 3 FETCH (UID 7 BODY[] {50}\r\nabc");
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.error.find("connection lost"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace popbridge::imap
