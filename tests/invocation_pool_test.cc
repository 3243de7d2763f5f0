// An invocation's own pool (src/endpoints/invocation_pool.h) against real child
// processes: what it took, gave back and still held when it ended, and an
// end that waits for recipes which never had the jobserver fds.
#include "endpoints/invocation_pool.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <string>

namespace jobbridge {
namespace {

// Runs `body` in a child process that inherits the pool's child ends, as a
// shim's exec would, and returns its pid. The child exits 0 when `body`
// returns true.
pid_t RunInvocation(const InvocationPool& pool, const std::function<bool(int, int)>& body) {
  InvocationPool::ChildFds fds = pool.child_fds();
  pid_t pid = fork();
  if (pid == 0) _exit(body(fds.token_read, fds.returns_write) ? 0 : 1);
  return pid;
}

void ExpectExitedCleanly(pid_t pid) {
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// Waits up to 10 s for `fd` to become readable (an event, not a pause).
bool BecomesReadable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 10000) == 1;
}

std::unique_ptr<InvocationPool> MakePool() {
  std::string err;
  auto pool = InvocationPool::Create(&err);
  EXPECT_NE(pool, nullptr) << err;
  return pool;
}

TEST(InvocationPoolTest, TokensStillHeldWhenItEndsAreReclaimed) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::string err;
  ASSERT_TRUE(pool->Stock(3, &err)) << err;
  // Takes two tokens, gives one back, and "dies" holding the other.
  pid_t make = RunInvocation(*pool, [](int r, int w) {
    char tokens[2];
    return read(r, tokens, 2) == 2 && write(w, tokens, 1) == 1;
  });
  pool->CloseChildEnds();
  ExpectExitedCleanly(make);
  ASSERT_TRUE(BecomesReadable(pool->life_fd()));
  EXPECT_TRUE(pool->Ended());
  InvocationPool::Books books = pool->Close(&err);
  EXPECT_EQ(books.given, 2) << "3 stocked, 1 left unused and taken back";
  EXPECT_EQ(books.returned, 1);
  EXPECT_EQ(books.reclaimed, 1);
  EXPECT_EQ(books.surplus, 0);
}

TEST(InvocationPoolTest, AnInvocationThatGaveAllBackLeavesNothingToReclaim) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::string err;
  ASSERT_TRUE(pool->Stock(2, &err)) << err;
  pid_t make = RunInvocation(*pool, [](int r, int w) {
    char tokens[2];
    return read(r, tokens, 2) == 2 && write(w, tokens, 2) == 2;
  });
  pool->CloseChildEnds();
  ExpectExitedCleanly(make);
  ASSERT_TRUE(BecomesReadable(pool->life_fd()));
  EXPECT_EQ(pool->TakeReturned(&err), 2) << err;
  InvocationPool::Books books = pool->Close(&err);
  EXPECT_EQ(books.given, 2);
  EXPECT_EQ(books.returned, 2);
  EXPECT_EQ(books.reclaimed, 0);
  EXPECT_EQ(books.surplus, 0);
}

TEST(InvocationPoolTest, TokensWrittenBackBeyondWhatWasTakenAreSurplus) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::string err;
  ASSERT_TRUE(pool->Stock(1, &err)) << err;
  pid_t rogue = RunInvocation(*pool, [](int, int w) { return write(w, "xxxx", 4) == 4; });
  pool->CloseChildEnds();
  ExpectExitedCleanly(rogue);
  InvocationPool::Books books = pool->Close(&err);
  EXPECT_EQ(books.given, 0) << "its one token was never taken";
  EXPECT_EQ(books.returned, 4);
  EXPECT_EQ(books.reclaimed, 0);
  EXPECT_EQ(books.surplus, 4);
}

// A client that lends the tool's implicit slot writes a token it never read;
// the bridge stocks it again (StockLent). Taken back by its lender, or left
// in the pool, that slot is neither held at the end nor surplus.
TEST(InvocationPoolTest, ALentSlotIsNeitherReclaimedNorSurplus) {
  for (bool taken_back : {true, false}) {
    auto pool = MakePool();
    ASSERT_NE(pool, nullptr);
    std::string err;
    ASSERT_TRUE(pool->Stock(1, &err)) << err;
    InvocationPool::ChildFds fds = pool->child_fds();
    ASSERT_EQ(write(fds.returns_write, "|", 1), 1);  // lends its slot
    ASSERT_EQ(pool->TakeReturned(&err), 1) << err;
    ASSERT_TRUE(pool->StockLent(&err)) << err;
    char tokens[2];
    ASSERT_EQ(read(fds.token_read, tokens, 1), 1);  // a job
    ASSERT_EQ(write(fds.returns_write, tokens, 1), 1);
    if (taken_back) {
      ASSERT_EQ(read(fds.token_read, tokens, 1), 1);
    }
    pool->CloseChildEnds();  // and ends
    InvocationPool::Books books = pool->Close(&err);
    EXPECT_EQ(books.lent, 1);
    EXPECT_EQ(books.reclaimed, 0) << "taken back: " << taken_back;
    EXPECT_EQ(books.surplus, 0) << "taken back: " << taken_back;
  }
}

// A recipe without '+' does not get the jobserver fds (make closes them),
// so the returns pipe reads end of file while it still runs; the life pipe
// does not, until it has exited.
TEST(InvocationPoolTest, TheEndWaitsForARecipeThatOutlivesItsMake) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  int hold[2];  // the recipe runs until its stdin reads end of file
  ASSERT_EQ(pipe2(hold, O_CLOEXEC), 0);
  int life = pool->child_fds().life_write;
  pid_t make = RunInvocation(*pool, [&](int r, int w) {
    pid_t recipe = fork();
    if (recipe == 0) {
      close(r);  // what make does for a plain recipe
      close(w);
      dup2(hold[0], 0);
      fcntl(life, F_SETFD, 0);  // the shim clears close-on-exec on the life fd
      execl("/bin/cat", "cat", static_cast<char*>(nullptr));
      _exit(127);
    }
    return recipe > 0;  // make itself is killed, say: the recipe lives on
  });
  close(hold[0]);
  pool->CloseChildEnds();
  ExpectExitedCleanly(make);
  ASSERT_TRUE(BecomesReadable(pool->returns_fd())) << "returns pipe: no end of file";
  char byte;
  EXPECT_EQ(read(pool->returns_fd(), &byte, 1), 0) << "every returns writer is gone";
  EXPECT_FALSE(pool->Ended()) << "ended while the recipe still runs";

  close(hold[1]);  // the recipe ends
  ASSERT_TRUE(BecomesReadable(pool->life_fd()));
  EXPECT_TRUE(pool->Ended());
  std::string err;
  EXPECT_EQ(pool->Close(&err).reclaimed, 0) << err;
}

TEST(InvocationPoolTest, ClosingBeforeTheEndReclaimsWhatIsOut) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::string err;
  ASSERT_TRUE(pool->Stock(2, &err)) << err;
  int took[2];
  ASSERT_EQ(pipe2(took, O_CLOEXEC), 0);
  int done[2];
  ASSERT_EQ(pipe2(done, O_CLOEXEC), 0);
  pid_t make = RunInvocation(*pool, [&](int r, int) {
    close(done[1]);  // its copy from the fork: the end of file must come from the test
    char token, ignored;
    bool ok = read(r, &token, 1) == 1 && write(took[1], "t", 1) == 1;
    return ok && read(done[0], &ignored, 1) >= 0;  // holds until told
  });
  pool->CloseChildEnds();
  ASSERT_TRUE(BecomesReadable(took[0]));
  EXPECT_FALSE(pool->Ended());
  InvocationPool::Books books = pool->Close(&err);  // the bridge shuts down
  EXPECT_EQ(books.given, 1);
  EXPECT_EQ(books.reclaimed, 1);
  close(done[1]);
  ExpectExitedCleanly(make);
  for (int fd : {took[0], took[1], done[0]}) close(fd);
}

TEST(InvocationPoolTest, StockCountsOnlyWhatFits) {
  auto pool = MakePool();
  ASSERT_NE(pool, nullptr);
  std::string err;
  int capacity = fcntl(pool->child_fds().token_read, F_GETPIPE_SZ);
  ASSERT_GT(capacity, 0);
  EXPECT_FALSE(pool->Stock(capacity + 10, &err));
  EXPECT_NE(err, "");
  EXPECT_EQ(pool->books().given, capacity);
  std::string ignored;
  EXPECT_EQ(pool->Stocked(&ignored), capacity);
  EXPECT_EQ(pool->Unstock(capacity, &ignored), capacity);
  EXPECT_EQ(pool->books().given, 0);
}

}  // namespace
}  // namespace jobbridge
