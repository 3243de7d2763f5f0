// The Robust Jobserver's System V semaphore (ROBUST_JOBSERVER=sysvsem:ID):
// a unit taken with semop(-1, SEM_UNDO) is a slot, given back with +1, and
// the kernel undoes what a dead process held (docs/PROTOCOL.md).
//
// A semaphore cannot be polled. An acquire that cannot take a unit at once
// starts a waiter thread that blocks in semop, as zig's std.job client does,
// so the server sees it waiting (GETNCNT, how jobbridge knows whom to
// serve); the thread signals an eventfd when it has the unit, which is what
// the caller polls. It waits in slices of kSliceMs so that an abandoned
// attempt's thread ends soon after; a unit it gets after that goes back at
// once. A make job's implicit slot (implicit_slot.h) is handed out first,
// as in socket mode.
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "client/transport.h"
#include "core/robust_jobserver.h"
#include "util/eintr.h"
#include "util/robust_set.h"

namespace jobbridge::client {

namespace {

constexpr long kSliceMs = 50;

// -EPIPE when the set is gone (the server removed it), else -errno.
int SemError(int error) { return error == EIDRM || error == EINVAL ? -EPIPE : -error; }

// One unit, without waiting: 0, -EAGAIN, or SemError.
int TryTakeUnit(int set) {
  sembuf take{0, -1, static_cast<short>(SEM_UNDO | IPC_NOWAIT)};
  if (RetryOnEintr([&] { return semop(set, &take, 1); }) == 0) return 0;
  return errno == EAGAIN ? -EAGAIN : SemError(errno);
}

int GiveUnit(int set) {
  sembuf give{0, 1, SEM_UNDO};
  return RetryOnEintr([&] { return semop(set, &give, 1); }) == 0 ? 0 : SemError(errno);
}

}  // namespace

// The thread waiting for one unit, and what it got. Shared by the thread
// and the attempt; whichever is left last frees it.
struct SemaphoreWait {
  int set = -1;
  UniqueFd ready;  // eventfd: readable once the thread is done (a unit, or an error)
  std::mutex mutex;
  bool done = false;       // the thread got a unit (result 0) or failed (result < 0)
  int result = -EAGAIN;    // guarded by mutex
  bool abandoned = false;  // the attempt is gone: a unit got later goes back
  bool handed = false;     // the unit went to a grant

  void Run() {
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (abandoned) return;
      }
      sembuf take{0, -1, SEM_UNDO};
      timespec slice{0, kSliceMs * 1000000};
      int rc = semtimedop(set, &take, 1, &slice) == 0 ? 0 : errno;
      if (rc == EAGAIN || rc == EINTR) continue;
      std::lock_guard lock(mutex);
      if (rc == 0 && abandoned) {
        GiveUnit(set);
        return;
      }
      done = true;
      result = rc == 0 ? 0 : SemError(rc);
      uint64_t one = 1;
      RetryOnEintr([&] { return write(ready.get(), &one, sizeof one); });
      return;
    }
  }
};

void SemaphoreWaitHandle::Abandon() {
  // Declared before the lock, so destroyed after it: the mutex must not
  // die with the last reference while it is held.
  std::shared_ptr<SemaphoreWait> wait = std::move(wait_);
  if (!wait) return;
  std::lock_guard lock(wait->mutex);
  wait->abandoned = true;
  if (wait->done && wait->result == 0 && !wait->handed) GiveUnit(wait->set);
}

namespace {

class SemaphoreTransport : public Transport {
 public:
  SemaphoreTransport(int set, const std::string& origin, std::unique_ptr<ImplicitSlot> implicit)
      : set_(set), origin_(origin), implicit_(std::move(implicit)) {}

  jobbridge_mode Mode() const override { return JOBBRIDGE_MODE_SYSVSEM; }

  std::string Describe() const override {
    return "sysvsem " + std::to_string(set_) + (origin_.empty() ? "" : " (from " + origin_ + ")") +
           (implicit_ != nullptr ? " (with the implicit slot of a make job)" : "");
  }

  int Start(Attempt* attempt) override {
    if (implicit_ != nullptr) {
      attempt->implicit = implicit_->TryTake();
      if (attempt->implicit) return 0;
    }
    int rc = TryTakeUnit(set_);
    if (rc == 0) {
      attempt->unit_taken = true;
      return 0;
    }
    if (rc != -EAGAIN) return rc;
    auto wait = std::make_shared<SemaphoreWait>();
    wait->set = set_;
    wait->ready.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wait->ready.valid()) return -errno;
    // The poll set first: a failure then leaves no thread behind.
    UniqueFd poll_set;
    if (implicit_ != nullptr) {
      rc = MakeEpollSet({implicit_->fd(), wait->ready.get()}, &poll_set);
    } else {
      poll_set.Reset(fcntl(wait->ready.get(), F_DUPFD_CLOEXEC, 0));
      rc = poll_set.valid() ? 0 : -errno;
    }
    if (rc < 0) return rc;
    try {
      std::thread([wait] { wait->Run(); }).detach();
    } catch (const std::system_error& error) {
      return -error.code().value();
    }
    attempt->poll_set = std::move(poll_set);
    attempt->semaphore = SemaphoreWaitHandle(std::move(wait));
    return 0;
  }

  int TryFinish(Attempt* attempt, Grant* grant) override {
    if (!attempt->implicit && implicit_ != nullptr) attempt->implicit = implicit_->TryTake();
    if (attempt->implicit) {
      grant->implicit = std::move(attempt->implicit);
      return 0;  // a waiter still running is abandoned with the attempt
    }
    if (attempt->unit_taken) {
      attempt->unit_taken = false;
      grant->unit = true;
      return 0;
    }
    SemaphoreWait* wait = attempt->semaphore.get();
    if (wait == nullptr) return -EINVAL;
    std::lock_guard lock(wait->mutex);
    if (!wait->done) return -EAGAIN;
    if (wait->result == 0) {
      wait->handed = true;
      grant->unit = true;
    }
    return wait->result;
  }

  // An attempt granted at Start (the implicit slot or a unit) has nothing to
  // poll: its fd is readable for good. The others poll the waiter's eventfd.
  int MakePollable(Attempt* attempt) override {
    if (attempt->poll_set.valid()) return 0;
    attempt->poll_set.Reset(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    return attempt->poll_set.valid() ? 0 : -errno;
  }

  int Release(Grant* grant) override {
    grant->implicit.reset();
    if (!grant->unit) return 0;
    grant->unit = false;
    return GiveUnit(set_);
  }

 private:
  const int set_;
  const std::string origin_;
  const std::unique_ptr<ImplicitSlot> implicit_;
};

}  // namespace

int OpenSemaphoreTransport(const std::string& value, const std::string& origin, bool implicit_slot,
                           std::unique_ptr<Transport>* out, std::string* why) {
  std::string named = origin.empty() ? "the jobserver" : origin;
  int set = 0;
  if (!ParseRobustJobserver(value, named, &set, why)) return -EINVAL;
  if (int rc = CheckRobustSet(set, named, why); rc < 0) return rc;
  std::unique_ptr<ImplicitSlot> implicit;
  if (implicit_slot) {
    if (int rc = ImplicitSlot::Open(&implicit, why); rc < 0) return rc;
  }
  *out = std::make_unique<SemaphoreTransport>(set, origin, std::move(implicit));
  return 0;
}

}  // namespace jobbridge::client
