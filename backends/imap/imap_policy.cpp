// ImapSession's mailbox semantics: SELECT and the snapshot (visible,
// max_messages), and what QUIT does (mark_seen_on_retr, on_delete,
// retention). See config/popbridge.toml for the options.
//
// The rules every commit step follows:
//  - Only UID EXPUNGE of the UIDs being removed, never a plain EXPUNGE (it
//    would also remove what other IMAP clients flagged \Deleted). Without
//    UIDPLUS such a session is refused at login (check_extensions()).
//  - Steps are ordered so that a failure halfway leaves a message visible,
//    never lost: COPY before \Deleted, \Deleted before UID EXPUNGE, and a
//    \Deleted we set is taken back when the UID EXPUNGE is refused.
//  - A UID that another client expunged meanwhile does not fail the commit:
//    when a command on a set is refused, the UIDs still there are looked up
//    (NOOP, UID SEARCH UID <set>) and the command runs again on those.
//    (Dovecot ignores vanished UIDs in UID STORE and UID EXPUNGE but refuses
//    the whole UID COPY or UID MOVE with NO [EXPUNGEISSUED], copying or
//    moving nothing.)
//  - The UIDs are the snapshot's: if the server tells (in any answer
//    libetpan reads) that the folder's UIDVALIDITY changed, they may name
//    other messages now, so nothing more is stored, moved, copied or
//    expunged and the commit fails (kUnavailable). There is no extra round
//    trip to ask: what a server announced before or during the commit is
//    what is checked, before each step.
#include <strings.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include <libetpan/libetpan.h>

#include "backends/imap/fetch_results.h"
#include "backends/imap/imap_session.h"
#include "backends/imap/router.h"
#include "backends/imap/uid_set.h"
#include "backends/imap/upstream_stream.h"
#include "common/log.h"

namespace popbridge::imap {
namespace {

// Keeps each command line far below servers' line limits (Dovecot: 64 KB)
// even when thousands of scattered UIDs do not compact into ranges.
constexpr size_t kMaxRangesPerCommand = 1000;
// How often one chunk is tried again after UIDs vanished from under it.
constexpr int kMaxVanishedRetries = 3;

const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

uint64_t count_uids(const std::vector<UidRange>& ranges) {
  uint64_t count = 0;
  for (const auto& range : ranges) count += uint64_t{range.last} - range.first + 1;
  return count;
}

bool in_ranges(const std::vector<UidRange>& ranges, uint32_t uid) {
  auto it = std::lower_bound(ranges.begin(), ranges.end(), uid,
                             [](const UidRange& range, uint32_t value) { return range.last < value; });
  return it != ranges.end() && it->first <= uid;
}

std::vector<uint32_t> without(std::vector<uint32_t> uids, const std::vector<uint32_t>& remove) {
  const std::vector<UidRange> ranges = compact_uids(remove);
  uids.erase(std::remove_if(uids.begin(), uids.end(),
                            [&](uint32_t uid) { return in_ranges(ranges, uid); }),
             uids.end());
  return uids;
}

std::string join_flags(const std::vector<std::string>& flags) {
  std::string text;
  for (const auto& flag : flags) text += (text.empty() ? "" : " ") + flag;
  return text;
}

mailimap_flag* make_flag(const std::string& name) {
  if (strcasecmp(name.c_str(), "\\Seen") == 0) return mailimap_flag_new_seen();
  if (strcasecmp(name.c_str(), "\\Deleted") == 0) return mailimap_flag_new_deleted();
  char* copy = strdup(name.c_str());
  if (copy == nullptr) return nullptr;
  mailimap_flag* flag = mailimap_flag_new_flag_keyword(copy);
  if (flag == nullptr) free(copy);
  return flag;
}

mailimap_flag_list* make_flag_list(const std::vector<std::string>& flags) {
  mailimap_flag_list* list = mailimap_flag_list_new_empty();
  if (list == nullptr) return nullptr;
  for (const auto& name : flags) {
    mailimap_flag* flag = make_flag(name);
    if (flag == nullptr || mailimap_flag_list_add(list, flag) != MAILIMAP_NO_ERROR) {
      if (flag != nullptr) mailimap_flag_free(flag);
      mailimap_flag_list_free(list);
      return nullptr;
    }
  }
  return list;
}

// A search key without arguments (UNSEEN, DELETED, ...).
mailimap_search_key* simple_key(int type) {
  return mailimap_search_key_new(type, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 nullptr, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                 0, nullptr, nullptr, nullptr);
}

// Adds `key` to the list `keys` (taking it); false (and `key` freed) on failure.
bool add_key(mailimap_search_key* keys, mailimap_search_key* key) {
  if (key == nullptr) return false;
  if (mailimap_search_key_multiple_add(keys, key) != MAILIMAP_NO_ERROR) {
    mailimap_search_key_free(key);
    return false;
  }
  return true;
}

// KEYWORD <kw>, or NOT KEYWORD <kw>: libetpan sends UNKEYWORD's argument as
// a quoted string, which RFC 3501's grammar (flag-keyword, an atom) does
// not allow; KEYWORD's goes as an atom.
mailimap_search_key* keyword_key(const std::string& keyword, bool with) {
  char* copy = strdup(keyword.c_str());
  if (copy == nullptr) return nullptr;
  mailimap_search_key* key = mailimap_search_key_new_keyword(copy);
  if (key == nullptr) {
    free(copy);
    return nullptr;
  }
  if (with) return key;
  mailimap_search_key* negated = mailimap_search_key_new_not(key);
  if (negated == nullptr) mailimap_search_key_free(key);
  return negated;
}

mailimap_search_key* uid_key(const std::vector<UidRange>& ranges) {
  mailimap_set* set = make_imap_set(ranges, 0, ranges.size());
  if (set == nullptr) return nullptr;
  mailimap_search_key* key = mailimap_search_key_new_uid(set);
  if (key == nullptr) mailimap_set_free(set);
  return key;
}

// OK while the selected folder's UIDVALIDITY, as libetpan last recorded
// it, is still `snapshot` (the one at login; 0: unknown, nothing to compare).
// Otherwise logs a warning ending with `consequence` and fails with
// kUnavailable (QUIT: -ERR [SYS/TEMP]).
Status same_uidvalidity(const mailimap* imap, uint32_t snapshot, const std::string& name,
                        const std::string& folder, const std::string& consequence) {
  if (snapshot == 0) return {};
  const mailimap_selection_info* selection = imap != nullptr ? imap->imap_selection_info : nullptr;
  if (selection != nullptr && selection->sel_uidvalidity == snapshot) return {};
  const std::string detail =
      (selection == nullptr
           ? folder + " is no longer selected (UIDVALIDITY " + std::to_string(snapshot) + " at login)"
           : "UIDVALIDITY of " + folder + " changed from " + std::to_string(snapshot) +
                 " (at login) to " + std::to_string(selection->sel_uidvalidity)) +
      ": the session's UIDs may name other messages now; " + consequence;
  log::warn(name, " ", detail);
  return {UpstreamError::kUnavailable, detail};
}

// Splits `uids` into commands of at most kMaxRangesPerCommand ranges.
std::vector<std::vector<UidRange>> chunks_of(const std::vector<uint32_t>& uids) {
  const std::vector<UidRange> ranges = compact_uids(uids);
  std::vector<std::vector<UidRange>> chunks;
  for (size_t begin = 0; begin < ranges.size(); begin += kMaxRangesPerCommand) {
    const size_t end = std::min(ranges.size(), begin + kMaxRangesPerCommand);
    chunks.emplace_back(ranges.begin() + begin, ranges.begin() + end);
  }
  return chunks;
}

}  // namespace

template <typename Op>
Status ImapSession::on_existing(const std::vector<uint32_t>& uids, const std::string& what, Op op) {
  for (std::vector<UidRange> chunk : chunks_of(uids)) {
    for (int attempt = 0;; ++attempt) {
      if (broken_ || imap_ == nullptr) return {UpstreamError::kUnavailable, what + ": not connected"};
      Status status = op(chunk);
      if (status.ok()) break;
      if (status.error != UpstreamError::kRefused || broken_ || attempt == kMaxVanishedRetries) {
        return status;
      }
      // Refused: because some of these were expunged by another client?
      std::vector<uint32_t> alive;
      if (Status check = existing(chunk, &alive); !check.ok()) {
        return check.error == UpstreamError::kRefused ? status : check;
      }
      // (The NOOP may have brought news of a new UIDVALIDITY.)
      if (Status same = same_uidvalidity(imap_, snapshot_uidvalidity_, name_, folder_,
                                         what + " not tried again");
          !same.ok()) {
        return same;
      }
      std::vector<UidRange> remaining = compact_uids(alive);
      const uint64_t before = count_uids(chunk);
      const uint64_t after = count_uids(remaining);
      if (after >= before) return status;  // all still there: a real refusal
      log::info(name_, " ", what, ": ", before - after,
                " message(s) expunged by another client meanwhile; going on without them");
      if (remaining.empty()) break;
      chunk = std::move(remaining);
    }
  }
  return {};
}

// ---- login ----

Status ImapSession::check_extensions() {
  if (broken_ || imap_ == nullptr) return {UpstreamError::kUnavailable, "CAPABILITY: not connected"};
  const MailboxConfig& mailbox = settings_->mailbox;
  const bool retention = mailbox.retention_days > 0;
  const bool need_uidplus = mailbox.on_delete == DeletePolicy::kExpunge ||
                            (retention && mailbox.retention_action == RetentionAction::kExpunge);
  const bool need_move = mailbox.on_delete == DeletePolicy::kMove ||
                         (retention && mailbox.retention_action == RetentionAction::kMove);
  if (!need_uidplus && !need_move) return {};
  auto has = [this](const char* name) {
    return mailimap_has_extension(imap_, const_cast<char*>(name)) != 0;
  };
  // Servers often list UIDPLUS and MOVE only once logged in (Dovecot sends
  // them with the LOGIN's OK, which libetpan records); ask when missing.
  if ((need_uidplus && !has("UIDPLUS")) || (need_move && !has("MOVE"))) {
    if (Status status = request_capabilities(); !status.ok()) return status;
  }
  const bool uidplus = has("UIDPLUS");
  const char* policy = nullptr;
  if (need_uidplus && !uidplus) {
    policy = mailbox.on_delete == DeletePolicy::kExpunge ? "on_delete = expunge"
                                                         : "retention_action = expunge";
  } else if (need_move && !uidplus && !has("MOVE")) {
    policy = mailbox.on_delete == DeletePolicy::kMove ? "on_delete = move"
                                                      : "retention_action = move";
  }
  if (policy == nullptr) return {};
  std::string detail = std::string(policy) +
                       " needs UIDPLUS (UID EXPUNGE)" +
                       (need_move && !need_uidplus ? " or MOVE" : "") +
                       ", which the server does not offer; refusing the session rather than "
                       "running a plain EXPUNGE (it would also remove messages other clients "
                       "flagged \\Deleted)";
  log::warn(name_, " ", detail);
  return {UpstreamError::kRefused, detail};
}

Status ImapSession::snapshot(Snapshot* snapshot) {
  snapshot_uidvalidity_ = 0;
  if (broken_ || imap_ == nullptr) return {UpstreamError::kUnavailable, "SELECT: not connected"};
  const MailboxConfig& mailbox = settings_->mailbox;
  // Both we and libetpan send the folder as an atom or a quoted string,
  // which only printable 7-bit text can be (route_login and the config
  // loader make sure of that; this is the last line of defence).
  const bool printable = std::all_of(folder_.begin(), folder_.end(), [](char c) {
    return c >= 0x20 && c < 0x7f;
  });
  if (!printable) {
    return {UpstreamError::kNoMailbox, "folder name is not printable 7-bit text; not sent upstream"};
  }
  if (mailbox.visible == Visible::kAll && mailbox.max_messages == 0) {
    Status status = select_and_fetch_all(snapshot);
    if (status.ok()) snapshot_uidvalidity_ = snapshot->uidvalidity;
    return status;
  }
  snapshot->messages.clear();
  snapshot->uidvalidity = 0;
  int rc = mailimap_select(imap_, folder_.c_str());
  Status status = outcome(rc, "SELECT " + folder_, MAILIMAP_ERROR_SELECT,
                          UpstreamError::kNoMailbox, UpstreamError::kNoMailbox);
  if (!status.ok()) return status;

  uint32_t exists = 0;
  if (imap_->imap_selection_info != nullptr) {
    snapshot->uidvalidity = imap_->imap_selection_info->sel_uidvalidity;
    exists = imap_->imap_selection_info->sel_exists;
  }
  snapshot_uidvalidity_ = snapshot->uidvalidity;
  if (exists == 0) return {};
  if (mailbox.visible == Visible::kAll && mailbox.max_messages == 0) {
    return fetch_snapshot(nullptr, snapshot);  // the folder name needed libetpan
  }

  // Ask the server which messages qualify, then fetch only those: a huge
  // mailbox with max_messages set costs one UID list, not every message.
  const bool unseen = mailbox.visible == Visible::kUnseen;
  mailimap_search_key* key = mailimap_search_key_new_multiple_empty();
  if (key == nullptr ||
      (unseen && !add_key(key, simple_key(MAILIMAP_SEARCH_KEY_UNSEEN))) ||
      !add_key(key, keyword_key(mailbox.hide_keyword, false))) {
    if (key != nullptr) mailimap_search_key_free(key);
    return lost("UID SEARCH", "out of memory");
  }
  std::vector<uint32_t> uids;
  status = uid_search(key,
                      std::string("UID SEARCH ") + (unseen ? "UNSEEN " : "") + "NOT KEYWORD " +
                          mailbox.hide_keyword,
                      &uids);
  if (!status.ok()) return status;
  // Oldest first: UIDs grow with arrival.
  if (mailbox.max_messages != 0 && uids.size() > mailbox.max_messages) {
    log::debug(name_, " ", uids.size(), " messages qualify; listing the oldest ",
               mailbox.max_messages);
    uids.resize(mailbox.max_messages);
  }
  if (uids.empty()) {
    log::debug(name_, " snapshot: uidvalidity ", snapshot->uidvalidity, ", ", exists,
               " exist, none visible");
    return {};
  }
  return fetch_snapshot(&uids, snapshot);
}

// FETCH 1:* (uids == nullptr) or UID FETCH <uids>, (UID RFC822.SIZE FLAGS).
Status ImapSession::fetch_snapshot(const std::vector<uint32_t>* uids, Snapshot* snapshot) {
  const MailboxConfig& mailbox = settings_->mailbox;
  std::vector<std::vector<UidRange>> chunks;
  if (uids != nullptr) chunks = chunks_of(*uids);
  const size_t commands = uids == nullptr ? 1 : chunks.size();
  size_t hidden = 0;
  for (size_t i = 0; i < commands; ++i) {
    const std::string command =
        uids == nullptr ? "FETCH 1:* (UID RFC822.SIZE FLAGS)"
                        : "UID FETCH " + format_uid_set(chunks[i]) + " (UID RFC822.SIZE FLAGS)";
    mailimap_fetch_type* type = mailimap_fetch_type_new_fetch_att_list_empty();
    mailimap_set* set = uids == nullptr ? mailimap_set_new_interval(1, 0)  // 1:*
                                        : make_imap_set(chunks[i], 0, chunks[i].size());
    if (type == nullptr || set == nullptr ||
        mailimap_fetch_type_new_fetch_att_list_add(type, mailimap_fetch_att_new_uid()) != 0 ||
        mailimap_fetch_type_new_fetch_att_list_add(type, mailimap_fetch_att_new_rfc822_size()) != 0 ||
        mailimap_fetch_type_new_fetch_att_list_add(type, mailimap_fetch_att_new_flags()) != 0) {
      if (type != nullptr) mailimap_fetch_type_free(type);
      if (set != nullptr) mailimap_set_free(set);
      return lost(command, "out of memory");
    }
    clist* result = nullptr;
    int rc = uids == nullptr ? mailimap_fetch(imap_, set, type, &result)
                             : mailimap_uid_fetch(imap_, set, type, &result);
    mailimap_set_free(set);
    mailimap_fetch_type_free(type);
    Status status = outcome(rc, command,
                            uids == nullptr ? MAILIMAP_ERROR_FETCH : MAILIMAP_ERROR_UID_FETCH,
                            UpstreamError::kRefused, UpstreamError::kRefused);
    if (!status.ok()) return status;  // libetpan freed the list itself

    SnapshotScan scan = scan_snapshot(result, mailbox.hide_keyword);
    mailimap_fetch_list_free(result);
    // (A UID FETCH may bring other messages' flag changes: not a fault.)
    for (uint32_t number : uids == nullptr ? scan.incomplete : std::vector<uint32_t>{}) {
      log::warn(name_, " FETCH: message ", number, " came without UID or size; skipped");
    }
    hidden += scan.hidden;
    for (const MessageEntry& entry : scan.visible) {
      // A UID FETCH may also carry other messages' flag changes: keep only
      // what was asked for.
      if (uids != nullptr && !in_ranges(chunks[i], entry.uid)) continue;
      // \Seen by another client since the search: not listed either.
      if (mailbox.visible == Visible::kUnseen && entry.seen) continue;
      snapshot->messages.push_back(entry);
    }
  }
  auto by_uid = [](const MessageEntry& a, const MessageEntry& b) { return a.uid < b.uid; };
  auto same_uid = [](const MessageEntry& a, const MessageEntry& b) { return a.uid == b.uid; };
  std::sort(snapshot->messages.begin(), snapshot->messages.end(), by_uid);
  snapshot->messages.erase(
      std::unique(snapshot->messages.begin(), snapshot->messages.end(), same_uid),
      snapshot->messages.end());
  log::debug(name_, " snapshot of ", folder_, ": uidvalidity ", snapshot->uidvalidity, ", ",
             snapshot->messages.size(), " visible, ", hidden, " hidden");
  return {};
}

Status ImapSession::snapshot_of_all(clist* fetch_list, Snapshot* snapshot) {
  SnapshotScan scan = scan_snapshot(fetch_list, settings_->mailbox.hide_keyword);
  mailimap_fetch_list_free(fetch_list);
  for (uint32_t number : scan.incomplete) {
    log::warn(name_, " FETCH: message ", number, " came without UID or size; skipped");
  }
  snapshot->messages = std::move(scan.visible);  // sorted by UID, unique
  log::debug(name_, " snapshot of ", folder_, ": uidvalidity ", snapshot->uidvalidity, ", ",
             snapshot->messages.size(), " visible, ", scan.hidden, " hidden");
  return {};
}

// ---- commit ----

bool ImapSession::commit_needs_upstream(const Mailbox::CommitRequest& request) const {
  const MailboxConfig& mailbox = settings_->mailbox;
  return !request.deleted.empty() || (mailbox.mark_seen_on_retr && !request.retrieved.empty()) ||
         mailbox.retention_days > 0;
}

Status ImapSession::commit(const Mailbox::CommitRequest& request) {
  const MailboxConfig& mailbox = settings_->mailbox;
  const std::vector<uint32_t>& deleted = request.deleted;
  if (Status same = same_uidvalidity(imap_, snapshot_uidvalidity_, name_, folder_, "committing nothing");
      !same.ok()) {
    return same;
  }
  if (mailbox.mark_seen_on_retr && !request.retrieved.empty()) {
    // Those about to be expunged need no \Seen; "seen" sets it with the
    // hide keyword below, in one command. Moved ones take it along.
    std::vector<uint32_t> seen = request.retrieved;
    if (mailbox.on_delete == DeletePolicy::kExpunge || mailbox.on_delete == DeletePolicy::kSeen) {
      seen = without(std::move(seen), deleted);
    }
    if (Status status = store(seen, true, {"\\Seen"}); !status.ok()) return status;
    if (Status same = same_uidvalidity(imap_, snapshot_uidvalidity_, name_, folder_,
                                       "\\Seen is set, nothing else is committed");
        !same.ok()) {
      return same;
    }
  }

  Status status;
  switch (mailbox.on_delete) {
    case DeletePolicy::kHide:
      status = store(deleted, true, {mailbox.hide_keyword});
      break;
    case DeletePolicy::kSeen:
      status = store(deleted, true, {"\\Seen", mailbox.hide_keyword});
      break;
    case DeletePolicy::kMove:
      if (!deleted.empty() && same_folder(folder_, imap_folder_name(mailbox.move_to).value_or(""))) {
        // Already in move_to: hide them, as moving to the same folder would
        // only give them new UIDs.
        log::debug(name_, " on_delete = move inside ", folder_, " itself: hiding instead");
        status = store(deleted, true, {mailbox.hide_keyword});
      } else {
        status = remove(deleted, Removal::kMove, "on_delete = move");
      }
      break;
    case DeletePolicy::kExpunge:
      status = remove(deleted, Removal::kExpunge, "on_delete = expunge");
      break;
  }
  if (!status.ok()) return status;

  if (mailbox.retention_days > 0) {
    // Housekeeping: the client's own changes are done, so a failure here is
    // not the commit's (the next QUIT tries again).
    if (Status kept = retention(); !kept.ok()) {
      log::warn(name_, " retention failed (the session's changes are committed): ", kept.detail);
    }
  }
  return {};
}

Status ImapSession::hide(const std::vector<uint32_t>& uids) {
  return store(uids, true, {settings_->mailbox.hide_keyword});
}

Status ImapSession::retention() {
  const MailboxConfig& mailbox = settings_->mailbox;
  const std::optional<std::string> move_to = imap_folder_name(mailbox.move_to);
  if (mailbox.retention_action == RetentionAction::kMove && move_to &&
      same_folder(folder_, *move_to)) {
    return {};  // hidden messages of move_to itself stay
  }
  // BEFORE compares the day of INTERNALDATE only: a message gets retention
  // once the day it arrived is more than retention_days days before today
  // (UTC), i.e. between retention_days and retention_days + 1 days after.
  const time_t cutoff = time(nullptr) - static_cast<time_t>(mailbox.retention_days) * 86400;
  struct tm day {};
  gmtime_r(&cutoff, &day);
  const std::string date = std::to_string(day.tm_mday) + "-" + kMonths[day.tm_mon] + "-" +
                           std::to_string(day.tm_year + 1900);
  mailimap_search_key* key = mailimap_search_key_new_multiple_empty();
  mailimap_date* before = mailimap_date_new(day.tm_mday, day.tm_mon + 1, day.tm_year + 1900);
  mailimap_search_key* before_key = before != nullptr ? mailimap_search_key_new_before(before) : nullptr;
  if (before != nullptr && before_key == nullptr) mailimap_date_free(before);
  if (key == nullptr || !add_key(key, keyword_key(mailbox.hide_keyword, true)) ||
      !add_key(key, before_key)) {
    if (key != nullptr) mailimap_search_key_free(key);
    if (key == nullptr && before_key != nullptr) mailimap_search_key_free(before_key);
    return lost("UID SEARCH", "out of memory");
  }
  std::vector<uint32_t> old;
  Status status = uid_search(key, "UID SEARCH KEYWORD " + mailbox.hide_keyword + " BEFORE " + date,
                             &old);
  if (!status.ok() || old.empty()) return status;
  const bool move = mailbox.retention_action == RetentionAction::kMove;
  log::info(name_, " retention: ", old.size(), " hidden message(s) in ", folder_,
            " arrived before ", date, "; ", move ? "moving them to " + mailbox.move_to : "expunging them");
  return remove(old, move ? Removal::kMove : Removal::kExpunge,
                move ? "retention_action = move" : "retention_action = expunge");
}

// Move:    UID MOVE <uids> <move_to>                       (MOVE)
//          UID COPY, UID STORE +\Deleted, UID EXPUNGE     (UIDPLUS)
// Expunge: UID STORE +\Deleted, UID EXPUNGE                (UIDPLUS)
// Before setting \Deleted, UID SEARCH UID <uids> DELETED notes which
// already carry it (set by another client): if the UID EXPUNGE is refused
// the flag is removed again from the others only.
Status ImapSession::remove(const std::vector<uint32_t>& uids, Removal how, const char* why) {
  if (uids.empty()) return {};
  if (broken_ || imap_ == nullptr) return {UpstreamError::kUnavailable, std::string(why) + ": not connected"};
  if (Status same = same_uidvalidity(imap_, snapshot_uidvalidity_, name_, folder_,
                                     std::string(why) + ": nothing removed");
      !same.ok()) {
    return same;
  }
  const bool has_move = mailimap_has_extension(imap_, const_cast<char*>("MOVE")) != 0;
  const bool has_uidplus = mailimap_has_extension(imap_, const_cast<char*>("UIDPLUS")) != 0;
  if (how == Removal::kMove && has_move) return transfer(uids, true);
  if (!has_uidplus) {
    // check_extensions() refuses such sessions at login; never EXPUNGE.
    return {UpstreamError::kRefused,
            std::string(why) + ": the server has no UIDPLUS (UID EXPUNGE); not expunging"};
  }
  if (how == Removal::kMove) {
    // A failure after this leaves a copy in move_to and the original in
    // place: visible twice, never lost.
    if (Status status = transfer(uids, false); !status.ok()) return status;
  }
  std::vector<uint32_t> already;
  if (Status status = flagged_deleted(uids, &already); !status.ok()) return status;
  if (Status same = same_uidvalidity(
          imap_, snapshot_uidvalidity_, name_, folder_,
          std::string(why) + ": no \\Deleted set" +
              (how == Removal::kMove ? " (the copies made in move_to stay)" : ""));
      !same.ok()) {
    return same;
  }
  Status status = store(uids, true, {"\\Deleted"});
  if (status.ok()) {
    // The STORE's answer may tell of a new UIDVALIDITY: then the flags just
    // set are taken back below (on the same UIDs), nothing is expunged.
    status = same_uidvalidity(imap_, snapshot_uidvalidity_, name_, folder_,
                              std::string(why) + ": not expunging; taking \\Deleted back");
  }
  if (status.ok()) status = uid_expunge(uids);
  if (!status.ok() && !broken_) {
    // Refused: nothing of ours may stay flagged for another client's
    // EXPUNGE. (After a lost connection this cannot be done: the messages
    // keep \Deleted, still listed by POP3.)
    const std::vector<uint32_t> ours = without(uids, already);
    if (Status undone = store(ours, false, {"\\Deleted"}); !undone.ok()) {
      log::warn(name_, " could not take \\Deleted back after a failed ", why, ": ", undone.detail);
    }
  }
  return status;
}

Status ImapSession::transfer(const std::vector<uint32_t>& uids, bool move) {
  const std::optional<std::string> target = imap_folder_name(settings_->mailbox.move_to);
  if (!target) return {UpstreamError::kRefused, "move_to is not valid UTF-8"};
  const std::string verb = move ? "UID MOVE" : "UID COPY";
  return on_existing(uids, verb, [&](const std::vector<UidRange>& chunk) -> Status {
    for (;;) {
      const std::string command = verb + " " + format_uid_set(chunk) + " " + *target;
      mailimap_set* set = make_imap_set(chunk, 0, chunk.size());
      if (set == nullptr) return lost(command, "out of memory");
      int rc = move ? mailimap_uid_move(imap_, set, target->c_str())
                    : mailimap_uid_copy(imap_, set, target->c_str());
      mailimap_set_free(set);
      const bool try_create = rc != MAILIMAP_NO_ERROR && imap_->imap_response_info != nullptr &&
                              imap_->imap_response_info->rsp_trycreate;
      Status status = outcome(rc, command, move ? MAILIMAP_ERROR_UID_MOVE : MAILIMAP_ERROR_UID_COPY,
                              UpstreamError::kRefused, UpstreamError::kRefused);
      if (status.ok() || !try_create || created_move_to_ || broken_) return status;
      // [TRYCREATE]: move_to does not exist yet (RFC 3501 6.4.7).
      created_move_to_ = true;
      rc = mailimap_create(imap_, target->c_str());
      Status created = outcome(rc, "CREATE " + *target, MAILIMAP_ERROR_CREATE,
                               UpstreamError::kRefused, UpstreamError::kRefused);
      if (!created.ok()) return broken_ ? created : status;
      log::info(name_, " created folder ", *target, " (move_to)");
    }
  });
}

Status ImapSession::uid_expunge(const std::vector<uint32_t>& uids) {
  return on_existing(uids, "UID EXPUNGE", [&](const std::vector<UidRange>& chunk) -> Status {
    const std::string command = "UID EXPUNGE " + format_uid_set(chunk);
    mailimap_set* set = make_imap_set(chunk, 0, chunk.size());
    if (set == nullptr) return lost(command, "out of memory");
    int rc = mailimap_uid_expunge(imap_, set);
    mailimap_set_free(set);
    return outcome(rc, command, MAILIMAP_ERROR_EXPUNGE, UpstreamError::kRefused,
                   UpstreamError::kRefused);
  });
}

Status ImapSession::store(const std::vector<uint32_t>& uids, bool add,
                          const std::vector<std::string>& flags) {
  const std::string what = std::string("UID STORE ") + (add ? "+" : "-") + "FLAGS.SILENT";
  return on_existing(uids, what, [&](const std::vector<UidRange>& chunk) -> Status {
    const std::string command =
        "UID STORE " + format_uid_set(chunk) + (add ? " +" : " -") + "FLAGS.SILENT (" +
        join_flags(flags) + ")";
    mailimap_set* set = make_imap_set(chunk, 0, chunk.size());
    mailimap_flag_list* list = make_flag_list(flags);
    mailimap_store_att_flags* store =
        list == nullptr ? nullptr
        : add           ? mailimap_store_att_flags_new_add_flags_silent(list)
                        : mailimap_store_att_flags_new_remove_flags_silent(list);
    if (set == nullptr || store == nullptr) {
      if (set != nullptr) mailimap_set_free(set);
      if (store != nullptr) {
        mailimap_store_att_flags_free(store);
      } else if (list != nullptr) {
        mailimap_flag_list_free(list);
      }
      return lost(command, "out of memory");
    }
    int rc = mailimap_uid_store(imap_, set, store);
    mailimap_set_free(set);
    mailimap_store_att_flags_free(store);
    return outcome(rc, command, MAILIMAP_ERROR_UID_STORE, UpstreamError::kRefused,
                   UpstreamError::kRefused);
  });
}

Status ImapSession::existing(const std::vector<UidRange>& ranges, std::vector<uint32_t>* alive) {
  alive->clear();
  // NOOP first: it makes the server report expunges done by others, so the
  // search below answers for the mailbox as it is now.
  int rc = mailimap_noop(imap_);
  if (Status status = outcome(rc, "NOOP", MAILIMAP_ERROR_NOOP, UpstreamError::kRefused,
                              UpstreamError::kRefused);
      !status.ok()) {
    return status;
  }
  mailimap_search_key* key = uid_key(ranges);
  if (key == nullptr) return lost("UID SEARCH UID", "out of memory");
  std::vector<uint32_t> found;
  Status status = uid_search(key, "UID SEARCH UID " + format_uid_set(ranges), &found);
  if (!status.ok()) return status;
  for (uint32_t uid : found) {
    if (in_ranges(ranges, uid)) alive->push_back(uid);
  }
  return {};
}

Status ImapSession::flagged_deleted(const std::vector<uint32_t>& uids,
                                    std::vector<uint32_t>* flagged) {
  flagged->clear();
  for (const std::vector<UidRange>& chunk : chunks_of(uids)) {
    mailimap_search_key* key = mailimap_search_key_new_multiple_empty();
    if (key == nullptr || !add_key(key, uid_key(chunk)) ||
        !add_key(key, simple_key(MAILIMAP_SEARCH_KEY_DELETED))) {
      if (key != nullptr) mailimap_search_key_free(key);
      return lost("UID SEARCH", "out of memory");
    }
    std::vector<uint32_t> found;
    Status status =
        uid_search(key, "UID SEARCH UID " + format_uid_set(chunk) + " DELETED", &found);
    if (!status.ok()) return status;
    for (uint32_t uid : found) {
      if (in_ranges(chunk, uid)) flagged->push_back(uid);
    }
  }
  return {};
}

Status ImapSession::uid_search(mailimap_search_key* key, const std::string& command,
                               std::vector<uint32_t>* uids) {
  uids->clear();
  if (broken_ || imap_ == nullptr) {
    mailimap_search_key_free(key);
    return {UpstreamError::kUnavailable, command + ": not connected"};
  }
  clist* result = nullptr;
  int rc = mailimap_uid_search(imap_, nullptr, key, &result);
  mailimap_search_key_free(key);
  Status status = outcome(rc, command, MAILIMAP_ERROR_UID_SEARCH, UpstreamError::kRefused,
                          UpstreamError::kRefused);
  if (!status.ok()) {
    // libetpan 1.9.4 hands over the (empty) result list after a NO too.
    if (result != nullptr) mailimap_search_result_free(result);
    return status;
  }
  for (clistiter* it = clist_begin(result); it != nullptr; it = clist_next(it)) {
    auto* uid = static_cast<uint32_t*>(clist_content(it));
    if (uid != nullptr && *uid != 0) uids->push_back(*uid);
  }
  mailimap_search_result_free(result);
  std::sort(uids->begin(), uids->end());
  uids->erase(std::unique(uids->begin(), uids->end()), uids->end());
  return {};
}

}  // namespace popbridge::imap
