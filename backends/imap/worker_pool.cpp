#include "backends/imap/worker_pool.h"

#include <pthread.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>

namespace popbridge::imap {

// Everything the workers and the loop share. Strands hold it too, so a
// Strand kept by a Mailbox stays valid after the WorkerPool is gone.
class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  std::mutex mutex;
  std::condition_variable wake;
  // Strands with queued jobs, waiting for a worker. A strand is in here at
  // most once and never while a worker runs one of its jobs.
  std::deque<std::shared_ptr<Strand>> ready;
  // Finished jobs whose results wait for the loop thread.
  std::vector<std::pair<std::shared_ptr<Strand>, std::unique_ptr<Strand::Task>>> completions;
  bool stopping = false;  // written under the mutex, on the loop thread
  size_t exited = 0;      // workers that left worker_main(); under the mutex

  // Loop thread only (the workers get a raw pointer to the core and only
  // call uv_async_send on `async`, which stays open until they are joined).
  std::vector<std::thread> threads;
  uv_async_t* async = nullptr;

  void worker_main();
  void drain();
  // After shutdown: discards what is left; once every worker has exited,
  // joins them and closes the uv_async_t.
  void finish_stop();
};

namespace {

class DetachedTask final : public Strand::Task {
 public:
  explicit DetachedTask(std::function<void()> work) : work_(std::move(work)) {}
  void run() override { work_(); }
  bool has_completion() const override { return false; }
  void complete() override {}

 private:
  std::function<void()> work_;
};

}  // namespace

void Strand::post_task(std::unique_ptr<Task> task) {
  std::unique_ptr<Task> discarded;  // destroyed after the lock is released
  bool wake = false;
  {
    std::lock_guard lock(core_->mutex);
    if (core_->stopping) {
      discarded = std::move(task);
    } else {
      queue_.push_back(std::move(task));
      if (!scheduled_) {
        scheduled_ = true;
        core_->ready.push_back(shared_from_this());
        wake = true;
      }
    }
  }
  // Outside the lock, so that the woken worker does not block on it at once.
  if (wake) core_->wake.notify_one();
}

void Strand::post_completion(std::unique_ptr<Task> task) {
  std::unique_ptr<Task> discarded;
  bool signal = false;
  {
    std::lock_guard lock(core_->mutex);
    if (core_->stopping) {
      discarded = std::move(task);
    } else if (scheduled_) {
      // Behind the jobs in line: a worker "runs" it (nothing) in turn.
      queue_.push_back(std::move(task));
    } else {
      signal = core_->completions.empty();
      core_->completions.emplace_back(shared_from_this(), std::move(task));
    }
  }
  if (signal) uv_async_send(core_->async);
}

void Strand::post_detached(std::function<void()> work) {
  post_task(std::make_unique<DetachedTask>(std::move(work)));
}

void Strand::cancel() {
  cancelled_ = true;
  std::deque<std::unique_ptr<Task>> discarded;  // destroyed here, on the loop thread
  std::lock_guard lock(core_->mutex);
  discarded.swap(queue_);
  // If the strand sits in the ready queue with nothing left, the worker
  // that picks it up just clears scheduled_.
}

void PoolCore::worker_main() {
  for (;;) {
    std::shared_ptr<Strand> strand;
    std::unique_ptr<Strand::Task> task;
    {
      std::unique_lock lock(mutex);
      wake.wait(lock, [this] { return stopping || !ready.empty(); });
      if (stopping) {
        ++exited;
        lock.unlock();
        // Tells the loop it may join us. The handle is still open: the loop
        // closes it only after joining every worker, this one included.
        uv_async_send(async);
        return;
      }
      strand = std::move(ready.front());
      ready.pop_front();
      if (strand->queue_.empty()) {  // cancelled meanwhile
        strand->scheduled_ = false;
        continue;
      }
      task = std::move(strand->queue_.front());
      strand->queue_.pop_front();
    }

    task->run();
    // A detached job's captures (a connection being closed) die here, on
    // the worker, before the strand's next job can start elsewhere.
    if (!task->has_completion()) task.reset();

    bool signal = false;
    bool requeued = false;
    {
      std::lock_guard lock(mutex);
      if (task) {
        signal = completions.empty();  // otherwise a signal is already pending
        completions.emplace_back(strand, std::move(task));
      }
      if (!strand->queue_.empty()) {
        // Back in line (also while stopping, so that shutdown() finds and
        // discards the rest on the loop thread, not here).
        ready.push_back(strand);
        requeued = !stopping;
      } else {
        strand->scheduled_ = false;
      }
    }
    if (requeued) wake.notify_one();
    if (signal) uv_async_send(async);
  }
}

void PoolCore::drain() {
  auto keep_alive = shared_from_this();  // a handler may destroy the WorkerPool
  std::vector<std::pair<std::shared_ptr<Strand>, std::unique_ptr<Strand::Task>>> batch;
  {
    std::lock_guard lock(mutex);
    batch.swap(completions);
  }
  for (auto& [strand, task] : batch) {
    // Checked per item: an earlier handler may have destroyed an owner or
    // shut the pool down. `stopping` is only written on this thread.
    if (stopping) break;
    if (strand->cancelled()) continue;
    task->complete();
  }
  batch.clear();  // handlers included, destroyed here on the loop thread
  if (stopping) finish_stop();
}

void PoolCore::finish_stop() {
  std::deque<std::shared_ptr<Strand>> leftover;
  std::vector<std::pair<std::shared_ptr<Strand>, std::unique_ptr<Strand::Task>>> undelivered;
  std::deque<std::unique_ptr<Strand::Task>> unrun;
  bool all_exited;
  {
    std::lock_guard lock(mutex);
    leftover.swap(ready);
    undelivered.swap(completions);
    for (auto& strand : leftover) {
      for (auto& task : strand->queue_) unrun.push_back(std::move(task));
      strand->queue_.clear();
      strand->scheduled_ = false;
    }
    all_exited = exited == threads.size();
  }
  // Destroyed here, on the loop thread, unrun and undelivered.
  unrun.clear();
  undelivered.clear();
  if (!all_exited || async == nullptr) return;
  for (auto& thread : threads) thread.join();  // they have left worker_main()
  threads.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(async), [](uv_handle_t* handle) {
    delete static_cast<std::shared_ptr<PoolCore>*>(handle->data);
    delete reinterpret_cast<uv_async_t*>(handle);
  });
  async = nullptr;
}

WorkerPool::WorkerPool(uv_loop_t* loop, unsigned threads) : core_(std::make_shared<PoolCore>()) {
  auto* async = new uv_async_t;
  // The handle keeps the core alive until it is closed, which may be after
  // this WorkerPool is gone (shutdown() does not wait for running jobs).
  async->data = new std::shared_ptr<PoolCore>(core_);
  uv_async_init(loop, async, [](uv_async_t* handle) {
    (*static_cast<std::shared_ptr<PoolCore>*>(handle->data))->drain();
  });
  core_->async = async;

  if (threads == 0) threads = 1;
  core_->threads.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    core_->threads.emplace_back([core = core_.get()] { core->worker_main(); });
    std::string name = "pb-imap-" + std::to_string(i);
    pthread_setname_np(core_->threads.back().native_handle(), name.c_str());
  }
}

WorkerPool::~WorkerPool() { shutdown(); }

std::shared_ptr<Strand> WorkerPool::make_strand() { return std::make_shared<Strand>(core_); }

void WorkerPool::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  {
    std::lock_guard lock(core_->mutex);
    core_->stopping = true;
  }
  core_->wake.notify_all();
  // Drops what is queued now; the rest happens in the uv_async_t callback
  // as the workers finish their current jobs and exit.
  core_->finish_stop();
}

}  // namespace popbridge::imap
