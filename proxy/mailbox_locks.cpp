#include "proxy/mailbox_locks.h"

namespace popbridge {

MailboxLocks::Lock MailboxLocks::acquire(const std::string& key) {
  if (!keys_.insert(key).second) return {};
  return Lock(this, key);
}

MailboxLocks::Lock& MailboxLocks::Lock::operator=(Lock&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = other.owner_;
    key_ = std::move(other.key_);
    other.owner_ = nullptr;
  }
  return *this;
}

void MailboxLocks::Lock::release() {
  if (owner_ != nullptr) owner_->keys_.erase(key_);
  owner_ = nullptr;
}

}  // namespace popbridge
