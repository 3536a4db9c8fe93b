// A fixed pool of threads for blocking upstream work, with strands.
//
// libetpan is blocking, so every upstream call runs here, never on the
// event loop. Each upstream connection gets a Strand: its jobs run one
// after another in the order posted, never two at once, possibly on
// different threads (the pool's mutex orders them, so a mailimap* moves
// between threads safely). Results come back to the loop thread through one
// locked queue and ONE uv_async_t whose callback drains the whole queue.
// Worker threads make no libuv call except uv_async_send.
//
// Not libuv's threadpool: a stalled upstream must not starve the loop's DNS
// and file work, which share that pool.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <uv.h>

namespace popbridge::imap {

class PoolCore;  // worker_pool.cpp: the mutex, the queues, the uv_async_t
class WorkerPool;

// One serial queue of jobs, made by WorkerPool::make_strand(). Its methods
// are called on the loop thread only.
class Strand : public std::enable_shared_from_this<Strand> {
 public:
  // Runs `work()` on a worker after every job posted before it on this
  // strand, then `done(result)` on the loop thread. `work` is destroyed on
  // the worker right after it ran, so it must capture nothing that belongs
  // to the loop thread; `done` lives and dies on the loop thread (unless
  // the job is discarded unrun at shutdown, also on the loop thread).
  // `done` never runs once the strand is cancelled or the pool shut down.
  template <typename Work, typename Done>
  void post(Work work, Done done);

  // Runs `done(result)` on the loop thread after every job posted before
  // it, like post() with a job that only returns `result`; when the strand
  // is idle no worker is involved (a commit with nothing to do costs no
  // thread hand-off). Never runs `done` before this call returns.
  template <typename Result, typename Done>
  void post_result(Result result, Done done);

  // Runs `work()` on a worker after the jobs before it; nothing comes back
  // and it is destroyed on the worker. Accepted after cancel(): that is how
  // an owner that goes away cleans up its connection.
  void post_detached(std::function<void()> work);

  // The owner goes away: results not yet delivered are dropped, jobs not yet
  // started are discarded unrun. A job already running finishes.
  void cancel();
  bool cancelled() const { return cancelled_; }

  // A unit of work and its completion (internal; public for TaskImpl).
  struct Task {
    virtual ~Task() = default;
    virtual void run() = 0;                    // worker thread
    virtual bool has_completion() const = 0;
    virtual void complete() = 0;               // loop thread
  };

  explicit Strand(std::shared_ptr<PoolCore> core) : core_(std::move(core)) {}

 private:
  friend class PoolCore;
  friend class WorkerPool;
  void post_task(std::unique_ptr<Task> task);
  void post_completion(std::unique_ptr<Task> task);

  std::shared_ptr<PoolCore> core_;
  // Guarded by the core's mutex.
  std::deque<std::unique_ptr<Task>> queue_;
  bool scheduled_ = false;  // waiting in the ready queue or running
  // Loop thread only.
  bool cancelled_ = false;
};

class WorkerPool {
 public:
  // `threads` workers (at least one) start at once.
  WorkerPool(uv_loop_t* loop, unsigned threads);
  // Calls shutdown() if needed; never blocks.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  std::shared_ptr<Strand> make_strand();

  // Loop thread; does not block. Discards jobs not started and results not
  // yet delivered: no handler runs afterwards, and later posts are
  // discarded at once. Jobs already running finish on their workers (a
  // stalled upstream must not stall the loop); then the loop joins the
  // threads and closes the uv_async_t. So the loop must keep running until
  // then: it does by itself, the handle being active.
  void shutdown();

 private:
  std::shared_ptr<PoolCore> core_;  // the threads live in the core
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
    work_.reset();  // release what the job captured here, on the worker
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
