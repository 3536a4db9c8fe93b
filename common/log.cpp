#include "common/log.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>

namespace popbridge::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<bool> g_json{false};
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

void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (byte < 0x20) {
      char escaped[8];
      snprintf(escaped, sizeof escaped, "\\u%04x", byte);
      out.append(escaped);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

// Text values with spaces, quotes or control characters are quoted, so a
// user name cannot forge another key=value pair.
void append_text_value(std::string& out, std::string_view text) {
  const bool plain = !text.empty() && text.find_first_of(" \"\\=") == std::string_view::npos &&
                     std::none_of(text.begin(), text.end(),
                                  [](char c) { return static_cast<unsigned char>(c) < 0x20; });
  if (plain) {
    out.append(text);
  } else {
    append_json_string(out, text);
  }
}

// A line is one event: control bytes a client put in, say, a user name are
// shown as \xNN and cannot start a forged line.
void append_escaped(std::string& out, std::string_view text) {
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      char escaped[8];
      snprintf(escaped, sizeof escaped, "\\x%02x", byte);
      out.append(escaped);
    } else {
      out.push_back(c);
    }
  }
}

std::string timestamp() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  gmtime_r(&now.tv_sec, &utc);
  char stamp[40];
  const size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  snprintf(stamp + n, sizeof stamp - n, ".%03dZ", static_cast<int>(now.tv_nsec / 1000000));
  return stamp;
}

void emit_line(std::string& line) {
  line.push_back('\n');
  std::lock_guard lock(g_write_mutex);
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

}  // namespace

void set_json(bool json) { g_json.store(json, std::memory_order_relaxed); }

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(Level level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view message) {
  std::string line;
  line.reserve(message.size() + 64);
  if (g_json.load(std::memory_order_relaxed)) {
    line += "{\"time\":\"" + timestamp() + "\",\"level\":\"" + level_name(level) + "\",\"message\":";
    append_json_string(line, message);
    line.push_back('}');
  } else {
    line += timestamp() + " " + level_name(level) + " ";
    append_escaped(line, message);
  }
  emit_line(line);
}

void event(Level level, std::string_view name, std::initializer_list<Field> fields) {
  if (!enabled(level)) return;
  std::string line;
  if (g_json.load(std::memory_order_relaxed)) {
    line += "{\"time\":\"" + timestamp() + "\",\"level\":\"" + level_name(level) + "\",\"event\":";
    append_json_string(line, name);
    for (const Field& field : fields) {
      line.push_back(',');
      append_json_string(line, field.key);
      line.push_back(':');
      append_json_string(line, field.value);
    }
    line.push_back('}');
  } else {
    line += timestamp() + " " + level_name(level) + " ";
    line.append(name);
    for (const Field& field : fields) {
      line.push_back(' ');
      line.append(field.key);
      line.push_back('=');
      append_text_value(line, field.value);
    }
  }
  emit_line(line);
}

}  // namespace popbridge::log
