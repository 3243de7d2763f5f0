// The client library's threaded paths in sysvsem mode, against a real System
// V semaphore whose units each test counts back: many threads acquiring and
// releasing on one client, cancel of acquires blocked in other threads (each
// with a thread of its own blocked in semop), timeouts, and cancel racing a
// unit's arrival. scripts/tsan.sh runs them under ThreadSanitizer
// (client_threads_support.h).
#include <sys/ipc.h>
#include <sys/sem.h>

#include <cstdio>
#include <string>

#include "client_sysvsem_support.h"
#include "client_threads_support.h"

namespace jobbridge {
namespace client_test {
namespace {

class SemaphoreThreadsTest : public SemaphoreTest {
 protected:
  // No waiter thread is left blocked in semop (they end within a slice).
  bool NoneBlocked() {
    return Eventually([&] { return Blocked() == 0; });
  }
  bool ValueBecomes(int value) {
    return Eventually([&] { return Value() == value; });
  }
  jobbridge_client* Open() {
    jobbridge_client* client = nullptr;
    EXPECT_EQ(SemaphoreTest::Open(Named(), &client), 0) << Why(why_);
    return client;
  }
};

TEST_F(SemaphoreThreadsTest, ThreadsOnOneClientStayWithinTheBudget) {
  SetValue(3);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  Churn churn;
  churn.RunAndExpectWithin(client, 500, 3);
  jobbridge_client_close(client);
  EXPECT_TRUE(NoneBlocked());
  EXPECT_EQ(Value(), 3);
  std::printf("most held %d, timeouts %d\n", churn.most.load(), churn.timeouts.load());
  ReportCycles(churn.cycles.load(), kThreads);
}

TEST_F(SemaphoreThreadsTest, CancelWakesAcquiresBlockedWithoutTimeout) {
  constexpr int kWaiters = 4;
  SetValue(0);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  {
    Waiters waiters = StartAcquires(client, kWaiters, -1);
    ASSERT_NO_FATAL_FAILURE(CancelAndExpectEachWoken(client, waiters, [&] { Give(); }));
  }
  ASSERT_TRUE(NoneBlocked()) << "a cancelled acquire still waits in semop";
  Give();  // nobody takes it now
  EXPECT_TRUE(ValueBecomes(1));
  jobbridge_client_close(client);
  ReportCycles(0, kWaiters);
}

TEST_F(SemaphoreThreadsTest, TimeoutsAgainstAnEmptySemaphore) {
  constexpr int kTimeoutMs = 100;
  SetValue(0);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  ASSERT_NO_FATAL_FAILURE(ExpectEachTimesOut(client, kTimeoutMs));
  ASSERT_TRUE(NoneBlocked());
  Give();
  EXPECT_TRUE(ValueBecomes(1)) << "a timed-out acquire took a unit";
  jobbridge_client_close(client);
  ReportCycles(0, kThreads);
}

// A unit arrives at the instant the client is cancelled: the blocked acquire
// either takes it (and gives it back on release) or leaves it, and a waiter
// thread that got it after the cancel gives it back.
TEST_F(SemaphoreThreadsTest, CancelRacingAUnitNeverLosesIt) {
  constexpr int kRounds = 100;
  SetValue(0);
  int delivered = 0, cancelled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    jobbridge_client* client = Open();
    ASSERT_NE(client, nullptr);
    {
      AcquireThread waiter(client, -1);
      ASSERT_TRUE(waiter.WaitAsleep());
      RunTogether([&] { Give(); }, [&] { EXPECT_EQ(jobbridge_client_cancel(client), 0); });
      ASSERT_NO_FATAL_FAILURE(
          CountRaceOutcome(waiter, delivered, cancelled, [&] { EXPECT_EQ(Value(), 0); }));
    }
    jobbridge_client_close(client);
    // A waiter thread that took the unit after the cancel gives it back
    // within a moment of its semop returning.
    ASSERT_TRUE(NoneBlocked());
    ASSERT_TRUE(ValueBecomes(1)) << "the unit was lost";
    SetValue(0);
  }
  EXPECT_EQ(delivered + cancelled, kRounds);
  std::printf("delivered %d, cancelled %d\n", delivered, cancelled);
  ReportCycles(delivered, 2);
}

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
