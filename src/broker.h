// The broker: one budget, many places slots can go (endpoints/endpoint.h:
// socket connections, the root legacy pool, each tool invocation's pool). It
// decides which waiting endpoint gets which slot, and moves slots between
// them so that no side starves and no slot idles while work waits. This
// comment is the policy; broker.cc (turns, the root pool, the socket side)
// and broker_pools.cc (stock, what invocations write back, their end)
// implement it against the Endpoint interface.
//
// The ledger is the authority; the broker asks it before moving a byte.
// Policy (docs/ARCHITECTURE.md, "Sharing one budget"):
// - Endpoints that want a slot are served in turns (FairQueue, by endpoint:
//   a flood of '+' on one connection delays a newcomer by one slot, not by
//   the flood), from free slots first, then from tokens legacy clients
//   return to the root pool (with pipes, every returned token passes
//   through the broker), then from tokens taken out of the root pool.
// - Endpoints whose waiters are seen (socket connections) make up the
//   socket side. While the legacy side is active (its clients hold tokens,
//   or did within kLegacyActiveMs), the socket side may hold at most half of
//   the shared slots; a slot it gives back beyond that goes to the root pool.
// - A token that sits in the root pool for kIdleTokenMs while others wait is
//   not wanted by the legacy side: an endpoint beyond its share, or one whose
//   readers are invisible (a pool), may take it then, and only then.
// - Every kProbeMs while the legacy side looks idle and socket requests wait,
//   one released slot is offered to the root pool (reserved for
//   kIdleTokenMs), so a legacy client blocked on an empty pool is noticed.
// - A free slot nobody waits for goes back into the root pool.
// - The legacy side may give back one token more than it took (the command's
//   implicit slot, lent, as cc-rs does); more than that is dropped.
// Endpoints that keep stock (per-invocation pools, docs/LEAKS.md):
// - A pool whose process was seen reading its pipe (ReadWatcher) waits in
//   the same turns as socket connections (waiting_) while its pipe holds
//   less than two; a turn stocks one token in it. Its other asks are
//   guesses (guessed_: its start, the end of a rest, its stock taken back
//   unread), served only when no seen ask waits: a make reading for its
//   recipes goes before the ninjas it starts. A pool that starts while
//   nobody else waits guesses two: ninja reads one per edge in a burst
//   without blocking, and tries again only when a job ends.
// - A token its make writes back goes into its own empty pipe first: make
//   reads again at once for its next recipe, as from plain make's pipe.
// - While a seen ask waits it keeps at most one idle token stocked: tokens
//   beyond one (its second at the start or while it reads, or tokens
//   written back into the token pipe itself: ninja and the tools below it
//   reach it by its path) go back to the budget at once; the one stocked
//   goes back when it sat unread for kStockIdleMs (while only guesses wait:
//   any stock unread for kGuessIdleMs). A pool whose stock was taken back
//   unread then rests, out of the turns: it asks again when one of its
//   processes uses its pipes, or after kStockIdleMs doubled per rest in a
//   row (at most kMaxRestMs). So a slot idles in a pool nobody reads for at
//   most kStockIdleMs at a time, ever more rarely, while a reader is seen
//   waiting, and a pool that needs a token again unseen (a reader blocked
//   on its empty pipe) asks within kMaxRestMs.
// - Tokens written back free its slots, up to what its processes hold of
//   its share (tokens in its pipe count as its share first). One more is
//   its tool's implicit slot (held by its parent), lent as cc-rs does, or
//   coming back: it goes back into this pool's own pipe, for its own tree,
//   and stays counted as lent (its lender takes it back unseen); anything
//   beyond is surplus, dropped and reported with the pid and command. A
//   rogue writer so raises the width by at most what its invocation holds
//   plus that one slot (once more only after a process took it out again).
// - What an invocation still holds when it ends is reclaimed (its lent
//   slot is not), and an endpoint that owes a slot (a tool that died while
//   its orphaned recipes still run on its implicit slot) is charged one,
//   before any waiter is served (ChargeOrphans).
// Endpoints whose waiters are counted (the Robust Jobserver's semaphore:
// clients blocked in semop, polled; broker_semaphore.cc):
// - Each waiter counted is one request in the same turns as a socket
//   connection's '+' (within the socket side's share), and no more: when
//   fewer wait, its requests shrink to match (Recount).
// - Units its clients give back are its stock. While a seen ask waits
//   elsewhere, all of it goes back as soon as the poll sees it (its client
//   had the poll's interval to take its unit again); while nobody is seen
//   waiting, all of it goes back after kStockIdleMs (ReturnUnusedStock): it
//   needs no stock to be served, and a reader of the root pool may want the
//   slot unseen. It is never guessed for and never rests.
// - More units in it than it holds were given back by a client that never
//   took them: taken back out, reported once, and counted at exit.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/fair_queue.h"
#include "core/ledger.h"
#include "endpoints/endpoint.h"
#include "endpoints/invocation_endpoint.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/root_pool_endpoint.h"
#include "endpoints/socket_endpoint.h"
#include "endpoints/socket_server.h"
#include "pool_server.h"
#include "read_watcher-posix.h"

namespace jobbridge {

inline constexpr Owner kCommandOwner{OwnerKind::kCommand, 0};

class Broker : public SocketServer::Delegate, public PoolServer::Delegate {
 public:
  static constexpr uint64_t kLegacyActiveMs = 50;
  static constexpr uint64_t kIdleTokenMs = 2;
  static constexpr uint64_t kProbeMs = 50;
  // A token stocked in an invocation's pool and not taken for this long
  // while others wait is taken back (its make may read only later, or never).
  static constexpr uint64_t kStockIdleMs = 20;
  // The longest a pool whose stock was taken back unread rests before it
  // asks again while others wait (a reader may block on its empty pipe
  // unseen, or ninja try it and wait for a job to end before trying again).
  static constexpr uint64_t kMaxRestMs = 320;
  // While only guesses wait (no ask seen from a reader: guessed_), a pool's
  // stock is taken back for them once it sat unread this long.
  static constexpr uint64_t kGuessIdleMs = 100;

  // All pointers must outlive the broker. Call Start before the loop runs and
  // Stop (then run the loop until its handles close) before destruction.
  Broker(uv_loop_t* loop, Ledger* ledger, LegacyPool* pool);
  void Start(SocketServer* server);
  void Stop();
  // There is no command holding an implicit slot (`jobbridge daemon`): a
  // token written back beyond what went out is surplus, never a lent slot.
  void SetNoCommandSlot() { command_slot_ = false; }

  // Puts every free slot back into the legacy pool (at shutdown, after the
  // server closed its connections). Returns false and sets *err on failure.
  bool ReturnFreeSlots(std::string* err);

  size_t waiting() const { return waiting_.size() + guessed_.size(); }
  // Tokens dropped so far because a client wrote back more than it took,
  // and when the first was dropped (ms after Start).
  int surplus_dropped() const { return surplus_dropped_; }
  uint64_t first_surplus_ms() const { return first_surplus_ms_; }

  // Endpoints of a kind the broker does not make itself (and tests' fakes):
  // Join adds one; Ask queues `count` requests of it, seen (served in its
  // turns, before any guess);
  // Release frees `count` slots it holds (false, nothing changed, when it
  // holds fewer); Leave withdraws its requests, frees every slot it holds
  // and destroys it.
  EndpointId Join(std::unique_ptr<Endpoint> endpoint);
  void Ask(EndpointId id, int count);
  bool Release(EndpointId id, int count);
  void Leave(EndpointId id);

  // An endpoint whose waiters are counted, not heard (the semaphore,
  // endpoints/semaphore_endpoint.h; joined with keeps_stock and
  // waiters_seen): `waiting` of its clients wait now, and its stock may have
  // changed (a client gave a unit back, or died holding one). Its requests
  // become one per waiter its stock does not cover; units beyond what it
  // holds in the ledger are surplus, taken back out and reported once.
  void Recount(EndpointId id, int waiting);
  // At shutdown, after Stop: takes every unit out of such an endpoint,
  // frees the slots it held, and destroys it (the semaphore is removed). Says
  // what did not come back (a client outside the tree holds it) or came back
  // beyond what it held. True when exactly what it held came back and no
  // client gave back units it never took during the run.
  bool CountBack(EndpointId id);
  // Units a client of such an endpoint gave back without taking them.
  int counted_surplus() const { return counted_surplus_; }

  // SocketServer::Delegate
  void OnRequest(ConnectionId id) override;
  bool OnRelease(ConnectionId id) override;
  void OnGone(ConnectionId id) override;

  // PoolServer::Delegate
  void OnStarted(PoolServer::Invocation* invocation) override;
  void OnReturned(PoolServer::Invocation* invocation, int count) override;
  void OnEnded(const PoolServer::Invocation& invocation,
               const InvocationPool::Books& books) override;

  // Who hears what the broker does, for the trace (control/tracer.h):
  // `pumped` after each pass of the policy; `noted` for each event worth a
  // mark (what: "reclaimed" or "surplus"; pid and command when known).
  struct Hooks {
    std::function<void()> pumped;
    std::function<void(const char* what, int count, pid_t pid, const std::string& command)> noted;
  };
  void SetHooks(Hooks hooks) { hooks_ = std::move(hooks); }
  // The process behind `owner`'s endpoint, or -1 (broker_status.cc).
  pid_t PidOf(Owner owner) const;

  // Changes the budget (the control socket's resize). Growing serves
  // waiters at once; shrinking takes idle tokens and units back now and
  // withholds slots as they come back until what is out fits (Withhold):
  // never from a running job. False with *err for a size out of range.
  bool Resize(int jobs, std::string* err);

  // One place slots can be, as status sees it (control/budget_view.h).
  struct Place {
    Owner owner;
    int held = 0;                // slots it holds in the ledger
    int idle = 0;                // of those, stocked and not taken yet
    int waiting = 0;             // its requests queued (seen and guessed)
    uint64_t waiting_since = 0;  // uv_now() at the first of them; 0: none
    pid_t pid = -1;              // the process behind it (Endpoint::pid)
  };
  // The root pool, then every endpoint (broker_status.cc). Reads each
  // endpoint's stock (a FIONREAD, a GETVAL): for status, not for every event.
  std::vector<Place> Places();

  // Tokens that invocations still held when they ended, given back, and
  // by whom (the first kMaxReclaimsKept invocations), for the summary.
  struct Reclaim {
    pid_t pid;
    std::string command;
    int tokens;
  };
  static constexpr size_t kMaxReclaimsKept = 10;
  int reclaimed() const { return reclaimed_; }
  const std::vector<Reclaim>& reclaims() const { return reclaims_; }

 private:
  // What the policy keeps of an endpoint that keeps stock.
  struct Stock {
    Endpoint* endpoint = nullptr;  // owned by endpoints_
    uint64_t stocked_at = 0;       // uv_now() when its stock last changed (ours, or its processes')
    int seen_stocked = 0;          // tokens in its pipe after the broker last looked
    int rests = 0;                 // its stock taken back unread, times in a row
    uint64_t rest_until = 0;       // resting until then (out of the turns); 0: not resting
    bool charged = false;          // the slot it owes (OwesSlot) is held in the ledger
  };

  static void OnTimer(uv_timer_t* timer);
  static void OnProbe(uv_timer_t* timer);
  void Pump();
  // Serves `queue`'s turns while a slot may be had for its front.
  void Serve(FairQueue* queue, int* returned);
  // Takes the slot for `endpoint` (in the ledger): a free one, a token a
  // legacy client just returned (`*returned` of them are in hand), or one
  // out of the root pool. False when none may be had now (the caller then
  // waits for the pool or a timer).
  bool TakeSlotFor(const Endpoint& endpoint, int* returned);
  void Hand(EndpointId id, Endpoint* endpoint);  // the slot just taken for it (in the ledger)
  bool LegacyActive();
  int SocketShare();
  int PoolCount();
  void WatchPool(bool readable, bool idle_timer);
  // Balances the legacy side's books given `back`, the tokens in the pool
  // and in the bridge's hands: more than went out is first the command's
  // implicit slot lent (moved to the legacy pool's share), then surplus,
  // reported. A lent slot goes back to the command once a token is out
  // again. Returns the surplus, which the caller must drop.
  int SettleLegacyBooks(int back, const char* how);
  void DropSurplus(int count, const char* how);
  void Forget(EndpointId id);  // its requests, its stock state and itself
  void Unask(EndpointId id);   // withdraws its requests from both queues
  int Asks(EndpointId id) const;
  // Releases `count` slots `endpoint` holds (its share of the socket side too).
  void Free(const Endpoint& endpoint, int count);

  // broker_status.cc: after a shrink, takes slots beyond the budget out
  // of what legacy clients wrote back (`*returned`), the root pool and
  // endpoints' idle stock.
  void Withhold(int* returned);

  // broker_semaphore.cc: endpoints whose waiters are counted.
  void ReturnUnusedStock();

  // broker_pools.cc: endpoints that keep stock, and invocations' events.
  InvocationEndpoint* FindInvocation(uint64_t invocation_id, EndpointId* id);
  // A process of the invocation read from or wrote into its token pipe
  // (or the broker did: nothing changed then).
  void OnPoolUsed(uint64_t invocation_id);
  // Tokens in its token pipe beyond what it circulates (its ledger share
  // and its lent slot) were written there without being taken: the first
  // is its implicit slot lent, the rest surplus, drained.
  void SettleTokenPipe(InvocationEndpoint* endpoint);
  // Its processes used its pool: a resting pool asks again now.
  static void EndRest(Stock& stock);
  // Puts the pools whose rest is over back in the turns.
  void WakeRested();
  void Rest(Stock& stock);
  // Asks for a token if its pipe is empty: in waiting_ when a process of it
  // was `seen` emptying it (then also when it holds one), else in guessed_.
  void WaitForStock(EndpointId id, Stock& stock, bool seen);
  void DropPoolSurplus(PoolServer::Invocation* invocation, int count, const char* how);
  // Charges each endpoint that owes a slot (OwesSlot) the first free one (or
  // one returned to the root pool, `*returned`), before any waiter is served.
  void ChargeOrphans(int* returned);
  // Takes back tokens idle in endpoints' stock while others wait (only
  // guesses: `for_guesses`); true when it freed any. Arms rebalance_timer_
  // for the next one due.
  bool TakeBackIdleStock(bool for_guesses);
  void ArmRebalance(uint64_t due);  // rebalance_timer_ fires at `due` or before
  static void OnRebalance(uv_timer_t* timer);

  uv_loop_t* loop_;
  Ledger* ledger_;
  Hooks hooks_;
  RootPoolEndpoint root_;  // the root legacy pool
  SocketServer* server_ = nullptr;
  EndpointTable endpoints_;                                     // every other endpoint, by id
  std::unordered_map<ConnectionId, EndpointId> by_connection_;  // socket connections
  std::unordered_map<uint64_t, EndpointId> by_invocation_;      // invocations' pools
  std::unordered_map<EndpointId, Stock> stocks_;                // endpoints that keep stock
  FairQueue waiting_;  // endpoints' requests, in turns between endpoints
  // Pools' asks that no reader was seen making: its start, the end of a
  // rest, its stock taken back unread. Served only when waiting_ is empty.
  FairQueue guessed_;
  int socket_held_ = 0;
  int surplus_dropped_ = 0;
  int counted_surplus_ = 0;
  int reclaimed_ = 0;
  std::vector<Reclaim> reclaims_;
  uv_timer_t* rebalance_timer_ = nullptr;
  uint64_t rebalance_due_ = 0;              // when rebalance_timer_ fires; 0: not armed
  std::unique_ptr<ReadWatchHub> read_hub_;  // one inotify fd for every pool's watcher
  bool read_hub_failed_ = false;
  bool warned_no_watcher_ = false;
  uint64_t started_ms_ = 0;
  uint64_t first_surplus_ms_ = 0;
  bool warned_no_shared_slot_ = false;
  bool command_slot_ = true;        // SetNoCommandSlot
  uint64_t legacy_seen_until_ = 0;  // uv_now() until which the legacy side counts as active
  uint64_t reserved_until_ = 0;     // the pool's tokens are the legacy side's until then
  uint64_t pool_nonempty_since_ = 0;
  bool offer_next_release_ = false;
  int in_pool_ = -1;  // Available() this Pump, -1 until counted
  bool pumping_ = false;
  uv_timer_t* idle_timer_ = nullptr;  // handles are freed in their close callbacks
  uv_timer_t* probe_timer_ = nullptr;
};

}  // namespace jobbridge
