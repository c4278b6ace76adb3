// The loop lock's rules (loop_owner.h): a try-lock never waits and never
// re-enters, posts stop once shut, a caller's send runs only with the lock
// free and a host attached, and a wake-up ends the I/O thread's wait.
#include "loop_owner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace macula {
namespace {

class CountingHost : public LoopOwner::Host {
 public:
  bool send_now(uint64_t id) override {
    last = id;
    ++calls;
    return true;
  }
  uint64_t last = 0;
  int calls = 0;
};

std::shared_ptr<LoopOwner> make_owner() {
  std::string error;
  auto owner = LoopOwner::create(error);
  EXPECT_TRUE(owner) << error;
  return owner;
}

TEST(LoopOwner, TryLockRefusesTheThreadThatHoldsIt) {
  auto owner = make_owner();
  LoopOwner::Lock outer(*owner, true);
  ASSERT_TRUE(outer);
  LoopOwner::Lock inner(*owner, true);
  EXPECT_FALSE(inner);  // an event handler that sends must post instead
}

TEST(LoopOwner, TryLockNeverWaitsForAnotherThread) {
  auto owner = make_owner();
  LoopOwner::Lock held(*owner, false);
  std::atomic<int> got{-1};
  std::thread other([&] {
    LoopOwner::Lock attempt(*owner, true);
    got = attempt ? 1 : 0;
  });
  other.join();
  EXPECT_EQ(got.load(), 0);
  held.unlock();
  LoopOwner::Lock again(*owner, true);
  EXPECT_TRUE(again);
}

TEST(LoopOwner, TrySendNeedsTheLockFreeAndAHost) {
  auto owner = make_owner();
  CountingHost host;
  EXPECT_FALSE(owner->try_send(7));  // no host attached yet
  {
    LoopOwner::Lock lock(*owner, false);
    owner->attach(&host);
    EXPECT_FALSE(owner->try_send(7));  // this thread holds the lock
  }
  EXPECT_TRUE(owner->try_send(7));
  EXPECT_EQ(host.calls, 1);
  EXPECT_EQ(host.last, 7u);
  {
    LoopOwner::Lock lock(*owner, false);
    owner->attach(nullptr);
  }
  EXPECT_FALSE(owner->try_send(7));
  EXPECT_EQ(host.calls, 1);
}

TEST(LoopOwner, PostsAreTakenAtOnceAndDroppedOnceShut) {
  auto owner = make_owner();
  EXPECT_TRUE(owner->post(uint64_t(1)));
  EXPECT_TRUE(owner->post(uint64_t(2)));
  int ran = 0;
  EXPECT_TRUE(owner->post([&] { ++ran; }));
  Mailbox::Mail mail = owner->take_mail();
  EXPECT_EQ(mail.ids, (std::vector<uint64_t>{1, 2}));
  ASSERT_EQ(mail.tasks.size(), 1u);
  mail.tasks[0]();
  EXPECT_EQ(ran, 1);
  owner->shut();
  EXPECT_FALSE(owner->post(uint64_t(3)));
  EXPECT_FALSE(owner->post([&] { ++ran; }));
  EXPECT_TRUE(owner->take_mail().ids.empty());
}

TEST(LoopOwner, APostEndsTheWaitAndAQuietWaitTimesOut) {
  auto owner = make_owner();
  LoopOwner::Lock lock(*owner, false);
  epoll_event evs[4];
  owner->post(uint64_t(5));
  LoopOwner::Wakeup w = owner->wait(lock, 0, UINT64_MAX, evs, 4);
  EXPECT_TRUE(w.woken);
  EXPECT_EQ(w.fds, 0);  // the wake-up is the owner's own event
  EXPECT_TRUE(lock);    // held again after the wait
  owner->take_mail();
  uint64_t now = 1;
  w = owner->wait(lock, now, now + 2000000, evs, 4);  // 2 ms, nothing posted
  EXPECT_FALSE(w.woken);
}

}  // namespace
}  // namespace macula
