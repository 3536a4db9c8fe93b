// UID sets: compact ranges for UID STORE.
#include "backends/imap/uid_set.h"

#include <gtest/gtest.h>

#include <libetpan/libetpan.h>

namespace popbridge::imap {
namespace {

TEST(ImapUidSet, CompactsSortsAndMerges) {
  EXPECT_TRUE(compact_uids({}).empty());
  EXPECT_TRUE(compact_uids({0}).empty());
  EXPECT_EQ(format_uid_set(compact_uids({5})), "5");
  EXPECT_EQ(format_uid_set(compact_uids({9, 3, 4, 5, 7, 12, 13, 4, 0})), "3:5,7,9,12:13");
  EXPECT_EQ(format_uid_set(compact_uids({4294967295u, 4294967294u, 1})), "1,4294967294:4294967295");
}

TEST(ImapUidSet, BuildsLibetpanSetsOfASlice) {
  auto ranges = compact_uids({1, 2, 3, 10, 20, 21});
  mailimap_set* set = make_imap_set(ranges, 1, 3);
  ASSERT_NE(set, nullptr);
  ASSERT_EQ(clist_count(set->set_list), 2);
  auto* first = static_cast<mailimap_set_item*>(clist_content(clist_begin(set->set_list)));
  EXPECT_EQ(first->set_first, 10u);
  EXPECT_EQ(first->set_last, 10u);
  mailimap_set_free(set);
}

}  // namespace
}  // namespace popbridge::imap
