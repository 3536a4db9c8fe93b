// The interface the POP3 session uses to reach a mailbox. Nothing here
// knows POP3. Every call returns at once; its handler runs later on the
// event loop thread. A handler never runs after its Mailbox is destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/secret.h"

namespace popbridge {

// What went wrong upstream, in the terms a POP3 reply needs.
enum class UpstreamError {
  kNone,
  kAuthFailed,    // credentials refused: -ERR [AUTH]
  kUnavailable,   // cannot connect, connection lost, timed out: -ERR [SYS/TEMP]
  kNoMailbox,     // the folder does not exist or cannot be opened: -ERR [SYS/PERM]
  kMessageGone,   // the message was expunged by another client
  kRefused,       // the server answered NO/BAD to a command: -ERR [SYS/PERM]
};

struct Status {
  UpstreamError error = UpstreamError::kNone;
  std::string detail;  // for logs; never contains credentials
  bool ok() const { return error == UpstreamError::kNone; }
};

struct Credentials {
  std::string user;
  SecretString password;  // zeroed wherever a copy of it ends
};

// Whether `text` holds a control character (0x00-0x1F or 0x7F). A login
// name with one is refused before it reaches any backend: CR or LF would
// end an upstream command early and let the rest run as a command of its
// own, and no real mailbox or user name has one.
inline bool has_control_character(std::string_view text) {
  for (char c : text) {
    const auto octet = static_cast<unsigned char>(c);
    if (octet < 0x20 || octet == 0x7f) return true;
  }
  return false;
}

// One message as the session sees it at login.
struct MessageEntry {
  uint32_t uid = 0;
  uint64_t size = 0;  // RFC822.SIZE: octets with CRLF line ends
  bool seen = false;  // \Seen at login (for LAST)
};

// The mailbox at login: visible messages in UID order, numbered 1..n by POP3.
struct Snapshot {
  uint32_t uidvalidity = 0;
  std::vector<MessageEntry> messages;
};

// One piece of one message, as fetched.
struct FetchedChunk {
  uint32_t uid = 0;
  Status status;
  std::string data;
};

// A logged-in upstream session on one folder. Destroying it ends the
// upstream session without committing anything.
class Mailbox {
 public:
  virtual ~Mailbox() = default;

  // Identifies the mailbox for locking: the same user and folder on the same
  // upstream give the same key.
  virtual const std::string& key() const = 0;

  // The configured name of the upstream serving it, for logs.
  virtual const std::string& upstream() const = 0;

  // Reads up to `length` octets of message `uid` starting at `offset`.
  // `data` is shorter than `length` (possibly empty) when the message ends.
  using ChunkHandler = std::function<void(Status status, std::string data)>;
  virtual void fetch(uint32_t uid, uint64_t offset, uint64_t length, ChunkHandler done) = 0;

  // The first `length` octets of each of `uids` (not empty): one chunk per
  // UID, in the order given, each as fetch() would have answered. A backend that can
  // asks for all of them at once (one round trip instead of one each);
  // this default asks for each in turn.
  using BatchHandler = std::function<void(std::vector<FetchedChunk> chunks)>;
  virtual void fetch_first(std::vector<uint32_t> uids, uint64_t length, BatchHandler done) {
    struct Pending {
      std::vector<FetchedChunk> chunks;
      size_t left;
      BatchHandler done;
    };
    auto pending = std::make_shared<Pending>(Pending{{}, uids.size(), std::move(done)});
    if (uids.empty()) return pending->done({});
    for (uint32_t uid : uids) pending->chunks.push_back({uid, {}, {}});
    for (size_t i = 0; i < uids.size(); ++i) {
      fetch(uids[i], 0, length, [pending, i](Status status, std::string data) {
        pending->chunks[i].status = std::move(status);
        pending->chunks[i].data = std::move(data);
        if (--pending->left == 0) pending->done(std::move(pending->chunks));
      });
    }
  }

  // What QUIT hands over: the delete policy applies to `deleted`;
  // `retrieved` (sent whole by RETR) get \Seen where the config asks for it.
  struct CommitRequest {
    std::vector<uint32_t> deleted;
    std::vector<uint32_t> retrieved;
  };
  using CommitHandler = std::function<void(Status status)>;
  virtual void commit(CommitRequest request, CommitHandler done) = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;

  using LoginHandler =
      std::function<void(Status status, std::unique_ptr<Mailbox> mailbox, Snapshot snapshot)>;
  virtual void login(const Credentials& credentials, LoginHandler done) = 0;

  // Stops the backend's threads; no handler runs afterwards. Called on the
  // loop thread before the loop ends.
  virtual void shutdown() {}
};

}  // namespace popbridge
