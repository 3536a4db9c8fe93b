// A libuv loop for the IMAP backend's tests, run until a condition holds.
#pragma once

#include <uv.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>

namespace popbridge::imap::test_support {

class Loop {
 public:
  Loop() {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &tick_);
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);  // finishes pending closes
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "a handle was left open";
  }
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  uv_loop_t* get() { return &loop_; }

  // True when no handle but our own timer is left (open or closing): what
  // uv_run would see as "nothing more to do" without run_until's timer.
  bool drained() {
    bool other = false;
    struct Walk {
      uv_timer_t* tick;
      bool* other;
    } walk{&tick_, &other};
    uv_walk(
        &loop_,
        [](uv_handle_t* handle, void* arg) {
          auto* w = static_cast<Walk*>(arg);
          if (handle != reinterpret_cast<uv_handle_t*>(w->tick)) *w->other = true;
        },
        &walk);
    return !other;
  }

  // Runs the loop until `done()` or `limit`; returns done().
  bool run_until(const std::function<bool()>& done,
                 std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    // The timer wakes the loop now and then so the condition is rechecked.
    uv_timer_start(&tick_, [](uv_timer_t*) {}, 5, 5);
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop_, UV_RUN_ONCE);
    uv_timer_stop(&tick_);
    return done();
  }

 private:
  uv_loop_t loop_;
  uv_timer_t tick_;
};

}  // namespace popbridge::imap::test_support
