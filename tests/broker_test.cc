// The broker's policy and conservation, against a real libuv loop, a real
// socket server on a per-test socket, real client sockets and a real pipe
// pool, whose inherited ends stand in for legacy clients. Every test waits
// for a state of the broker or a byte on a socket (never for a sleep), and
// ends by counting every token back.
#include "broker.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "broker_fixture.h"
#include "core/ledger.h"
#include "loop_test_util.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::Queued;
using test_util::Readable;

class BrokerTest : public test_util::BrokerFixture {
 protected:
  BrokerTest() : BrokerFixture("jb-broker") {}

  UniqueFd Connect() {
    UniqueFd fd = test_util::ConnectTo(socket_path_);
    EXPECT_TRUE(fd.valid()) << socket_path_ << ": " << strerror(errno);
    return fd;
  }

  // Connects and waits until the broker queued the request.
  UniqueFd ConnectAndWait(size_t waiting_after) {
    UniqueFd fd = Connect();
    EXPECT_TRUE(RunUntil([&] { return broker_->waiting() == waiting_after; }))
        << "waiting: " << broker_->waiting();
    return fd;
  }

  // Waits for exactly one grant byte on `fd` and reads it.
  ::testing::AssertionResult GetsGrant(int fd) {
    if (!RunUntil([&] { return Readable(fd); })) {
      return ::testing::AssertionFailure() << "no grant on fd " << fd;
    }
    char byte = 0;
    ssize_t n = recv(fd, &byte, 1, MSG_DONTWAIT);
    if (n != 1 || byte != '+') {
      return ::testing::AssertionFailure() << "read " << n << " byte(s), '" << byte << "'";
    }
    return ::testing::AssertionSuccess();
  }

  void Send(int fd, char byte) { ASSERT_EQ(send(fd, &byte, 1, MSG_NOSIGNAL), 1); }

  int LegacyReadFd() { return pool_->InheritedFds()[0]; }
  int LegacyWriteFd() { return pool_->InheritedFds()[1]; }
};

TEST_F(BrokerTest, ServesSocketRequestsInArrivalOrder) {
  Start(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = ConnectAndWait(1);
  UniqueFd c = ConnectAndWait(2);
  EXPECT_FALSE(Readable(b.get()));
  EXPECT_FALSE(Readable(c.get()));

  a.Reset();
  ASSERT_TRUE(GetsGrant(b.get()));
  EXPECT_EQ(broker_->waiting(), 1u);
  EXPECT_FALSE(Readable(c.get())) << "C was served before B";

  b.Reset();
  ASSERT_TRUE(GetsGrant(c.get()));
  EXPECT_EQ(broker_->waiting(), 0u);
  Finish();
}

TEST_F(BrokerTest, FreeSlotNobodyWaitsForGoesBackToThePool) {
  Start(3);
  ASSERT_EQ(PoolAvailable(), 2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  EXPECT_EQ(PoolAvailable(), 1);  // taken out of the pool
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 1);

  a.Reset();
  EXPECT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  EXPECT_EQ(PoolAvailable(), 2);
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 2);
  EXPECT_EQ(ledger_->free(), 0);
  Finish();
}

TEST_F(BrokerTest, ReturnedLegacyTokenReachesWaitingSocketClient) {
  Start(2);
  char token = 0;
  ASSERT_EQ(read(LegacyReadFd(), &token, 1), 1);  // the legacy client takes it
  UniqueFd a = ConnectAndWait(1);
  for (int i = 0; i < 5; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  pollfd p{a.get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 20), 0) << "granted while the only token was out";

  ASSERT_EQ(write(LegacyWriteFd(), &token, 1), 1);  // and gives it back
  // The broker passes it on in the same step that reads it, without a detour
  // through the pool (where any legacy client could race for it).
  ASSERT_TRUE(RunUntil([&] { return Queued(LegacyWriteFd()) == 0; }));
  EXPECT_TRUE(Readable(a.get())) << "the returned token was not handed on at once";
  EXPECT_EQ(PoolCount(), 0);
  ASSERT_TRUE(GetsGrant(a.get()));
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 0);
  Finish();
}

// ninja (and everything below the ninja shim) opens the token pipe by its
// path, fifo:/proc/self/fd/R, and writes its tokens back into it rather than
// into the returns pipe: a socket client waiting on an empty pool must see
// them too.
TEST_F(BrokerTest, ATokenWrittenIntoTheTokenPipeReachesAWaiter) {
  Start(2);
  char token = 0;
  ASSERT_EQ(read(LegacyReadFd(), &token, 1), 1);  // ninja takes the only token
  UniqueFd waiter = ConnectAndWait(1);
  std::string path = "/proc/self/fd/" + std::to_string(LegacyReadFd());
  UniqueFd by_path(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(by_path.valid()) << strerror(errno);
  ASSERT_EQ(write(by_path.get(), &token, 1), 1);  // and gives it back by the path
  ASSERT_TRUE(GetsGrant(waiter.get()));
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 0);
  waiter.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  Finish();
}

// shutdown(SHUT_WR) while working is not a release: the client still holds
// its slot (a waiter used to get it: budget 4 ran 5). Only the full close
// gives it back.
TEST_F(BrokerTest, HalfCloseKeepsTheSlot) {
  Start(2);
  UniqueFd holder = Connect();  // takes the one shared slot
  ASSERT_TRUE(GetsGrant(holder.get()));
  UniqueFd waiter = ConnectAndWait(1);
  ASSERT_EQ(shutdown(holder.get(), SHUT_WR), 0);
  // The server sees the EOF (it stops reading) but keeps the connection.
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  pollfd p{waiter.get(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 50), 0) << "granted the slot a half-closed client still holds";
  EXPECT_EQ(server_->connection_count(), 2u);
  EXPECT_EQ(ledger_->free(), 0);
  holder.Reset();  // the full close gives it back
  ASSERT_TRUE(GetsGrant(waiter.get()));
  waiter.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  Finish();
}

// One connection cannot grow the queue without bound: past
// kMaxWaitingPerConnection waiting requests it is a protocol error.
TEST_F(BrokerTest, AFloodOfRequestsClosesOnlyThatConnection) {
  Start(2);
  UniqueFd flood = Connect();
  ASSERT_TRUE(GetsGrant(flood.get()));
  std::string ok(SocketServer::kMaxWaitingPerConnection, '+');
  ASSERT_EQ(send(flood.get(), ok.data(), ok.size(), MSG_NOSIGNAL), static_cast<ssize_t>(ok.size()));
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == ok.size(); }));
  EXPECT_EQ(server_->connection_count(), 1u) << "the cap is not below it";
  Send(flood.get(), '+');  // one too many
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  EXPECT_EQ(broker_->waiting(), 0u);
  // Its slot came back, and the next client gets it.
  UniqueFd next = Connect();
  ASSERT_TRUE(GetsGrant(next.get()));
  next.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  Finish();
}

// A newcomer behind a connection with a flood of requests waiting gets the
// next slot, not the one after the flood (it used to wait for all of them).
TEST_F(BrokerTest, ANewcomerIsServedBeforeTheRestOfAFlood) {
  Start(2);  // one shared slot
  UniqueFd flood = Connect();
  ASSERT_TRUE(GetsGrant(flood.get()));
  std::string many(1000, '+');
  ASSERT_EQ(send(flood.get(), many.data(), many.size(), MSG_NOSIGNAL), 1000);
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1000; }));
  UniqueFd newcomer = ConnectAndWait(1001);
  Send(flood.get(), '-');
  ASSERT_TRUE(GetsGrant(flood.get())) << "the flood's next request comes first (its turn)";
  Send(flood.get(), '-');
  ASSERT_TRUE(GetsGrant(newcomer.get())) << "the newcomer waited behind the whole flood";
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_FALSE(Readable(flood.get())) << "granted the slot the newcomer holds";
  newcomer.Reset();
  ASSERT_TRUE(GetsGrant(flood.get()));
  flood.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  EXPECT_EQ(broker_->waiting(), 0u);
  Finish();
}

TEST_F(BrokerTest, OverReleaseBeyondTheLentSlotIsDropped) {
  Start(3);
  ASSERT_EQ(write(LegacyWriteFd(), "+++++", 5), 5);  // 5 tokens nobody took
  EXPECT_TRUE(RunUntil([&] { return Queued(LegacyWriteFd()) == 0; }))
      << "returns pipe not drained: " << Queued(LegacyWriteFd());
  for (int i = 0; i < 5; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  // One is the command's implicit slot, lent; the other 4 are a rogue's.
  EXPECT_EQ(broker_->surplus_dropped(), 4);
  EXPECT_EQ(PoolAvailable(), 3);
  EXPECT_EQ(PoolCount(), 3);
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 3);
  EXPECT_EQ(ledger_->HeldBy(kCommandOwner), 0);
  Finish();
}

// cc-rs 1.0 with a jobserver: it writes a token it never read before it
// spawns its compilers, and reads one back when they are done. At -j1 the
// pool is empty, so that token is the tree's only slot: dropping it
// deadlocks the read back (jobbridge -j1 -- cargo build hung before).
TEST_F(BrokerTest, AClientMayLendTheImplicitSlot) {
  Start(1);
  char token = '|';
  ASSERT_EQ(write(LegacyWriteFd(), &token, 1), 1);  // lent before spawning
  ASSERT_TRUE(RunUntil([&] { return PoolAvailable() == 1; })) << "the lent token was dropped";
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  EXPECT_EQ(ledger_->HeldBy(kCommandOwner), 0);
  ASSERT_EQ(read(LegacyReadFd(), &token, 1), 1);    // a compiler runs on it
  ASSERT_EQ(write(LegacyWriteFd(), &token, 1), 1);  // and ends
  ASSERT_TRUE(RunUntil([&] { return PoolAvailable() == 1; }));
  ASSERT_EQ(read(LegacyReadFd(), &token, 1), 1);  // the lender takes its slot back
  // The next look at the books (any event) gives the slot back to the command.
  UniqueFd probe = Connect();
  ASSERT_TRUE(RunUntil([&] { return ledger_->HeldBy(kCommandOwner) == 1; }));
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 0);
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  probe.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  // Lent once and taken back, the slot can be lent again; a second token
  // beyond it is a rogue's.
  ASSERT_EQ(write(LegacyWriteFd(), "++", 2), 2);
  ASSERT_TRUE(RunUntil([&] { return broker_->surplus_dropped() == 1; }));
  EXPECT_EQ(PoolAvailable(), 1);
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 1);
  Finish();
}

TEST_F(BrokerTest, ClientThatDiesWhileWaitingCostsNothing) {
  Start(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = ConnectAndWait(1);
  // B leaves before its grant, and A releases at the same moment, so B may
  // be granted the slot A frees before its EOF is seen.
  b.Reset();
  a.Reset();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 0; }));
  EXPECT_EQ(broker_->waiting(), 0u);
  EXPECT_EQ(ledger_->free(), 0);
  EXPECT_EQ(ledger_->HeldBy(kLegacyOwner), 1);

  UniqueFd c = Connect();
  ASSERT_TRUE(GetsGrant(c.get()));
  Finish();
}

TEST_F(BrokerTest, PlusAndMinusOnOneConnection) {
  Start(3);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  Send(a.get(), '+');
  ASSERT_TRUE(GetsGrant(a.get()));
  EXPECT_EQ(ledger_->HeldBy(SocketOwner(1)), 2);

  Send(a.get(), '+');  // the budget is spent: this one waits
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  for (int i = 0; i < 5; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_FALSE(Readable(a.get())) << "granted beyond the budget";
  EXPECT_EQ(ledger_->HeldBy(SocketOwner(1)), 2);

  Send(a.get(), '-');  // the released slot serves the pending request
  ASSERT_TRUE(GetsGrant(a.get()));
  EXPECT_EQ(broker_->waiting(), 0u);
  EXPECT_EQ(ledger_->HeldBy(SocketOwner(1)), 2);
  Finish();
}

TEST_F(BrokerTest, ProtocolErrorClosesOnlyThatConnection) {
  Start(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = ConnectAndWait(1);

  Send(a.get(), 'x');
  ASSERT_TRUE(RunUntil([&] { return Readable(a.get()); }));
  char byte = 0;
  EXPECT_EQ(recv(a.get(), &byte, 1, MSG_DONTWAIT), 0) << "no EOF after a bad byte";
  ASSERT_TRUE(GetsGrant(b.get()));
  EXPECT_EQ(server_->connection_count(), 1u);
  Finish();
}

}  // namespace
}  // namespace jobbridge
