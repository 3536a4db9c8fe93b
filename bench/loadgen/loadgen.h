// popbridge-loadgen: a single-threaded libuv POP3 load generator.
//
// Every connection runs the same script: greeting, USER, PASS, then STAT
// and/or RETRs (pipelined up to a depth), then QUIT. Every RETR body is
// checked byte-exact (length and CRC-32 of the dot-stuffed wire form)
// against an expectation file or, without one, against the first fetch of
// the same message number.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace loadgen {

struct Options {
  std::string mode = "bulk-pipelined";
  std::string host = "127.0.0.1";
  int port = 0;
  std::vector<std::pair<std::string, std::string>> users;  // session i uses users[i % n]
  int sessions = 1;       // sessions to run in total
  int concurrency = 1;    // sessions at once
  int connect_window = 256;  // connections not yet greeted at once
  int retr = 0;           // RETRs per session: 0 none, -1 all (from STAT)
  int depth = 1;          // RETRs in flight per session; 0 = all at once
  bool stat = false;      // send STAT after login
  bool barrier = false;   // no session starts its commands before all are logged in
  bool open_only = false; // connect and read the greeting only, then hold
  double hold = 0;        // open mode: seconds to hold (0: until stdin ends)
  double timeout = 600;   // whole run
  bool hash = true;       // CRC-32 every body (else lengths only)
  std::string expect_file;
};

struct Expectation {
  uint64_t length = 0;
  uint32_t crc = 0;
};

struct Samples {
  std::vector<double> ms;
  void add(uint64_t ns) { ms.push_back(static_cast<double>(ns) / 1e6); }
};

class Runner;

enum class CmdKind { kGreeting, kUser, kPass, kStat, kRetr, kQuit };

struct Pending {
  CmdKind kind;
  int msg = 0;
  uint64_t sent_ns = 0;
  bool first_byte = false;
};

class Connection {
 public:
  Connection(Runner& runner, int id);
  void start();
  void close_now();
  void release_barrier();
  bool done() const { return done_; }
  bool started() const { return started_; }
  bool greeted() const { return greeted_; }
  void fail(const std::string& kind, const std::string& detail);

 private:
  static void on_connect(uv_connect_t* req, int status);
  static void on_alloc(uv_handle_t*, size_t, uv_buf_t* buf);
  static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_closed(uv_handle_t* handle);

  void on_data(const char* data, size_t n);
  size_t process(const char* p, size_t n);
  void on_status(const std::string& line);
  void finish_body();
  void send(const std::string& text);
  void push(CmdKind kind, int msg, std::string& batch);
  void start_commands();
  void fill();
  void finish_session();
  void arrive();

  Runner& r_;
  int id_;
  uv_tcp_t tcp_{};
  uv_connect_t connect_req_{};
  bool started_ = false;
  bool closing_ = false;
  bool done_ = false;
  bool greeted_ = false;
  bool in_body_ = false;
  bool line_start_ = true;
  bool at_barrier_ = false;
  bool arrived_ = false;
  bool quit_sent_ = false;
  std::string carry_;
  std::deque<Pending> pending_;
  std::vector<int> todo_;  // message numbers still to RETR
  size_t next_todo_ = 0;
  uint64_t body_length_ = 0;
  uint32_t body_crc_ = 0;
  uint64_t user_sent_ns_ = 0;
  uint64_t retr_first_ns_ = 0;  // this session's RETR phase
  uint64_t retr_last_ns_ = 0;
};

struct Result {
  std::map<std::string, uint64_t> errors;
  std::vector<std::string> error_samples;
  uint64_t body_bytes = 0;
  uint64_t rx_bytes = 0;
  uint64_t messages = 0;
  uint64_t verified = 0;
  uint64_t logins = 0;
  uint64_t sessions_done = 0;
  uint64_t greeted = 0;
  uint64_t first_retr_ns = 0;  // earliest RETR sent
  uint64_t last_retr_ns = 0;   // latest RETR finished
  std::vector<std::pair<uint64_t, uint64_t>> retr_phases;  // per session: first RETR sent, last done
  Samples retr, login, other, ttfb, ttfb_first;
};

class Runner {
 public:
  explicit Runner(Options options);
  int run();  // returns the process exit status

  uv_loop_t* loop() { return &loop_; }
  const Options& options() const { return opt_; }
  Result& result() { return res_; }
  const sockaddr* address() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  static uint64_t now() { return uv_hrtime(); }

  void on_greeted(Connection* c);
  void on_logged_in(Connection* c);  // or failed to: arrives at the barrier either way
  void on_session_done(Connection* c);
  void check_body(int msg, uint64_t length, uint32_t crc);
  void error(const std::string& kind, const std::string& detail);

 private:
  void launch();
  void maybe_finish();
  void all_open();
  void finish();
  void print_result();
  void load_expectations();
  static void on_timeout(uv_timer_t* t);
  static void on_hold(uv_timer_t* t);
  static void on_stdin(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

  Options opt_;
  uv_loop_t loop_{};
  uv_timer_t timeout_timer_{};
  uv_timer_t hold_timer_{};
  uv_pipe_t stdin_pipe_{};
  bool stdin_open_ = false;
  sockaddr_storage addr_{};
  std::vector<std::unique_ptr<Connection>> conns_;
  int started_ = 0;
  int active_ = 0;      // started and not done
  int ungreeted_ = 0;   // started, greeting not yet read, not done
  int arrived_ = 0;     // at the barrier
  bool released_ = false;
  bool finished_ = false;
  bool ready_printed_ = false;
  std::vector<Connection*> waiting_;
  std::map<int, Expectation> expect_;
  std::map<int, Expectation> learned_;
  uint64_t t0_ = 0, t_end_ = 0, t_ready_ = 0;
  Result res_;
};

}  // namespace loadgen
