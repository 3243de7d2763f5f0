// The client library's threaded paths in socket mode, against
// client_test_server.h's TestServer, whose counts are the ledger each test
// must balance: many threads acquiring and releasing on one client, cancel of
// acquires blocked in other threads, timeouts, and cancel racing a grant.
// scripts/tsan.sh runs them under ThreadSanitizer (client_threads_support.h).
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "client_test_server.h"
#include "client_threads_support.h"

namespace jobbridge {
namespace client_test {
namespace {

class SocketThreadsTest : public SocketClientTest {
 protected:
  static constexpr int kBudget = 3;

  // Stops a server a failed test left running before the folder goes.
  void TearDown() override {
    server_.reset();
    SocketClientTest::TearDown();
  }

  // Every grant came back and every request ended.
  static bool Settled(const TestServer::Counts& c) {
    return c.held == 0 && c.waiting == 0 && c.grants == c.releases &&
           c.accepted == c.grants + c.dropped;
  }

  // Starts the server with `slots` and opens client_ on it (call under
  // ASSERT_NO_FATAL_FAILURE).
  void StartAndOpen(int slots) {
    server_ = std::make_unique<TestServer>(SocketPath(), slots);
    client_ = Open();
    ASSERT_NE(client_, nullptr);
  }

  // Closes client_; then the server's ledger must settle.
  void CloseAndExpectSettled() {
    jobbridge_client_close(client_);
    client_ = nullptr;
    EXPECT_TRUE(server_->WaitFor(Settled)) << "held " << server_->counts().held;
  }

  // Stops the server: then no fd may be left. Reports the test's cycles.
  void StopAndReport(int cycles, int threads) {
    server_.reset();
    ExpectNoFdLeft();
    ReportCycles(cycles, threads);
  }

  std::unique_ptr<TestServer> server_;
  jobbridge_client* client_ = nullptr;
};

// With the implicit slot (JOBBRIDGE_IMPLICIT_SLOT=1) or without.
class SocketChurnTest : public SocketThreadsTest, public ::testing::WithParamInterface<bool> {};

TEST_P(SocketChurnTest, ThreadsOnOneClientStayWithinTheBudget) {
  constexpr int kPerThread = 1000;
  bool implicit = GetParam();
  if (implicit) setenv("JOBBRIDGE_IMPLICIT_SLOT", "1", 1);
  ASSERT_NO_FATAL_FAILURE(StartAndOpen(kBudget));
  Churn churn;
  churn.RunAndExpectWithin(client_, kPerThread, kBudget + (implicit ? 1 : 0));
  CloseAndExpectSettled();
  TestServer::Counts counts = server_->counts();
  EXPECT_LE(counts.most_held, kBudget);
  EXPECT_EQ(counts.protocol_errors, 0);
  // Without the implicit slot every cycle is a grant (more: a timeout that
  // raced its grant gave the slot straight back).
  if (!implicit) {
    EXPECT_GE(counts.grants, kThreads * kPerThread);
  }
  std::printf("most held %d, timeouts %d, grants %d\n", churn.most.load(), churn.timeouts.load(),
              counts.grants);
  StopAndReport(churn.cycles.load(), kThreads);
}

INSTANTIATE_TEST_SUITE_P(Socket, SocketChurnTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "WithImplicitSlot" : "ConnectionsOnly");
});

TEST_F(SocketThreadsTest, CancelWakesAcquiresBlockedWithoutTimeout) {
  constexpr int kWaiters = 4;
  ASSERT_NO_FATAL_FAILURE(StartAndOpen(1));
  jobbridge_slot* held = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client_, kEventMs, &held), 0);
  {
    Waiters waiters = StartAcquires(client_, kWaiters, -1);
    EXPECT_TRUE(server_->WaitFor([](const auto& c) { return c.waiting == kWaiters; }));
    // Shutdown ends a stuck acquire with -EPIPE, so the test can end.
    ASSERT_NO_FATAL_FAILURE(
        CancelAndExpectEachWoken(client_, waiters, [&] { server_->Shutdown(); }));
  }
  // Each request was dropped by closing its connection; the held slot stays.
  EXPECT_TRUE(server_->WaitFor(
      [](const auto& c) { return c.dropped == kWaiters && c.waiting == 0 && c.held == 1; }));
  jobbridge_slot* late = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client_, -1, &late), -ECANCELED);
  EXPECT_EQ(jobbridge_slot_release(held), 0);
  CloseAndExpectSettled();
  StopAndReport(1, 1 + kWaiters);
}

TEST_F(SocketThreadsTest, TimeoutsAgainstAnExhaustedBudget) {
  constexpr int kTimeoutMs = 100;
  ASSERT_NO_FATAL_FAILURE(StartAndOpen(2));
  jobbridge_slot *first = nullptr, *second = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client_, kEventMs, &first), 0);
  ASSERT_EQ(jobbridge_client_acquire(client_, kEventMs, &second), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectEachTimesOut(client_, kTimeoutMs));
  EXPECT_TRUE(server_->WaitFor(
      [](const auto& c) { return c.dropped == kThreads && c.waiting == 0 && c.held == 2; }));
  // Nothing was lost: a released slot is granted again.
  EXPECT_EQ(jobbridge_slot_release(first), 0);
  ASSERT_EQ(jobbridge_client_acquire(client_, kEventMs, &first), 0);
  EXPECT_EQ(jobbridge_slot_release(first), 0);
  EXPECT_EQ(jobbridge_slot_release(second), 0);
  CloseAndExpectSettled();
  EXPECT_EQ(server_->counts().grants, 3);
  StopAndReport(3, 1 + kThreads);
}

// The only slot is released (the server grants it to the blocked acquire) at
// the instant the client is cancelled: the acquire either delivers the slot or
// drops its connection, which gives the grant back. The server's ledger shows
// which, and must balance after every round.
TEST_F(SocketThreadsTest, CancelRacingAGrantNeverLosesTheSlot) {
  constexpr int kRounds = 300;
  server_ = std::make_unique<TestServer>(SocketPath(), 1);
  int delivered = 0, cancelled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    jobbridge_client* client = Open();
    ASSERT_NE(client, nullptr);
    jobbridge_slot* held = nullptr;
    ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &held), 0);
    {
      AcquireThread waiter(client, -1);
      ASSERT_TRUE(server_->WaitFor([](const auto& c) { return c.waiting == 1; }));
      ASSERT_TRUE(waiter.WaitAsleep());
      RunTogether([&] { EXPECT_EQ(jobbridge_slot_release(held), 0); },
                  [&] { EXPECT_EQ(jobbridge_client_cancel(client), 0); });
      ASSERT_NO_FATAL_FAILURE(CountRaceOutcome(waiter, delivered, cancelled));
    }
    jobbridge_client_close(client);
    ASSERT_TRUE(server_->WaitFor(Settled)) << "held " << server_->counts().held;
  }
  EXPECT_EQ(delivered + cancelled, kRounds);
  EXPECT_EQ(server_->counts().protocol_errors, 0);
  std::printf("delivered %d, cancelled %d\n", delivered, cancelled);
  StopAndReport(kRounds + delivered, 3);  // the holder, the waiter, the canceller
}

// Cancel lands while kThreads threads acquire and release: every thread ends
// with -ECANCELED and every slot goes back.
TEST_F(SocketThreadsTest, CancelDuringChurnReturnsEverySlot) {
  ASSERT_NO_FATAL_FAILURE(StartAndOpen(kBudget));
  Churn churn;
  churn.RunAndExpectCancelAfter(client_, 2000, kBudget);
  CloseAndExpectSettled();
  StopAndReport(churn.cycles.load(), kThreads);
}

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
