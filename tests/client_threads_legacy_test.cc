// The client library's threaded paths in legacy mode, against a real pool (a
// pipe as make passes it down, or a FIFO) whose tokens each test counts back:
// many threads acquiring and releasing on one client, cancel of acquires
// blocked in other threads, timeouts, and cancel racing a token's arrival.
// scripts/tsan.sh runs them under ThreadSanitizer (client_threads_support.h).
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>

#include "client_threads_support.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace client_test {
namespace {

class LegacyThreadsTest : public ClientTest, public ::testing::WithParamInterface<bool> {
 protected:
  bool Fifo() const { return GetParam(); }

  // A pool holding `tokens`: a pipe as make passes it down, or a FIFO.
  void MakePool(const std::string& tokens) {
    if (Fifo()) {
      std::string path = dir_ + "/pool.fifo";
      ASSERT_EQ(mkfifo(path.c_str(), 0600), 0) << strerror(errno);
      read_.Reset(open(path.c_str(), O_RDWR | O_CLOEXEC));  // the server's end
      ASSERT_TRUE(read_.valid()) << strerror(errno);
      auth_ = "fifo:" + path;
    } else {
      int fds[2];
      ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0) << strerror(errno);
      read_.Reset(fds[0]);
      write_.Reset(fds[1]);
      auth_ = std::to_string(fds[0]) + "," + std::to_string(fds[1]);
    }
    Put(tokens);
  }

  void Put(const std::string& tokens) {
    int fd = Fifo() ? read_.get() : write_.get();
    ASSERT_EQ(write(fd, tokens.data(), tokens.size()), ssize_t(tokens.size()));
  }

  int Count() {
    int n = -1;
    EXPECT_EQ(ioctl(read_.get(), FIONREAD, &n), 0) << strerror(errno);
    return n;
  }

  // Takes out the tokens in the pool now, sorted.
  std::string Drain() {
    std::string bytes(static_cast<size_t>(Count()), '\0');
    if (!bytes.empty()) {
      EXPECT_EQ(read(read_.get(), bytes.data(), bytes.size()), ssize_t(bytes.size()));
    }
    std::sort(bytes.begin(), bytes.end());
    return bytes;
  }

  jobbridge_client* Open() {
    jobbridge_client* client = nullptr;
    char why[256] = "";
    EXPECT_EQ(jobbridge_client_open_legacy(auth_.c_str(), &client, why, sizeof why), 0) << Why(why);
    return client;
  }

  void ExpectNoFdLeftButThePool() {
    std::set<int> pool{read_.get()};
    if (write_.valid()) pool.insert(write_.get());
    ExpectNoFdLeft(pool);
  }

  UniqueFd read_, write_;  // a FIFO's only fd is read_ (O_RDWR)
  std::string auth_;
};

TEST_P(LegacyThreadsTest, ThreadsOnOneClientStayWithinTheBudget) {
  constexpr int kPerThread = 2000;
  MakePool("abc");  // with the implicit slot, a budget of 4
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  Churn churn;
  churn.RunAndExpectWithin(client, kPerThread, 4);
  jobbridge_client_close(client);
  EXPECT_EQ(Drain(), "abc");  // each token back, as it was read
  ExpectNoFdLeftButThePool();
  std::printf("most held %d, timeouts %d\n", churn.most.load(), churn.timeouts.load());
  ReportCycles(churn.cycles.load(), kThreads);
}

TEST_P(LegacyThreadsTest, CancelWakesAcquiresBlockedWithoutTimeout) {
  constexpr int kWaiters = 4;
  setenv("JOBBRIDGE_IMPLICIT_SLOT", "0", 1);  // the empty pool is all there is
  MakePool("");
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  {
    Waiters waiters = StartAcquires(client, kWaiters, -1);
    // A token ends a stuck acquire, so the test can end.
    ASSERT_NO_FATAL_FAILURE(CancelAndExpectEachWoken(client, waiters, [&] { Put("w"); }));
  }
  // No cancelled acquire is still reading: a token put now stays in the pool.
  Put("t");
  jobbridge_slot* late = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, -1, &late), -ECANCELED);
  EXPECT_EQ(Drain(), "t");
  jobbridge_client_close(client);
  ExpectNoFdLeftButThePool();
  ReportCycles(0, kWaiters);
}

TEST_P(LegacyThreadsTest, TimeoutsAgainstAnEmptyPool) {
  constexpr int kTimeoutMs = 100;
  MakePool("");
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_slot* implicit = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &implicit), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectEachTimesOut(client, kTimeoutMs));
  // Nothing was taken: a token put now is the next slot, and goes back.
  Put("x");
  jobbridge_slot* token = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &token), 0);
  EXPECT_EQ(Count(), 0);
  EXPECT_EQ(jobbridge_slot_release(token), 0);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  jobbridge_client_close(client);
  EXPECT_EQ(Drain(), "x");
  ExpectNoFdLeftButThePool();
  ReportCycles(2, 1 + kThreads);
}

// A token arrives in the empty pool at the instant the client is cancelled:
// the blocked acquire either takes it (and gives it back on release) or
// leaves it in the pool. After every round the pool holds exactly that token.
TEST_P(LegacyThreadsTest, CancelRacingATokenNeverLosesIt) {
  constexpr int kRounds = 300;
  setenv("JOBBRIDGE_IMPLICIT_SLOT", "0", 1);
  MakePool("");
  int delivered = 0, cancelled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    jobbridge_client* client = Open();
    ASSERT_NE(client, nullptr);
    {
      AcquireThread waiter(client, -1);
      ASSERT_TRUE(waiter.WaitAsleep());
      RunTogether([&] { Put("t"); }, [&] { EXPECT_EQ(jobbridge_client_cancel(client), 0); });
      ASSERT_NO_FATAL_FAILURE(
          CountRaceOutcome(waiter, delivered, cancelled, [&] { EXPECT_EQ(Count(), 0); }));
    }
    jobbridge_client_close(client);
    ASSERT_EQ(Drain(), "t");
  }
  EXPECT_EQ(delivered + cancelled, kRounds);
  ExpectNoFdLeftButThePool();
  std::printf("delivered %d, cancelled %d\n", delivered, cancelled);
  ReportCycles(delivered, 2);  // the waiter, the canceller
}

TEST_P(LegacyThreadsTest, CancelDuringChurnReturnsEveryToken) {
  MakePool("abc");
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  Churn churn;
  churn.RunAndExpectCancelAfter(client, 4000, 4);
  jobbridge_client_close(client);
  EXPECT_EQ(Drain(), "abc");
  ExpectNoFdLeftButThePool();
  ReportCycles(churn.cycles.load(), kThreads);
}

INSTANTIATE_TEST_SUITE_P(Legacy, LegacyThreadsTest, ::testing::Bool(), [](const auto& info) {
  return std::string(info.param ? "Fifo" : "Pipe");
});

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
