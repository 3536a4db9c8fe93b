// Our mailstream_low driver against a scripted TCP server on the loopback:
// reads, writes, EOF, timeouts, refused connects, and descriptors >= 1024
// (where libetpan's own select()-based stream aborts the process).
#include "backends/imap/upstream_stream.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "imap_scripted_server.h"

namespace popbridge::imap {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

using test_support::read_exact;
using test_support::read_line;
using test_support::ScriptedServer;
using test_support::send_all;

mailstream_low* connect_to(uint16_t port, std::chrono::milliseconds io_timeout = 2s,
                           const std::string& host = "127.0.0.1") {
  std::string error;
  mailstream_low* low = UpstreamStream::connect(host, port, 2s, io_timeout, &error);
  EXPECT_NE(low, nullptr) << error;
  return low;
}

std::string read_some(mailstream_low* low) {
  char buffer[256];
  ssize_t n = mailstream_low_read(low, buffer, sizeof buffer);
  return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : std::string();
}

TEST(ImapStream, ReadsAndWrites) {
  std::string received;
  ScriptedServer server([&](int fd) {
    send_all(fd, "* OK hello\r\n");
    received = read_exact(fd, 8);
    send_all(fd, "bye\r\n");
  });
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port());
  ASSERT_NE(low, nullptr);
  UpstreamStream* stream = UpstreamStream::of(low);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(mailstream_low_get_fd(low), stream->fd());

  EXPECT_EQ(read_some(low), "* OK hello\r\n");
  EXPECT_EQ(mailstream_low_write(low, "A1 NOOP\r", 8), 8);
  EXPECT_EQ(stream->bytes_written(), 8u);
  EXPECT_EQ(read_some(low), "bye\r\n");
  EXPECT_FALSE(stream->failed());
  mailstream_low_close(low);
  mailstream_low_free(low);
  EXPECT_EQ(received, "A1 NOOP\r");
}

TEST(ImapStream, PeekedLineIsReadAgain) {
  ScriptedServer server([](int fd) {
    send_all(fd, "* OK ");
    std::this_thread::sleep_for(20ms);  // the line arrives in two pieces
    send_all(fd, "ready\r\nmore");
  });
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port());
  ASSERT_NE(low, nullptr);
  std::string line;
  ASSERT_TRUE(UpstreamStream::of(low)->peek_line(&line, 100));
  EXPECT_EQ(line, "* OK ready\r\n");
  std::string all;
  char buffer[3];  // small reads: the pending bytes come back in pieces
  while (all.size() < 16) {
    ssize_t n = mailstream_low_read(low, buffer, sizeof buffer);
    if (n <= 0) break;
    all.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_EQ(all, "* OK ready\r\nmore");
  mailstream_low_free(low);
}

TEST(ImapStream, EofReadsZeroOnceThenFails) {
  ScriptedServer server([](int fd) { send_all(fd, "x"); });
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port());
  ASSERT_NE(low, nullptr);
  char buffer[16];
  EXPECT_EQ(mailstream_low_read(low, buffer, sizeof buffer), 1);
  EXPECT_EQ(mailstream_low_read(low, buffer, sizeof buffer), 0);
  // A second read at EOF is an error, so libetpan's literal loops end.
  EXPECT_EQ(mailstream_low_read(low, buffer, sizeof buffer), -1);
  EXPECT_EQ(UpstreamStream::of(low)->failure(), "connection closed by server");
  mailstream_low_free(low);  // free without close: must close the socket itself
}

TEST(ImapStream, ReadTimesOut) {
  ScriptedServer server([](int fd) { read_line(fd); });  // silent until we hang up
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port(), 200ms);
  ASSERT_NE(low, nullptr);
  char buffer[16];
  auto start = Clock::now();
  EXPECT_EQ(mailstream_low_read(low, buffer, sizeof buffer), -1);
  auto waited = Clock::now() - start;
  EXPECT_GE(waited, 190ms);
  EXPECT_LT(waited, 2s);
  EXPECT_NE(UpstreamStream::of(low)->failure().find("timed out"), std::string::npos);
  mailstream_low_close(low);
  mailstream_low_free(low);
}

TEST(ImapStream, WriteTimesOutWhenThePeerDoesNotRead) {
  std::atomic<bool> done{false};
  ScriptedServer server([&](int) {
    while (!done) std::this_thread::sleep_for(5ms);  // never reads
  });
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port(), 200ms);
  ASSERT_NE(low, nullptr);
  std::string chunk(1 << 20, 'x');
  ssize_t n = 0;
  for (int i = 0; i < 256 && n >= 0; ++i) n = mailstream_low_write(low, chunk.data(), chunk.size());
  EXPECT_EQ(n, -1);
  EXPECT_NE(UpstreamStream::of(low)->failure().find("timed out"), std::string::npos);
  done = true;
  mailstream_low_close(low);
  mailstream_low_free(low);
}

TEST(ImapStream, ConnectRefused) {
  // A bound port that does not listen refuses connections.
  int holder = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  ASSERT_EQ(bind(holder, reinterpret_cast<sockaddr*>(&address), length), 0);
  ASSERT_EQ(getsockname(holder, reinterpret_cast<sockaddr*>(&address), &length), 0);
  std::string error;
  mailstream_low* low =
      UpstreamStream::connect("127.0.0.1", ntohs(address.sin_port), 2s, 2s, &error);
  EXPECT_EQ(low, nullptr);
  EXPECT_NE(error.find("refused"), std::string::npos) << error;
  EXPECT_NE(error.find("127.0.0.1"), std::string::npos) << error;
  ::close(holder);
}

TEST(ImapStream, ResolvesAName) {
  // Where "localhost" also resolves to ::1 (not on every machine), the
  // server listens on 127.0.0.1 only, so the next address must be tried.
  ScriptedServer server([](int fd) { send_all(fd, "hi"); });
  ASSERT_TRUE(server.ok());
  mailstream_low* low = connect_to(server.port(), 2s, "localhost");
  ASSERT_NE(low, nullptr);
  EXPECT_EQ(read_some(low), "hi");
  mailstream_low_free(low);
}

TEST(ImapStream, ConnectsOverIpv6) {
  ScriptedServer server([](int fd) { send_all(fd, "six"); }, AF_INET6);
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback here";
  mailstream_low* low = connect_to(server.port(), 2s, "::1");
  ASSERT_NE(low, nullptr);
  EXPECT_EQ(read_some(low), "six");
  mailstream_low_free(low);
}

// A tiny IMAP server: greeting, then answers CAPABILITY and LOGOUT.
void tiny_imap(int fd) {
  send_all(fd, "* OK ready\r\n");
  for (;;) {
    std::string line = read_line(fd);
    if (line.empty()) return;
    std::string tag = line.substr(0, line.find(' '));
    if (line.find("CAPABILITY") != std::string::npos) {
      send_all(fd, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + " OK done\r\n");
    } else if (line.find("LOGOUT") != std::string::npos) {
      send_all(fd, "* BYE see you\r\n" + tag + " OK bye\r\n");
      return;
    } else {
      send_all(fd, tag + " BAD what\r\n");
    }
  }
}

void talk_imap(mailstream_low* low) {
  mailstream* stream = mailstream_new(low, 8192);
  ASSERT_NE(stream, nullptr);
  mailimap* imap = mailimap_new(0, nullptr);
  EXPECT_EQ(mailimap_connect(imap, stream), MAILIMAP_NO_ERROR_NON_AUTHENTICATED);
  mailimap_capability_data* capabilities = nullptr;
  EXPECT_EQ(mailimap_capability(imap, &capabilities), MAILIMAP_NO_ERROR);
  if (capabilities != nullptr) mailimap_capability_data_free(capabilities);
  EXPECT_TRUE(mailimap_has_authentication(imap, "PLAIN"));
  EXPECT_EQ(mailimap_logout(imap), MAILIMAP_NO_ERROR);
  mailimap_free(imap);
}

void raise_descriptor_limit(rlim_t wanted) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < wanted) {
    limit.rlim_cur = std::min(wanted, limit.rlim_max);
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

bool descriptor_limit_at_least(rlim_t wanted) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur >= wanted;
}

TEST(ImapStream, LibetpanWorksOnAnAdoptedDescriptorAbove1024) {
  raise_descriptor_limit(2048);
  if (!descriptor_limit_at_least(2048)) GTEST_SKIP() << "cannot raise RLIMIT_NOFILE to 2048";
  ScriptedServer server(tiny_imap);
  ASSERT_TRUE(server.ok());
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(server.port());
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(dup2(fd, 1500), 1500);
  ::close(fd);
  mailstream_low* low = UpstreamStream::adopt(1500, 2s);
  ASSERT_NE(low, nullptr);
  EXPECT_EQ(mailstream_low_get_fd(low), 1500);
  talk_imap(low);  // mailimap_logout closes and frees the stream
  EXPECT_EQ(fcntl(1500, F_GETFD), -1) << "descriptor 1500 left open";
}

TEST(ImapStream, ConnectHandsOutDescriptorsAbove1024) {
  raise_descriptor_limit(2048);
  if (!descriptor_limit_at_least(2048)) GTEST_SKIP() << "cannot raise RLIMIT_NOFILE to 2048";
  ScriptedServer server(tiny_imap);
  ASSERT_TRUE(server.ok());
  // Occupy every descriptor below 1100 so that connect's socket lands above.
  std::vector<int> placeholders;
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(null_fd, 0);
  for (;;) {
    int fd = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    placeholders.push_back(fd);
    if (fd >= 1100) break;
  }
  mailstream_low* low = connect_to(server.port());
  for (int fd : placeholders) ::close(fd);
  ::close(null_fd);
  ASSERT_NE(low, nullptr);
  EXPECT_GT(UpstreamStream::of(low)->fd(), 1100);
  talk_imap(low);
}

}  // namespace
}  // namespace popbridge::imap
