// Fibers: libetpan's blocking calls on the event loop, without blocking it.
//
// libetpan's API is blocking: a call such as mailimap_login() writes the
// command and then pulls bytes from the mailstream until the answer is
// complete. Run inside a Fiber (a stackful coroutine on the loop thread),
// the mailstream driver's "wait for the socket" becomes "suspend this fiber
// until libuv says the socket is ready, or its deadline passes" (FdWait),
// and the loop goes on serving everybody else meanwhile. libetpan's
// parser, its command functions and our IMAP session code stay as they
// are: straight-line code that reads like the protocol. A stackless C++20
// coroutine could not do this: it cannot suspend from inside libetpan's C
// call stack.
//
// Everything here runs on one loop thread. A fiber is resumed only from the
// loop's own stack (a libuv callback), never from another fiber.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace popbridge::imap {

class Fiber {
 public:
  // A fiber that will run `body` on a stack of its own, waiting on `loop`;
  // nothing runs before the first resume().
  Fiber(uv_loop_t* loop, std::function<void()> body);
  // Only once finished (or never started): its stack goes back to a pool.
  ~Fiber();
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;

  // Runs the fiber until it suspends or its body returns. From the loop's
  // stack only.
  void resume();
  bool finished() const { return finished_; }
  uv_loop_t* loop() const { return loop_; }

  // From inside the fiber: back to whoever resumed it.
  void suspend();

  // Ends the wait the fiber is suspended in, and every later one, at once
  // (kCancelled): its job then fails fast. For a shutdown.
  void cancel();
  bool cancelled() const { return cancelled_; }

  // The fiber running now, or nullptr on the loop's own stack.
  static Fiber* current();

  // Set by the wait a suspended fiber is in: how cancel() ends it.
  std::function<void()> on_cancel;
  // Runs on the loop's stack once the body has returned, as the last thing
  // resume() does: it may destroy the Fiber.
  std::function<void()> on_finished;

  struct Context;  // fiber.cpp: ucontext and the sanitizer's bookkeeping

 private:
  static void entry();

  uv_loop_t* loop_;
  std::function<void()> body_;
  std::unique_ptr<Context> context_;
  bool started_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
};

// Inside a fiber, what a blocking driver waits on instead of poll(): a libuv
// poll handle on one descriptor plus a deadline timer, on the fiber's loop.
// Made by the driver when it first has to wait; closed (the descriptor
// stays open) when destroyed, which must happen before the descriptor is
// closed.
class FdWait {
 public:
  FdWait(uv_loop_t* loop, int fd);
  ~FdWait();
  FdWait(const FdWait&) = delete;
  FdWait& operator=(const FdWait&) = delete;

  enum Result { kReady = 1, kTimedOut = 0, kCancelled = -1 };
  // Suspends the current fiber until `fd` is readable (`readable`) or
  // writable, `deadline` passes, or the fiber is cancelled.
  Result wait(bool readable, std::chrono::steady_clock::time_point deadline);

 private:
  struct Handles;  // heap-allocated: freed by the close callbacks
  Handles* handles_;
};

// Name resolution inside a fiber through libuv (uv_getaddrinfo, on libuv's
// threadpool): the fiber waits for the answer, the deadline or a
// cancellation; an answer that comes too late frees itself. 0 and *result
// on success (free it with uv_freeaddrinfo), else a UV_E* error
// (UV_ETIMEDOUT, UV_ECANCELED, or the resolver's).
int fiber_getaddrinfo(const std::string& host, const std::string& port,
                      std::chrono::steady_clock::time_point deadline, struct addrinfo** result);

}  // namespace popbridge::imap
