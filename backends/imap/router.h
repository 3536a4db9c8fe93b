// Which upstream, IMAP login name and folder a POP3 login name means.
// Pure: no IO. The result only ever names one of the configured upstreams:
// nothing a client sends can point popbridge at another server.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "config/config.h"

namespace popbridge::imap {

struct Route {
  Status status;          // not ok: refuse the login without connecting
  size_t upstream = 0;    // index into the configured upstreams
  std::string imap_user;  // what LOGIN sends (username = "full" or "local")
  std::string folder;     // what SELECT opens, as sent (modified UTF-7)
};

// The rules, in order:
//  1. mailbox.folder_separator (if set): "alice#Archive" is the user
//     "alice" and the folder "Archive" (split at the first separator); an
//     empty folder ("alice#") is kNoMailbox. Without it the folder is the
//     upstream's `folder`.
//  2. The domain is what follows the last '@' of the user (lower-cased).
//     The upstream that lists it in `domains` takes the login; else the
//     upstream without `domains`; else kAuthFailed.
//  3. username = "local" sends the user without "@domain".
// Folder names with 8-bit bytes (UTF-8) are encoded in IMAP's modified
// UTF-7 (RFC 3501 5.1.3); ASCII names go as written. Invalid UTF-8, or a
// control character anywhere in the name (user or folder), is refused
// before any connection.
Route route_login(const std::vector<UpstreamConfig>& upstreams, const MailboxConfig& mailbox,
                  const std::string& user);

// A folder name for the wire: printable ASCII unchanged, UTF-8 in modified
// UTF-7; nullopt for invalid UTF-8 or a control character. What it returns
// is printable 7-bit text, safe inside a quoted string.
std::optional<std::string> imap_folder_name(const std::string& name);

// The folder part of a Mailbox key: INBOX is case-insensitive (RFC 3501),
// other names are not.
std::string folder_key(const std::string& folder);

// True when both names open the same folder (INBOX compared without case).
bool same_folder(const std::string& a, const std::string& b);

}  // namespace popbridge::imap
