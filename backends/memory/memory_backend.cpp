#include "backends/memory/memory_backend.h"

#include <algorithm>

namespace popbridge {

class MemoryBackend::MemoryMailbox final : public Mailbox {
 public:
  MemoryMailbox(MemoryBackend& backend, std::string user)
      : backend_(backend), user_(std::move(user)), key_("memory\n" + user_ + "\nINBOX") {
    ++backend_.open_;
  }
  ~MemoryMailbox() override {
    *alive_ = false;
    --backend_.open_;
  }

  const std::string& key() const override { return key_; }
  const std::string& upstream() const override {
    static const std::string name = "memory";
    return name;
  }

  void fetch(uint32_t uid, uint64_t offset, uint64_t length, ChunkHandler done) override {
    backend_.fetch_lengths_.push_back(length);
    backend_.post(guard([this, uid, offset, length, done = std::move(done)] {
      Status status;
      if (backend_.take_failure(status)) return done(status, {});
      const Message* message = find(uid);
      if (message == nullptr) return done({UpstreamError::kMessageGone, "no such UID"}, {});
      std::string chunk;
      if (offset < message->data.size()) chunk = message->data.substr(offset, length);
      done(status, std::move(chunk));
    }));
  }

  // One request and one queued job for the whole batch, as an upstream
  // that fetches them in one command would: a failure of the call
  // (fail_next, fail_all) fails every chunk; a missing UID fails its own.
  void fetch_first(std::vector<uint32_t> uids, uint64_t length, BatchHandler done) override {
    backend_.batches_.push_back({uids, length});
    backend_.post(guard([this, uids = std::move(uids), length, done = std::move(done)] {
      ++backend_.batches_answered_;
      std::vector<FetchedChunk> chunks;
      Status failure;
      const bool failed = backend_.take_failure(failure);
      for (uint32_t uid : uids) {
        FetchedChunk chunk{uid, {}, {}};
        if (failed) {
          chunk.status = failure;
        } else if (const Message* message = find(uid); message == nullptr) {
          chunk.status = {UpstreamError::kMessageGone, "no such UID"};
        } else {
          chunk.data = message->data.substr(0, length);
        }
        chunks.push_back(std::move(chunk));
      }
      done(std::move(chunks));
    }));
  }

  void commit(CommitRequest request, CommitHandler done) override {
    backend_.post(guard([this, request = std::move(request), done = std::move(done)] {
      const std::vector<uint32_t>& uids = request.deleted;
      Status status;
      if (backend_.take_failure(status)) return done(status);
      Account* account = backend_.account(user_);
      for (Message& message : account->messages) {
        if (std::find(uids.begin(), uids.end(), message.uid) != uids.end()) {
          message.keywords.insert(backend_.hide_keyword_);
        }
        if (std::find(request.retrieved.begin(), request.retrieved.end(), message.uid) !=
            request.retrieved.end()) {
          message.retrieved = true;  // what a mark_seen_on_retr upstream would see
        }
      }
      done(status);
    }));
  }

 private:
  // Wraps a job so that it does nothing once this mailbox is gone.
  std::function<void()> guard(std::function<void()> job) {
    return [alive = std::weak_ptr<bool>(alive_), job = std::move(job)] {
      if (auto flag = alive.lock(); flag && *flag) job();
    };
  }
  const Message* find(uint32_t uid) {
    Account* account = backend_.account(user_);
    for (const Message& message : account->messages)
      if (message.uid == uid) return &message;
    return nullptr;
  }

  MemoryBackend& backend_;
  std::string user_;
  std::string key_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

MemoryBackend::MemoryBackend(std::string hide_keyword) : hide_keyword_(std::move(hide_keyword)) {}

MemoryBackend::~MemoryBackend() = default;

MemoryBackend::Account& MemoryBackend::add_account(const std::string& user,
                                                    const std::string& password) {
  Account& account = accounts_[user];
  account.password = password;
  return account;
}

MemoryBackend::Account* MemoryBackend::account(const std::string& user) {
  auto it = accounts_.find(user);
  return it == accounts_.end() ? nullptr : &it->second;
}

bool MemoryBackend::take_failure(Status& status) {
  if (fail_all_ != UpstreamError::kNone) {
    status = {fail_all_, "injected failure (all calls)"};
    return true;
  }
  if (fail_next_ == UpstreamError::kNone) return false;
  status = {fail_next_, "injected failure"};
  fail_next_ = UpstreamError::kNone;
  return true;
}

size_t MemoryBackend::run_pending() {
  size_t ran = 0;
  while (run_one()) ++ran;
  return ran;
}

bool MemoryBackend::run_one() {
  if (queue_.empty()) return false;
  auto job = std::move(queue_.front());
  queue_.pop_front();
  job();
  return true;
}

void MemoryBackend::login(const Credentials& credentials, LoginHandler done) {
  post([this, credentials, done = std::move(done)] {
    Status status;
    if (take_failure(status)) return done(status, nullptr, {});
    Account* found = account(credentials.user);
    if (found == nullptr || found->password != credentials.password) {
      return done({UpstreamError::kAuthFailed, "LOGIN refused"}, nullptr, {});
    }
    Snapshot snapshot;
    snapshot.uidvalidity = found->uidvalidity;
    for (const Message& message : found->messages) {
      if (message.keywords.count(hide_keyword_)) continue;
      snapshot.messages.push_back({message.uid, message.data.size(), message.seen});
    }
    done(status, std::make_unique<MemoryMailbox>(*this, credentials.user), std::move(snapshot));
  });
}

}  // namespace popbridge
