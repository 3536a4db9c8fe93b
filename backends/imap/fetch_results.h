// Reading libetpan's FETCH results (clists of mailimap_msg_att) into our
// terms. Pure: no IO, the caller still owns and frees the list.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/backend.h"

typedef struct clist_s clist;

namespace popbridge::imap {

struct SnapshotScan {
  std::vector<MessageEntry> visible;  // sorted by UID, no duplicates
  size_t hidden = 0;                  // carried the hide keyword
  std::vector<uint32_t> incomplete;   // sequence numbers without UID or size
};

// The answer to FETCH 1:* (UID RFC822.SIZE FLAGS). A server may split a
// message's data over several responses: they are merged by sequence
// number. Keywords compare case-insensitively (RFC 3501).
SnapshotScan scan_snapshot(clist* fetch_list, const std::string& hide_keyword);

}  // namespace popbridge::imap
