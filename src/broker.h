// The broker: one budget, two protocols. It decides which waiting socket
// request gets which slot, and moves slots between the socket side and the
// legacy pool so that neither side starves and no slot idles while work waits.
//
// The ledger is the authority; the broker asks it before moving a byte.
// Policy (docs/ARCHITECTURE.md, "Sharing one budget"):
// - Socket requests are served in turns between connections (FairQueue: a
//   flood of '+' on one delays a newcomer by one slot, not by the flood),
//   from free slots first, then from tokens legacy clients return (with
//   pipes, every returned token passes through the broker), then from tokens
//   taken out of the legacy pool.
// - While the legacy side is active (its clients hold tokens, or did within
//   kLegacyActiveMs), the socket side may hold at most half of the shared
//   slots; a slot it gives back beyond that goes to the legacy pool.
// - A token that sits in the pool for kIdleTokenMs while socket requests wait
//   is not wanted by the legacy side: the socket side may take it anyway.
// - Every kProbeMs while the legacy side looks idle and socket requests wait,
//   one released slot is offered to the legacy pool (reserved for
//   kIdleTokenMs), so a legacy client blocked on an empty pool is noticed.
// - A free slot nobody waits for goes back into the legacy pool.
// - The legacy side may give back one token more than it took (the command's
//   implicit slot, lent, as cc-rs does); more than that is dropped.
// Per-invocation pools (docs/LEAKS.md; the functions are in broker_pools.cc):
// - A tool invocation's pool whose process was seen reading its pipe
//   (ReadWatcher) waits in the same turns as socket connections (its id
//   with kPoolBit set) while its pipe holds less than two; a turn stocks one
//   token in it. Its other asks are guesses (guessed_: its start, the end of
//   a rest, its stock taken back unread), served only when no seen ask
//   waits: a make reading for its recipes goes before the ninjas it starts.
//   A pool that starts while nobody else waits guesses two: ninja reads one
//   per edge in a burst without blocking, and tries again only when a job
//   ends.
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
//   slot is not), and a tool that died while its orphaned recipes still run
//   on its implicit slot is charged one slot (ChargeOrphans).
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/fair_queue.h"
#include "core/ledger.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/socket_server.h"
#include "pool_server.h"
#include "read_watcher-posix.h"

namespace jobbridge {

inline constexpr Owner kLegacyOwner{OwnerKind::kLegacyPool, 0};
inline constexpr Owner kCommandOwner{OwnerKind::kCommand, 0};
inline Owner SocketOwner(ConnectionId id) { return {OwnerKind::kSocket, id}; }

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

  // Puts every free slot back into the legacy pool (at shutdown, after the
  // server closed its connections). Returns false and sets *err on failure.
  bool ReturnFreeSlots(std::string* err);

  size_t waiting() const { return waiting_.size() + guessed_.size(); }
  // Tokens dropped so far because a client wrote back more than it took,
  // and when the first was dropped (ms after Start).
  int surplus_dropped() const { return surplus_dropped_; }
  uint64_t first_surplus_ms() const { return first_surplus_ms_; }

  // SocketServer::Delegate
  void OnRequest(ConnectionId id) override;
  bool OnRelease(ConnectionId id) override;
  void OnGone(ConnectionId id) override;

  // PoolServer::Delegate
  void OnStarted(PoolServer::Invocation* invocation) override;
  void OnReturned(PoolServer::Invocation* invocation, int count) override;
  void OnEnded(const PoolServer::Invocation& invocation,
               const InvocationPool::Books& books) override;

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
  static void OnPoolReadable(uv_poll_t* handle, int status, int events);
  static void OnReturnsReadable(uv_poll_t* handle, int status, int events);
  static void OnTimer(uv_timer_t* timer);
  static void OnProbe(uv_timer_t* timer);
  static void OnFifoWritten(uv_fs_event_t* handle, const char* name, int events, int status);

  static constexpr uint64_t kPoolBit = uint64_t{1} << 63;
  static bool IsPool(uint64_t id) { return (id & kPoolBit) != 0; }
  static Owner OwnerOf(uint64_t id);
  void Pump();
  // Serves `queue`'s turns while a slot may be had for its front.
  void Serve(FairQueue* queue, int* returned);
  bool TakeSlotFor(ConnectionId id, int* returned);
  void Hand(uint64_t id);  // the slot just taken for `id`: a grant, or a token stocked
  void HandToPool(uint64_t invocation_id);
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

  uv_loop_t* loop_;
  Ledger* ledger_;
  LegacyPool* pool_;
  SocketServer* server_ = nullptr;
  FairQueue waiting_;  // the waiting requests, in turns between connections
  // Pools' asks that no reader was seen making: its start, the end of a
  // rest, its stock taken back unread. Served only when waiting_ is empty.
  FairQueue guessed_;
  int socket_held_ = 0;
  int surplus_dropped_ = 0;
  int reclaimed_ = 0;
  std::vector<Reclaim> reclaims_;
  struct Pool {
    PoolServer::Invocation* invocation = nullptr;
    std::unique_ptr<ReadWatcher> watcher;
    uint64_t stocked_at = 0;  // uv_now() when its stock last changed (ours, or its processes')
    int seen_stocked = 0;     // tokens in its pipe after the broker last looked
    int rests = 0;            // its stock taken back unread, times in a row
    uint64_t rest_until = 0;  // resting until then (out of the turns); 0: not resting
    // The tool itself (the shim exec'd it: the invocation's pid). Gone while
    // the life pipe is open means orphaned recipes still run on its implicit
    // slot, which its parent frees as it reaps it: the pool owes that slot.
    UniqueFd pidfd;
    uv_poll_t* death_poll = nullptr;  // freed in its close callback
    bool owes = false;
    bool charged = false;  // the owed slot is held by the pool in the ledger
  };
  static Owner PoolOwner(uint64_t invocation_id) { return {OwnerKind::kInvocation, invocation_id}; }
  // A process of the invocation read from or wrote into its token pipe
  // (or the broker did: nothing changed then).
  void OnPoolUsed(uint64_t invocation_id);
  // Tokens in its token pipe beyond what it circulates (its ledger share
  // and its lent slot) were written there without being taken: the first
  // is its implicit slot lent, the rest surplus, drained.
  void SettleTokenPipe(Pool& pool);
  // Its processes used its pool: a resting pool asks again now.
  void EndRest(Pool& pool);
  // Puts the pools whose rest is over back in the turns.
  void WakeRested();
  void Rest(Pool& pool);
  // Asks for a token if its pipe is empty: in waiting_ when a process of it
  // was `seen` emptying it, else in guessed_.
  void WaitForStock(Pool& pool, bool seen);
  void Unask(uint64_t invocation_id);  // withdraws its asks from both queues
  int Asks(uint64_t invocation_id) const;
  void DropPoolSurplus(PoolServer::Invocation* invocation, int count, const char* how);
  // Notices tools that died (pidfds, without waiting) and charges each
  // pool that owes a slot the first free one (or one returned to the root
  // pool, `*returned`), before any waiter is served.
  void ChargeOrphans(int* returned);
  static void OnToolDied(uv_poll_t* handle, int status, int events);
  // Takes back tokens idle in invocations' pools while others wait; true
  // when it freed any. Arms rebalance_timer_ for the next one due.
  bool TakeBackIdleStock(bool for_guesses);
  void ArmRebalance(uint64_t due);  // rebalance_timer_ fires at `due` or before
  static void OnRebalance(uv_timer_t* timer);
  uv_timer_t* rebalance_timer_ = nullptr;
  uint64_t rebalance_due_ = 0;              // when rebalance_timer_ fires; 0: not armed
  std::unique_ptr<ReadWatchHub> read_hub_;  // one inotify fd for every pool's watcher
  bool read_hub_failed_ = false;
  bool warned_no_watcher_ = false;
  std::unordered_map<uint64_t, Pool> pools_;  // by invocation id
  uint64_t started_ms_ = 0;
  uint64_t first_surplus_ms_ = 0;
  bool warned_no_shared_slot_ = false;
  uint64_t legacy_seen_until_ = 0;  // uv_now() until which the legacy side counts as active
  uint64_t reserved_until_ = 0;     // the pool's tokens are the legacy side's until then
  uint64_t pool_nonempty_since_ = 0;
  bool offer_next_release_ = false;
  bool returns_readable_ = false;  // the returns pipe has tokens to pass on
  int in_pool_ = -1;               // Available() this Pump, -1 until counted
  bool pumping_ = false;
  uv_poll_t* pool_poll_ = nullptr;  // handles are freed in their close callbacks
  uv_poll_t* returns_poll_ = nullptr;
  uv_fs_event_t* fifo_watch_ = nullptr;  // a FIFO pool: one event per client write
  uv_timer_t* idle_timer_ = nullptr;
  uv_timer_t* probe_timer_ = nullptr;
  bool pool_polling_ = false;
};

}  // namespace jobbridge
