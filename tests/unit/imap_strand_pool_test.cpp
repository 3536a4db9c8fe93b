// The strand pool: a strand's jobs run one at a time and in order, in a
// fiber on the loop thread; a job waiting for its socket lets every other
// strand go on; results come back on the loop's own stack; cancelled owners
// get nothing; shutdown cancels the waits of running jobs.
#include "backends/imap/strand_pool.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "backends/imap/fiber.h"
#include "imap_test_loop.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;

using test_support::Loop;

// What a job waits on inside its fiber, as it would wait for a server: a
// socket that becomes readable when the test opens the gate.
class Gate {
 public:
  Gate() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds_), 0); }
  ~Gate() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void open() { EXPECT_EQ(::write(fds_[1], "x", 1), 1); }
  // In a fiber: kReady once opened, else kTimedOut or kCancelled.
  FdWait::Result wait(std::chrono::milliseconds limit = 5s) {
    EXPECT_NE(Fiber::current(), nullptr);
    FdWait wait(Fiber::current()->loop(), fds_[0]);
    return wait.wait(true, std::chrono::steady_clock::now() + limit);
  }

 private:
  int fds_[2] = {-1, -1};
};

TEST(ImapStrandPool, PostResultOnAnIdleStrandNeedsNoFiberAndRunsLater) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();
  const auto loop_thread = std::this_thread::get_id();
  std::vector<int> completed;
  bool wrong_thread = false;
  strand->post_result(7, [&](int value) {
    if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
    completed.push_back(value);
  });
  EXPECT_TRUE(completed.empty()) << "done ran before post_result returned";
  ASSERT_TRUE(loop.run_until([&] { return completed.size() == 1; }));
  EXPECT_EQ(completed, std::vector<int>{7});
  EXPECT_FALSE(wrong_thread);
  pool.shutdown();
}

TEST(ImapStrandPool, PostResultWaitsForTheJobsBeforeIt) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();
  Gate gate;
  std::vector<int> completed;
  strand->post([&] { return gate.wait() == FdWait::kReady ? 1 : -1; },
               [&](int v) { completed.push_back(v); });
  strand->post_result(2, [&](int v) { completed.push_back(v); });
  strand->post([] { return 3; }, [&](int v) { completed.push_back(v); });
  strand->post_result(4, [&](int v) { completed.push_back(v); });
  // Nothing may overtake the blocked job.
  loop.run_until([] { return false; }, 50ms);
  EXPECT_TRUE(completed.empty());
  gate.open();
  ASSERT_TRUE(loop.run_until([&] { return completed.size() == 4; }));
  EXPECT_EQ(completed, (std::vector<int>{1, 2, 3, 4}));
  // Idle again: straight through, behind nothing.
  strand->post_result(5, [&](int v) { completed.push_back(v); });
  ASSERT_TRUE(loop.run_until([&] { return completed.size() == 5; }));
  EXPECT_EQ(completed.back(), 5);
  pool.shutdown();
}

TEST(ImapStrandPool, PostResultIsDroppedWhenCancelledOrShutDown) {
  Loop loop;
  StrandPool pool(loop.get());
  auto cancelled = pool.make_strand();
  bool ran = false;
  cancelled->post_result(1, [&](int) { ran = true; });
  cancelled->cancel();
  auto live = pool.make_strand();
  bool live_ran = false;
  live->post_result(2, [&](int) { live_ran = true; });
  ASSERT_TRUE(loop.run_until([&] { return live_ran; }));
  EXPECT_FALSE(ran);
  pool.shutdown();
  live->post_result(3, [&](int) { ran = true; });
  loop.run_until([] { return false; }, 20ms);
  EXPECT_FALSE(ran);
}

TEST(ImapStrandPool, StrandRunsJobsOneAtATimeInOrderInAFiber) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();

  constexpr int kJobs = 200;
  int running = 0;
  bool overlapped = false;
  bool outside_fiber = false;
  bool completion_in_fiber = false;
  std::vector<int> ran;
  std::vector<int> completed;
  const auto loop_thread = std::this_thread::get_id();
  bool wrong_thread = false;
  Gate gate;
  gate.open();  // readable from now on: a wait returns after one loop turn

  for (int i = 0; i < kJobs; ++i) {
    strand->post(
        [&, i] {
          if (running++ != 0) overlapped = true;
          if (Fiber::current() == nullptr) outside_fiber = true;
          if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
          ran.push_back(i);
          if (i % 17 == 0) gate.wait();  // suspends: invites overlap
          --running;
          return i;
        },
        [&](int i) {
          if (Fiber::current() != nullptr) completion_in_fiber = true;
          completed.push_back(i);
        });
  }
  ASSERT_TRUE(loop.run_until([&] { return completed.size() == kJobs; }));
  EXPECT_FALSE(overlapped);
  EXPECT_FALSE(outside_fiber);
  EXPECT_FALSE(wrong_thread);
  EXPECT_FALSE(completion_in_fiber);
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_EQ(ran[i], i);
    EXPECT_EQ(completed[i], i);
  }
  pool.shutdown();
}

TEST(ImapStrandPool, AJobWaitingForItsSocketHoldsUpNoOtherStrand) {
  Loop loop;
  StrandPool pool(loop.get());
  // 50 connections whose servers never answer, then one that works.
  std::vector<std::unique_ptr<Gate>> silent;
  std::vector<std::shared_ptr<Strand>> strands;
  int stuck_done = 0;
  for (int i = 0; i < 50; ++i) {
    silent.push_back(std::make_unique<Gate>());
    strands.push_back(pool.make_strand());
    Gate* gate = silent.back().get();
    strands.back()->post([gate] { return gate->wait(30s); }, [&](FdWait::Result) { ++stuck_done; });
  }
  auto healthy = pool.make_strand();
  Gate answer;
  bool served = false;
  healthy->post([&] { return answer.wait(); }, [&](FdWait::Result r) { served = r == FdWait::kReady; });
  loop.run_until([] { return false; }, 20ms);
  answer.open();
  ASSERT_TRUE(loop.run_until([&] { return served; }, 2s));
  EXPECT_EQ(stuck_done, 0);
  // Shutdown ends the 50 waits at once.
  pool.shutdown();
  EXPECT_TRUE(loop.run_until([&] { return loop.drained(); }, 2s));
  EXPECT_EQ(stuck_done, 0);  // no handler after shutdown
}

TEST(ImapStrandPool, FdWaitTimesOutAtItsDeadline) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();
  Gate never;
  FdWait::Result result = FdWait::kReady;
  bool done = false;
  strand->post([&] { return never.wait(30ms); }, [&](FdWait::Result r) { result = r, done = true; });
  ASSERT_TRUE(loop.run_until([&] { return done; }, 2s));
  EXPECT_EQ(result, FdWait::kTimedOut);
  pool.shutdown();
}

TEST(ImapStrandPool, NameResolutionInAFiber) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();
  int status = -1;
  bool done = false;
  strand->post(
      [] {
        addrinfo* result = nullptr;
        int rc = fiber_getaddrinfo("127.0.0.1", "143", std::chrono::steady_clock::now() + 5s, &result);
        if (rc == 0 && result == nullptr) rc = -1;
        if (result != nullptr) uv_freeaddrinfo(result);
        return rc;
      },
      [&](int rc) { status = rc, done = true; });
  ASSERT_TRUE(loop.run_until([&] { return done; }));
  EXPECT_EQ(status, 0);
  pool.shutdown();
}

// An owner in the style of a Mailbox: cancels its strand when destroyed.
struct Owner {
  std::shared_ptr<Strand> strand;
  int* callbacks;
  ~Owner() { strand->cancel(); }
  void start(Gate* gate, bool* started, int* finished) {
    strand->post(
        [gate, started, finished] {
          *started = true;
          gate->wait();
          ++*finished;
          return 1;
        },
        [this](int) { ++*callbacks; });  // would be a use-after-free if run late
  }
};

TEST(ImapStrandPool, DestroyedOwnerGetsNoCallback) {
  Loop loop;
  StrandPool pool(loop.get());
  int callbacks = 0;
  Gate gate;
  bool started = false;
  int finished = 0;
  bool queued_job_ran = false;
  bool cleanup_ran = false;
  auto strand = pool.make_strand();
  {
    auto owner = std::make_unique<Owner>(Owner{strand, &callbacks});
    owner->start(&gate, &started, &finished);
    strand->post([&] { queued_job_ran = true; return 0; }, [&](int) { ++callbacks; });
    ASSERT_TRUE(loop.run_until([&] { return started; }));  // running, waiting on the gate
    owner.reset();  // while its job runs
  }
  // The owner's clean-up still runs, after the job that was running.
  strand->post_detached([&] { cleanup_ran = finished == 1; });
  gate.open();
  ASSERT_TRUE(loop.run_until([&] { return cleanup_ran; }));
  loop.run_until([] { return false; }, 50ms);  // let any stray result arrive
  EXPECT_EQ(finished, 1);
  EXPECT_FALSE(queued_job_ran) << "a job queued behind a cancelled owner still ran";
  EXPECT_EQ(callbacks, 0);
  pool.shutdown();
}

TEST(ImapStrandPool, ShutdownCancelsTheWaitsOfRunningJobsAndDropsTheRest) {
  Loop loop;
  auto pool = std::make_unique<StrandPool>(loop.get());
  auto strand = pool->make_strand();
  auto other = pool->make_strand();
  Gate gate;  // never opened
  bool started = false;
  FdWait::Result waited = FdWait::kReady;
  bool queued_ran = false;
  int callbacks = 0;
  auto payload = std::make_shared<int>(7);  // must be released, not leaked

  strand->post(
      [&] {
        started = true;
        waited = gate.wait(60s);
        return 0;
      },
      [&](int) { ++callbacks; });
  strand->post([&, payload] { queued_ran = true; return 0; }, [&, payload](int) { ++callbacks; });
  ASSERT_TRUE(loop.run_until([&] { return started; }));
  other->post([&, payload] { queued_ran = true; return 0; }, [&, payload](int) { ++callbacks; });

  auto before = std::chrono::steady_clock::now();
  pool->shutdown();  // the running job's wait ends now, with kCancelled
  pool.reset();
  EXPECT_EQ(waited, FdWait::kCancelled);
  EXPECT_EQ(payload.use_count(), 1) << "discarded jobs were not destroyed";

  // Posts after shutdown are discarded at once.
  strand->post([] { return 0; }, [&](int) { ++callbacks; });
  strand->post_detached([&] { queued_ran = true; });

  EXPECT_TRUE(loop.run_until([&] { return loop.drained(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - before, 1s);
  EXPECT_FALSE(queued_ran);
  EXPECT_EQ(callbacks, 0);
  // ~Loop checks that every handle was closed.
}

TEST(ImapStrandPool, HandlerMayShutDownThePool) {
  Loop loop;
  StrandPool pool(loop.get());
  auto strand = pool.make_strand();
  int callbacks = 0;
  for (int i = 0; i < 5; ++i) {
    strand->post([] { return 0; }, [&](int) {
      ++callbacks;
      pool.shutdown();
    });
  }
  loop.run_until([&] { return callbacks > 0; });
  loop.run_until([] { return false; }, 50ms);
  EXPECT_EQ(callbacks, 1);
}

}  // namespace
}  // namespace popbridge::imap
