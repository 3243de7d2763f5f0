// One tool invocation's own pool (invocation_pool.h, docs/LEAKS.md) as an
// endpoint (endpoint.h): its readers are invisible, a slot given to it is a
// token stocked in its token pipe, and taking one back reads an unused token
// out of it. It also watches the pool for the broker: a ReadWatcher on the
// token pipe (a process of the invocation read from it or wrote into it) and
// a pidfd of the tool (dead while the invocation lives on: orphaned recipes
// still run on its implicit slot, which it then owes).
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "endpoints/endpoint.h"
#include "endpoints/invocation_pool.h"
#include "pool_server.h"
#include "read_watcher-posix.h"
#include "util/unique_fd.h"

namespace jobbridge {

inline Owner InvocationOwner(uint64_t invocation_id) {
  return {OwnerKind::kInvocation, invocation_id};
}

class InvocationEndpoint : public Endpoint {
 public:
  // Watches `invocation` (which must outlive it): `used` runs on the loop
  // when a process reads from or writes into its token pipe (not watched
  // without a `hub`, or when the watch fails: *err says why), `died` when
  // its tool has exited.
  InvocationEndpoint(uv_loop_t* loop, ReadWatchHub* hub, PoolServer::Invocation* invocation,
                     std::function<void()> used, std::function<void()> died, std::string* err);
  ~InvocationEndpoint() override { Stop(); }
  InvocationEndpoint(const InvocationEndpoint&) = delete;
  InvocationEndpoint& operator=(const InvocationEndpoint&) = delete;

  // Stops both watches (handles are freed in their close callbacks).
  void Stop() override;

  // False when its token pipe is not watched (no hub, or the watch failed).
  bool watched() const { return watcher_ != nullptr; }
  PoolServer::Invocation* invocation() const { return invocation_; }
  InvocationPool* pool() const { return invocation_->pool.get(); }

  Owner owner() const override { return InvocationOwner(invocation_->id); }
  Traits traits() const override { return {.waiters_seen = false, .keeps_stock = true}; }
  int Stocked(std::string* err) const override { return pool()->Stocked(err); }
  bool Give(int count, std::string* err) override { return pool()->Stock(count, err); }
  int TakeBack(int max, std::string* err) override { return pool()->Unstock(max, err); }
  // Its tool is gone (pidfd, without waiting) while its life pipe is open.
  bool OwesSlot() override;
  pid_t pid() const override { return invocation_->pid; }

 private:
  static void OnToolDied(uv_poll_t* handle, int status, int events);

  PoolServer::Invocation* invocation_;
  std::function<void()> died_;
  std::unique_ptr<ReadWatcher> watcher_;
  // The tool itself (the shim exec'd it: the invocation's pid).
  UniqueFd pidfd_;
  uv_poll_t* death_poll_ = nullptr;  // freed in its close callback
  bool owes_ = false;
};

}  // namespace jobbridge
