// Logging: one line per event on stderr, with a level filter.
// Never pass a password or an authentication string to these functions.
#pragma once

#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>

namespace popbridge::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_level(Level level);
bool enabled(Level level);
void set_json(bool json);  // one JSON object per line instead of text
void write(Level level, std::string_view message);

// A structured line: "name key=value ..." as text, or a flat JSON object.
struct Field {
  std::string_view key;
  std::string value;
};
void event(Level level, std::string_view name, std::initializer_list<Field> fields);

// log::info("session ", id, " closed") concatenates its arguments with
// operator<<; nothing is formatted when the level is filtered out.
template <typename... Args>
void emit(Level level, const Args&... args) {
  if (!enabled(level)) return;
  std::ostringstream line;
  (line << ... << args);
  write(level, line.view());
}

template <typename... Args> void debug(const Args&... args) { emit(Level::kDebug, args...); }
template <typename... Args> void info(const Args&... args) { emit(Level::kInfo, args...); }
template <typename... Args> void warn(const Args&... args) { emit(Level::kWarn, args...); }
template <typename... Args> void error(const Args&... args) { emit(Level::kError, args...); }

}  // namespace popbridge::log
