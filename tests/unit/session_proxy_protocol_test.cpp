// PROXY protocol v1 and v2 headers: whole, and one octet at a time.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <string>

#include "proxy/proxy_protocol.h"

namespace popbridge {
namespace {

// Parses `data` whole, then growing one octet at a time: every proper
// prefix of a valid header must say "need more".
ProxyParse parse_both_ways(const std::string& data, ProxyHeader& out) {
  const ProxyParse whole = parse_proxy_header(data, out);
  if (whole == ProxyParse::kDone) {
    for (size_t n = 0; n < out.length; ++n) {
      ProxyHeader partial;
      EXPECT_EQ(parse_proxy_header(std::string_view(data).substr(0, n), partial), ProxyParse::kNeedMore)
          << "prefix of " << n << " octets";
    }
    ProxyHeader again;
    EXPECT_EQ(parse_proxy_header(data, again), ProxyParse::kDone);
  }
  return whole;
}

std::string source_of(const ProxyHeader& header) {
  char text[INET6_ADDRSTRLEN] = "";
  if (header.source.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&header.source);
    inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
    return std::string(text) + ":" + std::to_string(ntohs(v4->sin_port));
  }
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&header.source);
  inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
  return "[" + std::string(text) + "]:" + std::to_string(ntohs(v6->sin6_port));
}

const std::string kV2Signature("\r\n\r\n\0\r\nQUIT\n", 12);

TEST(ProxyProtocol, V1Tcp4WithClientDataBehind) {
  ProxyHeader header;
  const std::string line = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 110\r\n";
  ASSERT_EQ(parse_both_ways(line + "USER alice\r\n", header), ProxyParse::kDone);
  EXPECT_EQ(header.length, line.size());
  EXPECT_TRUE(header.has_address);
  EXPECT_EQ(source_of(header), "192.0.2.7:56324");
}

TEST(ProxyProtocol, V1Tcp6AndUnknown) {
  ProxyHeader header;
  ASSERT_EQ(parse_both_ways("PROXY TCP6 2001:db8::7 2001:db8::1 4000 995\r\n", header), ProxyParse::kDone);
  EXPECT_EQ(source_of(header), "[2001:db8::7]:4000");
  ASSERT_EQ(parse_both_ways("PROXY UNKNOWN\r\n", header), ProxyParse::kDone);
  EXPECT_FALSE(header.has_address);
}

TEST(ProxyProtocol, V1Invalid) {
  ProxyHeader header;
  for (const std::string bad : {"PROXY TCP4 192.0.2.7 198.51.100.1 56324\r\n",
                                "PROXY TCP4 192.0.2.777 198.51.100.1 1 2\r\n",
                                "PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n",
                                "PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n",
                                "PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n",
                                "PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n",
                                "PROXY TCP4  192.0.2.7 198.51.100.1 1 2\r\n",
                                "USER alice\r\n", "+OK"}) {
    EXPECT_EQ(parse_proxy_header(bad, header), ProxyParse::kInvalid) << bad;
  }
  // A v1 line that never ends is invalid once it is longer than any valid one.
  EXPECT_EQ(parse_proxy_header("PROXY TCP4 " + std::string(200, '1'), header), ProxyParse::kInvalid);
}

std::string v2(uint8_t command, uint8_t family, const std::string& body) {
  std::string header = kV2Signature;
  header += static_cast<char>(0x20 | command);
  header += static_cast<char>(family);
  header += static_cast<char>(body.size() >> 8);
  header += static_cast<char>(body.size() & 0xff);
  return header + body;
}

TEST(ProxyProtocol, V2Tcp4WithTlvs) {
  std::string body("\xC0\x00\x02\x07" "\xC6\x33\x64\x01" "\xDC\x04" "\x00\x6E", 12);
  body += std::string("\x04\x00\x01\x00", 4);  // a TLV (NOOP), to be skipped
  ProxyHeader header;
  const std::string data = v2(1, 0x11, body);
  ASSERT_EQ(parse_both_ways(data + "CAPA\r\n", header), ProxyParse::kDone);
  EXPECT_EQ(header.length, data.size());
  EXPECT_EQ(source_of(header), "192.0.2.7:56324");
}

TEST(ProxyProtocol, V2Tcp6LocalAndInvalid) {
  std::string body(36, '\0');
  body[15] = 1;                                    // source ::1
  body[32] = '\x1F';
  body[33] = '\x40';                               // source port 8000
  ProxyHeader header;
  ASSERT_EQ(parse_both_ways(v2(1, 0x21, body), header), ProxyParse::kDone);
  EXPECT_EQ(source_of(header), "[::1]:8000");

  ASSERT_EQ(parse_both_ways(v2(0, 0x00, ""), header), ProxyParse::kDone);  // LOCAL
  EXPECT_FALSE(header.has_address);

  EXPECT_EQ(parse_proxy_header(v2(1, 0x11, std::string(4, '\0')), header), ProxyParse::kInvalid);
  EXPECT_EQ(parse_proxy_header(v2(1, 0x12, std::string(12, '\0')), header), ProxyParse::kInvalid);  // UDP
  EXPECT_EQ(parse_proxy_header(v2(2, 0x11, std::string(12, '\0')), header), ProxyParse::kInvalid);
  std::string wrong_version = v2(1, 0x11, std::string(12, '\0'));
  wrong_version[12] = 0x11;
  EXPECT_EQ(parse_proxy_header(wrong_version, header), ProxyParse::kInvalid);
}

}  // namespace
}  // namespace popbridge
