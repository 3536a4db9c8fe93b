// An in-memory Backend for unit tests: users, folders and messages live in
// this object. Handlers never run inside the call that takes them: they wait
// in a queue until run_pending(), so tests decide exactly when the
// "upstream" answers.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backends/backend.h"

namespace popbridge {

class MemoryBackend final : public Backend {
 public:
  struct Message {
    uint32_t uid = 0;
    std::string data;  // the whole message, as the upstream would send it
    bool seen = false;
    std::set<std::string> keywords;
    bool retrieved = false;  // reported as retrieved by a committed session
  };
  struct Account {
    std::string password;
    uint32_t uidvalidity = 1;
    std::vector<Message> messages;
  };

  explicit MemoryBackend(std::string hide_keyword = "$POP3Deleted");
  ~MemoryBackend() override;

  Account& add_account(const std::string& user, const std::string& password);
  Account* account(const std::string& user);

  // The next upstream call fails with this error (once). A fetch_first()
  // batch is one call: all of its chunks fail.
  void fail_next(UpstreamError error) { fail_next_ = error; }
  // Every upstream call from now on fails with this error, like a lost
  // upstream connection; kNone ends that.
  void fail_all(UpstreamError error) { fail_all_ = error; }

  // Runs the queued handlers, including any queued while running; returns how many ran.
  size_t run_pending();
  // Runs the oldest queued handler only; false if there was none.
  bool run_one();
  size_t pending() const { return queue_.size(); }
  size_t open_mailboxes() const { return open_; }
  // The `length` of every fetch asked for, in order (fetch() only).
  const std::vector<uint64_t>& fetch_lengths() const { return fetch_lengths_; }
  // Every fetch_first() asked for, in order: one upstream request each,
  // answered by one queued job (all of its chunks at once).
  struct Batch {
    std::vector<uint32_t> uids;
    uint64_t length = 0;
  };
  const std::vector<Batch>& batches() const { return batches_; }
  // How many of them have been answered (their handler ran); the others
  // are still in flight, or were dropped with their mailbox.
  size_t batches_answered() const { return batches_answered_; }

  void login(const Credentials& credentials, LoginHandler done) override;

 private:
  class MemoryMailbox;
  void post(std::function<void()> job) { queue_.push_back(std::move(job)); }
  bool take_failure(Status& status);

  std::string hide_keyword_;
  std::map<std::string, Account> accounts_;
  std::deque<std::function<void()>> queue_;
  UpstreamError fail_next_ = UpstreamError::kNone;
  UpstreamError fail_all_ = UpstreamError::kNone;
  size_t open_ = 0;
  std::vector<uint64_t> fetch_lengths_;
  std::vector<Batch> batches_;
  size_t batches_answered_ = 0;
};

}  // namespace popbridge
