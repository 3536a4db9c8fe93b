#include "proxy/auth_penalty.h"

#include <algorithm>

namespace popbridge {

void AuthPenalty::failed(const std::string& address, Clock::time_point now) {
  if (failures_.size() > 100000) prune(now);  // bounded memory under a spread-out attack
  Entry& entry = failures_[address];
  if (now - entry.last > kForget) entry.count = 0;
  entry.last = now;
  ++entry.count;
}

Duration AuthPenalty::owed(const std::string& address, Duration base, Duration max,
                           Clock::time_point now) const {
  const auto it = failures_.find(address);
  if (it == failures_.end() || now - it->second.last > kForget || base.count() == 0) {
    return Duration(0);
  }
  const unsigned doublings = std::min(it->second.count - 1, 16u);
  return std::min<Duration>(base * (1u << doublings), std::max(base, max));
}

void AuthPenalty::prune(Clock::time_point now) {
  std::erase_if(failures_, [now](const auto& item) { return now - item.second.last > kForget; });
}

}  // namespace popbridge
