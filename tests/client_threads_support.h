// Shared by the client library's threaded tests, the ones scripts/tsan.sh runs
// under ThreadSanitizer (client_threads_socket_test.cc against
// client_test_server.h's TestServer, client_threads_legacy_test.cc against a
// real pipe or FIFO pool): an acquire in a thread of its own, cancel and
// timeout checks over many such threads, and a churn of threads acquiring and
// releasing on one client. Every wait is for an event (a thread asleep in
// poll(), a thread's result, a count of cycles); kEventMs only turns a hang
// into a failure. Each test ends by counting every slot back, and prints
// "threads-test: cycles=C threads=T" (acquire/release cycles its threads
// completed) for the script's summary.
#pragma once

#include <sys/syscall.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client_test_support.h"

namespace jobbridge {
namespace client_test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

inline constexpr int kThreads = 8;
// An acquire cancelled or timed out returns within this (TSan is slow).
inline constexpr auto kPrompt = 2s;

inline void ReportCycles(int cycles, int threads) {
  std::printf("threads-test: cycles=%d threads=%d\n", cycles, threads);
  std::fflush(stdout);
}

// True while thread `tid` of this process sleeps in poll() (the kernel shows
// the system call a blocked thread is in).
inline bool AsleepInPoll(pid_t tid) {
  std::ifstream file("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long number = -1;
  if (!(file >> number)) return false;  // "running"
#ifdef SYS_poll
  if (number == SYS_poll) return true;
#endif
  return number == SYS_ppoll;
}

// One jobbridge_client_acquire in a thread of its own, e.g. one to cancel.
class AcquireThread {
 public:
  AcquireThread(jobbridge_client* client, int timeout_ms)
      : thread_([this, client, timeout_ms] {
          tid_.store(gettid());
          jobbridge_slot* slot = nullptr;
          int rc = jobbridge_client_acquire(client, timeout_ms, &slot);
          std::lock_guard lock(mutex_);
          result_ = rc;
          slot_ = slot;
          done_ = true;
          finished_.notify_all();
        }) {}

  // Gives back a slot the acquire got, which no test left to it.
  ~AcquireThread() {
    thread_.join();
    if (slot_ != nullptr) {
      EXPECT_EQ(jobbridge_slot_release(slot_), 0);
    }
  }

  // Waits until the thread sleeps in poll(), waiting for a slot; false after
  // kEventMs or when the acquire returned instead.
  bool WaitAsleep() {
    auto deadline = Clock::now() + std::chrono::milliseconds(kEventMs);
    while (Clock::now() < deadline) {
      pid_t tid = tid_.load();
      if (tid != 0 && AsleepInPoll(tid)) return true;
      if (Done(0)) return false;
      std::this_thread::yield();
    }
    return false;
  }

  // Waits up to timeout_ms for the acquire to return.
  bool Done(int timeout_ms) {
    std::unique_lock lock(mutex_);
    return finished_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return done_; });
  }

  // What the acquire returned (after Done), and the slot it got, now the caller's.
  int result() {
    std::lock_guard lock(mutex_);
    return result_;
  }
  jobbridge_slot* TakeSlot() {
    std::lock_guard lock(mutex_);
    return std::exchange(slot_, nullptr);
  }

 private:
  std::atomic<pid_t> tid_{0};
  std::mutex mutex_;
  std::condition_variable finished_;
  bool done_ = false;               // guarded by mutex_
  int result_ = 1;                  // guarded by mutex_
  jobbridge_slot* slot_ = nullptr;  // guarded by mutex_
  std::thread thread_;              // last: it starts in the constructor
};

using Waiters = std::vector<std::unique_ptr<AcquireThread>>;

inline Waiters StartAcquires(jobbridge_client* client, int count, int timeout_ms) {
  Waiters waiters;
  for (int i = 0; i < count; ++i) {
    waiters.push_back(std::make_unique<AcquireThread>(client, timeout_ms));
  }
  return waiters;
}

// Cancels `client` once every one of `waiters` sleeps in its acquire, and
// expects each to return -ECANCELED, without a slot, within kPrompt. An
// acquire the cancel did not wake fails the test, and `unblock` ends it (call
// under ASSERT_NO_FATAL_FAILURE: the test cannot go on then).
inline void CancelAndExpectEachWoken(jobbridge_client* client, const Waiters& waiters,
                                     const std::function<void()>& unblock) {
  for (auto& w : waiters) EXPECT_TRUE(w->WaitAsleep());
  auto start = Clock::now();
  EXPECT_EQ(jobbridge_client_cancel(client), 0);
  for (auto& w : waiters) {
    if (!w->Done(kEventMs)) {
      ADD_FAILURE() << "cancel did not wake an acquire";
      unblock();
      ASSERT_TRUE(w->Done(kEventMs));
    }
    EXPECT_EQ(w->result(), -ECANCELED);
    EXPECT_EQ(w->TakeSlot(), nullptr);
  }
  EXPECT_LT(Clock::now() - start, kPrompt);
}

// kThreads acquires with a timeout of `timeout_ms` where no slot is to be had:
// each returns -ETIMEDOUT, not before the timeout and within kPrompt after
// it. Their threads are joined on return (under ASSERT_NO_FATAL_FAILURE).
inline void ExpectEachTimesOut(jobbridge_client* client, int timeout_ms) {
  auto start = Clock::now();
  Waiters waiters = StartAcquires(client, kThreads, timeout_ms);
  for (auto& w : waiters) {
    ASSERT_TRUE(w->Done(kEventMs));
    EXPECT_EQ(w->result(), -ETIMEDOUT);
    EXPECT_EQ(w->TakeSlot(), nullptr);
  }
  auto elapsed = Clock::now() - start;
  EXPECT_GE(elapsed, std::chrono::milliseconds(timeout_ms));
  EXPECT_LT(elapsed, std::chrono::milliseconds(timeout_ms) + kPrompt);
}

// Runs `a` and `b` in two threads released at the same instant, so that they
// race in earnest, and waits for both.
inline void RunTogether(const std::function<void()>& a, const std::function<void()>& b) {
  std::atomic<int> ready{0};
  auto racer = [&](const std::function<void()>& body) {
    ++ready;
    while (ready.load() < 2) std::this_thread::yield();
    body();
  };
  std::thread first(racer, a), second(racer, b);
  first.join();
  second.join();
}

// Waits for `waiter`, whose acquire raced a cancel, and counts how it ended:
// in `delivered` when it got a slot (`while_held` runs, then the slot is
// released), in `cancelled` when it returned -ECANCELED without one. Call
// under ASSERT_NO_FATAL_FAILURE.
inline void CountRaceOutcome(
    AcquireThread& waiter, int& delivered, int& cancelled,
    const std::function<void()>& while_held = [] {}) {
  ASSERT_TRUE(waiter.Done(kEventMs));
  if (waiter.result() == 0) {
    ++delivered;
    jobbridge_slot* slot = waiter.TakeSlot();
    ASSERT_NE(slot, nullptr);
    while_held();
    EXPECT_EQ(jobbridge_slot_release(slot), 0);
  } else {
    ++cancelled;
    EXPECT_EQ(waiter.result(), -ECANCELED);
    EXPECT_EQ(waiter.TakeSlot(), nullptr);
  }
}

// kThreads threads sharing one client: every acquire/release cycle counts
// the slots its thread and the others hold at that moment. The counters are
// relaxed, and the mutex is taken only to wake a waiter: synchronizing the
// threads between their calls into the library would hide races from TSan.
struct Churn {
  static constexpr auto kRelaxed = std::memory_order_relaxed;
  std::atomic<int> active{0}, most{0}, cycles{0}, timeouts{0}, failures{0}, running{0};
  std::atomic<int> wake_at{INT_MAX};  // Notify once cycles reach this
  std::atomic<bool> stop{false};      // a failed test's way out
  std::mutex mutex;
  std::condition_variable progressed;

  // One cycle. Odd threads acquire with a short timeout and try again when it
  // runs out, so timeouts race grants too. Returns what the acquire returned.
  int Cycle(jobbridge_client* client, int thread) {
    jobbridge_slot* slot = nullptr;
    int rc = jobbridge_client_acquire(client, thread % 2 ? 5 : -1, &slot);
    if (rc == -ETIMEDOUT && thread % 2) timeouts.fetch_add(1, kRelaxed);
    if (rc != 0) return rc;
    int now = active.fetch_add(1, kRelaxed) + 1;
    int seen = most.load(kRelaxed);
    while (now > seen && !most.compare_exchange_weak(seen, now, kRelaxed)) {
    }
    std::this_thread::yield();  // hold it a while, so that holders overlap
    active.fetch_sub(1, kRelaxed);
    if (jobbridge_slot_release(slot) != 0) failures.fetch_add(1, kRelaxed);
    if (cycles.fetch_add(1, kRelaxed) + 1 >= wake_at.load(kRelaxed)) Notify();
    return 0;
  }

  // kThreads threads run Cycle `per_thread` times each, or (per_thread < 0)
  // until the client is cancelled. Any other failure is counted.
  void Run(jobbridge_client* client, int per_thread) {
    std::vector<std::thread> threads;
    running = kThreads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([this, client, per_thread, t] {
        for (int done = 0; (per_thread < 0 || done < per_thread) && !stop.load(kRelaxed);) {
          int rc = Cycle(client, t);
          if (rc == 0) {
            ++done;
          } else if (rc != -ETIMEDOUT || t % 2 == 0) {
            if (rc != -ECANCELED || per_thread >= 0) failures.fetch_add(1, kRelaxed);
            break;
          }
        }
        --running;
        Notify();
      });
    }
    for (std::thread& t : threads) t.join();
  }

  // Cancels `client` once `count` cycles are done, then waits for every
  // thread to stop (a failure, if they do not: they are told to stop then).
  void CancelAfter(jobbridge_client* client, int count) {
    {
      std::unique_lock lock(mutex);
      wake_at = count;
      EXPECT_TRUE(progressed.wait_for(lock, std::chrono::milliseconds(kEventMs),
                                      [&] { return cycles.load() >= count; }))
          << cycles.load() << " cycles";
    }
    EXPECT_EQ(jobbridge_client_cancel(client), 0);
    std::unique_lock lock(mutex);
    if (!progressed.wait_for(lock, std::chrono::milliseconds(kEventMs),
                             [&] { return running.load() == 0; })) {
      ADD_FAILURE() << running.load() << " threads still acquire after the cancel";
      stop = true;
    }
  }

  // Runs `per_thread` cycles in each thread: none fails, and no more than
  // `budget` slots (at least one) are ever held at once.
  void RunAndExpectWithin(jobbridge_client* client, int per_thread, int budget) {
    Run(client, per_thread);
    EXPECT_EQ(failures.load(), 0);
    EXPECT_EQ(cycles.load(), kThreads * per_thread);
    EXPECT_LE(most.load(), budget);
    EXPECT_GE(most.load(), 1);
  }

  // Runs until `client` is cancelled after `count` cycles: no thread fails
  // but by the cancel, and no more than `budget` slots are ever held at once.
  void RunAndExpectCancelAfter(jobbridge_client* client, int count, int budget) {
    std::thread canceller([&] { CancelAfter(client, count); });
    Run(client, -1);
    canceller.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_GE(cycles.load(), count);
    EXPECT_LE(most.load(), budget);
  }

 private:
  void Notify() {
    std::lock_guard lock(mutex);  // so that a waiter cannot miss it
    progressed.notify_all();
  }
};

}  // namespace client_test
}  // namespace jobbridge
