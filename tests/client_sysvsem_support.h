// Shared by the client library's sysvsem tests (client_sysvsem_test.cc and
// the threaded client_threads_sysvsem_test.cc): a fixture owning a private
// System V set of one semaphore, whose server the test plays (it sets the
// value, gives units, reads GETNCNT to see a client blocked waiting).
#pragma once

#include <sys/ipc.h>
#include <sys/sem.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "client_test_support.h"

namespace jobbridge {
namespace client_test {

// Polls `condition` until it holds or kEventMs passed (the bound, never the event).
inline bool Eventually(const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kEventMs);
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

class SemaphoreTest : public ClientTest {
 protected:
  void SetUp() override {
    ClientTest::SetUp();
    set_ = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
    ASSERT_GE(set_, 0) << strerror(errno);
  }

  void TearDown() override {
    if (set_ >= 0) semctl(set_, 0, IPC_RMID);
    ClientTest::TearDown();
  }

  void SetValue(int value) { ASSERT_EQ(semctl(set_, 0, SETVAL, value), 0) << strerror(errno); }
  int Value() const { return semctl(set_, 0, GETVAL); }
  int Blocked() const { return semctl(set_, 0, GETNCNT); }
  void Give() {
    sembuf give{0, 1, 0};
    ASSERT_EQ(semop(set_, &give, 1), 0) << strerror(errno);
  }
  std::string Named() const { return "sysvsem:" + std::to_string(set_); }

  // Opens from ROBUST_JOBSERVER=`value`; returns the result, *client on success.
  int Open(const std::string& value, jobbridge_client** client) {
    setenv("ROBUST_JOBSERVER", value.c_str(), 1);
    why_[0] = '\0';
    return jobbridge_client_open_env(client, why_, sizeof why_);
  }

  int set_ = -1;  // -1 once a test removed it
  char why_[512] = "";
};

}  // namespace client_test
}  // namespace jobbridge
