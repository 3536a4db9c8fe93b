// Reads the answer to our own `UID FETCH <set> BODY.PEEK[]<...>` without
// libetpan's parser: each BODY[] literal goes from the socket (or
// libetpan's read buffer) straight into the string that the POP3 side
// sends, instead of being copied through libetpan's response buffer, its
// literal and a std::string of ours.
//
// Everything else the server may say meanwhile (FETCH responses with flags
// only, EXISTS, EXPUNGE, OK/NO notices, unknown responses with literals) is
// read and skipped. Pure parsing over a ResponseSource, so that tests and
// the fuzzer can feed it bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

typedef struct _mailstream mailstream;

namespace popbridge::imap {

// Where response bytes come from.
class ResponseSource {
 public:
  virtual ~ResponseSource() = default;
  // The bytes available now, reading more when none are: empty means the
  // connection failed or ended.
  virtual std::string_view peek() = 0;
  // Drops the first `count` bytes of what peek() returned.
  virtual void consume(size_t count) = 0;
  // Reads exactly `count` bytes into `out` (buffered ones first). False when
  // the connection fails or ends first.
  virtual bool read(char* out, size_t count) = 0;
};

// A libetpan mailstream: its read buffer first, then its low driver. Once
// the source is destroyed, libetpan's own parser finds the stream exactly
// where we left it; while it lives, nothing else may read the stream.
class MailstreamSource final : public ResponseSource {
 public:
  explicit MailstreamSource(mailstream* stream) : stream_(stream) {}
  ~MailstreamSource() override;
  MailstreamSource(const MailstreamSource&) = delete;
  MailstreamSource& operator=(const MailstreamSource&) = delete;
  std::string_view peek() override;
  void consume(size_t count) override;
  bool read(char* out, size_t count) override;

 private:
  mailstream* stream_;
  size_t offset_ = 0;  // octets of libetpan's read buffer already taken
};

// Bytes in memory (tests, fuzzing).
class StringSource final : public ResponseSource {
 public:
  explicit StringSource(std::string_view data) : data_(data) {}
  std::string_view peek() override { return data_; }
  void consume(size_t count) override { data_.remove_prefix(count); }
  bool read(char* out, size_t count) override;

 private:
  std::string_view data_;
};

struct FetchedBody {
  uint32_t uid = 0;
  bool nil = false;  // BODY[] NIL: Dovecot's answer for a message expunged meanwhile
  std::string data;
};

struct FetchAnswer {
  enum class Result { kOk, kNo, kBad };
  Result result = Result::kBad;
  std::string code;  // the tagged response's code, upper-case ("EXPUNGEISSUED"), or empty
  std::string text;  // the tagged line without the tag, for logs
  std::vector<FetchedBody> bodies;  // in the order they came
};

struct FetchLimits {
  uint64_t max_body = 0;        // a larger BODY[] literal is a protocol error
  size_t max_line = 64 * 1024;  // octets of one line between literals
  // The UIDs asked for: a body for any other, or a second one for the same,
  // is read and dropped, so a server cannot make us hold more than we asked
  // for. nullptr keeps every body (tests).
  const std::vector<uint32_t>* wanted = nullptr;
};

// Reads responses until the one tagged `tag`. False when the stream failed
// or the server broke the protocol (*error says which): the connection is
// then out of step and must not be used again.
bool read_fetch_answer(ResponseSource& source, std::string_view tag, const FetchLimits& limits,
                       FetchAnswer* answer, std::string* error);

}  // namespace popbridge::imap
