// The broker's policy for the Robust Jobserver's semaphore (broker.h,
// broker_semaphore.cc): a real set joined to a broker with a real loop and
// root pipe pool, its poll reporting to Broker::Recount as RunBridge wires
// it, and forked clients making zig's calls (semaphore_client.h). Each test
// ends by counting every unit and token back.
#include <gtest/gtest.h>
#include <sys/sem.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "broker.h"
#include "broker_fixture.h"
#include "endpoints/semaphore_endpoint.h"
#include "semaphore_client.h"

namespace jobbridge {
namespace {

using test_util::SemaphoreClient;

class BrokerSemaphoreTest : public test_util::BrokerFixture {
 protected:
  BrokerSemaphoreTest() : BrokerFixture("jb-broker-semaphore") {}

  // Joins a new set to the broker and starts its poll.
  void Offer() {
    std::string err;
    auto semaphore = SemaphoreEndpoint::Create(&err);
    ASSERT_NE(semaphore, nullptr) << err;
    semaphore_ = semaphore.get();
    semid_ = semaphore->id();
    id_ = broker_->Join(std::move(semaphore));
    semaphore_->Start(&loop_, [this](SemaphoreEndpoint::Counts counts) {
      broker_->Recount(id_, counts.waiting);
      if (after_recount_) after_recount_(counts);
    });
  }
  int Held() const { return ledger_->HeldBy(kSemaphoreOwner); }
  int Value() const { return semctl(semid_, 0, GETVAL); }
  bool Answered(SemaphoreClient& client) {
    return RunUntil([&] { return client.Answered(); });
  }
  // Stops as RunBridge does: the broker, then the semaphore counted back
  // and removed, then the rest.
  bool StopAndCountBack() {
    broker_->Stop();
    bool exact = broker_->CountBack(id_);
    EXPECT_EQ(semctl(semid_, 0, GETVAL), -1) << "the set was not removed";
    Finish();
    return exact;
  }

  // Runs after each Recount, with what the poll read.
  std::function<void(SemaphoreEndpoint::Counts)> after_recount_;
  SemaphoreEndpoint* semaphore_ = nullptr;  // owned by the broker
  int semid_ = -1;
  EndpointId id_ = 0;
};

// A blocked client is seen and served from the root pool like a socket
// '+'; the unit it gives back stays kStockIdleMs for it, then goes back to
// the root pool, where a legacy reader may want it unseen.
TEST_F(BrokerSemaphoreTest, ABlockedClientIsServedAndItsUnitGoesBackToThePool) {
  Start(3);  // the command's slot, and 2 tokens in the root pool
  Offer();
  SemaphoreClient client(semid_);
  ASSERT_TRUE(Answered(client));
  EXPECT_EQ(client.Outcome(), SemaphoreClient::kGranted);
  EXPECT_EQ(Held(), 1);
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(PoolAvailable(), 1) << "one slot per waiter, no more";
  EXPECT_EQ(broker_->waiting(), 0u);
  EXPECT_EQ(client.GiveBack(), 0);
  ASSERT_TRUE(RunUntil([&] { return Held() == 0; }));
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(PoolAvailable(), 2);
  EXPECT_TRUE(StopAndCountBack());
}

// One request per waiter counted: a waiter killed while blocked withdraws
// its request, and no unit is given for it.
TEST_F(BrokerSemaphoreTest, AWaiterKilledWhileBlockedWithdrawsItsRequest) {
  Start(2);  // one shared slot
  Offer();
  SemaphoreClient holder(semid_);
  ASSERT_TRUE(Answered(holder));
  ASSERT_EQ(holder.Outcome(), SemaphoreClient::kGranted);
  SemaphoreClient waiter(semid_);
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  waiter.Kill();
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 0; }));
  holder.Kill();  // the kernel gives its unit back
  ASSERT_TRUE(RunUntil([&] { return Held() == 0; }));
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(PoolAvailable(), 1);
  EXPECT_TRUE(StopAndCountBack());
}

// A unit given back while a socket client waits goes to it in the pass that
// sees it back: its client had the poll's interval to take it again. It
// used to stay kStockIdleMs more, and the waiter idled that long (31 ms
// from a holder's kill to a socket waiter's grant).
TEST_F(BrokerSemaphoreTest, AUnitGivenBackGoesToAWaiterElsewhereAsSoonAsSeen) {
  Start(2);  // one shared slot
  Offer();
  SemaphoreClient holder(semid_);
  ASSERT_TRUE(Answered(holder));
  ASSERT_EQ(holder.Outcome(), SemaphoreClient::kGranted);
  UniqueFd waiter = test_util::ConnectTo(socket_path_);
  ASSERT_TRUE(waiter.valid()) << strerror(errno);
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  int value_when_seen = -1;
  bool granted_when_seen = false;
  after_recount_ = [&](SemaphoreEndpoint::Counts counts) {
    if (counts.value == 0 || value_when_seen >= 0) return;
    value_when_seen = Value();
    granted_when_seen = test_util::Readable(waiter.get());
  };
  ASSERT_EQ(holder.GiveBack(), 0);
  ASSERT_TRUE(RunUntil([&] { return value_when_seen >= 0; }));
  EXPECT_EQ(value_when_seen, 0) << "the unit stayed in the semaphore while a socket client waited";
  EXPECT_TRUE(granted_when_seen) << "the socket client was not granted in the same pass";
  EXPECT_EQ(Held(), 0);
  waiter.Reset();
  ASSERT_TRUE(RunUntil([&] { return PoolAvailable() == 1; }));
  EXPECT_TRUE(StopAndCountBack());
}

// A unit given back that no client took is surplus: taken back out at
// once, said once, and the exit count says so.
TEST_F(BrokerSemaphoreTest, UnitsGivenBackWithoutBeingTakenAreTakenBackOut) {
  Start(2);
  Offer();
  ASSERT_TRUE(RunUntil([&] { return semaphore_->interval_ms() > 1; }));  // polled once
  ::testing::internal::CaptureStderr();
  sembuf rogue{0, +2, 0};
  ASSERT_EQ(semop(semid_, &rogue, 1), 0);
  ASSERT_TRUE(RunUntil([&] { return broker_->counted_surplus() == 2; }));
  std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("gave back 2 unit(s) it never took"), std::string::npos) << said;
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(Held(), 0);
  EXPECT_EQ(PoolAvailable(), 1);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(StopAndCountBack()) << "surplus during the run went unreported at exit";
  said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("gave back 2 unit(s) they never took during the run"), std::string::npos)
      << said;
}

}  // namespace
}  // namespace jobbridge
