// Slows down password guessing per client address. Every failed login
// raises the address's penalty; the next login attempt from that address
// waits it out before the upstream hears of it, whatever the password, so
// hanging up early gains nothing. The penalty starts at auth_failure_delay
// and doubles per failure up to auth_failure_delay_max; a success or a quiet
// quarter of an hour clears it. Loop-thread only: waiting is a timer, so a
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

  void failed(const std::string& address, Clock::time_point now);
  void succeeded(const std::string& address) { failures_.erase(address); }
  // How long a login attempt from `address` waits before it starts.
  Duration owed(const std::string& address, Duration base, Duration max, Clock::time_point now) const;

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
