// A nested jobbridge's relay serving a semaphore of its own (relay.h,
// relay_semaphore.cc) from an outer make's pipe: a real set, its poll
// reporting to Relay::Recount as RunBridge wires it, forked clients making
// zig's calls (semaphore_client.h). Every test ends with the outer pipe
// holding all its tokens again, the ledger empty and the set removed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/sem.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "broker.h"
#include "core/ledger.h"
#include "endpoints/semaphore_endpoint.h"
#include "endpoints/socket_server.h"
#include "endpoints/upstream.h"
#include "loop_test_util.h"
#include "relay.h"
#include "semaphore_client.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::Queued;
using test_util::SemaphoreClient;

class RelaySemaphoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jb-relay-sem-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << strerror(errno);
    dir_ = templ;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }

  void TearDown() override {
    if (!stopped_) Stop();
    unlink((dir_ + "/nested.sock").c_str());
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << strerror(errno);
  }

  // An outer make's pipe with `tokens` bytes; the relay, its socket and its
  // semaphore, polled.
  void Start(int tokens) {
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    outer_read_.Reset(fds[0]);
    outer_write_.Reset(fds[1]);
    for (int i = 0; i < tokens; ++i) ASSERT_EQ(write(outer_write_.get(), "+", 1), 1);
    tokens_ = tokens;
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kLegacy;
    outer.legacy = {JobserverAuth::Kind::kPipe, outer_read_.get(), outer_write_.get(), ""};
    std::string err;
    ledger_ = std::make_unique<Ledger>(Ledger::kMaxBudget);
    relay_ = std::make_unique<Relay>(ledger_.get());
    server_ = std::make_unique<SocketServer>(&loop_, relay_.get());
    upstream_ = Upstream::Create(&loop_, outer, relay_.get(), &err);
    ASSERT_NE(upstream_, nullptr) << err;
    ASSERT_TRUE(server_->Listen(dir_ + "/nested.sock", &err)) << err;
    relay_->Start(server_.get(), upstream_.get());
    auto semaphore = SemaphoreEndpoint::Create(&err);
    ASSERT_NE(semaphore, nullptr) << err;
    semaphore_ = semaphore.get();
    semid_ = semaphore->id();
    relay_->ServeCounted(&loop_, std::move(semaphore));
    Relay* relay = relay_.get();
    semaphore_->Start(
        &loop_, [relay](SemaphoreEndpoint::Counts counts) { relay->Recount(counts.waiting); });
  }

  // Stops as RunBridge does. Returns whether the units came back exactly.
  bool Stop() {
    stopped_ = true;
    std::string err;
    relay_->Stop();
    server_->Shutdown();
    EXPECT_TRUE(upstream_->Close(&err)) << err;
    EXPECT_TRUE(RunUntil([&] { return !uv_loop_alive(&loop_); })) << "handles left open";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    EXPECT_EQ(ledger_->granted(), 0);
    EXPECT_EQ(Queued(outer_read_.get()), tokens_) << "the outer pipe did not get all back";
    EXPECT_EQ(semctl(semid_, 0, GETVAL), -1) << "the set was not removed";
    return relay_->counted_back_exactly();
  }

  bool RunUntil(const std::function<bool()>& done) { return test_util::RunLoopUntil(&loop_, done); }
  bool Answered(SemaphoreClient& client) {
    return RunUntil([&] { return client.Answered(); });
  }
  int Held() const { return ledger_->HeldBy(kSemaphoreOwner); }
  int Value() const { return semctl(semid_, 0, GETVAL); }
  int OuterTokens() const { return Queued(outer_read_.get()); }

  uv_loop_t loop_{};
  std::string dir_;
  UniqueFd outer_read_, outer_write_;
  int tokens_ = 0;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<SocketServer> server_;
  std::unique_ptr<Upstream> upstream_;
  SemaphoreEndpoint* semaphore_ = nullptr;  // owned by the relay
  int semid_ = -1;
  bool stopped_ = false;
};

// A blocked client is counted, one token is read upstream for it and given
// into the set; the unit it gives back sits kStockIdleMs, then goes back
// into the outer pipe.
TEST_F(RelaySemaphoreTest, ABlockedClientGetsAnOuterTokenThatGoesBackWhenItIsDone) {
  Start(2);
  SemaphoreClient client(semid_);
  ASSERT_TRUE(Answered(client));
  ASSERT_EQ(client.Outcome(), SemaphoreClient::kGranted);
  EXPECT_EQ(Held(), 1);
  EXPECT_EQ(OuterTokens(), 1) << "one token per waiter, no more";
  EXPECT_EQ(Value(), 0);
  uint64_t given_back = uv_now(&loop_);
  EXPECT_EQ(client.GiveBack(), 0);
  ASSERT_TRUE(RunUntil([&] { return OuterTokens() == 2; }));
  uv_update_time(&loop_);
  EXPECT_GE(uv_now(&loop_) - given_back, Broker::kStockIdleMs) << "stock went back early";
  EXPECT_EQ(Held(), 0);
  EXPECT_EQ(Value(), 0);
  EXPECT_TRUE(Stop());
}

// Under an outer budget of one: a waiter beside a holder waits upstream,
// and the holder's unit goes to it when the holder is killed (the kernel's
// undo); at the end it is back in the outer pipe.
TEST_F(RelaySemaphoreTest, AKilledHoldersUnitGoesToTheWaiter) {
  Start(1);
  SemaphoreClient holder(semid_);
  ASSERT_TRUE(Answered(holder));
  ASSERT_EQ(holder.Outcome(), SemaphoreClient::kGranted);
  SemaphoreClient waiter(semid_);
  ASSERT_TRUE(test_util::EventuallyTrue([&] { return semctl(semid_, 0, GETNCNT) == 1; }));
  EXPECT_FALSE(waiter.Answered());
  holder.Kill();
  ASSERT_TRUE(Answered(waiter));
  EXPECT_EQ(waiter.Outcome(), SemaphoreClient::kGranted);
  EXPECT_EQ(Held(), 1);
  EXPECT_EQ(waiter.GiveBack(), 0);
  ASSERT_TRUE(RunUntil([&] { return OuterTokens() == 1; }));
  EXPECT_TRUE(Stop());
}

// A unit given back that nobody took is taken back out (it is no slot of
// the outer budget's), and the account at Stop says so.
TEST_F(RelaySemaphoreTest, AUnitGivenBackWithoutBeingTakenIsTakenBackOut) {
  Start(1);
  sembuf give{0, 1, 0};
  ASSERT_EQ(semop(semid_, &give, 1), 0) << strerror(errno);
  ASSERT_TRUE(RunUntil([&] { return Value() == 0; }));
  EXPECT_EQ(Held(), 0);
  EXPECT_EQ(OuterTokens(), 1) << "nothing borrowed for it";
  EXPECT_FALSE(Stop()) << "the surplus is reported at the end";
}

// At Stop a client still holding a unit (outside the tree) is reported,
// its slot goes back upstream anyway, and the set is removed: its next
// semop fails.
TEST_F(RelaySemaphoreTest, StopGivesBackWhatTheSetHeldAndRemovesIt) {
  Start(2);
  SemaphoreClient holder(semid_);
  ASSERT_TRUE(Answered(holder));
  ASSERT_EQ(holder.Outcome(), SemaphoreClient::kGranted);
  EXPECT_EQ(OuterTokens(), 1);
  EXPECT_FALSE(Stop()) << "one unit did not come back";
  EXPECT_NE(holder.GiveBack(), 0) << "the set is gone: its +1 fails";
}

}  // namespace
}  // namespace jobbridge
