// The upstream worker pool: strands are serial and ordered, different
// strands run in parallel, results come back on the loop thread, cancelled
// owners get nothing, shutdown joins cleanly.
#include "backends/imap/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "imap_test_loop.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;

using test_support::Loop;

// A gate that worker jobs wait on, opened by the test.
class Gate {
 public:
  void open() {
    std::lock_guard lock(mutex_);
    open_ = true;
    changed_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = 5s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = false;
};

TEST(ImapWorkerPool, PostResultOnAnIdleStrandNeedsNoWorkerAndRunsLater) {
  Loop loop;
  WorkerPool pool(loop.get(), 2);
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

TEST(ImapWorkerPool, PostResultWaitsForTheJobsBeforeIt) {
  Loop loop;
  WorkerPool pool(loop.get(), 2);
  auto strand = pool.make_strand();
  Gate gate;
  std::vector<int> completed;
  strand->post([&] { return gate.wait() ? 1 : -1; }, [&](int v) { completed.push_back(v); });
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

TEST(ImapWorkerPool, PostResultIsDroppedWhenCancelledOrShutDown) {
  Loop loop;
  WorkerPool pool(loop.get(), 1);
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

TEST(ImapWorkerPool, StrandRunsJobsOneAtATimeInOrder) {
  Loop loop;
  WorkerPool pool(loop.get(), 4);
  auto strand = pool.make_strand();

  constexpr int kJobs = 200;
  std::atomic<int> running{0};
  std::atomic<bool> overlapped{false};
  std::vector<int> ran;        // written by workers, one at a time (the strand)
  std::vector<int> completed;  // loop thread
  const auto loop_thread = std::this_thread::get_id();
  bool wrong_thread = false;

  for (int i = 0; i < kJobs; ++i) {
    strand->post(
        [&, i] {
          if (running.fetch_add(1) != 0) overlapped = true;
          ran.push_back(i);
          if (i % 17 == 0) std::this_thread::sleep_for(1ms);  // invite overlap
          running.fetch_sub(1);
          return i;
        },
        [&](int i) {
          if (std::this_thread::get_id() != loop_thread) wrong_thread = true;
          completed.push_back(i);
        });
  }
  ASSERT_TRUE(loop.run_until([&] { return completed.size() == kJobs; }));
  EXPECT_FALSE(overlapped);
  EXPECT_FALSE(wrong_thread);
  for (int i = 0; i < kJobs; ++i) {
    EXPECT_EQ(ran[i], i);
    EXPECT_EQ(completed[i], i);
  }
  pool.shutdown();
}

TEST(ImapWorkerPool, DifferentStrandsRunInParallel) {
  Loop loop;
  WorkerPool pool(loop.get(), 2);
  auto a = pool.make_strand();
  auto b = pool.make_strand();

  // Each job waits until both have started: only possible in parallel.
  std::mutex mutex;
  std::condition_variable changed;
  int started = 0;
  auto job = [&] {
    std::unique_lock lock(mutex);
    ++started;
    changed.notify_all();
    return changed.wait_for(lock, 5s, [&] { return started == 2; });
  };
  int together = 0;
  int results = 0;
  a->post(job, [&](bool ok) { together += ok; ++results; });
  b->post(job, [&](bool ok) { together += ok; ++results; });
  ASSERT_TRUE(loop.run_until([&] { return results == 2; }, 10s));
  EXPECT_EQ(together, 2);
  pool.shutdown();
}

TEST(ImapWorkerPool, ResultsComeBackOnTheLoopThread) {
  Loop loop;
  WorkerPool pool(loop.get(), 3);
  const auto loop_thread = std::this_thread::get_id();
  std::vector<std::shared_ptr<Strand>> strands;
  std::atomic<int> worker_on_loop_thread{0};
  int on_loop = 0;
  int results = 0;
  for (int i = 0; i < 30; ++i) {
    strands.push_back(pool.make_strand());
    strands.back()->post(
        [&] {
          if (std::this_thread::get_id() == loop_thread) ++worker_on_loop_thread;
          return std::this_thread::get_id();
        },
        [&](std::thread::id) {
          if (std::this_thread::get_id() == loop_thread) ++on_loop;
          ++results;
        });
  }
  ASSERT_TRUE(loop.run_until([&] { return results == 30; }));
  EXPECT_EQ(on_loop, 30);
  EXPECT_EQ(worker_on_loop_thread.load(), 0);
  pool.shutdown();
}

// An owner in the style of a Mailbox: cancels its strand when destroyed.
struct Owner {
  std::shared_ptr<Strand> strand;
  int* callbacks;
  ~Owner() { strand->cancel(); }
  void start(Gate* gate, std::atomic<bool>* started, std::atomic<int>* finished) {
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

TEST(ImapWorkerPool, DestroyedOwnerGetsNoCallback) {
  Loop loop;
  WorkerPool pool(loop.get(), 2);
  int callbacks = 0;
  Gate gate;
  std::atomic<bool> started{false};
  std::atomic<int> finished{0};
  std::atomic<bool> queued_job_ran{false};
  std::atomic<bool> cleanup_ran{false};
  auto strand = pool.make_strand();
  {
    auto owner = std::make_unique<Owner>(Owner{strand, &callbacks});
    owner->start(&gate, &started, &finished);
    strand->post([&] { queued_job_ran = true; return 0; }, [&](int) { ++callbacks; });
    while (!started) std::this_thread::sleep_for(1ms);  // running, blocked on the gate
    owner.reset();  // while its job runs
  }
  // The owner's clean-up still runs, after the job that was running.
  strand->post_detached([&] { cleanup_ran = finished.load() == 1; });
  gate.open();
  ASSERT_TRUE(loop.run_until([&] { return cleanup_ran.load(); }));
  loop.run_until([] { return false; }, 50ms);  // let any stray result arrive
  EXPECT_EQ(finished.load(), 1);
  EXPECT_FALSE(queued_job_ran.load()) << "a job queued behind a cancelled owner still ran";
  EXPECT_EQ(callbacks, 0);
  pool.shutdown();
}

TEST(ImapWorkerPool, ShutdownDoesNotWaitButTheLoopEndsAfterRunningJobs) {
  Loop loop;
  auto pool = std::make_unique<WorkerPool>(loop.get(), 1);
  auto strand = pool->make_strand();
  auto other = pool->make_strand();
  Gate gate;
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};
  std::atomic<bool> queued_ran{false};
  int callbacks = 0;
  auto payload = std::make_shared<int>(7);  // must be released, not leaked

  strand->post(
      [&] {
        started = true;
        gate.wait();
        finished = true;
        return 0;
      },
      [&](int) { ++callbacks; });
  strand->post([&, payload] { queued_ran = true; return 0; }, [&, payload](int) { ++callbacks; });
  other->post([&, payload] { queued_ran = true; return 0; }, [&, payload](int) { ++callbacks; });
  while (!started) std::this_thread::sleep_for(1ms);

  auto before = std::chrono::steady_clock::now();
  pool->shutdown();  // the running job is blocked: this must not wait for it
  pool.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 100ms);
  EXPECT_FALSE(finished.load());
  // The other strand's job is discarded at once; the one queued behind the
  // running job when that job ends (it is never run either).
  EXPECT_EQ(payload.use_count(), 3);

  // Posts after shutdown are discarded at once.
  strand->post([] { return 0; }, [&](int) { ++callbacks; });
  strand->post_detached([&] { queued_ran = true; });

  // The loop stays alive (the uv_async_t is open) until the job finishes.
  EXPECT_FALSE(loop.run_until([&] { return loop.drained(); }, 50ms));
  gate.open();
  EXPECT_TRUE(loop.run_until([&] { return loop.drained(); }));
  EXPECT_TRUE(finished.load());
  EXPECT_FALSE(queued_ran.load());
  EXPECT_EQ(callbacks, 0);
  EXPECT_EQ(payload.use_count(), 1) << "discarded jobs were not destroyed";
  // ~Loop checks that the uv_async_t was closed.
}

TEST(ImapWorkerPool, HandlerMayShutDownThePool) {
  Loop loop;
  WorkerPool pool(loop.get(), 2);
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
