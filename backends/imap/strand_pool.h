// Strands: each upstream connection's jobs, one after another, on the loop.
//
// libetpan is blocking; every upstream job (a login, a fetch, a commit)
// runs in the fiber of its connection's Strand, on the loop thread. When
// the job's socket has nothing to read (or no room to write), the fiber
// suspends and the loop serves everybody else (fiber.h): no thread ever
// waits on a socket and no connection waits for another. A Strand's jobs
// run in the order posted, never two at once; its fiber lives while it has
// jobs, so an idle connection holds no stack. Completions run on the loop's
// own stack, never inside the call that posted them.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <uv.h>

namespace popbridge::imap {

class Fiber;
class PoolCore;  // strand_pool.cpp: the ready queues and the uv_idle_t that serves them
class StrandPool;

// One serial queue of jobs, made by StrandPool::make_strand(). Loop thread only.
class Strand : public std::enable_shared_from_this<Strand> {
 public:
  // Runs `work()` in the strand's fiber after every job posted before it
  // on this strand, then `done(result)` on the loop's stack. `work` is
  // destroyed right after it ran. `done` never runs once the strand is
  // cancelled or the pool shut down, nor inside post().
  template <typename Work, typename Done>
  void post(Work work, Done done);

  // Runs `done(result)` after every job posted before it, like post() with
  // a job that only returns `result`; when the strand is idle no fiber is
  // started (a commit with nothing to do costs nothing). Never runs `done`
  // before this call returns.
  template <typename Result, typename Done>
  void post_result(Result result, Done done);

  // Runs `work()` in the fiber after the jobs before it; nothing comes
  // back. Accepted after cancel(): that is how an owner that goes away
  // cleans up its connection (a LOGOUT).
  void post_detached(std::function<void()> work);

  // The owner goes away: results not yet delivered are dropped, jobs not yet
  // started are discarded unrun. A job already running finishes (its
  // socket waits keep their deadlines).
  void cancel();
  bool cancelled() const { return cancelled_; }

  // A unit of work and its completion (internal; public for TaskImpl).
  struct Task {
    virtual ~Task() = default;
    virtual void run() = 0;                    // in the strand's fiber
    virtual bool has_completion() const = 0;
    virtual void complete() = 0;               // on the loop's stack
  };

  explicit Strand(std::shared_ptr<PoolCore> core);
  ~Strand();

 private:
  friend class PoolCore;
  void post_task(std::unique_ptr<Task> task);
  void post_completion(std::unique_ptr<Task> task);
  void run_jobs();  // the fiber's body

  std::shared_ptr<PoolCore> core_;
  std::deque<std::unique_ptr<Task>> queue_;
  std::unique_ptr<Fiber> fiber_;  // while it has jobs
  bool scheduled_ = false;        // in the core's ready queue, or its fiber is alive
  bool cancelled_ = false;
};

class StrandPool {
 public:
  explicit StrandPool(uv_loop_t* loop);
  // Calls shutdown() if needed; never blocks.
  ~StrandPool();
  StrandPool(const StrandPool&) = delete;
  StrandPool& operator=(const StrandPool&) = delete;

  std::shared_ptr<Strand> make_strand();

  // Loop thread; does not block. Discards jobs not started and results not
  // yet delivered: no handler runs afterwards, and later posts are
  // discarded at once. Jobs already running are cancelled: each of their
  // socket waits ends at once, so they fail fast and their fibers end; the
  // loop keeps running until then (their handles are active).
  void shutdown();

 private:
  std::shared_ptr<PoolCore> core_;
  bool shut_down_ = false;
};

// ---- template implementation ----

namespace detail {

template <typename Work, typename Done>
class TaskImpl final : public Strand::Task {
 public:
  using Result = decltype(std::declval<Work&>()());

  TaskImpl(Work work, Done done) : work_(std::move(work)), done_(std::move(done)) {}

  void run() override {
    result_.emplace((*work_)());
    work_.reset();  // release what the job captured, inside the fiber
  }
  bool has_completion() const override { return true; }
  void complete() override { done_(std::move(*result_)); }

 private:
  std::optional<Work> work_;
  Done done_;
  std::optional<Result> result_;
};

template <typename Result, typename Done>
class ResultTask final : public Strand::Task {
 public:
  ResultTask(Result result, Done done) : result_(std::move(result)), done_(std::move(done)) {}
  void run() override {}
  bool has_completion() const override { return true; }
  void complete() override { done_(std::move(result_)); }

 private:
  Result result_;
  Done done_;
};

}  // namespace detail

template <typename Work, typename Done>
void Strand::post(Work work, Done done) {
  post_task(std::make_unique<detail::TaskImpl<Work, Done>>(std::move(work), std::move(done)));
}

template <typename Result, typename Done>
void Strand::post_result(Result result, Done done) {
  post_completion(
      std::make_unique<detail::ResultTask<Result, Done>>(std::move(result), std::move(done)));
}

}  // namespace popbridge::imap
