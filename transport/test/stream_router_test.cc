#include "stream_router.h"

#include <gtest/gtest.h>

#include <optional>
#include <vector>

namespace macula {
namespace {

OrderKey proc(uint64_t key, uint64_t size = 100) {
  OrderKey r;
  r.kind = OrderKey::Kind::kFlow;
  r.key = key;
  r.size = size;
  return r;
}

TEST(StreamRouter, ABusyProcessStaysOnItsStream) {
  StreamRouter router(4);
  size_t s = *router.place(proc(1));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(*router.place(proc(1)), s);
  EXPECT_EQ(router.load(s), 1100u);
}

TEST(StreamRouter, OtherProcessesAvoidALoadedStream) {
  StreamRouter router(4);
  size_t bulk = *router.place(proc(1, 8 << 20));
  for (uint64_t k = 2; k < 50; ++k) EXPECT_NE(*router.place(proc(k)), bulk);
}

TEST(StreamRouter, AProcessMovesOnlyOnceItsFramesAreAcknowledged) {
  StreamRouter router(2);
  size_t a = *router.place(proc(1, 1000));  // stream a, ends at 1000
  size_t other = 1 - a;
  router.place(proc(2, 5000));              // the other stream, loaded
  router.place(proc(3, 9000));              // a again: now the heavier one
  ASSERT_EQ(router.load(a), 10000u);
  router.acked(a, 999);
  EXPECT_EQ(*router.place(proc(1, 10)), a) << "last frame not yet acknowledged";
  EXPECT_EQ(*router.place(proc(3, 20000)), a);  // process 1 ends at 10010
  router.acked(a, 10010);
  EXPECT_EQ(*router.place(proc(1, 10)), other) << "idle: free to take the lighter stream";
}

TEST(StreamRouter, ContinuationsFollowTheirProcessAndEndTheSequence) {
  StreamRouter router(4);
  OrderKey first = proc(7, 65000);
  first.opens_sequence = true;
  first.sequence = 99;
  size_t s = *router.place(first);
  router.place(proc(8));  // someone else in between
  OrderKey cont;
  cont.kind = OrderKey::Kind::kContinuation;
  cont.key = 99;
  cont.size = 65000;
  EXPECT_EQ(*router.place(cont), s);
  cont.closes_sequence = true;
  EXPECT_EQ(*router.place(cont), s);
  // The sequence is closed: a stray continuation is now a barrier and
  // waits for every stream to be acknowledged.
  EXPECT_FALSE(router.place(cont).has_value());
}

TEST(StreamRouter, BarrierWaitsForEveryStream) {
  StreamRouter router(3);
  size_t a = *router.place(proc(1, 10));
  size_t b = *router.place(proc(2, 20));
  OrderKey barrier;
  barrier.size = 5;
  EXPECT_FALSE(router.place(barrier).has_value());
  router.acked(a, 10);
  EXPECT_FALSE(router.place(barrier).has_value());
  router.acked(b, 20);
  ASSERT_TRUE(router.place(barrier).has_value());
}

TEST(StreamRouter, IdleProcessesAreForgotten) {
  StreamRouter router(2);
  for (uint64_t k = 0; k < 5000; ++k) {
    size_t s = *router.place(proc(k, 1));
    router.acked(s, router.load(s) + 1000000);  // clamped to what was placed
  }
  EXPECT_LT(router.tracked_flows(), 1100u);
}

OrderKey high(uint64_t key, uint64_t size = 100) {
  OrderKey r = proc(key, size);
  r.priority = true;
  return r;
}

TEST(StreamRouter, PriorityFlowsGetTheLastStreamAndOnlyThey) {
  StreamRouter router(4, true);
  ASSERT_EQ(router.priority_stream(), std::optional<size_t>(3));
  EXPECT_EQ(*router.place(high(1)), 3u);
  EXPECT_EQ(*router.place(high(2)), 3u);
  for (uint64_t k = 10; k < 60; ++k) EXPECT_NE(*router.place(proc(k)), 3u);
  OrderKey barrier;
  barrier.size = 5;
  for (size_t s = 0; s < 4; ++s) router.acked(s, router.load(s) + 1000);
  EXPECT_NE(*router.place(barrier), 3u);
}

TEST(StreamRouter, NoPriorityStreamWithOneStreamOrWhenOff) {
  EXPECT_FALSE(StreamRouter(1, true).priority_stream().has_value());
  StreamRouter off(4);
  EXPECT_FALSE(off.priority_stream().has_value());
  std::vector<bool> used(4);
  for (uint64_t k = 0; k < 8; ++k) used[*off.place(high(k, 1000))] = true;
  EXPECT_TRUE(used[0] && used[1] && used[2] && used[3]);
}

// A process that changes class keeps its order: it stays on its stream
// until the peer acknowledged what it sent there.
TEST(StreamRouter, ChangingClassWaitsForTheAcknowledgement) {
  StreamRouter router(3, true);
  size_t bulk = *router.place(proc(1, 5000));
  ASSERT_NE(bulk, 2u);
  EXPECT_EQ(*router.place(high(1, 64)), bulk) << "earlier frames unacknowledged";
  router.acked(bulk, 5063);
  EXPECT_EQ(*router.place(high(1, 64)), bulk) << "still one byte short";
  router.acked(bulk, 5128);
  EXPECT_EQ(*router.place(high(1, 64)), 2u);
  EXPECT_EQ(*router.place(proc(1, 64)), 2u) << "back to normal: waits the same way";
  router.acked(2, 1 << 20);
  EXPECT_NE(*router.place(proc(1, 64)), 2u);
}

// A flow that was high priority once and then streams bulk without
// acknowledgements stays on the priority stream (its order); beyond the
// budget the priority stream stops being favoured, and is again once the
// peer acknowledged that bulk.
TEST(StreamRouter, BulkOfAFormerPriorityFlowEndsThePriorityStreamsFavour) {
  StreamRouter router(3, true);
  EXPECT_TRUE(router.priority_favoured());
  ASSERT_EQ(*router.place(high(1, 64)), 2u);
  EXPECT_TRUE(router.priority_favoured());
  uint64_t sent = 0;
  while (sent <= StreamRouter::kDemotedBudget) {
    ASSERT_EQ(*router.place(proc(1, 16384)), 2u) << "sticks to its stream";
    sent += 16384;
  }
  EXPECT_FALSE(router.priority_favoured()) << "bulk must not be served strictly first";
  EXPECT_EQ(*router.place(high(2, 64)), 2u);
  router.acked(2, router.load(2) - 64);  // all but the genuine priority frame
  EXPECT_TRUE(router.priority_favoured());
}

TEST(StreamRouter, PriorityFramesAloneKeepThePriorityStreamFavoured) {
  StreamRouter router(3, true);
  for (uint64_t k = 0; k < 100; ++k) ASSERT_EQ(*router.place(high(1, 16384)), 2u);
  EXPECT_TRUE(router.priority_favoured());
}

TEST(StreamRouter, ContinuationsFollowTheirFlowsClass) {
  StreamRouter router(3, true);
  OrderKey first = high(5, 1000);
  first.opens_sequence = true;
  first.sequence = 9;
  EXPECT_EQ(*router.place(first), 2u);
  router.acked(2, 1 << 20);  // free to move, yet a priority flow
  OrderKey cont;
  cont.kind = OrderKey::Kind::kContinuation;
  cont.key = 9;
  cont.size = 1000;
  EXPECT_EQ(*router.place(cont), 2u);
}

TEST(StreamRouter, AckBeyondWhatWasPlacedIsClamped) {
  StreamRouter router(1);
  router.place(proc(1, 10));
  router.acked(0, 1 << 30);
  EXPECT_EQ(router.load(0), 0u);
}

}  // namespace
}  // namespace macula
