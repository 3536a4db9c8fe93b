#include "backends/imap/strand_pool.h"

#include <unordered_set>

#include "backends/imap/fiber.h"

namespace popbridge::imap {

// What the strands and the loop share. Strands hold it too, so a Strand
// kept by a Mailbox stays valid after the StrandPool is gone.
class PoolCore : public std::enable_shared_from_this<PoolCore> {
 public:
  uv_loop_t* loop = nullptr;
  // Runs the two queues below on the next loop iteration, never inside the
  // call that filled them. Active only while they are not empty.
  uv_idle_t* idle = nullptr;
  std::deque<std::shared_ptr<Strand>> ready;  // a fiber to start
  std::vector<std::pair<std::shared_ptr<Strand>, std::unique_ptr<Strand::Task>>> completions;
  std::unordered_set<Strand*> running;        // fibers alive, for shutdown's cancel
  bool stopping = false;

  void kick() {
    if (idle != nullptr && !uv_is_active(reinterpret_cast<uv_handle_t*>(idle))) {
      uv_idle_start(idle, [](uv_idle_t* handle) {
        (*static_cast<std::shared_ptr<PoolCore>*>(handle->data))->serve();
      });
    }
  }
  void serve();
  void start(const std::shared_ptr<Strand>& strand);
  void finished(const std::shared_ptr<Strand>& strand);
  void close_when_idle();
  void stop();
};

namespace {

class DetachedTask final : public Strand::Task {
 public:
  explicit DetachedTask(std::function<void()> work) : work_(std::move(work)) {}
  void run() override {
    work_();
    work_ = nullptr;
  }
  bool has_completion() const override { return false; }
  void complete() override {}

 private:
  std::function<void()> work_;
};

}  // namespace

Strand::Strand(std::shared_ptr<PoolCore> core) : core_(std::move(core)) {}
Strand::~Strand() = default;

void Strand::post_task(std::unique_ptr<Task> task) {
  if (core_->stopping) return;  // discarded
  queue_.push_back(std::move(task));
  if (scheduled_) return;  // the fiber takes it after the jobs before it
  scheduled_ = true;
  core_->ready.push_back(shared_from_this());
  core_->kick();
}

void Strand::post_completion(std::unique_ptr<Task> task) {
  if (core_->stopping) return;
  if (scheduled_) {
    queue_.push_back(std::move(task));  // "run" (nothing) in turn by the fiber
    return;
  }
  core_->completions.emplace_back(shared_from_this(), std::move(task));
  core_->kick();
}

void Strand::post_detached(std::function<void()> work) {
  post_task(std::make_unique<DetachedTask>(std::move(work)));
}

void Strand::cancel() {
  cancelled_ = true;
  std::deque<std::unique_ptr<Task>> discarded;
  discarded.swap(queue_);  // a job running now is not in the queue: it finishes
}

void Strand::run_jobs() {
  while (!queue_.empty() && !core_->stopping) {
    std::unique_ptr<Task> task = std::move(queue_.front());
    queue_.pop_front();
    task->run();
    if (task->has_completion() && !core_->stopping) {  // (after shutdown: dropped)
      core_->completions.emplace_back(shared_from_this(), std::move(task));
      core_->kick();
    }
  }
}

void PoolCore::start(const std::shared_ptr<Strand>& strand) {
  if (strand->queue_.empty()) {  // cancelled meanwhile
    strand->scheduled_ = false;
    return;
  }
  strand->fiber_ = std::make_unique<Fiber>(loop, [raw = strand.get()] { raw->run_jobs(); });
  // However it ends (here, or resumed by a socket's callback later), the
  // strand stays alive until then.
  strand->fiber_->on_finished = [core = shared_from_this(), strand] { core->finished(strand); };
  running.insert(strand.get());
  strand->fiber_->resume();  // until its first socket wait, or its last job
}

void PoolCore::finished(const std::shared_ptr<Strand>& strand) {
  strand->fiber_.reset();
  running.erase(strand.get());
  strand->scheduled_ = false;
  // A job posted while the last one ran, after the fiber looked: go again.
  if (!strand->queue_.empty() && !stopping) {
    strand->scheduled_ = true;
    ready.push_back(strand);
    kick();
  }
  if (stopping) close_when_idle();
}

void PoolCore::serve() {
  auto keep_alive = shared_from_this();  // a handler may destroy the StrandPool
  std::deque<std::shared_ptr<Strand>> starting;
  starting.swap(ready);
  for (auto& strand : starting) {
    if (stopping) break;
    start(strand);
  }
  std::vector<std::pair<std::shared_ptr<Strand>, std::unique_ptr<Strand::Task>>> batch;
  batch.swap(completions);
  for (auto& [strand, task] : batch) {
    // Checked per item: an earlier handler may have destroyed an owner or
    // shut the pool down.
    if (stopping) break;
    if (strand->cancelled()) continue;
    task->complete();
  }
  batch.clear();
  if (ready.empty() && completions.empty() && idle != nullptr) uv_idle_stop(idle);
  if (stopping) close_when_idle();
}

void PoolCore::stop() {
  stopping = true;
  std::deque<std::shared_ptr<Strand>> unstarted;
  unstarted.swap(ready);
  for (auto& strand : unstarted) {
    strand->queue_.clear();
    strand->scheduled_ = false;
  }
  completions.clear();  // undelivered
  // Every running job's wait ends now (and every later one at once): the
  // jobs fail fast, their fibers end, and the last one closes the handle.
  std::vector<Strand*> alive(running.begin(), running.end());
  for (Strand* strand : alive) {
    strand->queue_.clear();
    strand->fiber_->cancel();
  }
  close_when_idle();
}

void PoolCore::close_when_idle() {
  if (!running.empty() || idle == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(idle), [](uv_handle_t* handle) {
    delete static_cast<std::shared_ptr<PoolCore>*>(handle->data);
    delete reinterpret_cast<uv_idle_t*>(handle);
  });
  idle = nullptr;
}

StrandPool::StrandPool(uv_loop_t* loop) : core_(std::make_shared<PoolCore>()) {
  core_->loop = loop;
  auto* idle = new uv_idle_t;
  uv_idle_init(loop, idle);
  // The handle keeps the core alive until it is closed, which may be after
  // this pool is gone (shutdown() does not wait for running fibers).
  idle->data = new std::shared_ptr<PoolCore>(core_);
  core_->idle = idle;
}

StrandPool::~StrandPool() { shutdown(); }

std::shared_ptr<Strand> StrandPool::make_strand() { return std::make_shared<Strand>(core_); }

void StrandPool::shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  core_->stop();
}

}  // namespace popbridge::imap
