// A nested jobbridge's relay against real outer budgets on one libuv loop:
// a legacy pipe with tokens (an outer make), and a root jobbridge's broker
// and socket server (an outer jobbridge). Clients are real sockets; every
// test waits for a byte or a state, and ends with every slot back upstream.
#include "relay.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "broker.h"
#include "core/ledger.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/socket_server.h"
#include "endpoints/upstream.h"
#include "loop_test_util.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::Queued;
using test_util::Readable;

class RelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jb-relay-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << strerror(errno);
    dir_ = templ;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }

  void TearDown() override {
    if (!finished_) Stop();
    for (const char* name : {"root.sock", "nested.sock", "fifo"}) {
      unlink((dir_ + "/" + name).c_str());
    }
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << strerror(errno);
  }

  // An outer make: a pipe holding `tokens` bytes 'a', 'b', ... (FACTS: the
  // byte read must be the byte written back).
  void StartUnderPipe(int tokens, int ceiling = Ledger::kMaxBudget) {
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    outer_read_.Reset(fds[0]);
    outer_write_.Reset(fds[1]);
    for (int i = 0; i < tokens; ++i) {
      char byte = static_cast<char>('a' + i);
      ASSERT_EQ(write(outer_write_.get(), &byte, 1), 1);
    }
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kLegacy;
    outer.legacy = {JobserverAuth::Kind::kPipe, outer_read_.get(), outer_write_.get(), ""};
    StartNested(outer, ceiling);
  }

  // An outer make 4.4: a FIFO holding `tokens` bytes 'a', 'b', ...; the
  // test keeps a read-write description of it as the outer make would.
  void StartUnderFifo(int tokens) {
    std::string fifo = dir_ + "/fifo";
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << strerror(errno);
    outer_read_.Reset(open(fifo.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC));
    ASSERT_TRUE(outer_read_.valid()) << strerror(errno);
    for (int i = 0; i < tokens; ++i) {
      char byte = static_cast<char>('a' + i);
      ASSERT_EQ(write(outer_read_.get(), &byte, 1), 1);
    }
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kLegacy;
    outer.legacy = {JobserverAuth::Kind::kFifo, -1, -1, fifo};
    StartNested(outer);
  }

  // A jobbridge root's two pipes after the root ended: tokens are read from
  // one (here holding `tokens` bytes) and written back into the other. With
  // `writer_gone` nobody writes the token pipe any more; otherwise nobody
  // reads the returns pipe. jobbridge ignores SIGPIPE, so this test does too.
  void StartUnderDeadRootsPool(int tokens, bool writer_gone) {
    signal(SIGPIPE, SIG_IGN);
    int token_pipe[2], returns_pipe[2];
    ASSERT_EQ(pipe2(token_pipe, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(returns_pipe, O_CLOEXEC), 0);
    outer_read_.Reset(token_pipe[0]);
    UniqueFd token_write(token_pipe[1]), returns_read(returns_pipe[0]);
    outer_write_.Reset(returns_pipe[1]);
    for (int i = 0; i < tokens; ++i) ASSERT_EQ(write(token_write.get(), "+", 1), 1);
    if (!writer_gone) kept_ = std::move(token_write);
    if (writer_gone) kept_ = std::move(returns_read);
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kLegacy;
    outer.legacy = {JobserverAuth::Kind::kPipe, outer_read_.get(), outer_write_.get(), ""};
    StartNested(outer);
  }

  // An outer jobbridge of `budget` slots: its broker, server and pool.
  void StartUnderRoot(int budget) {
    std::string err;
    root_ledger_ = std::make_unique<Ledger>(budget);
    ASSERT_TRUE(root_ledger_->Grant(kCommandOwner, 1, &err)) << err;
    ASSERT_TRUE(root_ledger_->Grant(kLegacyOwner, budget - 1, &err)) << err;
    root_pool_ = LegacyPool::Create(LegacyStyle::kPipe, budget - 1, dir_, &err);
    ASSERT_NE(root_pool_, nullptr) << err;
    root_broker_ = std::make_unique<Broker>(&loop_, root_ledger_.get(), root_pool_.get());
    root_server_ = std::make_unique<SocketServer>(&loop_, root_broker_.get());
    ASSERT_TRUE(root_server_->Listen(dir_ + "/root.sock", &err)) << err;
    root_broker_->Start(root_server_.get());
    OuterBudget outer;
    outer.kind = OuterBudget::Kind::kSocket;
    outer.socket_path = dir_ + "/root.sock";
    StartNested(outer);
  }

  // `ceiling` stands for Ledger::kMaxBudget, the most a joined jobbridge
  // lends out at once.
  void StartNested(const OuterBudget& outer, int ceiling = Ledger::kMaxBudget) {
    std::string err;
    ledger_ = std::make_unique<Ledger>(ceiling);
    relay_ = std::make_unique<Relay>(ledger_.get());
    server_ = std::make_unique<SocketServer>(&loop_, relay_.get());
    upstream_ = Upstream::Create(&loop_, outer, relay_.get(), &err);
    ASSERT_NE(upstream_, nullptr) << err;
    ASSERT_TRUE(server_->Listen(dir_ + "/nested.sock", &err)) << err;
    relay_->Start(server_.get(), upstream_.get());
  }

  // Stops as RunBridge does; every handle closed, the books balanced.
  void Stop() {
    std::string err;
    if (relay_) relay_->Stop();
    if (server_) server_->Shutdown();
    if (upstream_) {
      EXPECT_TRUE(upstream_->Close(&err)) << err;
    }
    if (root_broker_) root_broker_->Stop();
    if (root_server_) root_server_->Shutdown();
    EXPECT_TRUE(RunUntil([&] { return !uv_loop_alive(&loop_); })) << "handles left open";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    if (ledger_) {
      EXPECT_EQ(ledger_->granted(), 0);
    }
    if (root_broker_) {
      EXPECT_TRUE(root_broker_->ReturnFreeSlots(&err)) << err;
      EXPECT_EQ(root_ledger_->HeldBy(kLegacyOwner) + root_ledger_->HeldBy(kCommandOwner),
                root_ledger_->budget());
    }
    finished_ = true;
  }

  bool RunUntil(const std::function<bool()>& done) { return test_util::RunLoopUntil(&loop_, done); }

  UniqueFd Connect() {
    UniqueFd fd = test_util::ConnectTo(dir_ + "/nested.sock");
    EXPECT_TRUE(fd.valid()) << strerror(errno);
    return fd;
  }

  ::testing::AssertionResult GetsGrant(int fd) {
    if (!RunUntil([&] { return Readable(fd); })) return ::testing::AssertionFailure() << "no grant";
    char byte = 0;
    if (recv(fd, &byte, 1, MSG_DONTWAIT) != 1) return ::testing::AssertionFailure() << "EOF";
    return ::testing::AssertionSuccess();
  }

  // The relay lost the outer budget for `why`, and the client on `fd` was cut
  // off: it reads EOF, as docs/PROTOCOL.md says a dead server looks.
  ::testing::AssertionResult LostAndCutOff(const std::string& why, int fd) {
    if (!RunUntil([&] { return !relay_->lost_reason().empty(); })) {
      return ::testing::AssertionFailure() << "the loss was not seen";
    }
    if (relay_->lost_reason().find(why) == std::string::npos) {
      return ::testing::AssertionFailure() << "lost for another reason: " << relay_->lost_reason();
    }
    if (!RunUntil([&] { return Readable(fd); })) return ::testing::AssertionFailure() << "no EOF";
    char byte = 0;
    if (recv(fd, &byte, 1, MSG_DONTWAIT) != 0) {
      return ::testing::AssertionFailure() << "the client was not cut off";
    }
    return ::testing::AssertionSuccess();
  }

  // The nested server saw every connection go (and so gave its slots back).
  bool AllGone() {
    return RunUntil([&] { return server_->connection_count() == 0; });
  }

  std::string OuterBytes() {
    std::string bytes(64, '\0');
    ssize_t n = read(outer_read_.get(), bytes.data(), bytes.size());
    bytes.resize(n > 0 ? static_cast<size_t>(n) : 0);
    std::sort(bytes.begin(), bytes.end());
    return bytes;
  }

  uv_loop_t loop_{};
  std::string dir_;
  UniqueFd outer_read_, outer_write_;
  UniqueFd kept_;  // the other end a dead root's pool still has
  std::unique_ptr<Ledger> root_ledger_;
  std::unique_ptr<LegacyPool> root_pool_;
  std::unique_ptr<Broker> root_broker_;
  std::unique_ptr<SocketServer> root_server_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<Relay> relay_;
  std::unique_ptr<SocketServer> server_;
  std::unique_ptr<Upstream> upstream_;
  bool finished_ = false;
};

TEST_F(RelayTest, EachClientSlotIsATokenOfTheOuterPipeGivenBackOnClose) {
  StartUnderPipe(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(GetsGrant(b.get()));
  EXPECT_EQ(Queued(outer_read_.get()), 0);
  EXPECT_EQ(upstream_->leased(), 2);

  a.Reset();
  b.Reset();
  ASSERT_TRUE(AllGone());
  EXPECT_EQ(upstream_->leased(), 0);
  EXPECT_EQ(OuterBytes(), "ab") << "the bytes read must be the bytes written back";
  Stop();
}

TEST_F(RelayTest, AWaiterGetsTheNextOuterTokenAndAWaiterThatLeavesTakesNone) {
  StartUnderPipe(1);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  UniqueFd c = Connect();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 3; }));
  c.Reset();  // gives up before any token came
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 2; }));

  char token = 'z';  // another job of the outer make ended
  ASSERT_EQ(write(outer_write_.get(), &token, 1), 1);
  ASSERT_TRUE(GetsGrant(b.get()));
  EXPECT_FALSE(Readable(a.get()));
  a.Reset();
  b.Reset();
  ASSERT_TRUE(AllGone());
  EXPECT_EQ(OuterBytes(), "az");
  Stop();
}

// Leases go to client connections in turns: a newcomer behind a flood of
// '+' gets the second lease, not the one after the flood.
TEST_F(RelayTest, ANewcomerIsServedBeforeTheRestOfAFlood) {
  StartUnderPipe(1);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  std::string flood(100, '+');
  ASSERT_EQ(send(a.get(), flood.data(), flood.size(), MSG_NOSIGNAL), 100);
  UniqueFd b = Connect();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 2; }));
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);  // a's '+' read too

  const char tokens[] = "xy";  // two more jobs of the outer make ended
  ASSERT_EQ(write(outer_write_.get(), tokens, 2), 2);
  ASSERT_TRUE(GetsGrant(a.get()));
  ASSERT_TRUE(GetsGrant(b.get())) << "the newcomer waited behind the flood";
  a.Reset();
  b.Reset();
  ASSERT_TRUE(AllGone());
  Stop();
}

TEST_F(RelayTest, AWaiterBeyondTheCeilingIsServedOnceASlotIsFree) {
  StartUnderPipe(2, /*ceiling=*/1);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();  // its lease comes, finds no room, and goes back
  ASSERT_TRUE(RunUntil([&] { return upstream_->total_leased() == 2; }));
  ASSERT_TRUE(RunUntil([&] { return Queued(outer_read_.get()) == 1; }));
  EXPECT_FALSE(Readable(b.get()));

  ASSERT_EQ(send(a.get(), "-", 1, MSG_NOSIGNAL), 1);  // a release, the connection stays
  ASSERT_TRUE(GetsGrant(b.get())) << "the waiter was not asked for again";
  a.Reset();
  b.Reset();
  ASSERT_TRUE(AllGone());
  EXPECT_EQ(OuterBytes(), "ab");
  Stop();
}

TEST_F(RelayTest, TheSharedDescriptionsStayBlocking) {
  StartUnderPipe(1);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  a.Reset();
  ASSERT_TRUE(AllGone());
  EXPECT_EQ(fcntl(outer_read_.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(fcntl(outer_write_.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(OuterBytes(), "a");
  Stop();
}

TEST_F(RelayTest, UnderAFifoTheByteReadIsWrittenBack) {
  StartUnderFifo(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(GetsGrant(b.get()));
  UniqueFd c = Connect();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 3; }));
  EXPECT_EQ(Queued(outer_read_.get()), 0);
  EXPECT_FALSE(Readable(c.get())) << "a third slot out of a pool of two";

  a.Reset();
  ASSERT_TRUE(GetsGrant(c.get()));
  b.Reset();
  c.Reset();
  ASSERT_TRUE(AllGone());
  EXPECT_EQ(OuterBytes(), "ab");
  Stop();
}

TEST_F(RelayTest, UnderARootSlotsAreBorrowedOnlyWhileHeld) {
  StartUnderRoot(3);  // 2 slots beside the command's implicit one
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(GetsGrant(b.get()));
  UniqueFd c = Connect();
  ASSERT_TRUE(RunUntil([&] { return root_broker_->waiting() == 1; }))
      << "the third request reaches the root";
  EXPECT_FALSE(Readable(c.get()));

  a.Reset();
  ASSERT_TRUE(GetsGrant(c.get()));
  b.Reset();
  c.Reset();
  ASSERT_TRUE(AllGone());
  ASSERT_TRUE(RunUntil([&] { return root_server_->connection_count() == 0; }))
      << "every lease given back to the root";
  Stop();
}

// A client that floods '+' used to make the relay open one connection to
// the root per request, until both ran out of fds.
TEST_F(RelayTest, AFloodOfRequestsAsksTheRootForAFewAtATime) {
  StartUnderRoot(3);  // 2 slots to lend
  UniqueFd a = Connect();
  std::string flood(100, '+');
  ASSERT_EQ(send(a.get(), flood.data(), flood.size(), MSG_NOSIGNAL), 100);
  ASSERT_TRUE(GetsGrant(a.get()));
  ASSERT_TRUE(GetsGrant(a.get()));
  ASSERT_TRUE(RunUntil([&] { return root_broker_->waiting() == Relay::kMaxAskedPerClient; }))
      << "waiting at the root: " << root_broker_->waiting()
      << ", root connections: " << root_server_->connection_count();
  for (int i = 0; i < 20; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(root_broker_->waiting(), static_cast<size_t>(Relay::kMaxAskedPerClient));
  EXPECT_LE(root_server_->connection_count(), 2u + Relay::kMaxAskedPerClient);
  // Its slots go back, its requests are withdrawn at the root.
  a.Reset();
  ASSERT_TRUE(AllGone());
  ASSERT_TRUE(RunUntil([&] { return root_server_->connection_count() == 0; }));
  Stop();
}

TEST_F(RelayTest, AWithdrawnRequestIsWithdrawnAtTheRoot) {
  StartUnderRoot(2);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(RunUntil([&] { return root_broker_->waiting() == 1; }));
  b.Reset();
  ASSERT_TRUE(RunUntil([&] { return root_broker_->waiting() == 0; }));
  a.Reset();
  ASSERT_TRUE(AllGone());
  ASSERT_TRUE(RunUntil([&] { return root_server_->connection_count() == 0; }));
  Stop();
}

TEST_F(RelayTest, LosingTheRootCutsOffTheClients) {
  StartUnderRoot(3);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(GetsGrant(b.get()));
  root_server_->Shutdown();  // as the kernel does for a killed root

  EXPECT_TRUE(LostAndCutOff("closed the connection", a.get()));
  EXPECT_TRUE(LostAndCutOff("closed the connection", b.get()));
  EXPECT_EQ(ledger_->granted(), 0);
  EXPECT_TRUE(upstream_->lost());
  Stop();
}

TEST_F(RelayTest, ARootGoneBeforeTheFirstRequestIsLostToo) {
  StartUnderRoot(3);
  root_server_->Shutdown();  // nothing listens; the socket file stays
  UniqueFd a = Connect();    // the relay's connect upstream is refused
  EXPECT_TRUE(LostAndCutOff("cannot connect", a.get()));
  EXPECT_FALSE(test_util::ConnectTo(dir_ + "/nested.sock").valid()) << "still accepting";
  Stop();
}

TEST_F(RelayTest, APoolNobodyWritesAnyMoreIsLost) {
  StartUnderDeadRootsPool(1, /*writer_gone=*/true);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();  // the pool is empty, and nobody can refill it
  EXPECT_TRUE(LostAndCutOff("no writer left", b.get()));
  Stop();
}

TEST_F(RelayTest, APoolNobodyDrainsAnyMoreIsLostWhenATokenGoesBack) {
  StartUnderDeadRootsPool(1, /*writer_gone=*/false);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  UniqueFd b = Connect();
  ASSERT_TRUE(RunUntil([&] { return server_->connection_count() == 2; }));
  a.Reset();  // its token cannot go back: EPIPE, not a dead jobbridge
  EXPECT_TRUE(LostAndCutOff("nobody reads", b.get()));
  Stop();
}

TEST_F(RelayTest, ALossFoundWhileClosingIsReportedToo) {
  StartUnderDeadRootsPool(1, /*writer_gone=*/false);
  UniqueFd a = Connect();
  ASSERT_TRUE(GetsGrant(a.get()));
  // The command ended while `a` held its slot: shutting down gives it back,
  // which meets EPIPE; the loss must not vanish with the closing timer.
  relay_->Stop();
  server_->Shutdown();
  std::string err;
  EXPECT_TRUE(upstream_->Close(&err)) << err;
  EXPECT_NE(relay_->lost_reason().find("nobody reads"), std::string::npos)
      << "lost: '" << relay_->lost_reason() << "'";
  Stop();
}

}  // namespace
}  // namespace jobbridge
