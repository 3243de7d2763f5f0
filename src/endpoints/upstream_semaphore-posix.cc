// The outer budget as the Robust Jobserver's semaphore (upstream.h, kind
// kSysvsem): a lease is a unit taken with semop(-1, SEM_UNDO) and given back
// with semop(+1, SEM_UNDO), so the kernel gives back what this jobbridge
// holds if it is killed.
//
// A semaphore cannot be polled, and the outer server must see who waits (it
// polls GETNCNT): each outstanding request is a thread blocked in semtimedop,
// as the client library waits (client/semaphore_transport-posix.cc), at most
// kMaxWaitingThreads at once. The threads wait in slices of kSliceMs, so a
// withdrawn request's thread ends within a slice; a unit it gets after its
// request was withdrawn it gives back at once. A unit taken wakes the loop
// (uv_async), which hands it to the delegate.
#include <sys/ipc.h>
#include <sys/sem.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>

#include "endpoints/upstream.h"
#include "log.h"
#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {
namespace {

constexpr long kSliceMs = 50;
constexpr int kMaxWaitingThreads = 32;

bool GiveUnit(int set) {
  sembuf give{0, 1, SEM_UNDO};
  return RetryOnEintr([&] { return semop(set, &give, 1); }) == 0;
}

// What the loop and the waiting threads share. Every thread holds a
// reference, so it outlives the upstream by up to a slice.
struct Waiters {
  int set = -1;
  std::mutex mutex;            // guards everything below
  int wanted = 0;              // requests beyond the units `arrived`
  int threads = 0;             // threads running
  int arrived = 0;             // units taken for the loop, not handed to it yet
  int failure = 0;             // errno of a take that failed: the set is gone
  uv_async_t* wake = nullptr;  // null once the upstream is closed

  // A thread's life: takes units while it is wanted, in slices.
  void Run() {
    for (;;) {
      {
        std::lock_guard lock(mutex);
        if (threads > wanted || failure != 0 || wake == nullptr) {
          --threads;
          return;
        }
      }
      sembuf take{0, -1, SEM_UNDO};
      timespec slice{0, kSliceMs * 1000000};
      int rc = semtimedop(set, &take, 1, &slice) == 0 ? 0 : errno;
      if (rc == EAGAIN || rc == EINTR) continue;
      std::lock_guard lock(mutex);
      if (rc != 0) {
        failure = rc;
        --threads;
        if (wake) uv_async_send(wake);
        return;
      }
      if (wanted > 0 && wake) {
        --wanted;
        ++arrived;
        uv_async_send(wake);
      } else {
        GiveUnit(set);  // withdrawn while it waited
      }
    }
  }
};

class SemaphoreUpstream : public Upstream {
 public:
  SemaphoreUpstream(uv_loop_t* loop, int set, Delegate* delegate)
      : delegate_(delegate), waiters_(std::make_shared<Waiters>()) {
    waiters_->set = set;
    async_ = new uv_async_t;
    uv_async_init(loop, async_, OnWake);
    async_->data = this;
    waiters_->wake = async_;
  }

  void SetWanted(int count) override {
    if (lost_) return;
    std::lock_guard lock(waiters_->mutex);
    if (waiters_->wake == nullptr) return;
    // Units already taken for the loop end their requests when handed over.
    waiters_->wanted = std::max(count - waiters_->arrived, 0);
    while (waiters_->threads < std::min(waiters_->wanted, kMaxWaitingThreads)) {
      ++waiters_->threads;
      try {
        std::thread([waiters = waiters_] { waiters->Run(); }).detach();
      } catch (const std::system_error& error) {
        --waiters_->threads;
        if (!warned_) {
          LogWarning(std::string("cannot start a thread to wait for the ROBUST_JOBSERVER ") +
                     "semaphore: " + error.what() + "; fewer requests wait for it");
        }
        warned_ = true;
        break;
      }
    }
  }

  bool Release(std::string* err) override {
    if (lost_) return true;  // the set is gone: there is nobody to give it to
    if (leased_ == 0) {
      *err = "internal: a lease was given back that was never taken";
      return false;
    }
    --leased_;
    if (GiveUnit(waiters_->set)) return true;
    if (errno == EIDRM || errno == EINVAL) {
      LoseLater(errno);  // reported from the loop, not inside the caller
      return true;
    }
    *err = "cannot give a unit back to the outer ROBUST_JOBSERVER semaphore (sysvsem:" +
           std::to_string(waiters_->set) + "): " + strerror(errno);
    return false;
  }

  int leased() const override { return leased_; }
  int64_t total_leased() const override { return total_; }
  bool lost() const override { return lost_; }

  bool Close(std::string* err) override {
    int arrived = 0;
    int failure = 0;
    {
      std::lock_guard lock(waiters_->mutex);
      waiters_->wanted = 0;
      waiters_->wake = nullptr;  // the threads end within a slice
      arrived = std::exchange(waiters_->arrived, 0);
      failure = waiters_->failure;
    }
    bool ok = true;
    for (int i = 0; i < arrived && failure == 0; ++i) ok = GiveUnit(waiters_->set) && ok;
    while (ok && leased_ > 0 && !lost_) ok = Release(err);
    if (!ok && err->empty()) *err = "cannot give units back to the outer semaphore";
    if (!lost_ && failure != 0) Lose(failure);
    CloseAndDelete(async_);
    async_ = nullptr;
    return ok;
  }

 private:
  static void OnWake(uv_async_t* handle) {
    static_cast<SemaphoreUpstream*>(handle->data)->HandOver();
  }

  // One unit at a time: while the delegate takes one, the others still
  // count as arrived, so a SetWanted it calls does not ask for them again.
  void HandOver() {
    int failure = 0;
    for (;;) {
      {
        std::lock_guard lock(waiters_->mutex);
        failure = waiters_->failure;
        if (failure != 0 || waiters_->arrived == 0) break;
        --waiters_->arrived;
      }
      ++leased_;
      ++total_;
      delegate_->OnLease();  // may call SetWanted and Release
      if (lost_) return;
    }
    if (failure != 0) Lose(failure);
  }

  void LoseLater(int error) {
    std::lock_guard lock(waiters_->mutex);
    if (waiters_->failure == 0) waiters_->failure = error;
    if (waiters_->wake) uv_async_send(waiters_->wake);
  }

  void Lose(int error) {
    if (lost_) return;
    lost_ = true;
    {
      std::lock_guard lock(waiters_->mutex);
      waiters_->wanted = 0;
      waiters_->arrived = 0;
    }
    leased_ = 0;
    std::string why =
        "the outer ROBUST_JOBSERVER semaphore (sysvsem:" + std::to_string(waiters_->set) + ") ";
    why += error == EIDRM || error == EINVAL ? "was removed: its server has ended or was killed"
                                             : std::string("failed: ") + strerror(error);
    delegate_->OnLost(why);
  }

  Delegate* delegate_;
  std::shared_ptr<Waiters> waiters_;
  uv_async_t* async_ = nullptr;  // freed in its close callback
  int leased_ = 0;
  int64_t total_ = 0;
  bool lost_ = false;
  bool warned_ = false;
};

}  // namespace

std::unique_ptr<Upstream> CreateSemaphoreUpstream(uv_loop_t* loop, int set,
                                                  Upstream::Delegate* delegate) {
  return std::make_unique<SemaphoreUpstream>(loop, set, delegate);
}

}  // namespace jobbridge
