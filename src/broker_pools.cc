// The broker's side of endpoints that keep stock and of per-invocation
// pools (the policy: broker.h): stocking, settling what an invocation's
// processes write back, taking back what idles while others wait, resting,
// charging what a killed tool's orphans use, and an invocation's books at
// its end.
#include <algorithm>

#include "broker.h"
#include "log.h"

namespace jobbridge {

void Broker::OnStarted(PoolServer::Invocation* invocation) {
  std::string err;
  // A make reads the token for a recipe before it starts the tool in it:
  // that read, still unseen in the queue, goes before this pool's guesses.
  if (read_hub_) read_hub_->Drain();
  if (!read_hub_ && !read_hub_failed_) {
    read_hub_ = ReadWatchHub::Start(loop_, &err);
    read_hub_failed_ = !read_hub_;
  }
  auto endpoint = std::make_unique<InvocationEndpoint>(
      loop_, read_hub_.get(), invocation,
      [this, invocation_id = invocation->id] { OnPoolUsed(invocation_id); }, [this] { Pump(); },
      &err);
  if (!endpoint->watched() && !err.empty() && !warned_no_watcher_) {
    // Once: without a watcher a pool is stocked at its start and when its
    // tokens come back, not the moment one is read, so its tool runs
    // narrower than it could.
    warned_no_watcher_ = true;
    LogWarning(err + "; pid " + std::to_string(invocation->pid) +
               " and the tools started after it may run narrower than the budget allows");
  }
  EndpointId id = Join(std::move(endpoint));
  by_invocation_[invocation->id] = id;
  // One token stocked for its first job beyond its own slot; two while
  // nobody else waits: ninja starts its first edges in a burst, one read
  // each without blocking, and does not try again until a job ends, so a
  // restock after the first read comes too late. The second goes back as
  // soon as another waits (TakeBackIdleStock).
  // Guesses: a parent make that reads for its next recipe goes first.
  if (waiting_.empty() && guessed_.empty()) guessed_.Push(id);
  guessed_.Push(id);
  Pump();
}

InvocationEndpoint* Broker::FindInvocation(uint64_t invocation_id, EndpointId* id) {
  auto it = by_invocation_.find(invocation_id);
  if (it == by_invocation_.end()) return nullptr;
  *id = it->second;
  return static_cast<InvocationEndpoint*>(endpoints_.Find(it->second));
}

void Broker::WaitForStock(EndpointId id, Stock& stock, bool seen) {
  // Its waiters are counted (Recount): never guessed.
  if (stock.endpoint->traits().waiters_seen) return;
  std::string err;
  // A process seen reading is likely to read again: its pool may hold two,
  // the one it reads next and the one after (taken back at once while
  // another waits: TakeBackIdleStock).
  int stocked = stock.endpoint->Stocked(&err);
  if (stock.rest_until != 0 || stocked < 0 || stocked > (seen ? 1 : 0)) return;
  if (seen) {
    guessed_.Erase(id);
    if (waiting_.Count(id) == 0) waiting_.Push(id);
  } else if (Asks(id) == 0) {
    guessed_.Push(id);
  }
}

void Broker::EndRest(Stock& stock) {
  stock.rests = 0;
  stock.rest_until = 0;
}

void Broker::Rest(Stock& stock) {
  uint64_t now = uv_now(loop_);
  stock.rests = std::min(stock.rests + 1, 16);
  stock.rest_until = now + std::min(kStockIdleMs << stock.rests, kMaxRestMs);
  ArmRebalance(stock.rest_until);
}

void Broker::WakeRested() {
  uint64_t now = uv_now(loop_);
  uint64_t next = 0;
  for (auto& [id, stock] : stocks_) {
    if (stock.rest_until == 0) continue;
    if (stock.rest_until <= now) {
      stock.rest_until = 0;  // its count stays: unread again, it rests longer
      WaitForStock(id, stock, false);
    } else {
      next = next == 0 ? stock.rest_until : std::min(next, stock.rest_until);
    }
  }
  if (next != 0) ArmRebalance(next);
}

void Broker::ArmRebalance(uint64_t due) {
  uint64_t now = uv_now(loop_);
  if (rebalance_due_ > now && rebalance_due_ <= due) return;  // fires at or before `due`
  uv_timer_start(rebalance_timer_, OnRebalance, due > now ? due - now : 0, 0);
  rebalance_due_ = due;
}

void Broker::OnRebalance(uv_timer_t* timer) {
  auto* broker = static_cast<Broker*>(timer->data);
  broker->rebalance_due_ = 0;
  broker->Pump();
}

// A process of the invocation read from or wrote into its token pipe: if it
// emptied it, it may want another (a reader blocked on an empty pipe is not
// seen); if it wrote, the pool has a token again, or one it never took.
void Broker::OnPoolUsed(uint64_t invocation_id) {
  EndpointId id = 0;
  InvocationEndpoint* endpoint = FindInvocation(invocation_id, &id);
  if (!endpoint) return;
  Stock& stock = stocks_[id];
  std::string err;
  int stocked = endpoint->Stocked(&err);
  if (stocked < 0) return;
  // Unchanged since the broker's own move: no sign of its processes (a
  // token stocked and read at once looks the same: it asks again below).
  bool seen = stocked != stock.seen_stocked;
  if (seen) {
    stock.stocked_at = uv_now(loop_);
    EndRest(stock);
    SettleTokenPipe(endpoint);
    stocked = std::max(endpoint->Stocked(&err), 0);
    if (stocked > 0) Unask(id);  // a token written back
  }
  bool read = stocked < stock.seen_stocked;
  stock.seen_stocked = stocked;
  WaitForStock(id, stock, read);
  Pump();
}

void Broker::SettleTokenPipe(InvocationEndpoint* endpoint) {
  InvocationPool* pool = endpoint->pool();
  std::string err;
  int stocked = pool->Stocked(&err);
  int circulating = ledger_->HeldBy(endpoint->owner()) + pool->books().lent;
  int extra = stocked - circulating;
  if (extra <= 0) return;
  if (pool->books().lent == 0) {
    pool->MarkLent();  // it stays in the pipe, for this tree
    --extra;
  }
  if (extra == 0) return;
  int drained = pool->Unstock(extra, &err);
  if (drained < 0) LogWarning(err);
  if (drained > 0) DropPoolSurplus(endpoint->invocation(), drained, "wrote into its token pipe");
}

void Broker::DropPoolSurplus(PoolServer::Invocation* invocation, int count, const char* how) {
  invocation->pool->CountDropped(count);
  DropSurplus(count, ("(pid " + std::to_string(invocation->pid) + ", " +
                      Shortened(invocation->command) + ") " + how)
                         .c_str());
}

// Tokens in its token pipe count as its ledger share first, any beyond as
// its lent slot: written back, tokens free its slots up to what its
// processes hold of that share, then one is its lent slot (taken out of its
// pipe, or never stocked: the first lend), restocked for its own tree.
void Broker::OnReturned(PoolServer::Invocation* invocation, int count) {
  std::string err;
  Owner owner = InvocationOwner(invocation->id);
  InvocationPool* invocation_pool = invocation->pool.get();
  int stocked = std::max(invocation_pool->Stocked(&err), 0);
  int held = ledger_->HeldBy(owner);
  int back = std::min(count, std::max(held - stocked, 0));
  int beyond = count - back;
  if (back > 0) ledger_->Release(owner, back, &err);
  bool lent_in_pipe = stocked > held;
  if (beyond > 0 && !lent_in_pipe) {
    if (invocation_pool->StockLent(&err)) {
      --beyond;
    } else {
      LogWarning(err);
    }
  }
  if (beyond > 0) DropPoolSurplus(invocation, beyond, "wrote back");
  // Its own pipe first, unless a reader elsewhere is seen waiting or an
  // orphan is owed a slot: a make that writes a token back reads again at
  // once for its next recipe, as it would from plain make's single pipe.
  // Unread, it is taken back like any stock (TakeBackIdleStock).
  int none_returned = 0;
  ChargeOrphans(&none_returned);
  EndpointId id = 0;
  InvocationEndpoint* endpoint = FindInvocation(invocation->id, &id);
  if (endpoint && back > 0 && ledger_->free() > 0 && invocation_pool->Stocked(&err) == 0 &&
      waiting_.size() == static_cast<size_t>(waiting_.Count(id)) &&
      ledger_->Grant(owner, 1, &err)) {
    Hand(id, endpoint);
  }
  if (endpoint) {
    Stock& stock = stocks_[id];
    stock.seen_stocked = std::max(invocation_pool->Stocked(&err), 0);
    if (stock.seen_stocked > stocked) stock.stocked_at = uv_now(loop_);
    // A make that gave back a token is likely to read again.
    EndRest(stock);
    if (stock.seen_stocked > 0) {
      Unask(id);
    } else {
      WaitForStock(id, stock, true);
    }
  }
  legacy_seen_until_ = uv_now(loop_) + kLegacyActiveMs;
  Pump();
}

void Broker::OnEnded(const PoolServer::Invocation& invocation, const InvocationPool::Books& books) {
  std::string err;
  Owner owner = InvocationOwner(invocation.id);
  if (int held = ledger_->HeldBy(owner); held > 0) ledger_->Release(owner, held, &err);
  EndpointId id = 0;
  if (InvocationEndpoint* endpoint = FindInvocation(invocation.id, &id)) {
    endpoint->Stop();
    by_invocation_.erase(invocation.id);
    Forget(id);
  }
  if (books.reclaimed > 0) {
    reclaimed_ += books.reclaimed;
    if (hooks_.noted) {
      hooks_.noted("reclaimed", books.reclaimed, invocation.pid, Shortened(invocation.command));
    }
    if (reclaims_.size() < kMaxReclaimsKept) {
      reclaims_.push_back({invocation.pid, Shortened(invocation.command), books.reclaimed});
    }
    LogWarning("pid " + std::to_string(invocation.pid) + " (" + Shortened(invocation.command) +
               ") ended holding " + std::to_string(books.reclaimed) +
               " token(s) (killed?); given back to the budget");
  }
  Pump();
}

void Broker::ChargeOrphans(int* returned) {
  std::string err;
  for (auto& [id, stock] : stocks_) {
    if (stock.charged || !stock.endpoint->OwesSlot()) continue;
    Owner owner = stock.endpoint->owner();
    if (ledger_->free() > 0) {
      stock.charged = ledger_->Grant(owner, 1, &err);
    } else if (*returned > 0) {
      --*returned;
      stock.charged = ledger_->Transfer(kLegacyOwner, owner, 1, &err);
    }
  }
}

bool Broker::TakeBackIdleStock(bool for_guesses) {
  uint64_t idle_ms = for_guesses ? kGuessIdleMs : kStockIdleMs;
  uint64_t now = uv_now(loop_);
  uint64_t next_due = 0;
  bool freed = false;
  std::string err;
  for (auto& [id, stock] : stocks_) {
    Endpoint* endpoint = stock.endpoint;
    int stocked = endpoint->Stocked(&err);
    if (int asks = Asks(id); asks > 0) {
      // Its pipe is empty, or it waits for its second token at its start,
      // which it does not get while others wait.
      if (stocked <= 0 || static_cast<size_t>(asks) == waiting()) continue;
      Unask(id);
    }
    Owner owner = endpoint->owner();
    int ours = std::min(stocked, ledger_->HeldBy(owner));  // beyond: its lent slot
    if (ours <= 0) continue;
    // Beyond one (its second at its start or while it reads, tokens its
    // processes wrote back into the token pipe): now, unless only guesses
    // wait. A semaphore's units, all of them, as soon as seen: its waiters
    // are counted, so it needs no stock to be served, and its client had
    // the poll's interval to take its unit again.
    bool idle = now >= stock.stocked_at + idle_ms;
    bool counted = endpoint->traits().waiters_seen;
    int take = idle || (counted && !for_guesses) ? ours : for_guesses ? 0 : ours - 1;
    if (!idle)
      next_due = next_due == 0 ? stock.stocked_at + idle_ms
                               : std::min(next_due, stock.stocked_at + idle_ms);
    if (take == 0) continue;
    int got = endpoint->TakeBack(take, &err);
    if (got > 0) {
      Free(*endpoint, got);
      freed = true;
    }
    stock.seen_stocked = std::max(endpoint->Stocked(&err), 0);
    if (got < take) {
      EndRest(stock);  // a process of it took what was there first
    } else if (idle && stock.seen_stocked == 0 && !endpoint->traits().waiters_seen) {
      Rest(stock);  // a pool; a semaphore's waiters are counted, never guessed
    }
    if (stock.seen_stocked == 0) WaitForStock(id, stock, false);
  }
  if (next_due != 0) ArmRebalance(next_due);
  return freed;
}

}  // namespace jobbridge
