#include "backends/imap/fetch_results.h"

#include <strings.h>

#include <algorithm>
#include <map>

#include <libetpan/libetpan.h>

namespace popbridge::imap {
namespace {

struct Partial {
  uint32_t uid = 0;
  uint32_t size = 0;
  bool has_size = false;
  bool seen = false;
  bool hidden = false;
};

void read_flags(const mailimap_msg_att_dynamic* dynamic, const std::string& hide_keyword,
                Partial* entry) {
  if (dynamic == nullptr || dynamic->att_list == nullptr) return;
  for (clistiter* it = clist_begin(dynamic->att_list); it != nullptr; it = clist_next(it)) {
    auto* fetched = static_cast<mailimap_flag_fetch*>(clist_content(it));
    if (fetched == nullptr || fetched->fl_flag == nullptr) continue;  // \Recent
    const mailimap_flag* flag = fetched->fl_flag;
    if (flag->fl_type == MAILIMAP_FLAG_SEEN) {
      entry->seen = true;
    } else if (flag->fl_type == MAILIMAP_FLAG_KEYWORD && flag->fl_data.fl_keyword != nullptr &&
               strcasecmp(flag->fl_data.fl_keyword, hide_keyword.c_str()) == 0) {
      entry->hidden = true;
    }
  }
}

// Calls visit(const mailimap_msg_att_static*) for each static item.
template <typename Visit>
void for_each_static(const mailimap_msg_att* message, Visit visit) {
  for (clistiter* it = clist_begin(message->att_list); it != nullptr; it = clist_next(it)) {
    auto* item = static_cast<mailimap_msg_att_item*>(clist_content(it));
    if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC && item->att_data.att_static != nullptr) {
      visit(item->att_data.att_static);
    }
  }
}

}  // namespace

SnapshotScan scan_snapshot(clist* fetch_list, const std::string& hide_keyword) {
  std::map<uint32_t, Partial> by_number;
  for (clistiter* it = clist_begin(fetch_list); it != nullptr; it = clist_next(it)) {
    auto* message = static_cast<mailimap_msg_att*>(clist_content(it));
    Partial& entry = by_number[message->att_number];
    for (clistiter* item_it = clist_begin(message->att_list); item_it != nullptr;
         item_it = clist_next(item_it)) {
      auto* item = static_cast<mailimap_msg_att_item*>(clist_content(item_it));
      if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
        read_flags(item->att_data.att_dyn, hide_keyword, &entry);
      }
    }
    for_each_static(message, [&](const mailimap_msg_att_static* att) {
      if (att->att_type == MAILIMAP_MSG_ATT_UID) {
        entry.uid = att->att_data.att_uid;
      } else if (att->att_type == MAILIMAP_MSG_ATT_RFC822_SIZE) {
        entry.size = att->att_data.att_rfc822_size;
        entry.has_size = true;
      }
    });
  }

  SnapshotScan scan;
  for (const auto& [number, entry] : by_number) {
    if (entry.uid == 0 || !entry.has_size) {
      scan.incomplete.push_back(number);
    } else if (entry.hidden) {
      ++scan.hidden;
    } else {
      scan.visible.push_back({entry.uid, entry.size, entry.seen});
    }
  }
  auto by_uid = [](const MessageEntry& a, const MessageEntry& b) { return a.uid < b.uid; };
  auto same_uid = [](const MessageEntry& a, const MessageEntry& b) { return a.uid == b.uid; };
  std::sort(scan.visible.begin(), scan.visible.end(), by_uid);
  scan.visible.erase(std::unique(scan.visible.begin(), scan.visible.end(), same_uid),
                     scan.visible.end());
  return scan;
}

}  // namespace popbridge::imap
