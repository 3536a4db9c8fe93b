// Pipelined RETR/TOP: the session fetches the first chunks of the messages
// the client will ask for next in batches (Mailbox::fetch_first), within a
// budget of prefetch x chunk_size octets. Exact reply bytes against an
// independent encoder and against the unbatched paths; the batches and the
// budget as the in-memory backend saw them.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/memory/memory_backend.h"
#include "proxy/pop3/session.h"
#include "session_fake_io.h"

namespace popbridge {
namespace {

using test_support::FakeIo;

// What RETR must send for `raw`, written independently of MessageEncoder
// (writer.h's rules): CR before a bare LF, a dot doubled at each line start
// (the first byte included), CRLF added unless the message ends in LF, ".".
std::string pop3_body(const std::string& raw) {
  std::string out;
  bool line_start = true;
  char last = '\0';
  for (char c : raw) {
    if (line_start && c == '.') out += '.';
    if (c == '\n' && last != '\r') out += '\r';
    out += c;
    line_start = c == '\n';
    last = c;
  }
  if (last != '\n') out += "\r\n";
  return out + ".\r\n";
}

std::string retr_reply(const std::string& raw) {
  return "+OK " + std::to_string(raw.size()) + " octets\r\n" + pop3_body(raw);
}

// TOP for a CRLF message with a blank line: headers, blank line, `lines` body lines.
std::string top_reply(const std::string& raw, size_t lines) {
  size_t end = raw.find("\r\n\r\n");
  if (end == std::string::npos) return "+OK\r\n" + pop3_body(raw);
  end += 4;
  for (size_t i = 0; i < lines && end < raw.size(); ++i) {
    const size_t lf = raw.find('\n', end);
    end = lf == std::string::npos ? raw.size() : lf + 1;
  }
  return "+OK\r\n" + pop3_body(raw.substr(0, end));
}

const std::string kSysTemp = "-ERR [SYS/TEMP] Mail server unavailable, try again later.\r\n";
const std::string kGone = "-ERR Message no longer exists.\r\n";

std::vector<std::string> small_messages(size_t count);  // below

class PrefetchTest : public testing::Test {
 protected:
  // A mailbox of `messages` (UIDs 10, 20, 30, ...) for user "carol".
  void set_messages(const std::vector<std::string>& messages) {
    raws = messages;
    auto& carol = backend.add_account("carol", "pw");
    carol.uidvalidity = 77;
    carol.messages.clear();
    for (size_t i = 0; i < messages.size(); ++i)
      carol.messages.push_back({static_cast<uint32_t>(10 * (i + 1)), messages[i], false, {}});
  }
  uint32_t uid(size_t number) const { return static_cast<uint32_t>(10 * number); }
  size_t number_of(uint32_t uid) const { return uid / 10; }

  std::unique_ptr<Pop3Session> make_session(FakeIo& target, size_t prefetch = 4) {
    SessionOptions options;
    options.plaintext_auth_allowed = true;
    options.chunk_size = chunk_size;
    options.max_chunk_size = 4 * chunk_size;
    options.prefetch = prefetch;
    if (high_watermark) options.high_watermark = high_watermark;
    if (tweak) tweak(options);
    auto made = std::make_unique<Pop3Session>(target, backend, locks, options);
    made->start();
    target.out.clear();
    return made;
  }
  // Messages 1-3 (1 longer than one chunk) and "RETR 1-3" pipelined: the
  // first chunk of 1 is asked for alone, 2 and 3 in a batch behind it.
  std::unique_ptr<Pop3Session> three_retrs_with_a_long_first(FakeIo& io) {
    std::vector<std::string> messages = small_messages(3);
    while (messages[0].size() < 3500) messages[0] += "padding padding padding padding\r\n";
    set_messages(messages);
    auto session = make_session(io);
    login(*session, io);
    session->on_input("RETR 1\r\nRETR 2\r\nRETR 3\r\n");
    return session;
  }

  void run_all() {
    while (backend.run_pending() > 0) {
    }
  }

  void login(Pop3Session& session, FakeIo& target) {
    session.on_input("USER carol\r\nPASS pw\r\n");
    run_all();
    ASSERT_EQ(target.out, "+OK\r\n+OK Logged in.\r\n");
    target.out.clear();
  }

  // Each command sent alone, after the reply to the previous one is complete.
  std::string one_at_a_time(const std::vector<std::string>& commands, size_t prefetch) {
    FakeIo io;
    auto session = make_session(io, prefetch);
    login(*session, io);
    for (const std::string& command : commands) {
      session->on_input(command + "\r\n");
      run_all();
    }
    return io.out;
  }

  static std::string joined(const std::vector<std::string>& commands) {
    std::string all;
    for (const std::string& command : commands) all += command + "\r\n";
    return all;
  }

  // What the session counts a message's first chunk as.
  uint64_t cost(uint32_t u) const {
    return std::min<uint64_t>(raws[number_of(u) - 1].size(), chunk_size);
  }

  size_t chunk_size = 1000;
  size_t high_watermark = 0;  // 0: the default
  std::function<void(SessionOptions&)> tweak;
  std::vector<std::string> raws;
  MemoryBackend backend;
  MailboxLocks locks;
};

// Small CRLF messages of different sizes, none containing "+OK".
std::vector<std::string> small_messages(size_t count) {
  std::vector<std::string> out;
  for (size_t i = 1; i <= count; ++i) {
    std::string m = "Subject: message " + std::to_string(i) +
                    "\r\nX-Pad: " + std::string(i % 13, 'p') + "\r\n\r\n";
    for (size_t line = 0; line < 2 + (i * 7) % 15; ++line)
      m += "line " + std::to_string(line) + " of message " + std::to_string(i) + "\r\n";
    out.push_back(m);
  }
  return out;
}

// The replies in order, and where each starts.
struct Expected {
  std::string bytes;
  std::vector<size_t> starts;
  void add(const std::string& reply) {
    starts.push_back(bytes.size());
    bytes += reply;
  }
  // How many replies have begun once `out` is written.
  size_t begun(const std::string& out) const {
    return static_cast<size_t>(
        std::count_if(starts.begin(), starts.end(), [&](size_t at) { return at < out.size(); }));
  }
};

// Checked after every event of a pipelined session (an upstream answer,
// the client reading): what is written is a prefix of `expected`, and the
// prefetched data not yet written (first chunks asked for with
// fetch_first() for RETRs whose reply has not begun) stays within the
// budget, prefetch x chunk_size. Here RETR i is the i-th reply and asks for
// UID 10i.
class BudgetCheck {
 public:
  BudgetCheck(std::function<uint64_t(uint32_t)> cost, size_t first_batch, const Expected& expected,
              uint64_t budget)
      : cost_(std::move(cost)), first_batch_(first_batch), expected_(expected), budget_(budget) {}

  void check(const FakeIo& io, MemoryBackend& backend) {
    ASSERT_LE(io.out.size(), expected_.bytes.size());
    ASSERT_EQ(io.out, expected_.bytes.substr(0, io.out.size()));
    const size_t begun = expected_.begun(io.out);
    uint64_t outstanding = 0;
    const auto& batches = backend.batches();
    for (size_t b = first_batch_; b < batches.size(); ++b)
      for (uint32_t u : batches[b].uids)
        if (u / 10 > begun) outstanding += cost_(u);
    EXPECT_LE(outstanding, budget_) << "after " << io.out.size() << " octets written";
    peak = std::max(peak, outstanding);
  }

  uint64_t peak = 0;  // the most that was outstanding at once

 private:
  std::function<uint64_t(uint32_t)> cost_;
  size_t first_batch_;
  const Expected& expected_;
  uint64_t budget_;
};

TEST_F(PrefetchTest, FiftyPipelinedRetrsComeInBatchesWithinTheBudget) {
  set_messages(small_messages(50));
  std::vector<std::string> commands;
  Expected expected;
  uint64_t total_cost = 0;
  for (size_t n = 1; n <= 50; ++n) {
    commands.push_back("RETR " + std::to_string(n));
    expected.add(retr_reply(raws[n - 1]));
    total_cost += cost(uid(n));
  }
  EXPECT_EQ(one_at_a_time(commands, 0), expected.bytes);
  EXPECT_EQ(one_at_a_time(commands, 4), expected.bytes);

  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  const size_t first_fetch = backend.fetch_lengths().size();
  BudgetCheck budget([this](uint32_t u) { return cost(u); }, first_batch, expected, 4 * chunk_size);
  session->on_input(joined(commands));
  budget.check(io, backend);
  while (backend.run_one()) budget.check(io, backend);
  EXPECT_EQ(io.out, expected.bytes);
  EXPECT_FALSE(io.closed || io.aborted);

  // Message 1 by fetch(), as the reply in progress; 2..50 each in exactly
  // one batch, in order; each batch within chunk_size; far fewer requests.
  EXPECT_EQ(backend.fetch_lengths().size() - first_fetch, 1u);
  std::vector<uint32_t> batched;
  size_t requests = 0;
  for (size_t b = first_batch; b < backend.batches().size(); ++b) {
    const auto& batch = backend.batches()[b];
    ++requests;
    EXPECT_EQ(batch.length, chunk_size);
    uint64_t batch_cost = 0;
    for (uint32_t u : batch.uids) batch_cost += cost(u);
    EXPECT_LE(batch_cost, chunk_size);
    batched.insert(batched.end(), batch.uids.begin(), batch.uids.end());
  }
  std::vector<uint32_t> wanted;
  for (size_t n = 2; n <= 50; ++n) wanted.push_back(uid(n));
  EXPECT_EQ(batched, wanted);
  EXPECT_GE(requests, (total_cost - cost(uid(1)) + chunk_size - 1) / chunk_size);
  EXPECT_LT(requests, 50u / 3);
  // Batches stay large: each but the last was cut only because the next
  // message did not fit.
  for (size_t b = first_batch; b + 1 < backend.batches().size(); ++b) {
    uint64_t batch_cost = 0;
    for (uint32_t u : backend.batches()[b].uids) batch_cost += cost(u);
    EXPECT_GT(batch_cost + cost(backend.batches()[b + 1].uids.front()), chunk_size)
        << "batch " << b;
  }
  // The lookahead really ran ahead: more than two batches' worth waited at once.
  EXPECT_GT(budget.peak, 2 * chunk_size);
}

TEST_F(PrefetchTest, SlowReaderKeepsPrefetchWithinTheBudget) {
  high_watermark = 1500;  // a few small messages, then wait for the client
  set_messages(small_messages(50));
  std::vector<std::string> commands;
  Expected expected;
  for (size_t n = 1; n <= 50; ++n) {
    commands.push_back("RETR " + std::to_string(n));
    expected.add(retr_reply(raws[n - 1]));
  }
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  BudgetCheck budget([this](uint32_t u) { return cost(u); }, backend.batches().size(), expected,
                     4 * chunk_size);
  io.accumulate = true;
  session->on_input(joined(commands));
  budget.check(io, backend);
  size_t reads = 0;
  for (;;) {
    if (backend.run_one()) {
      budget.check(io, backend);
      continue;
    }
    if (io.queued_bytes == 0) break;
    io.queued_bytes = 0;  // the client reads everything, late
    ++reads;
    session->on_drain();
    budget.check(io, backend);
  }
  EXPECT_EQ(io.out, expected.bytes);
  EXPECT_GT(reads, 3u);  // the watermark did hold the session back
}

TEST_F(PrefetchTest, BigMessagesGoOnePerBatch) {
  chunk_size = 4096;
  std::vector<std::string> messages;
  for (int i = 1; i <= 10; ++i) {
    std::string m = "Subject: big " + std::to_string(i) + "\r\n\r\n";
    while (m.size() < 10000 + 37 * static_cast<size_t>(i))
      m += "0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    messages.push_back(m);
  }
  set_messages(messages);
  std::vector<std::string> commands;
  Expected expected;
  for (size_t n = 1; n <= 10; ++n) {
    commands.push_back("RETR " + std::to_string(n));
    expected.add(retr_reply(raws[n - 1]));
  }
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  BudgetCheck budget([this](uint32_t u) { return cost(u); }, first_batch, expected, 4 * chunk_size);
  session->on_input(joined(commands));
  budget.check(io, backend);
  while (backend.run_one()) budget.check(io, backend);
  EXPECT_EQ(io.out, expected.bytes);
  EXPECT_EQ(backend.batches().size() - first_batch, 9u);
  for (size_t b = first_batch; b < backend.batches().size(); ++b)
    EXPECT_EQ(backend.batches()[b].uids.size(), 1u);
  EXPECT_EQ(budget.peak, 4 * chunk_size);
  EXPECT_GT(io.gathered_sends, 0u);  // message data went out as its own pieces
}

// With small messages the 64-command lookahead, not the budget, ends each
// batch, and each RETR moves the window by one command: batches must still
// be large, not one message each (they once were: 136 UID FETCHes for 200).
TEST_F(PrefetchTest, ManySmallMessagesStayInLargeBatches) {
  chunk_size = 256 * 1024;  // the default
  set_messages(small_messages(200));
  std::string input;
  for (int n = 1; n <= 200; ++n) input += "RETR " + std::to_string(n) + "\r\n";
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  session->on_input(input);
  run_all();
  size_t batched = 0;
  std::string sizes;
  for (size_t b = first_batch; b < backend.batches().size(); ++b) {
    batched += backend.batches()[b].uids.size();
    sizes += std::to_string(backend.batches()[b].uids.size()) + " ";
  }
  const size_t requests = backend.batches().size() - first_batch;
  EXPECT_EQ(batched, 199u);
  EXPECT_LE(requests, 199u / 16) << "messages per batch: " << sizes;
}

// A client that waits for each reply before its next RETR gets the next
// messages fetched ahead, a few at a time, and each of them only once.
TEST_F(PrefetchTest, OneRetrAtATimeIsSpeculatedInBatches) {
  chunk_size = 256 * 1024;
  set_messages(small_messages(40));
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  std::string expected;
  for (int n = 1; n <= 40; ++n) {
    session->on_input("RETR " + std::to_string(n) + "\r\n");
    run_all();
    expected += retr_reply(raws[n - 1]);
  }
  EXPECT_EQ(io.out, expected);
  std::vector<uint32_t> fetched;
  for (size_t b = first_batch; b < backend.batches().size(); ++b) {
    for (uint32_t uid : backend.batches()[b].uids) fetched.push_back(uid);
  }
  // Messages 2..40 each once (message 1 was asked for on its own), in
  // batches of several.
  EXPECT_EQ(fetched.size(), 39u);
  std::sort(fetched.begin(), fetched.end());
  EXPECT_EQ(std::adjacent_find(fetched.begin(), fetched.end()), fetched.end());
  EXPECT_LE(backend.batches().size() - first_batch, 39u / 3);
}

TEST_F(PrefetchTest, MixedPipelinedCommandsAnswerInOrder) {
  std::vector<std::string> messages = {
      "Subject: one\r\n\r\nHello\r\n.dot line\r\n.\r\nbye\r\n",
      "Subject: two\r\nX: y\r\n\r\nline 1\r\nline 2\r\nline 3\r\n",
      "Subject: three\r\n\r\nno final newline",
  };
  for (const std::string& m : small_messages(5)) messages.push_back(m);
  set_messages(messages);
  const std::vector<std::string> commands = {
      "RETR 1",  "TOP 2 1", "RETR 4",  "DELE 3",  "RETR 3", "LIST",     "RETR 5", "NOOP",
      "RETR 99", "RETR 2",  "TOP 6 0", "RETR 6",  "LIST 3", "RETR 7",   "UIDL 4", "STAT",
      "RETR 8",  "TOP 3 1", "RETR 0",  "TOP 7 2", "RETR 1", "RETR 2 3", "LIST 8", "RETR 4"};
  std::string listing;
  uint64_t octets = 0;
  for (size_t n = 1; n <= raws.size(); ++n) {
    if (n == 3) continue;
    listing += std::to_string(n) + " " + std::to_string(raws[n - 1].size()) + "\r\n";
    octets += raws[n - 1].size();
  }
  const std::string deleted = "-ERR Message is deleted.\r\n";
  const std::string expected = retr_reply(raws[0]) + top_reply(raws[1], 1) + retr_reply(raws[3]) +
                               "+OK Marked to be deleted.\r\n" + deleted + "+OK 7 messages (" +
                               std::to_string(octets) + " octets)\r\n" + listing + ".\r\n" +
                               retr_reply(raws[4]) + "+OK\r\n" + "-ERR There's no message 99.\r\n" +
                               retr_reply(raws[1]) + top_reply(raws[5], 0) + retr_reply(raws[5]) +
                               deleted + retr_reply(raws[6]) + "+OK 4 000000280000004d\r\n" +
                               "+OK 7 " + std::to_string(octets) + "\r\n" + retr_reply(raws[7]) +
                               deleted + "-ERR There's no message 0.\r\n" + top_reply(raws[6], 2) +
                               retr_reply(raws[0]) + "-ERR Usage: RETR <message>\r\n" + "+OK 8 " +
                               std::to_string(raws[7].size()) + "\r\n" + retr_reply(raws[3]);
  for (size_t chunk : {7, 64, 1000}) {
    SCOPED_TRACE("chunk_size " + std::to_string(chunk));
    chunk_size = chunk;
    EXPECT_EQ(one_at_a_time(commands, 0), expected);
    const size_t first_batch = backend.batches().size();
    for (size_t prefetch : {0, 1, 4}) {
      SCOPED_TRACE("prefetch " + std::to_string(prefetch));
      FakeIo io;
      auto session = make_session(io, prefetch);
      login(*session, io);
      session->on_input(joined(commands));
      run_all();
      EXPECT_EQ(io.out, expected);
    }
    EXPECT_GT(backend.batches().size(), first_batch);  // the lookahead did fetch ahead
    // Nothing asked for a message that is deleted or does not exist.
    for (size_t b = first_batch; b < backend.batches().size(); ++b)
      for (uint32_t u : backend.batches()[b].uids) EXPECT_TRUE(u >= 10 && u <= 80 && u != 30) << u;
  }
}

class GoneMidBatch : public PrefetchTest, public testing::WithParamInterface<bool> {};

TEST_P(GoneMidBatch, OnlyItsRetrFails) {
  const bool first_is_big = GetParam();  // then the batch lands while message 1 is still going out
  chunk_size = 2000;                     // 2-6 in one batch
  std::vector<std::string> messages = small_messages(6);
  if (first_is_big) {
    while (messages[0].size() < 3500) messages[0] += "padding padding padding padding\r\n";
  }
  set_messages(messages);
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  session->on_input("RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nRETR 5\r\nRETR 6\r\nQUIT\r\n");
  ASSERT_EQ(backend.batches().size(), first_batch + 1);
  EXPECT_EQ(backend.batches().back().uids, (std::vector<uint32_t>{20, 30, 40, 50, 60}));
  auto& stored = backend.account("carol")->messages;
  stored.erase(stored.begin() + 2);  // UID 30, expunged by another client meanwhile
  run_all();
  EXPECT_EQ(io.out, retr_reply(raws[0]) + retr_reply(raws[1]) + kGone + retr_reply(raws[3]) +
                        retr_reply(raws[4]) + retr_reply(raws[5]) + "+OK Logging out.\r\n");
  EXPECT_TRUE(io.closed);
  EXPECT_FALSE(io.aborted);
  for (const auto& message : stored) EXPECT_TRUE(message.retrieved) << message.uid;
}

INSTANTIATE_TEST_SUITE_P(Prefetch, GoneMidBatch, testing::Bool());

TEST_F(PrefetchTest, BatchUnavailableBeforeTheReplyIsSysTemp) {
  set_messages(small_messages(5));
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  session->on_input("RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 4\r\nNOOP\r\n");
  ASSERT_EQ(backend.pending(), 2u);  // message 1, then the batch of 2-4
  ASSERT_TRUE(backend.run_one());    // message 1 is out; RETR 2 waits for the batch
  EXPECT_EQ(io.out, retr_reply(raws[0]));
  backend.fail_next(UpstreamError::kUnavailable);
  run_all();
  // No +OK had gone out for 2-4: each says so, none ends in a "." line.
  EXPECT_EQ(io.out, retr_reply(raws[0]) + kSysTemp + kSysTemp + kSysTemp + "+OK\r\n");
  EXPECT_FALSE(io.aborted || io.closed);
  // The failed chunks are not kept: asked again, the upstream answers.
  io.out.clear();
  session->on_input("RETR 3\r\n");
  run_all();
  EXPECT_EQ(io.out, retr_reply(raws[2]));
}

TEST_F(PrefetchTest, BatchUnavailableWhileAMessageIsGoingOut) {
  // The batch for 2-3 fails while message 1 is half sent; the upstream
  // then answers again (fail once): message 1 completes, 2-3 are -ERR.
  FakeIo io;
  auto session = three_retrs_with_a_long_first(io);
  ASSERT_TRUE(
      backend.run_one());  // the first chunk of message 1; its next one is queued behind the batch
  ASSERT_EQ(io.out.rfind("+OK ", 0), 0u);
  backend.fail_next(UpstreamError::kUnavailable);
  run_all();
  EXPECT_EQ(io.out, retr_reply(raws[0]) + kSysTemp + kSysTemp);
  EXPECT_FALSE(io.aborted);
}

TEST_F(PrefetchTest, UpstreamLostWhileAMessageIsGoingOutAborts) {
  // The connection is gone for good: the batch fails, then so does the
  // next chunk of the message whose +OK is out. No "." may end it.
  FakeIo io;
  auto session = three_retrs_with_a_long_first(io);
  ASSERT_TRUE(backend.run_one());
  const std::string partial = io.out;
  ASSERT_EQ(partial.rfind("+OK ", 0), 0u);
  backend.fail_all(UpstreamError::kUnavailable);
  run_all();
  EXPECT_TRUE(io.aborted);
  EXPECT_EQ(io.out, partial);  // nothing more: no -ERR inside the body, no final "."
  EXPECT_EQ(io.out.find("\r\n.\r\n"), std::string::npos);
  backend.fail_all(UpstreamError::kNone);
}

TEST_F(PrefetchTest, UpstreamLostBeforeAnyReplyIsSysTempForEach) {
  set_messages(small_messages(4));
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  backend.fail_all(UpstreamError::kUnavailable);
  session->on_input("RETR 1\r\nRETR 2\r\nTOP 3 1\r\nRETR 4\r\nQUIT\r\n");
  run_all();
  EXPECT_EQ(io.out, kSysTemp + kSysTemp + kSysTemp + kSysTemp +
                        "-ERR [SYS/TEMP] Some deleted messages may not have been removed.\r\n");
  EXPECT_TRUE(io.closed);
  backend.fail_all(UpstreamError::kNone);
}

TEST_F(PrefetchTest, SessionGoneWhileBatchesAreInFlight) {
  set_messages(small_messages(30));
  std::string input;
  for (int n = 1; n <= 30; ++n) input += "RETR " + std::to_string(n) + "\r\n";
  for (size_t answered_first = 0; answered_first < 4; ++answered_first) {
    SCOPED_TRACE(answered_first);
    FakeIo io;
    auto session = make_session(io);
    login(*session, io);
    session->on_input(input);
    ASSERT_GT(backend.pending(), 2u);
    for (size_t i = 0; i < answered_first; ++i) backend.run_one();
    session.reset();  // the client went away
    EXPECT_EQ(backend.open_mailboxes(), 0u);
    run_all();  // the answers find no mailbox and no session
  }
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);  // the lock was released each time
}

TEST_F(PrefetchTest, SessionClosedInTheMiddleOfABatch) {
  // Answering the batch's first message lets the next command run, which
  // closes the session (too many bad commands): the rest of the batch must
  // not be sent after close().
  tweak = [](SessionOptions& options) { options.max_bad_commands = 1; };
  set_messages(small_messages(5));
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  session->on_input("RETR 1\r\nRETR 2\r\nRETR 2 3\r\nRETR 3\r\nRETR 4\r\n");
  ASSERT_EQ(backend.batches().size(), first_batch + 1);
  EXPECT_EQ(backend.batches().back().uids, (std::vector<uint32_t>{20, 30, 40}));
  run_all();
  EXPECT_EQ(io.out, retr_reply(raws[0]) + retr_reply(raws[1]) +
                        "-ERR Usage: RETR <message>\r\n-ERR Too many bad commands, closing.\r\n");
  EXPECT_TRUE(io.closed);
  session.reset();
  run_all();
}

TEST_F(PrefetchTest, UnusedPrefetchStillInFlightAtQuit) {
  // "TOP 2 x" looks like a TOP of message 2 to the lookahead, but is
  // refused: its chunk is still on the way when QUIT commits.
  set_messages(small_messages(3));
  FakeIo io;
  auto session = make_session(io);
  login(*session, io);
  const size_t first_batch = backend.batches().size();
  session->on_input("RETR 1\r\nTOP 2 x\r\nQUIT\r\n");
  ASSERT_EQ(backend.batches().size(), first_batch + 1);
  run_all();
  EXPECT_EQ(io.out, retr_reply(raws[0]) + "-ERR Invalid number of lines.\r\n+OK Logging out.\r\n");
  EXPECT_TRUE(io.closed);
  EXPECT_TRUE(backend.account("carol")->messages[0].retrieved);
  EXPECT_FALSE(backend.account("carol")->messages[1].retrieved);
}

// Messages whose encoding needs changes (dots, bare LF) between clean ones,
// with the changes at and around chunk boundaries: the in-place and the
// copying paths, and the gathered writes, must give the same bytes.
std::vector<std::string> awkward_messages(size_t chunk) {
  const auto fill = [](std::string m, size_t size, const std::string& line) {
    while (m.size() + line.size() <= size) m += line;
    return m;
  };
  std::vector<std::string> out;
  out.push_back(fill("Subject: clean\r\n\r\n", 5000, "abcdefghijklmnopqrstuvwxyz0123456789\r\n"));
  out.push_back(fill("Subject: dots\r\n\r\n.first\r\n", 5000, ".dotted line\r\nplain line\r\n"));
  out.push_back(fill("Subject: bare lf\nX: y\n\n", 14000, "a bare LF line\n.dot after LF\n"));
  out.push_back(
      fill("Subject: clean big\r\n\r\n", 12000, "0123456789012345678901234567890123456789\r\n"));
  out.push_back("Subject: small\r\n\r\nsmall\r\n");
  // CR as the last byte of the first chunk, its LF the first of the next, then a dot line.
  {
    std::string m = "Subject: split crlf\r\n\r\n";
    m += std::string(chunk - 1 - m.size(), 'x') + "\r\n.after the boundary\r\nend\r\n";
    out.push_back(m);
  }
  // A bare LF as the first byte of the second chunk: its CR is owed from the first.
  {
    std::string m = "Subject: split lf\r\n\r\n";
    m += std::string(chunk - m.size(), 'y') + "\n.dot\nend\n";
    out.push_back(m);
  }
  // A dot line starting exactly at the second chunk.
  {
    std::string m = "Subject: dot at boundary\r\n\r\n";
    m += std::string(chunk - 2 - m.size(), 'z') + "\r\n..two dots\r\n.\r\nlast\r\n";
    out.push_back(m);
  }
  out.push_back(fill("Subject: exactly one chunk\r\n\r\n", chunk, "q\r\n"));
  out.back() += std::string(chunk - out.back().size(), 'q');
  out.push_back(fill("Subject: 4096\r\n\r\n", 4096, "k\r\n"));  // emit()'s threshold
  out.back() += std::string(4096 - out.back().size(), 'k');
  out.push_back(fill("Subject: 4095\r\n\r\n", 4095, "k\r\n"));
  out.push_back("Subject: no final newline\r\n\r\nlast line");
  out.push_back("");
  out.push_back(".\r\n");
  out.push_back(".");
  out.push_back(fill("Subject: clean again\r\n\r\n", 4500, "the quick brown fox\r\n"));
  out.push_back("Subject: mixed\r\nX-A: 1\nX-B: 2\r\n\nbody\r\nmore\nlast\r");
  return out;
}

TEST_F(PrefetchTest, DotsAndBareLfBetweenCleanMessages) {
  for (size_t chunk : {6000, 4096, 257}) {
    SCOPED_TRACE("chunk_size " + std::to_string(chunk));
    chunk_size = chunk;
    set_messages(awkward_messages(chunk == 257 ? 6000 : chunk));
    std::vector<std::string> commands;
    std::string retrs;
    for (size_t n = 1; n <= raws.size(); ++n) {
      commands.push_back("RETR " + std::to_string(n));
      retrs += retr_reply(raws[n - 1]);
    }
    for (size_t n = 1; n <= raws.size(); ++n) commands.push_back("TOP " + std::to_string(n) + " 3");
    for (size_t n = raws.size(); n >= 1; --n) commands.push_back("RETR " + std::to_string(n));
    const std::string reference = one_at_a_time(commands, 0);
    ASSERT_EQ(reference.substr(0, retrs.size()), retrs);
    FakeIo io;
    auto session = make_session(io);
    login(*session, io);
    const size_t first_batch = backend.batches().size();
    session->on_input(joined(commands));
    run_all();
    EXPECT_TRUE(io.out == reference) << "pipelined output differs (" << io.out.size() << " vs "
                                     << reference.size() << " octets)";
    EXPECT_GT(backend.batches().size(), first_batch);
    if (chunk >= 4096) {
      EXPECT_GT(io.gathered_sends, 0u);  // whole chunks written as they came
    }
  }
}

TEST_F(PrefetchTest, QuitAfterPipelinedRetrsCommitsAfterTheLastReply) {
  for (bool slow_reader : {false, true}) {
    SCOPED_TRACE(slow_reader ? "slow reader" : "fast reader");
    high_watermark = slow_reader ? 2000 : 0;
    std::vector<std::string> messages = small_messages(12);
    while (messages[2].size() < 3500) messages[2] += "padding padding padding padding\r\n";
    set_messages(messages);
    std::string input = "DELE 12\r\n";
    std::string expected = "+OK Marked to be deleted.\r\n";
    for (size_t n = 1; n <= 11; ++n) {
      input += "RETR " + std::to_string(n) + "\r\n";
      expected += retr_reply(raws[n - 1]);
    }
    input += "QUIT\r\n";
    const size_t replies_end = expected.size();
    expected += "+OK Logging out, messages deleted.\r\n";

    FakeIo io;
    auto session = make_session(io);
    login(*session, io);
    io.accumulate = slow_reader;
    const size_t first_batch = backend.batches().size();
    session->on_input(input);
    ASSERT_GT(backend.batches().size(), first_batch);
    EXPECT_LT(backend.batches_answered(),
              backend.batches().size());  // QUIT is in, batches in flight
    auto& stored = backend.account("carol")->messages;
    const auto committed = [&] {
      return stored[11].keywords.count("$POP3Deleted") > 0 ||
             std::any_of(stored.begin(), stored.end(), [](const auto& m) { return m.retrieved; });
    };
    size_t reads = 0;
    for (;;) {
      ASSERT_EQ(io.out, expected.substr(0, io.out.size()));
      if (committed()) {
        EXPECT_EQ(io.out, expected);  // the commit's reply right behind the last RETR
      } else {
        EXPECT_FALSE(io.closed);
      }
      if (backend.run_one()) continue;
      if (io.queued_bytes == 0 || io.closed) break;
      // The client reads only now: until then QUIT waits, uncommitted
      // (pump() stops at the high watermark).
      EXPECT_FALSE(committed());
      EXPECT_LE(io.out.size(), replies_end);
      ++reads;
      io.queued_bytes = 0;
      session->on_drain();
    }
    EXPECT_EQ(io.out, expected);
    EXPECT_TRUE(io.closed);
    if (slow_reader) {
      EXPECT_GT(reads, 1u);
    }
    for (size_t i = 0; i < 11; ++i) {
      EXPECT_TRUE(stored[i].retrieved) << i;
      EXPECT_TRUE(stored[i].keywords.empty()) << i;
    }
    EXPECT_FALSE(stored[11].retrieved);
    EXPECT_EQ(stored[11].keywords.count("$POP3Deleted"), 1u);
    session.reset();
    backend.account("carol")->messages.clear();
  }
}

}  // namespace
}  // namespace popbridge
