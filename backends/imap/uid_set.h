// UID sets for IMAP commands: many UIDs as few ranges ("3:7,9,12:13"), so
// that a commit of thousands of deletions stays one short command.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

struct mailimap_set;

namespace popbridge::imap {

struct UidRange {
  uint32_t first = 0;
  uint32_t last = 0;
  bool operator==(const UidRange&) const = default;
};

// Sorted, duplicates merged, adjacent UIDs joined; UID 0 (invalid) dropped.
std::vector<UidRange> compact_uids(std::vector<uint32_t> uids);

// "1:3,7" (for logs and tests).
std::string format_uid_set(const std::vector<UidRange>& ranges);

// A libetpan set of ranges[begin, end); free it with mailimap_set_free().
// Returns nullptr when out of memory.
mailimap_set* make_imap_set(const std::vector<UidRange>& ranges, size_t begin, size_t end);

}  // namespace popbridge::imap
