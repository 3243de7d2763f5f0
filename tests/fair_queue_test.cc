// Turns between waiting clients (core/fair_queue.h).
#include "core/fair_queue.h"

#include <gtest/gtest.h>

#include <vector>

namespace jobbridge {
namespace {

std::vector<FairQueue::Client> ServeAll(FairQueue* queue) {
  std::vector<FairQueue::Client> served;
  while (!queue->empty()) {
    served.push_back(queue->Front());
    queue->Pop();
  }
  return served;
}

TEST(FairQueueTest, OneClientIsServedInOrder) {
  FairQueue queue;
  for (int i = 0; i < 3; ++i) queue.Push(7);
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_EQ(queue.clients(), 1u);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{7, 7, 7}));
  EXPECT_EQ(queue.clients(), 0u);
}

TEST(FairQueueTest, ANewcomerIsServedAfterOneSlotOfAFlood) {
  FairQueue queue;
  for (int i = 0; i < 1000; ++i) queue.Push(1);
  queue.Push(2);
  queue.Push(3);
  std::vector<FairQueue::Client> served = ServeAll(&queue);
  ASSERT_EQ(served.size(), 1002u);
  EXPECT_EQ((std::vector<FairQueue::Client>(served.begin(), served.begin() + 4)),
            (std::vector<FairQueue::Client>{1, 2, 3, 1}));
}

TEST(FairQueueTest, ClientsTakeTurnsInTheOrderTheyFirstAsked) {
  FairQueue queue;
  queue.Push(2);
  queue.Push(2);
  queue.Push(5);
  queue.Push(2);
  queue.Push(5);
  queue.Push(9);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{2, 5, 9, 2, 5, 2}));
}

TEST(FairQueueTest, AClientServedToTheEndRejoinsAtTheBack) {
  FairQueue queue;
  queue.Push(1);
  queue.Push(2);
  queue.Push(2);
  EXPECT_EQ(queue.Front(), 1u);
  queue.Pop();  // 1 has none left
  queue.Push(1);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{2, 1, 2}));
}

TEST(FairQueueTest, EraseWithdrawsEveryRequestOfOneClient) {
  FairQueue queue;
  queue.Push(1);
  queue.Push(2);
  queue.Push(1);
  queue.Push(3);
  EXPECT_EQ(queue.Count(1), 2);
  EXPECT_EQ(queue.Erase(1), 2);
  EXPECT_EQ(queue.Erase(1), 0);
  EXPECT_EQ(queue.Erase(42), 0);
  EXPECT_EQ(queue.Count(1), 0);
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{2, 3}));
}

// A semaphore's waiters are counted: when fewer wait, its requests shrink
// to match, and it keeps its turn while some are left.
TEST(FairQueueTest, WithdrawKeepsTheTurnWhileRequestsAreLeft) {
  FairQueue queue;
  queue.Push(1);
  queue.Push(1);
  queue.Push(1);
  queue.Push(2);
  EXPECT_EQ(queue.Withdraw(1, 2), 2);
  EXPECT_EQ(queue.Count(1), 1);
  EXPECT_EQ(queue.size(), 2u);
  EXPECT_EQ(queue.Front(), 1u) << "lost its turn";
  EXPECT_EQ(queue.Withdraw(1, 5), 1) << "withdrew more than it had";
  EXPECT_EQ(queue.Withdraw(1, 1), 0);
  EXPECT_EQ(queue.Withdraw(2, 0), 0);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{2}));
}

TEST(FairQueueTest, ClearForgetsEverything) {
  FairQueue queue;
  queue.Push(1);
  queue.Push(2);
  queue.Clear();
  EXPECT_TRUE(queue.empty());
  EXPECT_EQ(queue.clients(), 0u);
  queue.Push(2);
  EXPECT_EQ(ServeAll(&queue), (std::vector<FairQueue::Client>{2}));
}

}  // namespace
}  // namespace jobbridge

namespace jobbridge {
namespace {

// When a client began to wait: at its first request, kept while any is
// left, forgotten when none is.
TEST(FairQueueTest, SinceIsTheFirstRequestWhileAnyWaits) {
  FairQueue queue;
  uint64_t now = 10;
  queue.SetClock([&] { return now; });
  queue.Push(1);
  now = 20;
  queue.Push(1);
  queue.Push(2);
  EXPECT_EQ(queue.Since(1), 10u);
  EXPECT_EQ(queue.Since(2), 20u);
  queue.Pop();  // one of 1's
  now = 30;
  EXPECT_EQ(queue.Since(1), 10u) << "it still waits for its second";
  queue.Erase(1);
  EXPECT_EQ(queue.Since(1), 0u);
  queue.Push(1);
  EXPECT_EQ(queue.Since(1), 30u);
}

}  // namespace
}  // namespace jobbridge
