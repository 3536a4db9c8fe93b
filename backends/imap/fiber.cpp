#include "backends/imap/fiber.h"

#include <netdb.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define POPBRIDGE_FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POPBRIDGE_FIBER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define POPBRIDGE_FIBER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define POPBRIDGE_FIBER_TSAN 1
#endif
#endif
#ifdef POPBRIDGE_FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef POPBRIDGE_FIBER_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace popbridge::imap {
namespace {

using Clock = std::chrono::steady_clock;

// Deep enough for libetpan's recursive parser and OpenSSL; only the pages
// a fiber touches cost memory. A guard page below catches an overflow.
constexpr size_t kStackSize = 256 * 1024;
constexpr size_t kKeepFreeStacks = 64;

size_t page_size() {
  static const size_t size = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// Stacks are reused: a login or a fetch starts a fiber, and mapping a new
// stack each time would cost two system calls and fresh page faults.
struct StackPool {
  std::vector<char*> free;
  ~StackPool() {
    for (char* base : free) munmap(base, kStackSize + page_size());
  }
  char* take() {
    if (!free.empty()) {
      char* base = free.back();
      free.pop_back();
      return base;
    }
    void* base = mmap(nullptr, kStackSize + page_size(), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (base == MAP_FAILED) {
      std::perror("popbridge: mmap of a fiber stack");
      std::abort();
    }
    mprotect(base, page_size(), PROT_NONE);  // the guard page
    return static_cast<char*>(base);
  }
  void give(char* base) {
    if (free.size() < kKeepFreeStacks) {
      free.push_back(base);
    } else {
      munmap(base, kStackSize + page_size());
    }
  }
};

thread_local StackPool t_stacks;
thread_local Fiber* t_current = nullptr;

// swapcontext(), as two calls: AddressSanitizer intercepts swapcontext()
// only to warn that it cannot follow it, a warning that would land in
// popbridge's log; we tell it about every switch ourselves (Context).
// getcontext() returns a second time when `to` jumps back here.
void jump(ucontext_t* from, const ucontext_t* to) {
  volatile bool returned = false;
  getcontext(from);
  if (returned) return;
  returned = true;
  setcontext(to);
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so that we never wake just before the deadline and spin.
  return static_cast<int>(std::min<long long>(left.count() + 1, 24LL * 3600 * 1000));
}

}  // namespace

struct Fiber::Context {
  ucontext_t fiber{};
  ucontext_t caller{};
  char* stack = nullptr;  // the mapping; the usable stack starts a page in
  // AddressSanitizer must be told about every switch of stacks, or it
  // reports the other stack's frames as overflows.
  void* fake_stack = nullptr;
  const void* caller_bottom = nullptr;
  size_t caller_size = 0;
#ifdef POPBRIDGE_FIBER_TSAN
  void* tsan_fiber = nullptr;
  void* tsan_caller = nullptr;
#endif

  const void* bottom() const { return stack + page_size(); }

  void start_switch(void** save, const void* bottom, size_t size) {
#ifdef POPBRIDGE_FIBER_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
  }
  void finish_switch(void* saved, const void** bottom, size_t* size) {
#ifdef POPBRIDGE_FIBER_ASAN
    __sanitizer_finish_switch_fiber(saved, bottom, size);
#else
    (void)saved, (void)bottom, (void)size;
#endif
  }
};

Fiber::Fiber(uv_loop_t* loop, std::function<void()> body)
    : loop_(loop), body_(std::move(body)), context_(std::make_unique<Context>()) {}

Fiber::~Fiber() {
  if (started_ && !finished_) {
    // Its stack holds live frames: freeing it would skip their destructors.
    std::fputs("popbridge: a fiber was destroyed while suspended\n", stderr);
    std::abort();
  }
  if (context_->stack != nullptr) t_stacks.give(context_->stack);
#ifdef POPBRIDGE_FIBER_TSAN
  if (context_->tsan_fiber != nullptr) __tsan_destroy_fiber(context_->tsan_fiber);
#endif
}

Fiber* Fiber::current() { return t_current; }

void Fiber::resume() {
  if (t_current != nullptr || finished_) std::abort();  // from the loop's stack only
  Context& c = *context_;
  if (!started_) {
    started_ = true;
    c.stack = t_stacks.take();
    getcontext(&c.fiber);
    c.fiber.uc_stack.ss_sp = c.stack + page_size();
    c.fiber.uc_stack.ss_size = kStackSize;
    c.fiber.uc_link = nullptr;
    makecontext(&c.fiber, &Fiber::entry, 0);
#ifdef POPBRIDGE_FIBER_TSAN
    c.tsan_fiber = __tsan_create_fiber(0);
#endif
  }
  t_current = this;
#ifdef POPBRIDGE_FIBER_TSAN
  c.tsan_caller = __tsan_get_current_fiber();
  __tsan_switch_to_fiber(c.tsan_fiber, 0);
#endif
  void* caller_fake_stack = nullptr;
  c.start_switch(&caller_fake_stack, c.bottom(), kStackSize);
  jump(&c.caller, &c.fiber);
  c.finish_switch(caller_fake_stack, nullptr, nullptr);
  t_current = nullptr;
  if (finished_ && on_finished) {
    auto done = std::move(on_finished);
    done();  // may destroy *this: nothing of it is touched afterwards
  }
}

void Fiber::suspend() {
  Context& c = *context_;
#ifdef POPBRIDGE_FIBER_TSAN
  __tsan_switch_to_fiber(c.tsan_caller, 0);
#endif
  c.start_switch(&c.fake_stack, c.caller_bottom, c.caller_size);
  jump(&c.fiber, &c.caller);
  c.finish_switch(c.fake_stack, &c.caller_bottom, &c.caller_size);
}

void Fiber::entry() {
  Fiber* self = t_current;
  Context& c = *self->context_;
  c.finish_switch(nullptr, &c.caller_bottom, &c.caller_size);
  self->body_();  // an exception here ends the process, as on a thread
  self->body_ = nullptr;
  self->finished_ = true;
#ifdef POPBRIDGE_FIBER_TSAN
  __tsan_switch_to_fiber(c.tsan_caller, 0);
#endif
  c.start_switch(nullptr, c.caller_bottom, c.caller_size);  // this stack is done
  setcontext(&c.caller);
}

void Fiber::cancel() {
  cancelled_ = true;
  if (on_cancel) {
    auto wake = std::move(on_cancel);
    on_cancel = nullptr;
    wake();
  }
}

// ---- FdWait -----------------------------------------------------------------

struct FdWait::Handles {
  uv_poll_t poll{};
  uv_timer_t timer{};
  Fiber* waiter = nullptr;
  Result result = kTimedOut;
  int init_error = 0;
  int open = 0;

  void wake(Result why) {
    if (waiter == nullptr) return;
    if (init_error == 0) uv_poll_stop(&poll);
    uv_timer_stop(&timer);
    result = why;
    Fiber* fiber = waiter;
    waiter = nullptr;
    fiber->resume();
  }
  static void closed(uv_handle_t* handle) {
    auto* self = static_cast<Handles*>(handle->data);
    if (--self->open == 0) delete self;
  }
};

FdWait::FdWait(uv_loop_t* loop, int fd) : handles_(new Handles) {
  handles_->init_error = uv_poll_init(loop, &handles_->poll, fd);
  uv_timer_init(loop, &handles_->timer);
  handles_->poll.data = handles_;
  handles_->timer.data = handles_;
  handles_->open = handles_->init_error == 0 ? 2 : 1;
}

FdWait::~FdWait() {
  handles_->waiter = nullptr;
  if (handles_->init_error == 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&handles_->poll), &Handles::closed);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&handles_->timer), &Handles::closed);
}

FdWait::Result FdWait::wait(bool readable, Clock::time_point deadline) {
  Fiber* fiber = Fiber::current();
  if (fiber == nullptr || handles_->init_error != 0 || fiber->cancelled()) return kCancelled;
  const int ms = remaining_ms(deadline);
  if (ms == 0) return kTimedOut;
  Handles* h = handles_;
  h->waiter = fiber;
  h->result = kTimedOut;
  uv_poll_start(&h->poll, readable ? UV_READABLE : UV_WRITABLE,
                [](uv_poll_t* poll, int, int) {
                  // An error is "ready" too: recv() or send() will report it.
                  static_cast<Handles*>(poll->data)->wake(kReady);
                });
  uv_timer_start(&h->timer,
                 [](uv_timer_t* timer) { static_cast<Handles*>(timer->data)->wake(kTimedOut); },
                 static_cast<uint64_t>(ms), 0);
  fiber->on_cancel = [h] { h->wake(kCancelled); };
  fiber->suspend();
  fiber->on_cancel = nullptr;
  return h->result;
}

// ---- name resolution ----------------------------------------------------------

namespace {

// Lives until both the resolver's callback and the timer's close callback
// have run, whichever way the wait ended.
struct Resolution {
  uv_getaddrinfo_t request{};
  uv_timer_t timer{};
  Fiber* waiter = nullptr;
  int status = UV_ETIMEDOUT;
  addrinfo* result = nullptr;
  bool answered = false;
  bool timer_closed = false;

  void maybe_free() {
    if (answered && timer_closed) delete this;
  }
  void wake(int why) {
    if (waiter == nullptr) return;
    uv_timer_stop(&timer);
    status = why;
    Fiber* fiber = waiter;
    waiter = nullptr;
    fiber->resume();
  }
};

}  // namespace

int fiber_getaddrinfo(const std::string& host, const std::string& port, Clock::time_point deadline,
                      addrinfo** result) {
  *result = nullptr;
  Fiber* fiber = Fiber::current();
  if (fiber == nullptr || fiber->cancelled()) return UV_ECANCELED;
  auto* r = new Resolution;
  r->request.data = r;
  r->timer.data = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  int rc = uv_getaddrinfo(
      fiber->loop(), &r->request,
      [](uv_getaddrinfo_t* request, int status, addrinfo* answer) {
        auto* self = static_cast<Resolution*>(request->data);
        self->answered = true;
        if (self->waiter != nullptr) {
          self->result = answer;
          self->wake(status);
        } else if (answer != nullptr) {
          uv_freeaddrinfo(answer);  // too late: nobody waits for it any more
        }
        self->maybe_free();
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete r;
    return rc;
  }
  uv_timer_init(fiber->loop(), &r->timer);
  r->waiter = fiber;
  uv_timer_start(&r->timer, [](uv_timer_t* timer) {
    auto* self = static_cast<Resolution*>(timer->data);
    uv_cancel(reinterpret_cast<uv_req_t*>(&self->request));  // if it has not started
    self->wake(UV_ETIMEDOUT);
  }, static_cast<uint64_t>(remaining_ms(deadline)), 0);
  fiber->on_cancel = [r] {
    uv_cancel(reinterpret_cast<uv_req_t*>(&r->request));
    r->wake(UV_ECANCELED);
  };
  fiber->suspend();
  fiber->on_cancel = nullptr;
  const int status = r->status;
  *result = status == 0 ? r->result : nullptr;
  if (status != 0 && r->result != nullptr) uv_freeaddrinfo(r->result);
  r->result = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&r->timer), [](uv_handle_t* handle) {
    auto* self = static_cast<Resolution*>(handle->data);
    self->timer_closed = true;
    self->maybe_free();
  });
  return status;
}

}  // namespace popbridge::imap
