#include "stream_router.h"

#include <gtest/gtest.h>

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

TEST(StreamRouter, AckBeyondWhatWasPlacedIsClamped) {
  StreamRouter router(1);
  router.place(proc(1, 10));
  router.acked(0, 1 << 30);
  EXPECT_EQ(router.load(0), 0u);
}

}  // namespace
}  // namespace macula
