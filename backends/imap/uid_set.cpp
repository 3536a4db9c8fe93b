#include "backends/imap/uid_set.h"

#include <algorithm>

#include <libetpan/libetpan.h>

namespace popbridge::imap {

std::vector<UidRange> compact_uids(std::vector<uint32_t> uids) {
  std::sort(uids.begin(), uids.end());
  std::vector<UidRange> ranges;
  for (uint32_t uid : uids) {
    if (uid == 0) continue;
    if (!ranges.empty() && uid <= ranges.back().last + 1ULL) {
      ranges.back().last = std::max(ranges.back().last, uid);
    } else {
      ranges.push_back({uid, uid});
    }
  }
  return ranges;
}

std::string format_uid_set(const std::vector<UidRange>& ranges) {
  std::string text;
  for (const auto& range : ranges) {
    if (!text.empty()) text += ',';
    text += std::to_string(range.first);
    if (range.last != range.first) text += ':' + std::to_string(range.last);
  }
  return text;
}

mailimap_set* make_imap_set(const std::vector<UidRange>& ranges, size_t begin, size_t end) {
  mailimap_set* set = mailimap_set_new_empty();
  if (set == nullptr) return nullptr;
  for (size_t i = begin; i < end && i < ranges.size(); ++i) {
    if (mailimap_set_add_interval(set, ranges[i].first, ranges[i].last) != MAILIMAP_NO_ERROR) {
      mailimap_set_free(set);
      return nullptr;
    }
  }
  return set;
}

}  // namespace popbridge::imap
