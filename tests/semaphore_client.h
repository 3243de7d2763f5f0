// A Robust Jobserver client for the unit tests: a forked child making the
// calls zig's std.job makes (semop -1 with SEM_UNDO, blocking; semop +1 with
// SEM_UNDO), controlled by the test through two pipes.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <functional>
#include <thread>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge::test_util {

class SemaphoreClient {
 public:
  // What the child reports once its take returned.
  static constexpr char kGranted = 'g';
  static constexpr char kRemoved = 'r';  // EIDRM: the server removed the set
  static constexpr char kRefused = 'a';  // EACCES
  static constexpr char kFailed = 'e';

  // Forks a client that takes one unit of set `id` (blocking), reports, and
  // when the test calls GiveBack gives it back and exits.
  explicit SemaphoreClient(int id) {
    int said[2], told[2];
    if (pipe2(said, O_CLOEXEC) != 0 || pipe2(told, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) Run(id, said[1], told[0]);
    close(said[1]);
    close(told[0]);
    said_.Reset(said[0]);
    told_.Reset(told[1]);
  }
  ~SemaphoreClient() {
    if (pid_ > 0) Kill();
  }
  SemaphoreClient(const SemaphoreClient&) = delete;
  SemaphoreClient& operator=(const SemaphoreClient&) = delete;

  pid_t pid() const { return pid_; }
  // True once the child's take returned (then Outcome says how).
  bool Answered() const {
    pollfd p{said_.get(), POLLIN, 0};
    return poll(&p, 1, 0) == 1;
  }
  // Waits for the child's report; 0 when none came within 5 s.
  char Outcome() {
    pollfd p{said_.get(), POLLIN, 0};
    char c = 0;
    if (RetryOnEintr([&] { return poll(&p, 1, 5000); }) == 1) {
      if (read(said_.get(), &c, 1) != 1) c = 0;
    }
    return c;
  }
  // Gives the unit back (semop +1, SEM_UNDO); returns its exit status.
  int GiveBack() {
    told_.Reset();
    return Wait();
  }
  // SIGKILL: the kernel undoes what it holds.
  void Kill() {
    kill(pid_, SIGKILL);
    Wait();
  }

 private:
  [[noreturn]] static void Run(int id, int said, int told) {
    // Only its own ends: a copy of `told`'s write end (its own, or another
    // client's) would keep it from ever reading end of file.
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != said && fd != told) close(fd);
    }
    sembuf take{0, -1, SEM_UNDO};
    int rc = RetryOnEintr([&] { return semop(id, &take, 1); });
    char c = rc == 0 ? kGranted : errno == EIDRM ? kRemoved : errno == EACCES ? kRefused : kFailed;
    if (write(said, &c, 1) != 1 || rc != 0) _exit(1);
    char byte;
    RetryOnEintr([&] { return read(told, &byte, 1); });  // end of file: give it back
    sembuf give{0, +1, SEM_UNDO};
    _exit(semop(id, &give, 1) == 0 ? 0 : 1);
  }
  int Wait() {
    int status = -1;
    if (pid_ > 0) RetryOnEintr([&] { return waitpid(pid_, &status, 0); });
    pid_ = -1;
    return status;
  }

  pid_t pid_ = -1;
  UniqueFd said_;  // the child's report
  UniqueFd told_;  // closed by the test: give the unit back
};

// Polls `done` (a count the kernel keeps, which raises no event) every
// millisecond for up to 5 s.
inline bool EventuallyTrue(const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace jobbridge::test_util
