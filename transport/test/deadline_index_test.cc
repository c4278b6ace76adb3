#include "deadline_index.h"

#include <gtest/gtest.h>

namespace macula {
namespace {

TEST(DeadlineIndex, DueItemsComeOutEarliestFirstAndOnlyOnce) {
  int a, b, c;
  DeadlineIndex<int> idx;
  EXPECT_EQ(idx.earliest(), UINT64_MAX);
  idx.set(&a, 30);
  idx.set(&b, 10);
  idx.set(&c, 20);
  EXPECT_EQ(idx.earliest(), 10u);
  EXPECT_EQ(idx.take_due(20), (std::vector<int*>{&b, &c}));
  EXPECT_TRUE(idx.take_due(20).empty());
  EXPECT_EQ(idx.earliest(), 30u);
  EXPECT_EQ(idx.size(), 1u);
}

TEST(DeadlineIndex, SetReplacesAndZeroOrMaxRemoves) {
  int a, b;
  DeadlineIndex<int> idx;
  idx.set(&a, 50);
  idx.set(&a, 5);  // moved earlier
  idx.set(&b, 7);
  EXPECT_EQ(idx.take_due(6), (std::vector<int*>{&a}));
  idx.set(&b, 0);  // no deadline any more
  EXPECT_EQ(idx.earliest(), UINT64_MAX);
  idx.set(&a, 9);
  idx.set(&a, UINT64_MAX);
  EXPECT_EQ(idx.size(), 0u);
  idx.set(&a, 9);
  idx.remove(&a);
  idx.remove(&a);  // twice is fine
  EXPECT_TRUE(idx.take_due(100).empty());
}

}  // namespace
}  // namespace macula
