// The Robust Jobserver's System V semaphore (codeberg.org/mlugg/robust-jobserver,
// zig's std.job; docs/PROTOCOL.md, "The Robust Jobserver") as an endpoint
// (endpoint.h): a set of one semaphore, named to COMMAND as
// ROBUST_JOBSERVER=sysvsem:ID. A client takes a unit with semop(-1, SEM_UNDO),
// blocking, and gives it back with semop(+1, SEM_UNDO); the kernel undoes a
// dead client's adjustments, so its units come back by themselves.
//
// The semaphore's value is the endpoint's stock: slots given to it that no
// client took yet (Give = semop +n, TakeBack = semop -k without waiting).
// Its waiters are seen but not heard: the semaphore wakes nobody on the
// server's side, so a poll (Start) reads how many clients are blocked on it
// (GETNCNT) and its value (GETVAL), and reports every change: a new waiter
// (the broker queues one request per waiter) and a unit given back (stock).
// The poll runs every kFastPollMs after a change and backs off, doubling,
// to kSlowPollMs while nothing changes (docs/ARCHITECTURE.md, "The Robust
// Jobserver's semaphore").
//
// The set is the bridge's own (mode 0600: another uid gets EACCES) and is
// removed (IPC_RMID) by Remove or the destructor: blocked clients then get
// EIDRM. A set outlives its creator, so if the bridge is killed its caretaker
// removes it (caretaker.h).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "endpoints/endpoint.h"

namespace jobbridge {

inline constexpr Owner kSemaphoreOwner{OwnerKind::kSemaphore, 0};

class SemaphoreEndpoint : public Endpoint {
 public:
  static constexpr uint64_t kFastPollMs = 1;
  static constexpr uint64_t kSlowPollMs = 16;

  // What a poll read.
  struct Counts {
    int waiting = 0;  // clients blocked for a unit (GETNCNT)
    int value = 0;    // units in the semaphore (GETVAL)
    bool operator==(const Counts&) const = default;
  };

  // Creates a set of one semaphore, mode 0600, value 0. Null with *err
  // when the system refuses (no System V IPC, out of sets).
  static std::unique_ptr<SemaphoreEndpoint> Create(std::string* err);
  ~SemaphoreEndpoint() override;
  SemaphoreEndpoint(const SemaphoreEndpoint&) = delete;
  SemaphoreEndpoint& operator=(const SemaphoreEndpoint&) = delete;

  int id() const { return id_; }
  // "sysvsem:ID", the value of ROBUST_JOBSERVER (child_env.h).
  std::string Name() const { return "sysvsem:" + std::to_string(id_); }

  // Starts the poll: `changed` runs on the loop with what it read whenever
  // that differs from the last read. The first read is reported at once.
  void Start(uv_loop_t* loop, std::function<void(Counts)> changed);
  // Stops the poll (the timer is freed in its close callback). Idempotent.
  void Stop() override;
  // Removes the set: clients blocked on it get EIDRM, and later calls here
  // fail. False with *err when it could not (it was removed already: true).
  bool Remove(std::string* err);

  // Clients blocked waiting for a unit, or -1 with *err.
  int Waiting(std::string* err) const;
  // The poll's interval now (ms), for tests and figures.
  uint64_t interval_ms() const { return interval_ms_; }

  Owner owner() const override { return kSemaphoreOwner; }
  Traits traits() const override { return {.waiters_seen = true, .keeps_stock = true}; }
  // The semaphore's value.
  int Stocked(std::string* err) const override;
  // semop +count, without SEM_UNDO: the units stay when the bridge exits
  // (it removes the set then anyway). A blocked client gets one at once, so
  // the next poll reports what it reads even if that equals the last read.
  bool Give(int count, std::string* err) override;
  // semop -k without waiting, k the units there (at most `max`).
  int TakeBack(int max, std::string* err) override;

 private:
  explicit SemaphoreEndpoint(int id) : id_(id) {}
  static void OnPoll(uv_timer_t* timer);
  void Poll();
  void ReadAgainSoon();

  int id_;
  bool removed_ = false;
  uv_timer_t* poll_ = nullptr;  // freed in its close callback
  uint64_t interval_ms_ = kFastPollMs;
  bool read_once_ = false;
  Counts last_;
  bool warned_ = false;
  std::function<void(Counts)> changed_;
};

}  // namespace jobbridge
