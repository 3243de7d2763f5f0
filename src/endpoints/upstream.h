// Slots borrowed from the outer budget, for a nested jobbridge's socket
// clients: one lease per slot, asked for only while a client waits and given
// back as soon as the client is done with it.
//
// - A legacy pool (pipe or FIFO): a lease is a byte read through a private,
//   non-blocking description (never the shared one: its flags belong to
//   every process of the tree); giving it back writes the same byte back.
// - A socket root: a lease is a connection of its own (connect, read the
//   byte; close to give back), the protocol's basic form, so any root serves
//   it, and the kernel gives everything back if jobbridge is killed.
//
// As an endpoint (endpoint.h) the outer budget is where a nested jobbridge's
// slots go back to: Give returns leases. Nothing can be taken back from it
// at once: leases are asked for (SetWanted) and arrive later (OnLease).
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "endpoints/endpoint.h"
#include "outer_budget.h"

namespace jobbridge {

inline constexpr Owner kUpstreamOwner{OwnerKind::kUpstream, 0};

class Upstream : public Endpoint {
 public:
  class Delegate {
   public:
    virtual ~Delegate() = default;
    // One slot arrived. The delegate keeps it or gives it back (Release).
    virtual void OnLease() = 0;
    // The outer budget is gone (its socket root died, its semaphore was
    // removed): every lease and request is void. Called once.
    virtual void OnLost(const std::string& why) = 0;
  };

  // A client of `outer` (kind kSocket, kSysvsem or kLegacy). Returns null and sets *err
  // when its pool cannot be opened.
  static std::unique_ptr<Upstream> Create(uv_loop_t* loop, const OuterBudget& outer,
                                          Delegate* delegate, std::string* err);
  ~Upstream() override = default;

  // Keeps `count` (>= 0) requests outstanding: asks for more, or withdraws
  // the newest. A lease that arrives ends its request.
  virtual void SetWanted(int count) = 0;

  // Gives one lease back. Returns false and sets *err when it could not be
  // (no lease held, or the byte could not be written back).
  virtual bool Release(std::string* err) = 0;

  virtual int leased() const = 0;
  virtual int64_t total_leased() const = 0;  // over the whole run
  virtual bool lost() const = 0;

  Owner owner() const override { return kUpstreamOwner; }
  Traits traits() const override { return {.waiters_seen = false, .keeps_stock = false}; }
  int Stocked(std::string* /*err*/) const override { return 0; }
  // Gives `count` leases back (Release each); false with *err at the first
  // that could not be.
  bool Give(int count, std::string* err) override {
    for (int i = 0; i < count; ++i) {
      if (!Release(err)) return false;
    }
    return true;
  }
  // Leases come only when asked for (SetWanted), later: none now.
  int TakeBack(int /*max*/, std::string* /*err*/) override { return 0; }

  // Withdraws every request and gives back every lease. Handles are freed in
  // their close callbacks: run the loop afterwards. Returns false and sets
  // *err when a lease could not be given back.
  virtual bool Close(std::string* err) = 0;
};

// Upstream::Create's kSysvsem kind (upstream_semaphore-posix.cc): a client
// of the semaphore set `set`.
std::unique_ptr<Upstream> CreateSemaphoreUpstream(uv_loop_t* loop, int set,
                                                  Upstream::Delegate* delegate);

}  // namespace jobbridge
