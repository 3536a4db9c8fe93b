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

// The length of the well-formed UTF-8 sequence (RFC 3629, Unicode table
// 3-7) of two or more octets starting at text[i], or 0 if there is none:
// a stray continuation octet, a truncated sequence, an overlong form, a
// surrogate (U+D800-DFFF) or a code point above U+10FFFF.
size_t utf8_sequence(std::string_view text, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(text[i + k]); };
  const unsigned char lead = at(0);
  size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second octet
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;        // overlong below U+0800
    else if (lead == 0xED) high = 0x9F;  // surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;        // overlong below U+10000
    else if (lead == 0xF4) high = 0x8F;  // above U+10FFFF
  } else {
    return 0;  // ASCII (not a sequence), a continuation octet, C0, C1, F5-FF
  }
  if (i + length > text.size() || at(1) < low || at(1) > high) return 0;
  for (size_t k = 2; k < length; ++k) {
    if (at(k) < 0x80 || at(k) > 0xBF) return 0;
  }
  return length;
}

bool valid_utf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
    } else if (const size_t length = utf8_sequence(text, i)) {
      i += length;
    } else {
      return false;
    }
  }
  return true;
}

// Appends `text`: well-formed UTF-8 sequences as they are, each ASCII
// octet through ascii(out, octet), each octet that is not part of
// well-formed UTF-8 through invalid(out, octet). So a line is valid UTF-8
// whatever a client sent.
template <typename Ascii, typename Invalid>
void append_utf8(std::string& out, std::string_view text, Ascii ascii, Invalid invalid) {
  for (size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      ascii(out, byte);
      ++i;
    } else if (const size_t length = utf8_sequence(text, i)) {
      out.append(text.substr(i, length));
      i += length;
    } else {
      invalid(out, byte);
      ++i;
    }
  }
}

void append_u00(std::string& out, unsigned char byte) {
  char escaped[8];
  snprintf(escaped, sizeof escaped, "\\u%04x", byte);
  out.append(escaped);
}

void append_x(std::string& out, unsigned char byte) {
  char escaped[8];
  snprintf(escaped, sizeof escaped, "\\x%02x", byte);
  out.append(escaped);
}

// A JSON string. An octet that is not UTF-8 becomes \u00XX (the character
// of that value in Latin-1), so strict decoders accept every line and the
// octet's value is kept.
void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  append_utf8(
      out, text,
      [](std::string& to, unsigned char byte) {
        if (byte == '"' || byte == '\\') {
          to.push_back('\\');
          to.push_back(static_cast<char>(byte));
        } else if (byte < 0x20) {
          append_u00(to, byte);
        } else {
          to.push_back(static_cast<char>(byte));
        }
      },
      append_u00);
  out.push_back('"');
}

// Text values with spaces, quotes, control characters or octets that are
// not UTF-8 are quoted, so a user name cannot forge another key=value pair.
void append_text_value(std::string& out, std::string_view text) {
  const bool plain = !text.empty() && text.find_first_of(" \"\\=") == std::string_view::npos &&
                     std::none_of(text.begin(), text.end(),
                                  [](char c) { return static_cast<unsigned char>(c) < 0x20; }) &&
                     valid_utf8(text);
  if (plain) {
    out.append(text);
  } else {
    append_json_string(out, text);
  }
}

// A line is one event: control bytes a client put in, say, a user name are
// shown as \xNN and cannot start a forged line; so are octets that are
// not UTF-8.
void append_escaped(std::string& out, std::string_view text) {
  append_utf8(
      out, text,
      [](std::string& to, unsigned char byte) {
        if (byte < 0x20 || byte == 0x7f) {
          append_x(to, byte);
        } else {
          to.push_back(static_cast<char>(byte));
        }
      },
      append_x);
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
