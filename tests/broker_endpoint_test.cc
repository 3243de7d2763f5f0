// The broker's policy against the Endpoint interface alone (broker.h,
// endpoints/endpoint.h): fake endpoints that record what they are given
// join a broker with a real loop and a real root pipe pool, so each rule
// reads as what an endpoint of a given kind gets, whatever its protocol.
// Every test waits for a state (never for a sleep) and ends by counting
// every token back.
#include <gtest/gtest.h>
#include <uv.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "broker.h"
#include "broker_fixture.h"
#include "core/ledger.h"
#include "endpoints/endpoint.h"

namespace jobbridge {
namespace {

// What a fake endpoint saw, kept by the test (the broker owns the fake).
struct Seen {
  int given = 0;  // slots handed to it, over its life
  int stock = 0;  // of those, not taken yet (an endpoint that keeps stock)
  bool refuse = false;
  bool owes = false;
};

class FakeEndpoint : public Endpoint {
 public:
  FakeEndpoint(Owner owner, Traits traits, Seen* seen)
      : owner_(owner), traits_(traits), seen_(seen) {}

  Owner owner() const override { return owner_; }
  Traits traits() const override { return traits_; }
  int Stocked(std::string* /*err*/) const override { return seen_->stock; }
  bool Give(int count, std::string* err) override {
    if (seen_->refuse) {
      *err = "fake endpoint refuses its slot";
      return false;
    }
    seen_->given += count;
    if (traits_.keeps_stock) seen_->stock += count;
    return true;
  }
  int TakeBack(int max, std::string* /*err*/) override {
    int taken = std::min(max, seen_->stock);
    seen_->stock -= taken;
    return taken;
  }
  bool OwesSlot() override { return seen_->owes; }

 private:
  Owner owner_;
  Traits traits_;
  Seen* seen_;
};

constexpr Endpoint::Traits kAsksOutLoud{.waiters_seen = true, .keeps_stock = false};
constexpr Endpoint::Traits kKeepsStock{.waiters_seen = false, .keeps_stock = true};
constexpr Endpoint::Traits kInvisible{.waiters_seen = false, .keeps_stock = false};

class BrokerEndpointTest : public test_util::BrokerFixture {
 protected:
  BrokerEndpointTest() : BrokerFixture("jb-broker-endpoint") {}

  // Owners no socket connection or invocation of these tests uses.
  EndpointId JoinFake(Endpoint::Traits traits, Seen* seen) {
    Owner owner{traits.waiters_seen ? OwnerKind::kSocket : OwnerKind::kInvocation, next_owner_++};
    owners_.push_back(owner);
    return broker_->Join(std::make_unique<FakeEndpoint>(owner, traits, seen));
  }
  int Held(size_t fake) const { return ledger_->HeldBy(owners_.at(fake)); }

  uint64_t next_owner_ = 1000;
  std::vector<Owner> owners_;  // by the order the fakes joined
};

TEST_F(BrokerEndpointTest, AnEndpointThatAsksIsGivenASlotAndItComesBack) {
  Start(3);
  Seen seen;
  EndpointId id = JoinFake(kAsksOutLoud, &seen);
  broker_->Ask(id, 1);
  EXPECT_EQ(seen.given, 1) << "a waiter seen is served at once, from the root pool";
  EXPECT_EQ(Held(0), 1);
  EXPECT_EQ(PoolAvailable(), 1);
  EXPECT_TRUE(broker_->Release(id, 1));
  EXPECT_FALSE(broker_->Release(id, 1)) << "released a slot it no longer holds";
  EXPECT_EQ(Held(0), 0);
  EXPECT_EQ(PoolAvailable(), 2) << "a free slot nobody waits for goes back to the root pool";
  broker_->Leave(id);
  Finish();
}

// Turns are by endpoint, whatever its kind: a newcomer waits one slot
// behind an endpoint with many requests, not all of them.
TEST_F(BrokerEndpointTest, EndpointsAreServedInTurns) {
  Start(2);  // one shared slot
  Seen flood, newcomer;
  EndpointId a = JoinFake(kAsksOutLoud, &flood);
  EndpointId b = JoinFake(kAsksOutLoud, &newcomer);
  broker_->Ask(a, 3);
  ASSERT_EQ(flood.given, 1);
  broker_->Ask(b, 1);
  EXPECT_EQ(broker_->waiting(), 3u);
  ASSERT_TRUE(broker_->Release(a, 1));
  EXPECT_EQ(flood.given, 2) << "the flood's next request comes first (its turn)";
  EXPECT_EQ(newcomer.given, 0);
  ASSERT_TRUE(broker_->Release(a, 1));
  EXPECT_EQ(newcomer.given, 1) << "the newcomer waited behind the whole flood";
  EXPECT_EQ(flood.given, 2);
  broker_->Leave(b);
  EXPECT_EQ(flood.given, 3) << "its slot went to the last request waiting";
  broker_->Leave(a);
  EXPECT_EQ(broker_->waiting(), 0u);
  Finish();
}

// An endpoint whose readers are invisible is the legacy side: a token in
// the root pool may be wanted there, so it takes one only once it sat
// unread for kIdleTokenMs; a waiter seen takes it at once.
TEST_F(BrokerEndpointTest, AnInvisibleReaderTakesOnlyAnIdleRootToken) {
  Start(2);  // one token in the root pool
  Seen legacy;
  EndpointId id = JoinFake(kInvisible, &legacy);
  uint64_t asked = uv_now(&loop_);
  broker_->Ask(id, 1);
  EXPECT_EQ(legacy.given, 0) << "took a token the root pool's readers may want";
  EXPECT_EQ(PoolAvailable(), 1);
  ASSERT_TRUE(RunUntil([&] { return legacy.given == 1; }));
  EXPECT_GE(uv_now(&loop_) - asked, Broker::kIdleTokenMs);
  EXPECT_EQ(Held(0), 1);
  EXPECT_EQ(PoolAvailable(), 0);
  broker_->Leave(id);
  EXPECT_EQ(PoolAvailable(), 1);
  Finish();
}

// A Give that fails (the endpoint's pipe is full, say) costs nothing: the
// slot is taken back in the ledger, and goes where free slots go.
TEST_F(BrokerEndpointTest, ASlotAnEndpointCannotTakeComesBack) {
  Start(3);
  Seen seen;
  seen.refuse = true;
  EndpointId id = JoinFake(kAsksOutLoud, &seen);
  ::testing::internal::CaptureStderr();
  broker_->Ask(id, 1);
  std::string said = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(said.find("fake endpoint refuses its slot"), std::string::npos) << said;
  EXPECT_EQ(seen.given, 0);
  EXPECT_EQ(Held(0), 0);
  EXPECT_EQ(ledger_->free(), 0);
  EXPECT_EQ(PoolAvailable(), 2);
  EXPECT_EQ(broker_->waiting(), 0u);
  broker_->Leave(id);
  Finish();
}

// Stock idle while another waits goes back after kStockIdleMs, and the
// endpoint that kept it rests out of the turns (it does not ask again at
// once: its stock went unread).
TEST_F(BrokerEndpointTest, StockIdleWhileAnotherWaitsIsTakenBack) {
  Start(2);
  Seen pool, socket;
  EndpointId stocked = JoinFake(kKeepsStock, &pool);
  uint64_t since = uv_now(&loop_);  // at or before its stock came
  broker_->Ask(stocked, 1);
  ASSERT_TRUE(RunUntil([&] { return pool.stock == 1; }));  // the idle root token
  EndpointId waiter = JoinFake(kAsksOutLoud, &socket);
  broker_->Ask(waiter, 1);
  EXPECT_EQ(socket.given, 0);
  ASSERT_TRUE(RunUntil([&] { return socket.given == 1; }));
  EXPECT_GE(uv_now(&loop_) - since, Broker::kStockIdleMs) << "taken back before it idled";
  EXPECT_EQ(pool.stock, 0);
  EXPECT_EQ(Held(0), 0);
  EXPECT_EQ(Held(1), 1);
  EXPECT_EQ(broker_->waiting(), 0u) << "a pool whose stock went unread asked again at once";
  broker_->Leave(waiter);
  broker_->Leave(stocked);
  Finish();
}

// An endpoint that owes a slot (a killed tool's orphans run on it) is
// charged the first free one, before any waiter.
TEST_F(BrokerEndpointTest, AnEndpointThatOwesASlotIsChargedBeforeAnyWaiter) {
  Start(3);
  Seen orphans, holder, waiter;
  EndpointId owing = JoinFake(kKeepsStock, &orphans);
  EndpointId a = JoinFake(kAsksOutLoud, &holder);
  EndpointId b = JoinFake(kAsksOutLoud, &waiter);
  broker_->Ask(a, 2);
  ASSERT_EQ(holder.given, 2);
  broker_->Ask(b, 1);
  ASSERT_EQ(waiter.given, 0);
  orphans.owes = true;
  ASSERT_TRUE(broker_->Release(a, 1));
  EXPECT_EQ(Held(0), 1) << "the owed slot was not charged";
  EXPECT_EQ(orphans.given, 0) << "an owed slot is held, not stocked";
  EXPECT_EQ(waiter.given, 0) << "a waiter was served before the debt";
  ASSERT_TRUE(broker_->Release(a, 1));
  EXPECT_EQ(waiter.given, 1);
  EXPECT_EQ(Held(0), 1) << "charged twice";
  broker_->Leave(owing);
  broker_->Leave(a);
  broker_->Leave(b);
  Finish();
}

}  // namespace
}  // namespace jobbridge
