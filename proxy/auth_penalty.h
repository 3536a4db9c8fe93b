// Slows down password guessing: each failed login from an address doubles
// the wait before the next -ERR [AUTH] for that address, from
// auth_failure_delay up to auth_failure_delay_max. A success or a quiet
// quarter of an hour clears it. Loop-thread only; waiting is a timer, so a
// penalised client blocks nobody else.
#pragma once

#include <chrono>
#include <string>
#include <unordered_map>

#include "config/config.h"

namespace popbridge {

class AuthPenalty {
 public:
  using Clock = std::chrono::steady_clock;

  // Records a failure from `address` and returns how long to wait before replying.
  Duration failed(const std::string& address, Duration base, Duration max, Clock::time_point now);
  void succeeded(const std::string& address) { failures_.erase(address); }
  size_t tracked() const { return failures_.size(); }

 private:
  struct Entry {
    unsigned count = 0;
    Clock::time_point last;
  };
  static constexpr auto kForget = std::chrono::minutes(15);
  void prune(Clock::time_point now);

  std::unordered_map<std::string, Entry> failures_;
};

}  // namespace popbridge
