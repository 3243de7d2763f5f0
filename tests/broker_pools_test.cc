// The broker and per-invocation pools (broker.h, broker_pools.cc) against a
// real loop, a real root pipe pool and real invocation pools, whose child
// ends stand in for the tools (make reads its token pipe and writes into its
// returns pipe; ninja writes back into the token pipe by its path). The test
// plays the pools socket: it calls OnStarted, OnReturned and OnEnded as
// PoolServer does. Every test waits for a state (never for a sleep) and ends
// by counting every token back.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "broker.h"
#include "broker_fixture.h"
#include "core/ledger.h"
#include "pool_server.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

// One tool invocation: its pool as the shim hands it over, the test holding
// the tool's ends.
struct Tool {
  PoolServer::Invocation invocation;
  int token_read = -1;
  int returns_write = -1;
  UniqueFd token_by_path;  // fifo:/proc/self/fd/R opened for writing, as ninja does

  int Stocked() {
    std::string err;
    return invocation.pool->Stocked(&err);
  }
  bool Take(int count) {
    char tokens[8];
    return count <= 8 && read(token_read, tokens, count) == count;
  }
  // Takes `count` tokens as they come (a make starting jobs), waiting for
  // each restock; how many it got.
  int TakeAsStocked(int count, const std::function<bool(const std::function<bool()>&)>& run) {
    int taken = 0;
    while (taken < count && run([&] { return Stocked() > 0; })) {
      int now = std::min(Stocked(), count - taken);
      if (!Take(now)) break;
      taken += now;
    }
    return taken;
  }
  bool WriteIntoTokenPipe(int count) {
    std::string tokens(count, '+');
    return write(token_by_path.get(), tokens.data(), count) == count;
  }
};

class BrokerPoolsTest : public test_util::BrokerFixture {
 protected:
  BrokerPoolsTest() : BrokerFixture("jb-broker-pools") {}

  // A shim asked for a pool for `command` (this process stands in for it).
  std::unique_ptr<Tool> StartTool(const std::string& command) {
    auto tool = std::make_unique<Tool>();
    std::string err;
    tool->invocation.id = next_id_++;
    tool->invocation.pid = getpid();
    tool->invocation.command = command;
    tool->invocation.pool = InvocationPool::Create(&err);
    EXPECT_NE(tool->invocation.pool, nullptr) << err;
    if (!tool->invocation.pool) return nullptr;
    InvocationPool::ChildFds fds = tool->invocation.pool->child_fds();
    tool->token_read = fds.token_read;
    tool->returns_write = fds.returns_write;
    std::string path = "/proc/self/fd/" + std::to_string(fds.token_read);
    tool->token_by_path.Reset(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    EXPECT_TRUE(tool->token_by_path.valid()) << path << ": " << strerror(errno);
    broker_->OnStarted(&tool->invocation);
    return tool;
  }

  // The tool writes `count` tokens into its returns pipe, and the pools
  // socket passes them on.
  void WriteBack(Tool* tool, int count) {
    std::string tokens(count, '+');
    ASSERT_EQ(write(tool->returns_write, tokens.data(), count), count);
    std::string err;
    int got = tool->invocation.pool->TakeReturned(&err);
    ASSERT_EQ(got, count) << err;
    broker_->OnReturned(&tool->invocation, got);
  }

  // The tool's last process has exited: its pool is settled.
  InvocationPool::Books End(Tool* tool) {
    tool->token_by_path.Reset();
    tool->invocation.pool->CloseChildEnds();
    std::string err;
    InvocationPool::Books books = tool->invocation.pool->Close(&err);
    EXPECT_EQ(err, "");
    broker_->OnEnded(tool->invocation, books);
    return books;
  }

  int Held(const Tool& tool) const {
    return ledger_->HeldBy({OwnerKind::kInvocation, tool.invocation.id});
  }

  uint64_t next_id_ = 1;
};

// jobserver-rs (cc-rs 1.0) below make: it writes a token it never read (the
// slot it runs on, make's implicit slot, held by the root), then reads one
// per job. Dropped as surplus, that lent slot left the tree one job short.
TEST_F(BrokerPoolsTest, AToolsImplicitSlotLentInsideItsPoolStaysInIt) {
  Start(3);
  auto make = StartTool("make -s jsclient");
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() >= 1; }));
  int stocked = make->Stocked();
  WriteBack(make.get(), 1);  // the lend
  EXPECT_EQ(broker_->surplus_dropped(), 0) << "the lent slot was dropped";
  EXPECT_EQ(make->Stocked(), stocked + 1) << "the lent slot is back in its own pool";
  auto run = [&](const std::function<bool()>& done) { return RunUntil(done); };
  ASSERT_EQ(make->TakeAsStocked(3, run), 3);  // the budget's jobs, the lender idle
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  EXPECT_EQ(Held(*make), 2);
  EXPECT_EQ(ledger_->free(), 0);
  EXPECT_EQ(make->Stocked(), 0) << "a fourth job beyond the budget";

  WriteBack(make.get(), 3);  // the jobs end
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  EXPECT_EQ(make->Stocked(), 1) << "the lent slot is kept for its lender";
  ASSERT_TRUE(make->Take(1));  // the lender takes its slot back, and ends
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 1; }));
  InvocationPool::Books books = End(make.get());
  EXPECT_EQ(books.reclaimed, 0) << "the lender's own slot counted as held";
  EXPECT_EQ(books.surplus, 0);
  EXPECT_EQ(broker_->reclaimed(), 0);
  Finish();
}

// A rogue writer inside an invocation raises the width by at most what its
// processes hold plus the one lent slot; the rest is dropped, and said so.
TEST_F(BrokerPoolsTest, ARogueWriterInAnInvocationIsBounded) {
  Start(3);
  auto make = StartTool("make -s rogue");
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() >= 1; }));
  ASSERT_TRUE(make->Take(1));
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 1 && Held(*make) == 2; }));
  ::testing::internal::CaptureStderr();
  WriteBack(make.get(), 100);
  std::string said = ::testing::internal::GetCapturedStderr();
  // One frees the slot its process held, one is the lent slot, kept.
  EXPECT_EQ(broker_->surplus_dropped(), 98);
  EXPECT_NE(said.find("(pid " + std::to_string(getpid()) +
                      ", make -s rogue) wrote back 98 token(s) it never took"),
            std::string::npos)
      << said;
  EXPECT_EQ(make->Stocked(), 2);
  EXPECT_EQ(Held(*make), 1);
  InvocationPool::Books books = End(make.get());
  EXPECT_EQ(books.surplus, 98);
  Finish();
}

// ninja and the tools below it write tokens back into the token pipe itself
// (fifo:/proc/self/fd/R): a lent slot and surplus land there too.
TEST_F(BrokerPoolsTest, ALentSlotAndSurplusWrittenIntoTheTokenPipe) {
  Start(2);
  auto ninja = StartTool("ninja");
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 1; }));
  ASSERT_TRUE(ninja->WriteIntoTokenPipe(1));  // a client below it lends its slot
  ASSERT_TRUE(RunUntil([&] { return ninja->invocation.pool->books().lent == 1; }));
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  EXPECT_EQ(ninja->Stocked(), 2);
  ASSERT_TRUE(ninja->WriteIntoTokenPipe(3));  // a rogue
  ASSERT_TRUE(RunUntil([&] { return broker_->surplus_dropped() == 3; }));
  EXPECT_EQ(ninja->Stocked(), 2);
  InvocationPool::Books books = End(ninja.get());
  EXPECT_EQ(books.reclaimed, 0);
  EXPECT_EQ(books.surplus, 3);
  Finish();
}

// A pool whose stock was taken back rests; when its make gives a token
// back it asks again (it used to stay out of the turns for good: its make
// then ran one job at a time).
TEST_F(BrokerPoolsTest, ARestingPoolAsksAgainWhenItGivesATokenBack) {
  Start(3);
  auto make = StartTool("make -C a");
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 2; }));
  ASSERT_TRUE(make->Take(1));  // one job; the other token idles
  auto other = StartTool("make -C b");
  ASSERT_TRUE(RunUntil([&] { return other->Stocked() == 1 && make->Stocked() == 0; }));
  ASSERT_EQ(Held(*make), 1);
  WriteBack(make.get(), 1);  // its job ends: it will want the next one
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 1; }))
      << "a pool that gave a token back stayed out of the turns";
  EXPECT_EQ(End(make.get()).reclaimed, 0);
  EXPECT_EQ(End(other.get()).reclaimed, 0);
  Finish();
}

// ninja starts its first edges in a burst, reading a token for each without
// blocking, and tries again only when a job ends: a restock after its first
// read came too late about once in four runs (make under ninja ran 2 of 3).
TEST_F(BrokerPoolsTest, AToolStartingWhileNobodyWaitsGetsTwoTokens) {
  Start(4);
  auto ninja = StartTool("ninja");
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 2; }));
  ASSERT_TRUE(ninja->Take(2));  // both at once
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 1 && Held(*ninja) == 3; }));
  ASSERT_TRUE(ninja->Take(1));
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));  // the budget is out
  // One starting while another waits asks for one only.
  auto make = StartTool("make");
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 2; }));
  for (int i = 0; i < 5; ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_EQ(broker_->waiting(), 2u);
  EXPECT_EQ(End(make.get()).reclaimed, 0);
  ASSERT_TRUE(ninja->WriteIntoTokenPipe(3));  // ninja's jobs end
  EXPECT_EQ(End(ninja.get()).reclaimed, 0);
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  Finish();
}

// ninja at the top writes its tokens back into its own token pipe, unseen
// as returns, and runs one last job (an LTO link) on its implicit slot,
// whose make then needs every other slot. ninja's pool kept a token stocked
// and asked again with it still there, so make ran one job short.
TEST_F(BrokerPoolsTest, TokensIdleInOnePoolGoWhereWorkWaits) {
  Start(3);
  auto ninja = StartTool("ninja");
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() >= 1; }));
  ASSERT_TRUE(ninja->Take(1));  // a compile beside the one on its own slot
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 1 && Held(*ninja) == 2; }));
  ASSERT_TRUE(ninja->WriteIntoTokenPipe(1));  // the compile ends
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 2; }));

  auto make = StartTool("make -f ltrans.mk");  // below the link, on ninja's own slot
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() >= 1; }))
      << "a token written back into ninja's pool did not reach make";
  ASSERT_TRUE(make->Take(1));
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 1 && Held(*make) == 2; }))
      << "the token stocked in ninja's pool idled while make waited";
  EXPECT_EQ(Held(*ninja), 0);
  EXPECT_EQ(ninja->Stocked(), 0);

  // ninja's pool rests: a token make gives back serves make's next request.
  ASSERT_TRUE(make->Take(1));
  ASSERT_TRUE(RunUntil([&] { return broker_->waiting() == 1; }));
  WriteBack(make.get(), 1);
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 1; }));
  EXPECT_EQ(ninja->Stocked(), 0) << "the idle pool was served before the one reading";
  EXPECT_EQ(Held(*make), 2);

  WriteBack(make.get(), 1);
  EXPECT_EQ(End(make.get()).reclaimed, 0);
  // Its rest over, ninja's pool asks again.
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 1; }));
  EXPECT_EQ(End(ninja.get()).reclaimed, 0);
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  Finish();
}

// make -j4 whose recipes run ninja: under plain make, make reads the tokens
// for its recipes before the ninjas it starts try theirs, and reads back at
// once the token it writes when one ends. A starting ninja's asks (guesses)
// were served first, and so was the token make wrote back: the ninjas ran
// two wide while make waited, and the build ended 8 % later (CI).
TEST_F(BrokerPoolsTest, AMakeReadingForItsRecipesGoesBeforeItsToolsGuesses) {
  Start(4);
  auto make = StartTool("make -j4");
  ASSERT_TRUE(RunUntil([&] { return make->Stocked() == 2; }));
  // Its second recipe (the first runs on its own slot), and the ninja in it
  // starts before the loop has seen that read.
  ASSERT_TRUE(make->Take(1));
  auto ninja = StartTool("ninja -f p0.ninja");
  ASSERT_TRUE(RunUntil([&] { return ledger_->free() == 0 && broker_->waiting() > 0; }));
  EXPECT_EQ(make->Stocked(), 2) << "the slot went to the starting ninja, not to make reading "
                                   "(make, seen reading, may hold two)";
  EXPECT_EQ(ninja->Stocked(), 0);
  ASSERT_TRUE(make->Take(2));  // its third and fourth recipes
  ASSERT_TRUE(RunUntil([&] { return Held(*make) == 3 && broker_->waiting() >= 2; }));

  WriteBack(make.get(), 1);  // a recipe ends: make reads again for the next
  EXPECT_EQ(make->Stocked(), 1) << "the token make wrote back went to another pool";
  EXPECT_EQ(ninja->Stocked(), 0);
  // Unread, it goes where a guess waits, within kGuessIdleMs.
  ASSERT_TRUE(RunUntil([&] { return ninja->Stocked() == 1 && make->Stocked() == 0; }))
      << "a token idled in make's pool while ninja's asked";
  EXPECT_EQ(End(ninja.get()).reclaimed, 0);
  WriteBack(make.get(), 2);
  EXPECT_EQ(End(make.get()).reclaimed, 0);
  EXPECT_EQ(broker_->surplus_dropped(), 0);
  Finish();
}

}  // namespace
}  // namespace jobbridge
