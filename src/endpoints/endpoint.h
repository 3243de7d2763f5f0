// A place slots can go: a socket connection, the root legacy pool, one tool
// invocation's pool, the Robust Jobserver's semaphore, the outer budget a
// nested jobbridge borrows from. The
// broker's policy (broker.h) is written once against this interface, so a
// new protocol is one new endpoint, and the policy reads in one place.
//
// An endpoint moves bytes; it decides nothing. The ledger is the authority:
// the broker grants or transfers a slot to owner() first and only then calls
// Give, and takes a slot out of the ledger only after TakeBack got it.
// Whether someone waits there is the broker's queue (FairQueue, by
// EndpointId): an endpoint whose waiters ask out loud (a socket client's
// '+') is queued when they ask; one whose readers are invisible (a legacy
// pipe) is queued when its stock runs out.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "core/ledger.h"

namespace jobbridge {

// The broker's name for an endpoint: its turns in the FairQueue. Unique
// among the endpoints of one broker, whatever their kind.
using EndpointId = uint64_t;

class Endpoint {
 public:
  // What the policy reads of an endpoint's kind (broker.h).
  struct Traits {
    // Its waiters ask out loud (a socket client): it is served within the
    // socket side's share, and from any token in the root pool. Otherwise
    // its readers are invisible (a legacy pipe): the share does not bound it,
    // and it takes a token out of the root pool only when that sat unread.
    bool waiters_seen = false;
    // Slots given to it wait there until someone takes them (tokens stocked
    // in a pipe), so the broker may take back what idles while others wait.
    bool keeps_stock = false;
  };

  virtual ~Endpoint() = default;

  // Whose slots it holds in the ledger (what it holds: HeldBy(owner())).
  virtual Owner owner() const = 0;
  // Its kind, as the policy sees it.
  virtual Traits traits() const = 0;
  // Slots given to it that nobody took yet (tokens in its pipe); 0 when a
  // slot goes straight to its user. -1 with *err when it cannot tell.
  virtual int Stocked(std::string* err) const = 0;
  // Hands it `count` slots the ledger already gave owner(). False with *err
  // when they could not all be placed (the caller takes them back).
  virtual bool Give(int count, std::string* err) = 0;
  // Takes back at most `max` slots nobody took yet; how many, or -1 with *err.
  virtual int TakeBack(int max, std::string* err) = 0;
  // True when it uses one slot beyond what it holds (a killed tool whose
  // orphaned recipes still run on its implicit slot): the broker charges it.
  virtual bool OwesSlot() { return false; }
  // Stops what it watches on the loop (its handles are freed in their close
  // callbacks); the broker calls it in Stop. Idempotent.
  virtual void Stop() {}
  // The process behind it, for status (control/): a socket client, a tool
  // invocation; -1 when its slots are not one process's (a shared pool, a
  // semaphore whose clients the kernel does not name).
  virtual pid_t pid() const { return -1; }
};

// The endpoints of one broker, by id. Ids are never reused.
class EndpointTable {
 public:
  EndpointId Add(std::unique_ptr<Endpoint> endpoint) {
    EndpointId id = next_id_++;
    endpoints_.emplace(id, std::move(endpoint));
    return id;
  }
  // Null when `id` is gone.
  Endpoint* Find(EndpointId id) const {
    auto it = endpoints_.find(id);
    return it == endpoints_.end() ? nullptr : it->second.get();
  }
  void Remove(EndpointId id) { endpoints_.erase(id); }
  size_t size() const { return endpoints_.size(); }
  template <typename F>
  void ForEach(F&& call) const {
    for (const auto& [id, endpoint] : endpoints_) call(endpoint.get());
  }
  template <typename F>
  void ForEachWithId(F&& call) const {
    for (const auto& [id, endpoint] : endpoints_) call(id, endpoint.get());
  }

 private:
  EndpointId next_id_ = 1;
  std::unordered_map<EndpointId, std::unique_ptr<Endpoint>> endpoints_;
};

}  // namespace jobbridge
