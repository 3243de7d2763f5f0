// The client library against a real System V semaphore set, named as the
// Robust Jobserver names it (ROBUST_JOBSERVER=sysvsem:ID). The test plays
// the server: it sets the value, gives units with semop and reads GETNCNT
// to see a client blocked waiting.
#include <signal.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "client_sysvsem_support.h"

namespace jobbridge {
namespace client_test {
namespace {

using SemaphoreClientTest = SemaphoreTest;

TEST_F(SemaphoreClientTest, TakesAndGivesBackUnits) {
  SetValue(2);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SYSVSEM);
  char text[256];
  jobbridge_client_describe(client, text, sizeof text);
  EXPECT_EQ(std::string(text), "sysvsem " + std::to_string(set_) + " (from ROBUST_JOBSERVER)");
  jobbridge_slot* a = nullptr;
  jobbridge_slot* b = nullptr;
  jobbridge_slot* c = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &a), 0);
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &b), 0);
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &c), -ETIMEDOUT);
  EXPECT_EQ(c, nullptr);
  EXPECT_EQ(jobbridge_slot_release(a), 0);
  EXPECT_EQ(jobbridge_slot_release(b), 0);
  jobbridge_client_close(client);
  // The timed-out acquire's waiter may still be blocked when a unit comes
  // back: the kernel hands it one, which it gives back at once (its attempt
  // was abandoned), and it leaves with its next slice. A CI run read the
  // value in between (1).
  EXPECT_TRUE(Eventually([&] { return Blocked() == 0 && Value() == 2; }))
      << "blocked " << Blocked() << ", value " << Value();
  EXPECT_TRUE(Eventually([&] { return OpenFds() == fds_before_; })) << "an fd was left open";
}

// A client blocked for a unit shows in GETNCNT (how a server sees whom to
// serve), and the unit the server gives goes to it.
TEST_F(SemaphoreClientTest, ABlockedAcquireIsSeenAndGranted) {
  SetValue(0);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  std::atomic<int> result{1};
  jobbridge_slot* slot = nullptr;
  std::thread waiter([&] { result = jobbridge_client_acquire(client, kEventMs, &slot); });
  ASSERT_TRUE(Eventually([&] { return Blocked() == 1; })) << "the waiter is not seen";
  EXPECT_EQ(result, 1);
  Give();
  waiter.join();
  ASSERT_EQ(result, 0);
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  EXPECT_EQ(Value(), 1);
  jobbridge_client_close(client);
}

TEST_F(SemaphoreClientTest, CancelAndTimeoutLeaveNoWaiterAndTakeNothing) {
  SetValue(0);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  jobbridge_slot* slot = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 30, &slot), -ETIMEDOUT);
  std::atomic<int> result{1};
  std::thread waiter([&] { result = jobbridge_client_acquire(client, -1, &slot); });
  ASSERT_TRUE(Eventually([&] { return Blocked() >= 1; }));
  EXPECT_EQ(jobbridge_client_cancel(client), 0);
  waiter.join();
  EXPECT_EQ(result, -ECANCELED);
  EXPECT_EQ(slot, nullptr);
  ASSERT_TRUE(Eventually([&] { return Blocked() == 0; })) << "an abandoned waiter still waits";
  Give();
  EXPECT_EQ(Value(), 1) << "an abandoned waiter took a unit";
  jobbridge_client_close(client);
  EXPECT_TRUE(Eventually([&] { return OpenFds() == fds_before_; })) << "an fd was left open";
}

// What the API offers instead of a pollable semaphore: a pending acquire's fd
// is an eventfd its waiter thread signals.
TEST_F(SemaphoreClientTest, APendingAcquiresFdTurnsReadableWhenAUnitComes) {
  SetValue(0);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  jobbridge_pending* pending = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  int fd = jobbridge_pending_fd(pending);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(Eventually([&] { return Blocked() == 1; }));
  EXPECT_FALSE(Readable(fd));
  jobbridge_slot* slot = nullptr;
  EXPECT_EQ(jobbridge_client_acquire_finish(pending, &slot), -EAGAIN);
  Give();
  EXPECT_TRUE(Readable(fd, kEventMs));
  ASSERT_EQ(jobbridge_client_acquire_finish(pending, &slot), 0);
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);

  // Abandoned, a pending takes nothing, even a unit that comes after.
  SetValue(0);
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  ASSERT_TRUE(Eventually([&] { return Blocked() == 1; }));
  jobbridge_client_acquire_abandon(pending);
  ASSERT_TRUE(Eventually([&] { return Blocked() == 0; }));
  Give();
  EXPECT_EQ(Value(), 1) << "an abandoned pending took a unit";
  jobbridge_client_close(client);
}

// make exports MAKELEVEL to its recipes: a client there runs on its job's slot.
TEST_F(SemaphoreClientTest, AMakeJobHandsOutItsImplicitSlotFirst) {
  SetValue(1);
  setenv("MAKELEVEL", "1", 1);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  jobbridge_slot* implicit = nullptr;
  jobbridge_slot* unit = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &implicit), 0);
  EXPECT_EQ(Value(), 1) << "the implicit slot took a unit";
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &unit), 0);
  EXPECT_EQ(Value(), 0);
  EXPECT_EQ(jobbridge_slot_release(unit), 0);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  EXPECT_EQ(Value(), 1);
  jobbridge_client_close(client);
}

// SEM_UNDO: the kernel gives back what a killed client held.
TEST_F(SemaphoreClientTest, AKilledHoldersUnitsComeBack) {
  SetValue(2);
  setenv("ROBUST_JOBSERVER", Named().c_str(), 1);
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    jobbridge_client* client = nullptr;
    jobbridge_slot* a = nullptr;
    jobbridge_slot* b = nullptr;
    if (jobbridge_client_open_env(&client, nullptr, 0) != 0 ||
        jobbridge_client_acquire(client, 0, &a) != 0 ||
        jobbridge_client_acquire(client, 0, &b) != 0) {
      _exit(2);
    }
    char byte = '!';
    if (write(ready[1], &byte, 1) != 1) _exit(3);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1) << "the child did not take its units";
  close(ready[0]);
  EXPECT_EQ(Value(), 0);
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_EQ(Value(), 2);
}

TEST_F(SemaphoreClientTest, ARemovedSetIsTheJobserverGone) {
  SetValue(0);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  std::atomic<int> result{1};
  jobbridge_slot* slot = nullptr;
  std::thread waiter([&] { result = jobbridge_client_acquire(client, kEventMs, &slot); });
  ASSERT_TRUE(Eventually([&] { return Blocked() == 1; }));
  ASSERT_EQ(semctl(set_, 0, IPC_RMID), 0);
  int removed = set_;
  set_ = -1;
  waiter.join();
  EXPECT_EQ(result, -EPIPE) << "a waiter on a removed set";
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &slot), -EPIPE);
  jobbridge_client_close(client);
  jobbridge_client* again = nullptr;
  EXPECT_EQ(Open("sysvsem:" + std::to_string(removed), &again), -EPIPE);
  EXPECT_NE(std::string(why_).find("which does not exist (its server is gone)"), std::string::npos)
      << why_;
}

TEST_F(SemaphoreClientTest, BadValuesAreClearErrors) {
  int pair = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
  ASSERT_GE(pair, 0) << strerror(errno);
  struct Case {
    std::string value;
    std::string said;
  };
  const Case cases[] = {
      {"sysvsem", "it must be METHOD:VALUE, such as sysvsem:ID"},
      {"sysvsem:", "it must be a decimal id"},
      {"sysvsem:12x", "it must be a decimal id"},
      {"sysvsem:-1", "it must be a decimal id"},
      {"sysvsem:99999999999", "it must be a decimal id"},
      {"win32pipe:jobserver", "names the method 'win32pipe'; this client speaks only sysvsem"},
      {"sysvsem:" + std::to_string(pair),
       "of 2 semaphores; the Robust Jobserver's set has exactly one"},
  };
  for (const Case& c : cases) {
    jobbridge_client* client = nullptr;
    EXPECT_EQ(Open(c.value, &client), -EINVAL) << c.value;
    EXPECT_EQ(client, nullptr);
    EXPECT_NE(std::string(why_).find("ROBUST_JOBSERVER"), std::string::npos) << why_;
    EXPECT_NE(std::string(why_).find(c.said), std::string::npos) << c.value << ": " << why_;
  }
  semctl(pair, 0, IPC_RMID);
  ExpectNoFdLeft();
}

// JOBSERVERV2 first (pollable, the whole API natively), then
// ROBUST_JOBSERVER, then the make variables (docs/PROTOCOL.md).
TEST_F(SemaphoreClientTest, TheSocketGoesFirstThenTheSemaphoreThenMake) {
  setenv("MAKEFLAGS", "-j2 --jobserver-auth=fifo:/nonexistent", 1);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SYSVSEM);
  jobbridge_client_close(client);
  setenv("JOBSERVERV2", (dir_ + "/socket").c_str(), 1);
  ASSERT_EQ(Open(Named(), &client), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SOCKET);
  jobbridge_client_close(client);
}

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
