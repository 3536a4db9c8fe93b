// One POP3 session per mailbox (RFC 1939 section 8: the maildrop is locked
// while a session holds it). Loop-thread only.
#pragma once

#include <string>
#include <unordered_set>

namespace popbridge {

class MailboxLocks {
 public:
  class Lock;

  // Takes the lock for `key`, or returns an empty Lock if another session holds it.
  Lock acquire(const std::string& key);
  bool held(const std::string& key) const { return keys_.count(key) != 0; }

 private:
  std::unordered_set<std::string> keys_;
};

// Releases its key when destroyed.
class MailboxLocks::Lock {
 public:
  Lock() = default;
  Lock(Lock&& other) noexcept { *this = std::move(other); }
  Lock& operator=(Lock&& other) noexcept;
  ~Lock() { release(); }
  explicit operator bool() const { return owner_ != nullptr; }
  void release();

 private:
  friend class MailboxLocks;
  Lock(MailboxLocks* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
  MailboxLocks* owner_ = nullptr;
  std::string key_;
};

}  // namespace popbridge
