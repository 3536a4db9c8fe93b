#include "backends/imap/router.h"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <cstdint>

namespace popbridge::imap {
namespace {

std::string lower_ascii(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool has_8bit(const std::string& text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return static_cast<unsigned char>(c) >= 0x80; });
}

// Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF).
bool decode_utf8(const std::string& text, std::vector<uint32_t>* out) {
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    uint32_t code = 0;
    size_t more = 0;
    uint32_t min = 0;
    if (byte < 0x80) {
      code = byte;
    } else if ((byte & 0xE0) == 0xC0) {
      code = byte & 0x1F, more = 1, min = 0x80;
    } else if ((byte & 0xF0) == 0xE0) {
      code = byte & 0x0F, more = 2, min = 0x800;
    } else if ((byte & 0xF8) == 0xF0) {
      code = byte & 0x07, more = 3, min = 0x10000;
    } else {
      return false;
    }
    if (more > 0 && i + more >= text.size()) return false;
    for (size_t k = 1; k <= more; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code = (code << 6) | (next & 0x3F);
    }
    if (more > 0 && (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)))
      return false;
    out->push_back(code);
    i += more + 1;
  }
  return true;
}

// RFC 3501 5.1.3: printable ASCII but '&' as is, "&-" for '&', anything
// else as UTF-16 in base64 with ',' for '/', no padding, between '&' '-'.
std::string encode_modified_utf7(const std::vector<uint32_t>& codes) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
  std::string out;
  std::vector<uint16_t> run;
  auto flush = [&] {
    if (run.empty()) return;
    out += '&';
    uint32_t bits = 0;
    int count = 0;
    for (uint16_t unit : run) {
      bits = (bits << 16) | unit;
      count += 16;
      while (count >= 6) {
        count -= 6;
        out += kAlphabet[(bits >> count) & 0x3F];
      }
      bits &= (1u << count) - 1;
    }
    if (count > 0) out += kAlphabet[(bits << (6 - count)) & 0x3F];
    out += '-';
    run.clear();
  };
  for (uint32_t code : codes) {
    if (code >= 0x20 && code <= 0x7E) {
      flush();
      out += static_cast<char>(code);
      if (code == '&') out += '-';
    } else if (code >= 0x10000) {
      code -= 0x10000;
      run.push_back(static_cast<uint16_t>(0xD800 + (code >> 10)));
      run.push_back(static_cast<uint16_t>(0xDC00 + (code & 0x3FF)));
    } else {
      run.push_back(static_cast<uint16_t>(code));
    }
  }
  flush();
  return out;
}

}  // namespace

std::optional<std::string> imap_folder_name(const std::string& name) {
  if (has_control_character(name)) return std::nullopt;
  if (!has_8bit(name)) return name;
  std::vector<uint32_t> codes;
  if (!decode_utf8(name, &codes)) return std::nullopt;
  return encode_modified_utf7(codes);
}

std::string folder_key(const std::string& folder) {
  return strcasecmp(folder.c_str(), "INBOX") == 0 ? std::string("INBOX") : folder;
}

bool same_folder(const std::string& a, const std::string& b) {
  return folder_key(a) == folder_key(b);
}

Route route_login(const std::vector<UpstreamConfig>& upstreams, const MailboxConfig& mailbox,
                  const std::string& user) {
  Route route;
  std::string name = user;
  std::optional<std::string> folder;
  if (!mailbox.folder_separator.empty()) {
    const size_t at = name.find(mailbox.folder_separator);
    if (at != std::string::npos) {
      folder = name.substr(at + mailbox.folder_separator.size());
      name.resize(at);
      if (folder->empty()) {
        route.status = {UpstreamError::kNoMailbox,
                        "no folder name after '" + mailbox.folder_separator + "'"};
        return route;
      }
    }
  }
  if (name.empty()) {
    route.status = {UpstreamError::kAuthFailed, "empty user name"};
    return route;
  }
  if (has_control_character(name)) {
    route.status = {UpstreamError::kAuthFailed, "user name holds a control character"};
    return route;
  }

  const size_t at = name.rfind('@');
  const std::string domain = at == std::string::npos ? "" : lower_ascii(name.substr(at + 1));
  std::optional<size_t> chosen;
  std::optional<size_t> fallback;
  for (size_t i = 0; i < upstreams.size(); ++i) {
    const auto& domains = upstreams[i].domains;
    if (domains.empty()) {
      if (!fallback) fallback = i;
    } else if (!domain.empty() && std::find(domains.begin(), domains.end(), domain) != domains.end()) {
      chosen = i;
      break;
    }
  }
  if (!chosen) chosen = fallback;
  if (!chosen) {
    route.status = {UpstreamError::kAuthFailed,
                    domain.empty() ? "no upstream for users without a domain"
                                   : "no upstream for domain " + domain};
    return route;
  }
  route.upstream = *chosen;
  const UpstreamConfig& upstream = upstreams[*chosen];
  route.imap_user = name;
  if (upstream.username == UpstreamConfig::Username::kLocal && at != std::string::npos) {
    route.imap_user = name.substr(0, at);
    if (route.imap_user.empty()) {
      route.status = {UpstreamError::kAuthFailed, "empty local part"};
      return route;
    }
  }
  std::optional<std::string> wire = imap_folder_name(folder ? *folder : upstream.folder);
  if (!wire) {
    route.status = {UpstreamError::kNoMailbox,
                    "folder name is not valid UTF-8 or holds a control character"};
    return route;
  }
  route.folder = *wire;
  return route;
}

}  // namespace popbridge::imap
