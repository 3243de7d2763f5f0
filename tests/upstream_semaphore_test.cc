// The outer budget as a Robust Jobserver root's semaphore (Upstream, kind
// kSysvsem; endpoints/upstream_semaphore-posix.cc) against a real set on a
// real loop: the test is the root, giving units with semop and reading
// GETNCNT, as the root's poll would. Every test ends with the set's value
// back where it started and the loop closed.
#include <gtest/gtest.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "endpoints/upstream.h"
#include "loop_test_util.h"
#include "semaphore_client.h"  // EventuallyTrue

namespace jobbridge {
namespace {

using test_util::EventuallyTrue;
using test_util::RunLoopUntil;

class UpstreamSemaphoreTest : public ::testing::Test, public Upstream::Delegate {
 protected:
  void SetUp() override {
    set_ = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    ASSERT_GE(set_, 0) << strerror(errno);
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kSysvsem;
    outer.semaphore_set = set_;
    std::string err;
    upstream_ = Upstream::Create(&loop_, outer, this, &err);
    ASSERT_NE(upstream_, nullptr) << err;
  }

  void TearDown() override {
    std::string err;
    if (upstream_) {
      EXPECT_TRUE(upstream_->Close(&err)) << err;
    }
    EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return !uv_loop_alive(&loop_); }));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    semctl(set_, 0, IPC_RMID);
  }

  // The root gives `count` units (no SEM_UNDO: they are the root's).
  void Give(int count) {
    sembuf op{0, static_cast<short>(count), 0};
    ASSERT_EQ(semop(set_, &op, 1), 0) << strerror(errno);
  }
  int Value() const { return semctl(set_, 0, GETVAL); }
  int Waiting() const { return semctl(set_, 0, GETNCNT); }

  void OnLease() override { ++leases_; }
  void OnLost(const std::string& why) override {
    ++lost_;
    why_ = why;
  }

  uv_loop_t loop_;
  int set_ = -1;
  std::unique_ptr<Upstream> upstream_;
  int leases_ = 0;
  int lost_ = 0;
  std::string why_;
};

// A request is a thread blocked on the set, which the root counts
// (GETNCNT); a unit given is a lease, given back with +1.
TEST_F(UpstreamSemaphoreTest, ARequestIsCountedByTheRootAndAUnitIsALease) {
  upstream_->SetWanted(2);
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 2; }));
  Give(1);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return leases_ == 1; }));
  EXPECT_EQ(upstream_->leased(), 1);
  EXPECT_EQ(Value(), 0);
  upstream_->SetWanted(1);  // the lease ended one request
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 1; }));
  std::string err;
  ASSERT_TRUE(upstream_->Release(&err)) << err;
  // The waiting thread takes the unit given back: one more lease.
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return leases_ == 2; }));
  EXPECT_EQ(upstream_->total_leased(), 2);
  upstream_->SetWanted(0);
  ASSERT_TRUE(upstream_->Release(&err)) << err;
  EXPECT_EQ(upstream_->leased(), 0);
  EXPECT_EQ(Value(), 1);
  EXPECT_FALSE(upstream_->Release(&err)) << "a lease given back that was never taken";
  EXPECT_EQ(lost_, 0);
}

// Withdrawn requests' threads stop waiting within a slice (the root sees
// them gone), and a unit given later stays with the root.
TEST_F(UpstreamSemaphoreTest, AWithdrawnRequestStopsWaitingAndTakesNothing) {
  upstream_->SetWanted(3);
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 3; }));
  upstream_->SetWanted(0);
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 0; }));
  // A thread that passed its check just before may still take the unit: it
  // gives it back at once, and hands nothing to the loop.
  Give(1);
  ASSERT_TRUE(EventuallyTrue([&] { return Value() == 1 && Waiting() == 0; }));
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(leases_, 0);
  EXPECT_EQ(upstream_->leased(), 0);
}

// Closing gives back every lease, and a thread still waiting then takes
// nothing for good (a unit it takes as the leases come back it gives back
// at once): the value is back to what the root gave.
TEST_F(UpstreamSemaphoreTest, CloseGivesEveryLeaseBack) {
  upstream_->SetWanted(3);
  Give(2);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return leases_ == 2; }));
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 1; }));
  std::string err;
  ASSERT_TRUE(upstream_->Close(&err)) << err;
  upstream_.reset();
  EXPECT_TRUE(EventuallyTrue([&] { return Waiting() == 0 && Value() == 2; }))
      << "value " << Value() << ", waiting " << Waiting();
}

// The root removed its set: every waiting thread sees EIDRM, and the loss
// is reported once, naming the set.
TEST_F(UpstreamSemaphoreTest, ARemovedSetIsTheOuterBudgetLost) {
  upstream_->SetWanted(2);
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting() == 2; }));
  ASSERT_EQ(semctl(set_, 0, IPC_RMID), 0);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return lost_ == 1; }));
  EXPECT_TRUE(upstream_->lost());
  EXPECT_NE(why_.find("sysvsem:" + std::to_string(set_) + ") was removed"), std::string::npos)
      << why_;
  std::string err;
  EXPECT_TRUE(upstream_->Release(&err)) << "nobody to give it to: not an error";
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(lost_, 1);
}

}  // namespace
}  // namespace jobbridge
