// The broker's turns (the policy: broker.h), the root pool's books and the
// socket side. Stock and invocations' events are in broker_pools.cc.
#include "broker.h"

#include <unistd.h>

#include <algorithm>

#include "log.h"
#include "util/uv_handle.h"

namespace jobbridge {

Broker::Broker(uv_loop_t* loop, Ledger* ledger, LegacyPool* pool)
    : loop_(loop), ledger_(ledger), root_(pool) {
  // Waiting since, for status.
  waiting_.SetClock([loop] { return uv_now(loop); });
  guessed_.SetClock([loop] { return uv_now(loop); });
}

void Broker::Start(SocketServer* server) {
  server_ = server;
  started_ms_ = uv_now(loop_);
  root_.Start(loop_, [this] { Pump(); });
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
  endpoints_.ForEach([](Endpoint* endpoint) { endpoint->Stop(); });
  if (read_hub_) read_hub_->Stop();
  root_.Stop();
  CloseAndDelete(idle_timer_);
  CloseAndDelete(probe_timer_);
  CloseAndDelete(rebalance_timer_);
  rebalance_timer_ = nullptr;
  idle_timer_ = nullptr;
  probe_timer_ = nullptr;
  server_ = nullptr;
}

EndpointId Broker::Join(std::unique_ptr<Endpoint> endpoint) {
  Endpoint* joined = endpoint.get();
  EndpointId id = endpoints_.Add(std::move(endpoint));
  if (joined->traits().keeps_stock) stocks_[id].endpoint = joined;
  return id;
}

void Broker::Ask(EndpointId id, int count) {
  for (int i = 0; i < count; ++i) waiting_.Push(id);
  Pump();
}

bool Broker::Release(EndpointId id, int count) {
  Endpoint* endpoint = endpoints_.Find(id);
  std::string err;
  if (!endpoint || !ledger_->Release(endpoint->owner(), count, &err)) return false;
  if (endpoint->traits().waiters_seen) socket_held_ -= count;
  Pump();
  return true;
}

void Broker::Leave(EndpointId id) {
  Endpoint* endpoint = endpoints_.Find(id);
  if (!endpoint) return;
  Unask(id);
  Owner owner = endpoint->owner();
  int held = ledger_->HeldBy(owner);
  std::string err;
  if (held > 0) {
    ledger_->Release(owner, held, &err);
    if (endpoint->traits().waiters_seen) socket_held_ -= held;
  }
  Forget(id);
  Pump();
}

void Broker::Forget(EndpointId id) {
  Unask(id);
  stocks_.erase(id);
  endpoints_.Remove(id);
}

void Broker::Unask(EndpointId id) {
  waiting_.Erase(id);
  guessed_.Erase(id);
}

int Broker::Asks(EndpointId id) const { return waiting_.Count(id) + guessed_.Count(id); }

void Broker::Free(const Endpoint& endpoint, int count) {
  std::string err;
  if (!ledger_->Release(endpoint.owner(), count, &err)) return LogWarning("internal: " + err);
  if (endpoint.traits().waiters_seen) socket_held_ -= count;
}

int Broker::PoolCount() {
  std::string err;
  int count = root_.Stocked(&err);
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

void Broker::OnRequest(ConnectionId connection) {
  auto [it, added] = by_connection_.try_emplace(connection);
  if (added) it->second = Join(std::make_unique<SocketEndpoint>(server_, connection));
  waiting_.Push(it->second);
  // Under -j1 the command holds the only slot: a socket client would wait
  // until the command ends, which looks like a hang. Say so, once.
  if (!warned_no_shared_slot_ && ledger_->budget() - ledger_->HeldBy(kCommandOwner) <= 0) {
    warned_no_shared_slot_ = true;
    LogWarning("a socket client (pid " + std::to_string(server_->PeerPid(connection)) +
               ") waits for a slot, but with a budget of " + std::to_string(ledger_->budget()) +
               " the command holds the only one: it gets a slot only when the command ends; " +
               "give a budget of 2 or more (-j2)");
  }
  Pump();
}

bool Broker::OnRelease(ConnectionId connection) {
  auto it = by_connection_.find(connection);
  return it != by_connection_.end() && Release(it->second, 1);
}

void Broker::OnGone(ConnectionId connection) {
  auto it = by_connection_.find(connection);
  if (it == by_connection_.end()) return Pump();
  EndpointId id = it->second;
  by_connection_.erase(it);
  Leave(id);
}

// An endpoint whose readers are invisible (a pool) is the legacy side too:
// the socket side's share does not bound it, and it takes a token out of the
// root pool only when that token sat there unread (nobody at the top wants
// it).
bool Broker::TakeSlotFor(const Endpoint& endpoint, int* returned) {
  std::string err;
  uint64_t now = uv_now(loop_);
  Owner owner = endpoint.owner();
  bool seen = endpoint.traits().waiters_seen;
  bool within_share = !seen || socket_held_ < SocketShare();
  if (ledger_->free() > 0 && within_share) return ledger_->Grant(owner, 1, &err);
  if (*returned > 0 && within_share) {
    --*returned;
    return ledger_->Transfer(kLegacyOwner, owner, 1, &err);
  }
  if (now < reserved_until_ || ledger_->HeldBy(kLegacyOwner) == 0) return false;
  bool idle_token = pool_nonempty_since_ != 0 && now >= pool_nonempty_since_ + kIdleTokenMs;
  if ((!seen || !within_share) && !idle_token) return false;
  int got = root_.TakeBack(1, &err);
  if (got < 0) LogWarning(err);
  in_pool_ = -1;  // counted again when next needed
  if (got != 1) return false;
  return ledger_->Transfer(kLegacyOwner, owner, 1, &err);
}

void Broker::Hand(EndpointId id, Endpoint* endpoint) {
  Owner owner = endpoint->owner();
  Endpoint::Traits traits = endpoint->traits();
  if (traits.waiters_seen) ++socket_held_;
  std::string err;
  int before = traits.keeps_stock ? std::max(endpoint->Stocked(&err), 0) : 0;
  // A socket client that left before its grant costs nothing: the server
  // closes it and OnGone takes this slot back (Pump does not re-enter), and
  // `endpoint` is gone then: not touched after Give.
  if (!endpoint->Give(1, &err)) {
    if (!err.empty()) LogWarning(err);
    ledger_->Release(owner, 1, &err);
    if (traits.waiters_seen) --socket_held_;
    return;
  }
  if (!traits.keeps_stock) return;
  if (auto it = stocks_.find(id); it != stocks_.end()) {
    it->second.stocked_at = uv_now(loop_);
    // What it holds now as far as the broker knows: a read seen later, even
    // one made at once, shows as fewer (OnPoolUsed).
    it->second.seen_stocked = before + 1;
  }
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
  if (root_.returned_waiting()) {
    returned = root_.TakeReturned(&err);
    if (returned < 0) {
      LogWarning(err);
      returned = 0;
    }
    in_pool_ = PoolCount();
    returned -= SettleLegacyBooks(in_pool_ + returned, "wrote back");
  } else if (!root_.pipes() || ledger_->HeldBy(kCommandOwner) == 0) {
    // A FIFO: surplus lands in the pool itself. With pipes, a lent slot is
    // taken back from a pool that lost a token since.
    in_pool_ = PoolCount();
    const char* how = root_.pipes() ? "wrote into the token pipe" : "wrote into the FIFO";
    if (int surplus = SettleLegacyBooks(in_pool_, how); surplus > 0) {
      root_.TakeBack(surplus, &err);
      in_pool_ = -1;
    }
  }
  if (returned > 0) legacy_seen_until_ = now + kLegacyActiveMs;
  WakeRested();
  ChargeOrphans(&returned);
  Withhold(&returned);
  ReturnUnusedStock();
  for (bool again = true; again;) {
    Serve(&waiting_, &returned);
    if (waiting_.empty()) Serve(&guessed_, &returned);
    again =
        waiting_.empty() ? !guessed_.empty() && TakeBackIdleStock(true) : TakeBackIdleStock(false);
  }
  if (returned > 0 && !root_.Give(returned, &err)) LogWarning(err);
  bool put = returned > 0;
  // Free slots that no request may take go to the root pool.
  if (int free = ledger_->free(); free > 0) {
    if (ledger_->Grant(kLegacyOwner, free, &err) && !root_.Give(free, &err)) LogWarning(err);
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
  if (hooks_.pumped) hooks_.pumped();
}

void Broker::Serve(FairQueue* queue, int* returned) {
  while (!queue->empty()) {
    EndpointId id = queue->Front();
    Endpoint* endpoint = endpoints_.Find(id);
    if (!endpoint) {  // cannot happen: Forget withdraws its requests
      queue->Erase(id);
      continue;
    }
    bool offer = offer_next_release_ && ledger_->free() > 0;
    if (offer || !TakeSlotFor(*endpoint, returned)) return;
    queue->Pop();
    Hand(id, endpoint);
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
  } else if (out > 0 && command_slot_ && ledger_->HeldBy(kCommandOwner) == 0) {
    // A token went out again while the slot was lent: the tree uses that
    // slot once more, and may lend it again.
    ledger_->Transfer(kLegacyOwner, kCommandOwner, 1, &err);
  }
  return 0;
}

void Broker::DropSurplus(int count, const char* how) {
  if (surplus_dropped_ == 0) first_surplus_ms_ = uv_now(loop_) - started_ms_;
  surplus_dropped_ += count;
  if (hooks_.noted) hooks_.noted("surplus", count, -1, how);
  LogWarning("a legacy client " + std::string(how) + " " + std::to_string(count) +
             " token(s) it never took; dropped, so the pool stays within the budget");
}

void Broker::WatchPool(bool readable, bool idle_timer) {
  if (!idle_timer_) return;
  root_.WatchTokens(readable);
  if (idle_timer) {
    uv_timer_start(idle_timer_, OnTimer, kIdleTokenMs, 0);
  } else {
    uv_timer_stop(idle_timer_);
  }
}

void Broker::OnTimer(uv_timer_t* timer) { static_cast<Broker*>(timer->data)->Pump(); }

void Broker::OnProbe(uv_timer_t* timer) {
  auto* broker = static_cast<Broker*>(timer->data);
  broker->in_pool_ = -1;
  if (!broker->waiting_.empty() && !broker->LegacyActive()) broker->offer_next_release_ = true;
}

bool Broker::ReturnFreeSlots(std::string* err) {
  int free = ledger_->free();
  if (free == 0) return true;
  return ledger_->Grant(kLegacyOwner, free, err) && root_.Give(free, err);
}

}  // namespace jobbridge
