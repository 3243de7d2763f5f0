#include "broker.h"

#include <unistd.h>

#include <algorithm>
#include <limits>

#include "log.h"
#include "util/uv_handle.h"

namespace jobbridge {

Broker::Broker(uv_loop_t* loop, Ledger* ledger, LegacyPool* pool)
    : loop_(loop), ledger_(ledger), pool_(pool) {}

void Broker::Start(SocketServer* server) {
  server_ = server;
  started_ms_ = uv_now(loop_);
  if (pool_->ReturnsFd() >= 0) {
    // Every token a legacy client writes back passes through here.
    returns_poll_ = new uv_poll_t;
    uv_poll_init(loop_, returns_poll_, pool_->ReturnsFd());
    returns_poll_->data = this;
    uv_poll_start(returns_poll_, UV_READABLE, OnReturnsReadable);
  }
  if (pool_->ReturnsFd() < 0) {
    // A FIFO: clients write tokens back into the pool itself, and a
    // readable poll cannot tell a write from a token that sits there.
    // inotify reports each write (IN_MODIFY) by any process, so surplus is
    // dropped the moment it lands, not at the next socket event.
    fifo_watch_ = new uv_fs_event_t;
    uv_fs_event_init(loop_, fifo_watch_);
    fifo_watch_->data = this;
    std::string path = pool_->Auth().fifo_path;
    if (uv_fs_event_start(fifo_watch_, OnFifoWritten, path.c_str(), 0) != 0) {
      LogWarning("cannot watch the jobserver FIFO " + path + " for writes: tokens written " +
                 "back without being taken are found only at the next socket request");
    }
  }
  pool_poll_ = new uv_poll_t;
  uv_poll_init(loop_, pool_poll_, pool_->PrivateReadFd());
  pool_poll_->data = this;
  idle_timer_ = new uv_timer_t;
  uv_timer_init(loop_, idle_timer_);
  idle_timer_->data = this;
  probe_timer_ = new uv_timer_t;
  uv_timer_init(loop_, probe_timer_);
  probe_timer_->data = this;
  uv_timer_start(probe_timer_, OnProbe, kProbeMs, kProbeMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(probe_timer_));
  rebalance_timer_ = new uv_timer_t;
  uv_timer_init(loop_, rebalance_timer_);
  rebalance_timer_->data = this;
}

void Broker::Stop() {
  for (auto& [id, pool] : pools_) {
    if (pool.watcher) pool.watcher->Stop();
    CloseAndDelete(pool.death_poll);
    pool.death_poll = nullptr;
  }
  if (read_hub_) read_hub_->Stop();
  CloseAndDelete(returns_poll_);
  returns_poll_ = nullptr;
  CloseAndDelete(fifo_watch_);
  fifo_watch_ = nullptr;
  CloseAndDelete(pool_poll_);
  CloseAndDelete(idle_timer_);
  CloseAndDelete(probe_timer_);
  CloseAndDelete(rebalance_timer_);
  rebalance_timer_ = nullptr;
  pool_poll_ = nullptr;
  idle_timer_ = nullptr;
  probe_timer_ = nullptr;
  server_ = nullptr;
}

int Broker::PoolCount() {
  std::string err;
  int count = pool_->Available(&err);
  return count < 0 ? 0 : count;
}

bool Broker::LegacyActive() {
  uint64_t now = uv_now(loop_);
  // Tokens the legacy side holds that are not in the pool are in its clients'
  // hands (or just returned, in the bridge's). One FIONREAD per Pump.
  if (in_pool_ < 0) in_pool_ = PoolCount();
  if (ledger_->HeldBy(kLegacyOwner) - in_pool_ > 0) legacy_seen_until_ = now + kLegacyActiveMs;
  return now < legacy_seen_until_;
}

int Broker::SocketShare() {
  int shared = ledger_->budget() - ledger_->HeldBy(kCommandOwner);
  if (!LegacyActive()) return shared;
  return std::max(1, (shared + 1) / 2);
}

void Broker::OnRequest(ConnectionId id) {
  waiting_.Push(id);
  // Under -j1 the command holds the only slot: a socket client would wait
  // until the command ends, which looks like a hang. Say so, once.
  if (!warned_no_shared_slot_ && ledger_->budget() - ledger_->HeldBy(kCommandOwner) <= 0) {
    warned_no_shared_slot_ = true;
    LogWarning("a socket client (pid " + std::to_string(server_->PeerPid(id)) +
               ") waits for a slot, but with a budget of " + std::to_string(ledger_->budget()) +
               " the command holds the only one: it gets a slot only when the command ends; " +
               "give a budget of 2 or more (-j2)");
  }
  Pump();
}

bool Broker::OnRelease(ConnectionId id) {
  std::string err;
  if (!ledger_->Release(SocketOwner(id), 1, &err)) return false;
  --socket_held_;
  Pump();
  return true;
}

void Broker::OnGone(ConnectionId id) {
  waiting_.Erase(id);
  int held = ledger_->HeldBy(SocketOwner(id));
  std::string err;
  if (held > 0) {
    ledger_->Release(SocketOwner(id), held, &err);
    socket_held_ -= held;
  }
  Pump();
}

// Finds a slot for the oldest request's connection: a free slot, a token a
// legacy client just returned (`*returned` of them are in hand), or one from
// the pool. Returns false when none may be had now (the caller then waits
// for the pool or a timer).
Owner Broker::OwnerOf(uint64_t id) {
  if (IsPool(id)) return {OwnerKind::kInvocation, id & ~kPoolBit};
  return SocketOwner(id);
}

// An invocation's pool is the legacy side too: the socket side's share does
// not bound it, and it takes a token out of the root pool only when that
// token sat there unread (nobody at the top wants it).
bool Broker::TakeSlotFor(ConnectionId id, int* returned) {
  std::string err;
  uint64_t now = uv_now(loop_);
  Owner owner = OwnerOf(id);
  bool within_share = IsPool(id) || socket_held_ < SocketShare();
  if (ledger_->free() > 0 && within_share) return ledger_->Grant(owner, 1, &err);
  if (*returned > 0 && within_share) {
    --*returned;
    return ledger_->Transfer(kLegacyOwner, owner, 1, &err);
  }
  if (now < reserved_until_ || ledger_->HeldBy(kLegacyOwner) == 0) return false;
  bool idle_token = pool_nonempty_since_ != 0 && now >= pool_nonempty_since_ + kIdleTokenMs;
  if ((IsPool(id) || !within_share) && !idle_token) return false;
  int got = pool_->Take(1, &err);
  if (got < 0) LogWarning(err);
  in_pool_ = -1;  // counted again when next needed
  if (got != 1) return false;
  return ledger_->Transfer(kLegacyOwner, owner, 1, &err);
}

void Broker::Hand(uint64_t id) {
  if (!IsPool(id)) {
    ++socket_held_;
    // A client that left before its grant costs nothing: the server closes
    // it and OnGone takes this slot back (Pump does not re-enter).
    server_->Grant(id);
    return;
  }
  HandToPool(id & ~kPoolBit);
}

void Broker::Pump() {
  if (pumping_ || !server_) return;  // Grant may re-enter through OnGone
  pumping_ = true;
  uint64_t now = uv_now(loop_);
  std::string err;
  // Tokens legacy clients wrote back: they are the legacy side's (so it was
  // active) until given to a socket request below or fed back to it.
  in_pool_ = -1;
  int returned = 0;
  if (returns_readable_) {
    returns_readable_ = false;
    returned = pool_->TakeReturned(std::numeric_limits<int>::max(), &err);
    if (returned < 0) {
      LogWarning(err);
      returned = 0;
    }
    in_pool_ = PoolCount();
    returned -= SettleLegacyBooks(in_pool_ + returned, "wrote back");
  } else if (!returns_poll_ || ledger_->HeldBy(kCommandOwner) == 0) {
    // A FIFO: surplus lands in the pool itself. With pipes, a lent slot is
    // taken back from a pool that lost a token since.
    in_pool_ = PoolCount();
    const char* how = returns_poll_ ? "wrote into the token pipe" : "wrote into the FIFO";
    if (int surplus = SettleLegacyBooks(in_pool_, how); surplus > 0) {
      pool_->Take(surplus, &err);
      in_pool_ = -1;
    }
  }
  if (returned > 0) legacy_seen_until_ = now + kLegacyActiveMs;
  WakeRested();
  ChargeOrphans(&returned);
  for (bool again = true; again;) {
    Serve(&waiting_, &returned);
    if (waiting_.empty()) Serve(&guessed_, &returned);
    again =
        waiting_.empty() ? !guessed_.empty() && TakeBackIdleStock(true) : TakeBackIdleStock(false);
  }
  if (returned > 0 && !pool_->Put(returned, &err)) LogWarning(err);
  bool put = returned > 0;
  // Free slots that no request may take go to the legacy pool.
  if (int free = ledger_->free(); free > 0) {
    if (ledger_->Grant(kLegacyOwner, free, &err) && !pool_->Put(free, &err)) LogWarning(err);
    put = true;
    if (offer_next_release_) {
      offer_next_release_ = false;
      reserved_until_ = now + kIdleTokenMs;
    }
  }
  if (put || in_pool_ < 0) in_pool_ = PoolCount();
  int in_pool = in_pool_;
  if (in_pool == 0) {
    pool_nonempty_since_ = 0;
  } else if (pool_nonempty_since_ == 0) {
    pool_nonempty_since_ = now;
  }
  // Watched for a token while requests wait on an empty pool: a FIFO's
  // clients write theirs back into it, and so do the clients that reach a
  // pipe through its path (ninja and the tools below it open
  // fifo:/proc/self/fd/R, which writes into the token pipe itself).
  bool waiting = !waiting_.empty() || !guessed_.empty();
  WatchPool(waiting && in_pool == 0, waiting && in_pool > 0);
  pumping_ = false;
}

void Broker::Serve(FairQueue* queue, int* returned) {
  while (!queue->empty()) {
    uint64_t id = queue->Front();
    bool offer = offer_next_release_ && ledger_->free() > 0;
    if (offer || !TakeSlotFor(id, returned)) return;
    queue->Pop();
    Hand(id);
  }
}

int Broker::SettleLegacyBooks(int back, const char* how) {
  std::string err;
  int out = ledger_->HeldBy(kLegacyOwner) - back;  // tokens in clients' hands
  if (out < 0) {
    // More came back than went out: the command's implicit slot, lent by a
    // client that writes a token it never read and reads one back later
    // (cc-rs 1.0). Only one slot in the tree is not a token taken out, so
    // anything beyond it is a rogue writer's (docs/ARCHITECTURE.md, "Lent
    // slots and surplus").
    int lent = std::min(-out, ledger_->HeldBy(kCommandOwner));
    if (lent > 0) ledger_->Transfer(kCommandOwner, kLegacyOwner, lent, &err);
    if (int surplus = -out - lent; surplus > 0) {
      DropSurplus(surplus, how);
      return surplus;
    }
  } else if (out > 0 && ledger_->HeldBy(kCommandOwner) == 0) {
    // A token went out again while the slot was lent: the tree uses that
    // slot once more, and may lend it again.
    ledger_->Transfer(kLegacyOwner, kCommandOwner, 1, &err);
  }
  return 0;
}

void Broker::DropSurplus(int count, const char* how) {
  if (surplus_dropped_ == 0) first_surplus_ms_ = uv_now(loop_) - started_ms_;
  surplus_dropped_ += count;
  LogWarning("a legacy client " + std::string(how) + " " + std::to_string(count) +
             " token(s) it never took; dropped, so the pool stays within the budget");
}

void Broker::WatchPool(bool readable, bool idle_timer) {
  if (!pool_poll_) return;
  if (readable != pool_polling_) {
    if (readable) {
      uv_poll_start(pool_poll_, UV_READABLE, OnPoolReadable);
    } else {
      uv_poll_stop(pool_poll_);
    }
    pool_polling_ = readable;
  }
  if (idle_timer) {
    uv_timer_start(idle_timer_, OnTimer, kIdleTokenMs, 0);
  } else {
    uv_timer_stop(idle_timer_);
  }
}

void Broker::OnPoolReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  static_cast<Broker*>(handle->data)->Pump();
}

void Broker::OnReturnsReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* broker = static_cast<Broker*>(handle->data);
  broker->returns_readable_ = true;  // read in Pump, not on every request
  broker->Pump();
}

void Broker::OnTimer(uv_timer_t* timer) { static_cast<Broker*>(timer->data)->Pump(); }

void Broker::OnFifoWritten(uv_fs_event_t* handle, const char* /*name*/, int /*events*/,
                           int /*status*/) {
  static_cast<Broker*>(handle->data)->Pump();
}

void Broker::OnProbe(uv_timer_t* timer) {
  auto* broker = static_cast<Broker*>(timer->data);
  broker->in_pool_ = -1;
  if (!broker->waiting_.empty() && !broker->LegacyActive()) broker->offer_next_release_ = true;
}

bool Broker::ReturnFreeSlots(std::string* err) {
  int free = ledger_->free();
  if (free == 0) return true;
  return ledger_->Grant(kLegacyOwner, free, err) && pool_->Put(free, err);
}

}  // namespace jobbridge
