// The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a TCP
// load balancer puts in front of the client's bytes to say who the client
// is. Pure code: bytes in, a verdict out.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <string_view>

namespace popbridge {

struct ProxyHeader {
  size_t length = 0;           // octets of the header; the client's data follows
  bool has_address = false;    // false for LOCAL (health checks) and UNKNOWN
  sockaddr_storage source{};   // the client, when has_address
};

enum class ProxyParse { kNeedMore, kDone, kInvalid };

// Looks at the first octets of a connection. kNeedMore until a whole header
// is there (at most kProxyHeaderMax octets are ever needed).
ProxyParse parse_proxy_header(std::string_view data, ProxyHeader& out);

inline constexpr size_t kProxyHeaderMax = 16 + 65535;  // v2: fixed part + 16-bit length

}  // namespace popbridge
