// One POP3 client connection: the script and the streaming response parser.
#include <zlib.h>

#include <cstring>

#include "loadgen.h"

namespace loadgen {
namespace {

// All reads are processed before the next one, so one buffer serves the
// whole loop and 10,000 idle connections hold no read buffers.
char g_read_buffer[256 * 1024];

struct WriteReq {
  uv_write_t req;
  std::string data;
};

std::string printable(const std::string& line) {
  std::string out = line.substr(0, 200);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  return out;
}

const char* kind_name(CmdKind k) {
  switch (k) {
    case CmdKind::kGreeting: return "greeting";
    case CmdKind::kUser: return "USER";
    case CmdKind::kPass: return "PASS";
    case CmdKind::kStat: return "STAT";
    case CmdKind::kRetr: return "RETR";
    case CmdKind::kQuit: return "QUIT";
  }
  return "?";
}

}  // namespace

Connection::Connection(Runner& runner, int id) : r_(runner), id_(id) {}

void Connection::start() {
  started_ = true;
  uv_tcp_init(r_.loop(), &tcp_);
  tcp_.data = this;
  connect_req_.data = this;
  pending_.push_back({CmdKind::kGreeting, 0, Runner::now(), false});
  int rc = uv_tcp_connect(&connect_req_, &tcp_, r_.address(), &Connection::on_connect);
  if (rc != 0) {
    fail("connect", uv_strerror(rc));
  }
}

void Connection::on_connect(uv_connect_t* req, int status) {
  auto* self = static_cast<Connection*>(req->data);
  if (self->closing_) return;
  if (status != 0) return self->fail("connect", uv_strerror(status));
  uv_tcp_nodelay(&self->tcp_, 1);
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&self->tcp_), &Connection::on_alloc,
                         &Connection::on_read);
  if (rc != 0) self->fail("read", uv_strerror(rc));
}

void Connection::on_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
  *buf = uv_buf_init(g_read_buffer, sizeof g_read_buffer);
}

void Connection::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(stream->data);
  if (nread == 0 || self->closing_) return;
  if (nread < 0) {
    if (nread == UV_EOF) {
      self->fail("closed", "server closed the connection during " +
                               std::string(self->pending_.empty()
                                               ? "an idle period"
                                               : kind_name(self->pending_.front().kind)));
    } else {
      self->fail("read", uv_strerror(static_cast<int>(nread)));
    }
    return;
  }
  self->r_.result().rx_bytes += static_cast<uint64_t>(nread);
  self->on_data(buf->base, static_cast<size_t>(nread));
}

void Connection::on_data(const char* data, size_t n) {
  if (carry_.empty()) {
    size_t used = process(data, n);
    if (used < n && !closing_) carry_.assign(data + used, n - used);
  } else {
    carry_.append(data, n);
    size_t used = process(carry_.data(), carry_.size());
    if (!closing_) carry_.erase(0, used);
  }
}

// Consumes complete status lines and body bytes; returns how much it used.
// What is left (a partial status line, or one or two bytes at the start of
// a body line that may be the terminating ".\r\n") waits for more data.
size_t Connection::process(const char* p, size_t n) {
  size_t pos = 0;
  while (pos < n && !closing_) {
    if (!in_body_) {
      if (pending_.empty()) {
        fail("protocol", "unexpected data from server: " + printable(std::string(p + pos, n - pos)));
        return n;
      }
      Pending& front = pending_.front();
      if (!front.first_byte) {
        front.first_byte = true;
        if (front.kind == CmdKind::kRetr) {
          const uint64_t dt = Runner::now() - front.sent_ns;
          r_.result().ttfb.add(dt);
          if (front.msg == todo_.front()) r_.result().ttfb_first.add(dt);
        }
      }
      const char* nl = static_cast<const char*>(memchr(p + pos, '\n', n - pos));
      if (nl == nullptr) {
        if (n - pos > 8192) {
          fail("protocol", "status line too long");
          return n;
        }
        return pos;
      }
      std::string line(p + pos, nl);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      pos = static_cast<size_t>(nl - p) + 1;
      on_status(line);
      continue;
    }
    // In a multi-line body: jump from line start to line start.
    const size_t span = pos;
    bool ended = false;
    while (pos < n) {
      if (line_start_) {
        if (p[pos] == '.') {
          const size_t avail = n - pos;
          if (avail < 2 || (p[pos + 1] == '\r' && avail < 3)) break;  // need more
          if (p[pos + 1] == '\r' && p[pos + 2] == '\n') {
            ended = true;
            break;
          }
        }
        line_start_ = false;
      }
      const char* nl = static_cast<const char*>(memchr(p + pos, '\n', n - pos));
      if (nl == nullptr) {
        pos = n;
        break;
      }
      pos = static_cast<size_t>(nl - p) + 1;
      line_start_ = true;
    }
    const size_t length = pos - span;
    body_length_ += length;
    if (r_.options().hash && length != 0)
      body_crc_ = static_cast<uint32_t>(crc32(body_crc_, reinterpret_cast<const Bytef*>(p + span),
                                              static_cast<uInt>(length)));
    if (!ended) return pos;  // everything used, or 1-2 bytes kept for the next read
    pos += 3;
    finish_body();
  }
  return pos;
}

void Connection::finish_body() {
  in_body_ = false;
  Pending cmd = pending_.front();
  pending_.pop_front();
  const uint64_t t = Runner::now();
  Result& res = r_.result();
  res.retr.add(t - cmd.sent_ns);
  res.body_bytes += body_length_;
  res.messages += 1;
  if (t > res.last_retr_ns) res.last_retr_ns = t;
  retr_last_ns_ = t;
  r_.check_body(cmd.msg, body_length_, body_crc_);
  fill();
}

void Connection::on_status(const std::string& line) {
  const bool ok = line.compare(0, 3, "+OK") == 0;
  Pending cmd = pending_.front();
  const uint64_t t = Runner::now();
  Result& res = r_.result();
  if (!ok && line.compare(0, 4, "-ERR") != 0) {
    return fail("protocol", std::string("bad status line after ") + kind_name(cmd.kind) + ": " +
                                printable(line));
  }
  if (cmd.kind == CmdKind::kRetr) {
    if (!ok) {
      pending_.pop_front();
      r_.error("retr-err", printable(line));
      return fill();
    }
    in_body_ = true;
    line_start_ = true;
    body_length_ = 0;
    body_crc_ = 0;
    return;
  }
  pending_.pop_front();
  switch (cmd.kind) {
    case CmdKind::kGreeting:
      if (!ok) return fail("greeting", printable(line));
      greeted_ = true;
      r_.on_greeted(this);
      if (r_.options().open_only) return;
      user_sent_ns_ = Runner::now();
      {
        std::string batch;
        push(CmdKind::kUser, 0, batch);
        send(batch);
      }
      return;
    case CmdKind::kUser:
      res.other.add(t - cmd.sent_ns);
      if (!ok) return fail("login", "USER: " + printable(line));
      {
        std::string batch;
        push(CmdKind::kPass, 0, batch);
        send(batch);
      }
      return;
    case CmdKind::kPass:
      if (!ok) return fail("login", "PASS: " + printable(line));
      res.login.add(t - user_sent_ns_);
      res.logins += 1;
      if (r_.options().barrier) {
        at_barrier_ = true;
        arrive();  // may release at once, which calls start_commands
        return;
      }
      arrive();
      return start_commands();
    case CmdKind::kStat:
      res.other.add(t - cmd.sent_ns);
      if (!ok) {
        r_.error("stat-err", printable(line));
      } else if (r_.options().retr < 0) {
        const int count = atoi(line.c_str() + 3);
        for (int m = 1; m <= count; ++m) todo_.push_back(m);
      }
      return fill();
    case CmdKind::kQuit:
      res.other.add(t - cmd.sent_ns);
      if (!ok) r_.error("quit-err", printable(line));
      return finish_session();
    case CmdKind::kRetr:
      break;
  }
}

void Connection::arrive() {
  if (arrived_) return;
  arrived_ = true;
  r_.on_logged_in(this);
}

void Connection::release_barrier() {
  if (!at_barrier_ || closing_) return;
  at_barrier_ = false;
  start_commands();
}

void Connection::start_commands() {
  const Options& o = r_.options();
  std::string batch;
  if (o.stat || o.retr < 0) {
    push(CmdKind::kStat, 0, batch);
    send(batch);
  }
  for (int m = 1; m <= o.retr; ++m) todo_.push_back(m);
  if (pending_.empty()) fill();
}

void Connection::push(CmdKind kind, int msg, std::string& batch) {
  const Options& o = r_.options();
  const auto& user = o.users[static_cast<size_t>(id_) % o.users.size()];
  switch (kind) {
    case CmdKind::kUser: batch += "USER " + user.first + "\r\n"; break;
    case CmdKind::kPass: batch += "PASS " + user.second + "\r\n"; break;
    case CmdKind::kStat: batch += "STAT\r\n"; break;
    case CmdKind::kRetr: batch += "RETR " + std::to_string(msg) + "\r\n"; break;
    case CmdKind::kQuit: batch += "QUIT\r\n"; break;
    case CmdKind::kGreeting: break;
  }
  const uint64_t t = Runner::now();
  if (kind == CmdKind::kRetr) {
    Result& res = r_.result();
    if (res.first_retr_ns == 0 || t < res.first_retr_ns) res.first_retr_ns = t;
    if (retr_first_ns_ == 0) retr_first_ns_ = t;
  }
  pending_.push_back({kind, msg, t, false});
}

// Sends RETRs while fewer than `depth` are in flight; QUIT after the last.
void Connection::fill() {
  if (closing_) return;
  const int depth = r_.options().depth;
  std::string batch;
  while (next_todo_ < todo_.size() &&
         (depth <= 0 || pending_.size() < static_cast<size_t>(depth))) {
    push(CmdKind::kRetr, todo_[next_todo_++], batch);
  }
  if (next_todo_ == todo_.size() && pending_.empty() && batch.empty() && !quit_sent_) {
    quit_sent_ = true;
    push(CmdKind::kQuit, 0, batch);
  }
  if (!batch.empty()) send(batch);
}

void Connection::send(const std::string& text) {
  if (closing_ || text.empty()) return;
  uv_buf_t buf = uv_buf_init(const_cast<char*>(text.data()), static_cast<unsigned>(text.size()));
  int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1);
  if (n == static_cast<int>(text.size())) return;
  if (n < 0 && n != UV_EAGAIN) return fail("write", uv_strerror(n));
  if (n < 0) n = 0;
  auto* w = new WriteReq{{}, text.substr(static_cast<size_t>(n))};
  w->req.data = this;
  uv_buf_t rest = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &rest, 1, &Connection::on_write);
  if (rc != 0) {
    delete w;
    fail("write", uv_strerror(rc));
  }
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* self = static_cast<Connection*>(req->data);
  delete w;
  if (status != 0 && status != UV_ECANCELED && !self->closing_)
    self->fail("write", uv_strerror(status));
}

void Connection::finish_session() {
  if (done_) return;
  done_ = true;
  if (retr_first_ns_ != 0 && retr_last_ns_ > retr_first_ns_)
    r_.result().retr_phases.emplace_back(retr_first_ns_, retr_last_ns_);
  r_.result().sessions_done += 1;
  close_now();
  r_.on_session_done(this);
}

void Connection::fail(const std::string& kind, const std::string& detail) {
  if (done_) return;
  done_ = true;
  r_.error(kind, "session " + std::to_string(id_) + ": " + detail);
  close_now();
  arrive();
  r_.on_session_done(this);
}

void Connection::close_now() {
  if (closing_) return;
  closing_ = true;
  if (!started_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::on_closed);
}

void Connection::on_closed(uv_handle_t*) {}

}  // namespace loadgen
