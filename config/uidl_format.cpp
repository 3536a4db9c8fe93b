#include "config/uidl_format.h"

#include <cstdio>

namespace popbridge {
namespace {

constexpr size_t kMaxUidl = 70;  // RFC 1939 section 7

std::string_view named(std::string_view spec) {
  // Dovecot's %X expands to lower-case hex: its default %08Xu%08Xv sends
  // "0000002a5f00ab12", and clients compare UIDLs byte for byte.
  if (spec == "dovecot") return "{uid:08x}{uidvalidity:08x}";  // Dovecot's %08Xu%08Xv
  if (spec == "courier") return "{uidvalidity}-{uid}";         // %v-%u
  if (spec == "cyrus") return "{uidvalidity}.{uid}";           // %v.%u
  if (spec == "uw") return "{uidvalidity:08x}{uid:08x}";       // %08Xv%08Xu, as Dovecot sends it
  return spec;
}

}  // namespace

UidlFormat UidlFormat::dovecot() {
  std::string unused;
  return *parse("dovecot", unused);
}

std::optional<UidlFormat> UidlFormat::parse(std::string_view spec, std::string& error) {
  const std::string_view text = named(spec);
  UidlFormat format;
  size_t longest = 0;
  bool has_uid = false;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '{') {
      const unsigned char c = static_cast<unsigned char>(text[i]);
      if (c < 0x21 || c > 0x7e || c == '}') {
        error = "UIDL characters must be printable ASCII without spaces, braces only around "
                "{uid} or {uidvalidity}";
        return std::nullopt;
      }
      if (format.pieces_.empty() || format.pieces_.back().kind != Piece::Kind::kText)
        format.pieces_.emplace_back();
      format.pieces_.back().text.push_back(text[i]);
      ++longest;
      ++i;
      continue;
    }
    const size_t close = text.find('}', i);
    if (close == std::string_view::npos) {
      error = "unclosed '{' in UIDL format";
      return std::nullopt;
    }
    const std::string_view field = text.substr(i + 1, close - i - 1);
    const size_t colon = field.find(':');
    const std::string_view name = field.substr(0, colon);
    std::string_view conversion = colon == std::string_view::npos ? "d" : field.substr(colon + 1);
    Piece piece;
    if (name == "uid") {
      piece.kind = Piece::Kind::kUid;
      has_uid = true;
    } else if (name == "uidvalidity") {
      piece.kind = Piece::Kind::kUidValidity;
    } else {
      error = "unknown UIDL field {" + std::string(field) + "} (use {uid} and {uidvalidity})";
      return std::nullopt;
    }
    if (!conversion.empty() && conversion[0] == '0') {
      piece.zero_pad = true;
      conversion.remove_prefix(1);
    }
    while (!conversion.empty() && conversion[0] >= '0' && conversion[0] <= '9') {
      piece.width = piece.width * 10 + static_cast<unsigned>(conversion[0] - '0');
      conversion.remove_prefix(1);
      if (piece.width > kMaxUidl) break;
    }
    if (conversion.empty()) conversion = "d";
    if (piece.width > 0 && !piece.zero_pad) {
      error = "UIDL fields are padded with zeros, never spaces: write {" + std::string(name) + ":0" +
              std::to_string(piece.width) + std::string(conversion) + "}";
      return std::nullopt;
    }
    if (conversion.size() != 1 || (conversion[0] != 'd' && conversion[0] != 'x' && conversion[0] != 'X') ||
        piece.width > kMaxUidl) {
      error = "bad UIDL field {" + std::string(field) + "} (e.g. {uid}, {uid:x}, {uid:08X})";
      return std::nullopt;
    }
    piece.base = conversion[0];
    longest += std::max<size_t>(piece.width, piece.base == 'd' ? 10 : 8);
    format.pieces_.push_back(piece);
    i = close + 1;
  }
  if (!has_uid) {
    error = "a UIDL format needs {uid}, or every message would look the same";
    return std::nullopt;
  }
  if (longest > kMaxUidl) {
    error = "UIDL format can make " + std::to_string(longest) +
            " characters, more than the 70 RFC 1939 allows";
    return std::nullopt;
  }
  return format;
}

std::string UidlFormat::format(uint32_t uid, uint32_t uidvalidity) const {
  std::string out;
  for (const Piece& piece : pieces_) {
    if (piece.kind == Piece::Kind::kText) {
      out += piece.text;
      continue;
    }
    const char conversion = piece.base == 'd' ? 'u' : piece.base;  // UIDs are unsigned
    const char spec[] = {'%', '0', '*', conversion, '\0'};
    char text[80];
    snprintf(text, sizeof text, spec, static_cast<int>(piece.width),
             piece.kind == Piece::Kind::kUid ? uid : uidvalidity);
    out += text;
  }
  return out;
}

}  // namespace popbridge
