#include <sys/ipc.h>
#include <sys/sem.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "endpoints/semaphore_endpoint.h"
#include "log.h"
#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {
namespace {

std::string Failed(const char* what, int id) {
  return std::string(what) + " of the ROBUST_JOBSERVER semaphore (sysvsem:" + std::to_string(id) +
         ") failed: " + strerror(errno);
}

// semctl's fourth argument, which the caller defines (semctl(2)).
union SemArgument {
  int val;
  semid_ds* buf;
  unsigned short* array;
};

// One semop on the set's only semaphore (no SEM_UNDO: the units are the
// bridge's, not a client's).
int Operate(int id, int delta, short flags) {
  sembuf op{0, static_cast<short>(delta), flags};
  return RetryOnEintr([&] { return semop(id, &op, 1); });
}

}  // namespace

std::unique_ptr<SemaphoreEndpoint> SemaphoreEndpoint::Create(std::string* err) {
  int id = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
  if (id < 0) {
    *err = std::string("cannot create the ROBUST_JOBSERVER semaphore (semget): ") + strerror(errno);
    return nullptr;
  }
  // A new set's value is 0 on Linux, but POSIX leaves it unspecified.
  SemArgument zero{.val = 0};
  if (semctl(id, 0, SETVAL, zero) != 0) {
    *err = Failed("SETVAL", id);
    semctl(id, 0, IPC_RMID);
    return nullptr;
  }
  return std::unique_ptr<SemaphoreEndpoint>(new SemaphoreEndpoint(id));
}

SemaphoreEndpoint::~SemaphoreEndpoint() {
  Stop();
  std::string err;
  if (!Remove(&err)) LogWarning(err);
}

bool SemaphoreEndpoint::Remove(std::string* err) {
  if (removed_) return true;
  removed_ = true;
  // EINVAL/EIDRM: someone of our uid removed it already; nothing is left.
  if (semctl(id_, 0, IPC_RMID) == 0 || errno == EINVAL || errno == EIDRM) return true;
  *err = Failed("removing (IPC_RMID)", id_);
  return false;
}

int SemaphoreEndpoint::Waiting(std::string* err) const {
  int n = semctl(id_, 0, GETNCNT);
  if (n < 0) *err = Failed("GETNCNT", id_);
  return n;
}

int SemaphoreEndpoint::Stocked(std::string* err) const {
  int n = semctl(id_, 0, GETVAL);
  if (n < 0) *err = Failed("GETVAL", id_);
  return n;
}

bool SemaphoreEndpoint::Give(int count, std::string* err) {
  if (count <= 0) return true;
  if (Operate(id_, count, 0) == 0) {
    ReadAgainSoon();
    return true;
  }
  *err = Failed("giving units (semop)", id_);
  return false;
}

int SemaphoreEndpoint::TakeBack(int max, std::string* err) {
  // A client may take a unit between the read and the semop: then EAGAIN,
  // and a smaller count is tried.
  for (;;) {
    int there = Stocked(err);
    if (there < 0) return -1;
    int take = std::min(there, max);
    if (take <= 0) return 0;
    if (Operate(id_, -take, IPC_NOWAIT) == 0) return take;
    if (errno != EAGAIN) {
      *err = Failed("taking units back (semop)", id_);
      return -1;
    }
  }
}

void SemaphoreEndpoint::Start(uv_loop_t* loop, std::function<void(Counts)> changed) {
  changed_ = std::move(changed);
  poll_ = new uv_timer_t;
  uv_timer_init(loop, poll_);
  poll_->data = this;
  uv_timer_start(poll_, OnPoll, 0, 0);
}

void SemaphoreEndpoint::Stop() {
  CloseAndDelete(poll_);
  poll_ = nullptr;
}

// A unit given to a blocked client is taken in the same semop: the counts
// may come back to what the last poll read (one waiter served, another
// arrived) and that waiter would never be reported. So the next read is
// reported whatever it is, and comes within kFastPollMs.
void SemaphoreEndpoint::ReadAgainSoon() {
  read_once_ = false;
  interval_ms_ = kFastPollMs;
  if (poll_ && uv_is_active(reinterpret_cast<uv_handle_t*>(poll_))) {
    uv_timer_start(poll_, OnPoll, kFastPollMs, 0);
  }
}

void SemaphoreEndpoint::OnPoll(uv_timer_t* timer) {
  static_cast<SemaphoreEndpoint*>(timer->data)->Poll();
}

// Two semctl calls (about 0.35 us each). A change brings the interval back
// to kFastPollMs: a build that uses the semaphore changes it often, and a
// client that blocks then waits at most that long to be seen.
void SemaphoreEndpoint::Poll() {
  std::string err;
  Counts now{Waiting(&err), Stocked(&err)};
  if (now.waiting < 0 || now.value < 0) {
    // Removed under us (ipcrm by our uid): its clients got EIDRM already.
    if (!warned_) LogWarning(err + "; ROBUST_JOBSERVER clients get no more slots");
    warned_ = true;
    return;  // not polled again
  }
  if (!read_once_ || now != last_) {
    read_once_ = true;
    last_ = now;
    interval_ms_ = kFastPollMs;
    // May give units (ReadAgainSoon) or take them back, which the next
    // poll reads as one more change.
    changed_(now);
    if (!poll_) return;  // stopped by the callback
  } else {
    interval_ms_ = std::min(interval_ms_ * 2, kSlowPollMs);
  }
  uv_timer_start(poll_, OnPoll, interval_ms_, 0);
}

}  // namespace jobbridge
