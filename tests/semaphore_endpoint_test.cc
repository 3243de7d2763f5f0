// The Robust Jobserver's semaphore endpoint against a real System V set:
// what it gives and takes back, who may use it, its removal, and its poll
// seeing a blocked client. Clients are forked children making the calls
// zig's std.job makes (semaphore_client.h).
#include "endpoints/semaphore_endpoint.h"

#include <gtest/gtest.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <vector>

#include "loop_test_util.h"
#include "semaphore_client.h"

namespace jobbridge {
namespace {

using test_util::EventuallyTrue;
using test_util::SemaphoreClient;

std::unique_ptr<SemaphoreEndpoint> MakeSet() {
  std::string err;
  auto semaphore = SemaphoreEndpoint::Create(&err);
  EXPECT_NE(semaphore, nullptr) << err;
  return semaphore;
}

int Value(const SemaphoreEndpoint& semaphore) {
  std::string err;
  int n = semaphore.Stocked(&err);
  EXPECT_GE(n, 0) << err;
  return n;
}

int Waiting(const SemaphoreEndpoint& semaphore) {
  std::string err;
  int n = semaphore.Waiting(&err);
  EXPECT_GE(n, 0) << err;
  return n;
}

bool Exists(int id) { return semctl(id, 0, GETVAL) >= 0; }

TEST(SemaphoreEndpointTest, ASetOfOneOnlyItsUserMayUseStartsAtZero) {
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  semid_ds info{};
  ASSERT_EQ(semctl(semaphore->id(), 0, IPC_STAT, &info), 0) << strerror(errno);
  EXPECT_EQ(info.sem_nsems, 1u);
  EXPECT_EQ(static_cast<unsigned>(info.sem_perm.mode & 0777), 0600u);
  EXPECT_EQ(info.sem_perm.cuid, getuid());
  EXPECT_EQ(Value(*semaphore), 0);
  EXPECT_EQ(Waiting(*semaphore), 0);
  EXPECT_EQ(semaphore->Name(), "sysvsem:" + std::to_string(semaphore->id()));
  EXPECT_EQ(semaphore->owner(), kSemaphoreOwner);
  EXPECT_TRUE(semaphore->traits().waiters_seen);
  EXPECT_TRUE(semaphore->traits().keeps_stock);
}

TEST(SemaphoreEndpointTest, GiveRaisesTheValueAndTakeBackTakesWhatIsThere) {
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  std::string err;
  ASSERT_TRUE(semaphore->Give(3, &err)) << err;
  EXPECT_EQ(Value(*semaphore), 3);
  EXPECT_EQ(semaphore->TakeBack(2, &err), 2) << err;
  EXPECT_EQ(Value(*semaphore), 1);
  EXPECT_EQ(semaphore->TakeBack(5, &err), 1) << "took more than was there";
  EXPECT_EQ(semaphore->TakeBack(1, &err), 0) << "an empty semaphore blocked or failed: " << err;
  EXPECT_TRUE(semaphore->Give(0, &err));
  EXPECT_EQ(Value(*semaphore), 0);
}

// A blocked client is counted, gets a unit given at once, and gives it back
// (or the kernel does, when it is killed).
TEST(SemaphoreEndpointTest, ABlockedClientIsCountedAndItsUnitComesBack) {
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  std::string err;
  SemaphoreClient client(semaphore->id());
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting(*semaphore) == 1; }));
  EXPECT_FALSE(client.Answered());
  ASSERT_TRUE(semaphore->Give(1, &err)) << err;
  EXPECT_EQ(client.Outcome(), SemaphoreClient::kGranted);
  EXPECT_EQ(Waiting(*semaphore), 0);
  EXPECT_EQ(Value(*semaphore), 0);
  EXPECT_EQ(client.GiveBack(), 0);
  EXPECT_EQ(Value(*semaphore), 1) << "a client's give-back is a rise of the value";

  SemaphoreClient killed(semaphore->id());
  EXPECT_EQ(killed.Outcome(), SemaphoreClient::kGranted) << "took the unit there without blocking";
  EXPECT_EQ(Value(*semaphore), 0);
  killed.Kill();
  EXPECT_EQ(Value(*semaphore), 1) << "SEM_UNDO did not give a killed client's unit back";
  EXPECT_EQ(semaphore->TakeBack(1, &err), 1) << err;
}

TEST(SemaphoreEndpointTest, RemovalWakesBlockedClientsWithEidrm) {
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  int id = semaphore->id();
  SemaphoreClient client(id);
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting(*semaphore) == 1; }));
  std::string err;
  ASSERT_TRUE(semaphore->Remove(&err)) << err;
  EXPECT_EQ(client.Outcome(), SemaphoreClient::kRemoved);
  EXPECT_FALSE(Exists(id));
  EXPECT_EQ(semaphore->Stocked(&err), -1);
  EXPECT_NE(err.find("sysvsem:" + std::to_string(id)), std::string::npos) << err;
  EXPECT_TRUE(semaphore->Remove(&err)) << "a second removal is not an error";
  ::testing::internal::CaptureStderr();
  semaphore.reset();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(SemaphoreEndpointTest, TheDestructorRemovesTheSet) {
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  int id = semaphore->id();
  ASSERT_TRUE(Exists(id));
  semaphore.reset();
  EXPECT_FALSE(Exists(id));
  EXPECT_TRUE(errno == EINVAL || errno == EIDRM) << strerror(errno);
}

// Mode 0600: a process of another uid cannot take a unit (EACCES), even one
// that is there.
TEST(SemaphoreEndpointTest, AnotherUidIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a client as another uid";
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  std::string err;
  ASSERT_TRUE(semaphore->Give(1, &err)) << err;
  pid_t pid = fork();
  if (pid == 0) {
    if (setresgid(65534, 65534, 65534) != 0 || setresuid(65534, 65534, 65534) != 0) _exit(2);
    sembuf take{0, -1, SEM_UNDO | IPC_NOWAIT};
    _exit(semop(semaphore->id(), &take, 1) == -1 && errno == EACCES ? 0 : 1);
  }
  int status = -1;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  EXPECT_EQ(Value(*semaphore), 1);
  EXPECT_EQ(semaphore->TakeBack(1, &err), 1) << err;
}

// The poll reports what it read at once and on every change, and backs off
// while nothing changes.
TEST(SemaphoreEndpointTest, ThePollSeesAWaiterAndBacksOffWhileNothingChanges) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  std::vector<SemaphoreEndpoint::Counts> seen;
  semaphore->Start(&loop, [&](SemaphoreEndpoint::Counts counts) { seen.push_back(counts); });
  ASSERT_TRUE(test_util::RunLoopUntil(&loop, [&] { return seen.size() == 1; }));
  EXPECT_EQ(seen[0], (SemaphoreEndpoint::Counts{0, 0}));
  ASSERT_TRUE(test_util::RunLoopUntil(
      &loop, [&] { return semaphore->interval_ms() == SemaphoreEndpoint::kSlowPollMs; }));
  EXPECT_EQ(seen.size(), 1u) << "reported without a change";
  SemaphoreClient client(semaphore->id());
  ASSERT_TRUE(test_util::RunLoopUntil(&loop, [&] { return seen.back().waiting == 1; }));
  EXPECT_EQ(semaphore->interval_ms(), SemaphoreEndpoint::kFastPollMs);
  std::string err;
  ASSERT_TRUE(semaphore->Give(1, &err)) << err;
  EXPECT_EQ(client.Outcome(), SemaphoreClient::kGranted);
  ASSERT_TRUE(test_util::RunLoopUntil(&loop, [&] { return seen.back().waiting == 0; }));
  EXPECT_EQ(seen.back().value, 0);
  EXPECT_EQ(client.GiveBack(), 0);
  ASSERT_TRUE(test_util::RunLoopUntil(&loop, [&] { return seen.back().value == 1; }));
  semaphore->Stop();
  semaphore->Stop();
  EXPECT_TRUE(test_util::RunLoopUntil(&loop, [&] { return !uv_loop_alive(&loop); }));
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

// A unit given to a blocked client is taken in the same semop: when another
// client blocks before the next poll, the counts read as before (one
// waiter, value 0), and that waiter must still be reported, or nobody asks
// a slot for it until a unit comes back.
TEST(SemaphoreEndpointTest, AfterAGiveTheNextReadIsReportedEvenIfItLooksTheSame) {
  uv_loop_t loop;
  ASSERT_EQ(uv_loop_init(&loop), 0);
  auto semaphore = MakeSet();
  ASSERT_NE(semaphore, nullptr);
  std::vector<SemaphoreEndpoint::Counts> seen;
  semaphore->Start(&loop, [&](SemaphoreEndpoint::Counts counts) { seen.push_back(counts); });
  SemaphoreClient first(semaphore->id());
  ASSERT_TRUE(
      test_util::RunLoopUntil(&loop, [&] { return !seen.empty() && seen.back().waiting == 1; }));
  size_t reports = seen.size();
  std::string err;
  ASSERT_TRUE(semaphore->Give(1, &err)) << err;
  EXPECT_EQ(first.Outcome(), SemaphoreClient::kGranted);
  SemaphoreClient second(semaphore->id());  // blocks while the loop does not run
  ASSERT_TRUE(EventuallyTrue([&] { return Waiting(*semaphore) == 1; }));
  ASSERT_TRUE(test_util::RunLoopUntil(&loop, [&] { return seen.size() > reports; }));
  EXPECT_EQ(seen.back(), (SemaphoreEndpoint::Counts{1, 0}));
  ASSERT_TRUE(semaphore->Give(1, &err)) << err;
  EXPECT_EQ(second.Outcome(), SemaphoreClient::kGranted);
  semaphore->Stop();
  EXPECT_TRUE(test_util::RunLoopUntil(&loop, [&] { return !uv_loop_alive(&loop); }));
  EXPECT_EQ(uv_loop_close(&loop), 0);
}

}  // namespace
}  // namespace jobbridge
