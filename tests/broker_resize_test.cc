// Broker::Resize (the control socket's resize, docs/CONTROL.md): growing
// serves at once; shrinking takes idle tokens back now and withholds the
// rest as slots come back, never from a running job. A real loop, root pipe
// pool and socket clients (broker_fixture.h).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "broker_fixture.h"

namespace jobbridge {
namespace {

using test_util::Readable;

class BrokerResizeTest : public test_util::BrokerFixture {
 protected:
  BrokerResizeTest() : BrokerFixture("jb-broker-resize") {}

  // A socket client that connected and got its grant byte.
  UniqueFd Granted() {
    UniqueFd fd = test_util::ConnectTo(socket_path_);
    EXPECT_TRUE(fd.valid());
    EXPECT_TRUE(RunUntil([&] { return Readable(fd.get()); })) << "no grant";
    char byte = 0;
    EXPECT_EQ(recv(fd.get(), &byte, 1, 0), 1);
    return fd;
  }
  int SocketHeld() {
    int held = 0;
    for (const auto& [owner, count] : ledger_->Holders()) {
      if (owner.kind == OwnerKind::kSocket) held += count;
    }
    return held;
  }
};

TEST_F(BrokerResizeTest, ShrinkingTakesIdleTokensBackAndGrowingPutsThemIn) {
  Start(4);  // the command's slot and 3 idle tokens in the root pool
  std::string err;
  ASSERT_TRUE(broker_->Resize(2, &err)) << err;
  EXPECT_EQ(PoolAvailable(), 1) << "idle tokens beyond the new budget stayed in the pool";
  EXPECT_EQ(ledger_->over(), 0);
  ASSERT_TRUE(broker_->Resize(5, &err)) << err;
  EXPECT_EQ(PoolAvailable(), 4);
  EXPECT_FALSE(broker_->Resize(0, &err));
  EXPECT_EQ(ledger_->budget(), 5);
  Finish();
}

// Two socket clients run at budget 3; shrunk to 2, the one slot beyond
// comes out of the next release, not from a running client, and a waiter
// gets the release after that.
TEST_F(BrokerResizeTest, ShrinkingWithholdsSlotsAsTheyComeBack) {
  Start(3);
  UniqueFd a = Granted(), b = Granted();
  ASSERT_EQ(SocketHeld(), 2);
  std::string err;
  ASSERT_TRUE(broker_->Resize(2, &err)) << err;
  EXPECT_EQ(SocketHeld(), 2) << "a shrink took a running client's slot";
  EXPECT_EQ(ledger_->over(), 1);
  UniqueFd waiter = test_util::ConnectTo(socket_path_);
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  a.Reset();  // its slot is withheld
  ASSERT_TRUE(RunUntil([&] { return ledger_->over() == 0; }));
  EXPECT_FALSE(Readable(waiter.get())) << "granted beyond the shrunk budget";
  EXPECT_EQ(SocketHeld(), 1);
  b.Reset();  // this one goes to the waiter
  ASSERT_TRUE(RunUntil([&] { return Readable(waiter.get()); }));
  EXPECT_EQ(SocketHeld(), 1);
  waiter.Reset();
  ASSERT_TRUE(RunUntil([&] { return SocketHeld() == 0; }));
  Finish();
}

// A token written into the root pool without being read (a client lending
// the command's slot, as cc-rs 1.0 does, or one reaching the pipe by its
// path) is not idle budget: status counted it as idle and the legacy side's
// slots in use as -1.
TEST_F(BrokerResizeTest, PlacesNeverCountMoreIdleThanHeld) {
  Start(2);  // one token in the root pool
  std::string path = "/proc/self/fd/" + std::to_string(pool_->InheritedFds()[0]);
  UniqueFd writer(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_TRUE(writer.valid()) << strerror(errno);
  ASSERT_EQ(write(writer.get(), "+", 1), 1);  // before the broker looks again
  for (const Broker::Place& place : broker_->Places()) {
    EXPECT_LE(place.idle, place.held) << DescribeOwner(place.owner);
    EXPECT_GE(place.idle, 0) << DescribeOwner(place.owner);
  }
  char token = 0;  // the lender takes it back
  ASSERT_EQ(read(pool_->InheritedFds()[0], &token, 1), 1);
  writer.Reset();
  Finish();
}

}  // namespace
}  // namespace jobbridge
