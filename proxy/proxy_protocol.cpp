#include "proxy/proxy_protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

namespace popbridge {
namespace {

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr size_t kV1Max = 107;  // the spec's longest v1 line, CRLF included
constexpr char kV2Signature[12] = {'\r', '\n', '\r', '\n', '\0', '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

bool parse_port(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5 || (text.size() > 1 && text[0] == '0')) return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

// "PROXY TCP4 192.0.2.1 198.51.100.1 56324 110\r\n"
ProxyParse parse_v1(std::string_view data, ProxyHeader& out) {
  const size_t end = data.find("\r\n");
  if (end == std::string_view::npos) {
    return data.size() >= kV1Max ? ProxyParse::kInvalid : ProxyParse::kNeedMore;
  }
  if (end + 2 > kV1Max) return ProxyParse::kInvalid;
  std::string_view line = data.substr(kV1Prefix.size(), end - kV1Prefix.size());
  out.length = end + 2;
  if (line.substr(0, 7) == "UNKNOWN") {  // the balancer could not tell: use the peer
    out.has_address = false;
    return ProxyParse::kDone;
  }
  std::string_view fields[5];
  for (int i = 0; i < 5; ++i) {
    const size_t space = line.find(' ');
    if ((space == std::string_view::npos) != (i == 4)) return ProxyParse::kInvalid;
    fields[i] = line.substr(0, space);
    if (fields[i].empty()) return ProxyParse::kInvalid;
    line = space == std::string_view::npos ? std::string_view{} : line.substr(space + 1);
  }
  uint16_t source_port = 0, destination_port = 0;
  if (!parse_port(fields[3], source_port) || !parse_port(fields[4], destination_port)) {
    return ProxyParse::kInvalid;
  }
  const std::string source(fields[1]), destination(fields[2]);
  if (fields[0] == "TCP4") {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&out.source);
    in_addr ignored{};
    if (inet_pton(AF_INET, source.c_str(), &v4->sin_addr) != 1 ||
        inet_pton(AF_INET, destination.c_str(), &ignored) != 1) {
      return ProxyParse::kInvalid;
    }
    v4->sin_family = AF_INET;
    v4->sin_port = htons(source_port);
  } else if (fields[0] == "TCP6") {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.source);
    in6_addr ignored{};
    if (inet_pton(AF_INET6, source.c_str(), &v6->sin6_addr) != 1 ||
        inet_pton(AF_INET6, destination.c_str(), &ignored) != 1) {
      return ProxyParse::kInvalid;
    }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(source_port);
  } else {
    return ProxyParse::kInvalid;
  }
  out.has_address = true;
  return ProxyParse::kDone;
}

ProxyParse parse_v2(std::string_view data, ProxyHeader& out) {
  if (data.size() < 16) return ProxyParse::kNeedMore;
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(data[i]); };
  const uint8_t version_command = byte(12);
  if ((version_command >> 4) != 2) return ProxyParse::kInvalid;
  const uint8_t command = version_command & 0x0f;
  if (command > 1) return ProxyParse::kInvalid;
  const uint8_t family = byte(13);
  const size_t length = static_cast<size_t>(byte(14)) << 8 | byte(15);
  if (data.size() < 16 + length) return ProxyParse::kNeedMore;
  out.length = 16 + length;
  out.has_address = false;
  if (command == 0) return ProxyParse::kDone;  // LOCAL: the balancer's own health check

  const uint8_t* address = reinterpret_cast<const uint8_t*>(data.data()) + 16;
  switch (family) {
    case 0x11:  // TCP over IPv4: src addr, dst addr, src port, dst port
      if (length < 12) return ProxyParse::kInvalid;
      {
        auto* v4 = reinterpret_cast<sockaddr_in*>(&out.source);
        v4->sin_family = AF_INET;
        std::memcpy(&v4->sin_addr, address, 4);
        std::memcpy(&v4->sin_port, address + 8, 2);
      }
      out.has_address = true;
      return ProxyParse::kDone;
    case 0x21:  // TCP over IPv6
      if (length < 36) return ProxyParse::kInvalid;
      {
        auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.source);
        v6->sin6_family = AF_INET6;
        std::memcpy(&v6->sin6_addr, address, 16);
        std::memcpy(&v6->sin6_port, address + 32, 2);
      }
      out.has_address = true;
      return ProxyParse::kDone;
    case 0x00:  // UNSPEC: no address given
      return ProxyParse::kDone;
    default:  // UDP or UNIX sockets make no sense in front of POP3
      return ProxyParse::kInvalid;
  }
}

}  // namespace

ProxyParse parse_proxy_header(std::string_view data, ProxyHeader& out) {
  out = ProxyHeader{};
  // Decide the version from as few octets as are there; a mismatch on any
  // prefix octet is invalid at once.
  const size_t v1_check = std::min(data.size(), kV1Prefix.size());
  if (data.substr(0, v1_check) == kV1Prefix.substr(0, v1_check)) {
    if (data.size() < kV1Prefix.size()) return ProxyParse::kNeedMore;
    return parse_v1(data, out);
  }
  const size_t v2_check = std::min(data.size(), sizeof kV2Signature);
  if (std::memcmp(data.data(), kV2Signature, v2_check) == 0) {
    if (data.size() < sizeof kV2Signature) return ProxyParse::kNeedMore;
    return parse_v2(data, out);
  }
  return ProxyParse::kInvalid;
}

}  // namespace popbridge
