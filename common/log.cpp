#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace popbridge::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::mutex g_write_mutex;

const char* level_name(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "?";
}

}  // namespace

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view message) {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char stamp[32];
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);

  std::string line;
  line.reserve(message.size() + 48);
  line.append(stamp);
  char millis[8];
  snprintf(millis, sizeof millis, ".%03ldZ ", now.tv_nsec / 1000000);
  line.append(millis);
  line.append(level_name(level));
  line.push_back(' ');
  line.append(message);
  line.push_back('\n');

  std::lock_guard lock(g_write_mutex);
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

}  // namespace popbridge::log
