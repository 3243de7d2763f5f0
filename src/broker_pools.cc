// The broker's side of per-invocation pools (the policy: broker.h): stocking
// each pool, settling what its processes write back, taking back what idles
// there while others wait, and its books at its end.
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "broker.h"
#include "log.h"
#include "util/uv_handle.h"

namespace jobbridge {

void Broker::OnStarted(PoolServer::Invocation* invocation) {
  std::string err;
  uint64_t id = invocation->id;
  std::unique_ptr<ReadWatcher> watcher;
  // A make reads the token for a recipe before it starts the tool in it:
  // that read, still unseen in the queue, goes before this pool's guesses.
  if (read_hub_) read_hub_->Drain();
  if (!read_hub_ && !read_hub_failed_) {
    read_hub_ = ReadWatchHub::Start(loop_, &err);
    read_hub_failed_ = !read_hub_;
  }
  if (read_hub_) {
    // Writes too: ninja and the tools below it write tokens back into the
    // token pipe itself, by its path.
    watcher = ReadWatcher::Start(
        read_hub_.get(), invocation->pool->token_fd(), [this, id] { OnPoolUsed(id); }, &err,
        ReadWatcher::Watch::kReadsAndWrites);
  }
  if (!watcher && !err.empty() && !warned_no_watcher_) {
    // Once: without a watcher a pool is stocked at its start and when its
    // tokens come back, not the moment one is read, so its tool runs
    // narrower than it could.
    warned_no_watcher_ = true;
    LogWarning(err + "; pid " + std::to_string(invocation->pid) +
               " and the tools started after it may run narrower than the budget allows");
  }
  Pool& pool = pools_[id];
  pool.invocation = invocation;
  pool.watcher = std::move(watcher);
  pool.pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, invocation->pid, 0)));
  if (pool.pidfd.valid()) {
    pool.death_poll = new uv_poll_t;
    uv_poll_init(loop_, pool.death_poll, pool.pidfd.get());
    pool.death_poll->data = this;
    uv_poll_start(pool.death_poll, UV_READABLE, OnToolDied);
  }
  // One token stocked for its first job beyond its own slot; two while
  // nobody else waits: ninja starts its first edges in a burst, one read
  // each without blocking, and does not try again until a job ends, so a
  // restock after the first read comes too late. The second goes back as
  // soon as another waits (TakeBackIdleStock).
  // Guesses: a parent make that reads for its next recipe goes first.
  if (waiting_.empty() && guessed_.empty()) guessed_.Push(id | kPoolBit);
  guessed_.Push(id | kPoolBit);
  Pump();
}

void Broker::HandToPool(uint64_t invocation_id) {
  std::string err;
  auto it = pools_.find(invocation_id);
  int before = it == pools_.end() ? 0 : std::max(it->second.invocation->pool->Stocked(&err), 0);
  if (it == pools_.end() || !it->second.invocation->pool->Stock(1, &err)) {
    if (!err.empty()) LogWarning(err);
    ledger_->Release(PoolOwner(invocation_id), 1, &err);
    return;
  }
  Pool& pool = it->second;
  pool.stocked_at = uv_now(loop_);
  // What it holds now as far as the broker knows: a read seen later, even
  // one made at once, shows as fewer (OnPoolUsed).
  pool.seen_stocked = before + 1;
}

void Broker::WaitForStock(Pool& pool, bool seen) {
  uint64_t id = pool.invocation->id;
  std::string err;
  // A process seen reading is likely to read again: its pool may hold two,
  // the one it reads next and the one after (taken back at once while
  // another waits: TakeBackIdleStock).
  int stocked = pool.invocation->pool->Stocked(&err);
  if (pool.rest_until != 0 || stocked < 0 || stocked > (seen ? 1 : 0)) return;
  if (seen) {
    guessed_.Erase(id | kPoolBit);
    if (waiting_.Count(id | kPoolBit) == 0) waiting_.Push(id | kPoolBit);
  } else if (Asks(id) == 0) {
    guessed_.Push(id | kPoolBit);
  }
}

void Broker::Unask(uint64_t invocation_id) {
  waiting_.Erase(invocation_id | kPoolBit);
  guessed_.Erase(invocation_id | kPoolBit);
}

int Broker::Asks(uint64_t invocation_id) const {
  return waiting_.Count(invocation_id | kPoolBit) + guessed_.Count(invocation_id | kPoolBit);
}

void Broker::EndRest(Pool& pool) {
  pool.rests = 0;
  pool.rest_until = 0;
}

void Broker::Rest(Pool& pool) {
  uint64_t now = uv_now(loop_);
  pool.rests = std::min(pool.rests + 1, 16);
  pool.rest_until = now + std::min(kStockIdleMs << pool.rests, kMaxRestMs);
  ArmRebalance(pool.rest_until);
}

void Broker::WakeRested() {
  uint64_t now = uv_now(loop_);
  uint64_t next = 0;
  for (auto& [id, pool] : pools_) {
    if (pool.rest_until == 0) continue;
    if (pool.rest_until <= now) {
      pool.rest_until = 0;  // its count stays: unread again, it rests longer
      WaitForStock(pool, false);
    } else {
      next = next == 0 ? pool.rest_until : std::min(next, pool.rest_until);
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
  auto it = pools_.find(invocation_id);
  if (it == pools_.end()) return;
  Pool& pool = it->second;
  InvocationPool* invocation_pool = pool.invocation->pool.get();
  std::string err;
  int stocked = invocation_pool->Stocked(&err);
  if (stocked < 0) return;
  // Unchanged since the broker's own move: no sign of its processes (a
  // token stocked and read at once looks the same: it asks again below).
  bool seen = stocked != pool.seen_stocked;
  if (seen) {
    pool.stocked_at = uv_now(loop_);
    EndRest(pool);
    SettleTokenPipe(pool);
    stocked = std::max(invocation_pool->Stocked(&err), 0);
    if (stocked > 0) Unask(invocation_id);  // a token written back
  }
  bool read = stocked < pool.seen_stocked;
  pool.seen_stocked = stocked;
  WaitForStock(pool, read);
  Pump();
}

void Broker::SettleTokenPipe(Pool& pool) {
  InvocationPool* invocation_pool = pool.invocation->pool.get();
  std::string err;
  int stocked = invocation_pool->Stocked(&err);
  int circulating = ledger_->HeldBy(PoolOwner(pool.invocation->id)) + invocation_pool->books().lent;
  int extra = stocked - circulating;
  if (extra <= 0) return;
  if (invocation_pool->books().lent == 0) {
    invocation_pool->MarkLent();  // it stays in the pipe, for this tree
    --extra;
  }
  if (extra == 0) return;
  int drained = invocation_pool->Unstock(extra, &err);
  if (drained < 0) LogWarning(err);
  if (drained > 0) DropPoolSurplus(pool.invocation, drained, "wrote into its token pipe");
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
  Owner owner = PoolOwner(invocation->id);
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
  uint64_t asking = invocation->id | kPoolBit;
  if (back > 0 && ledger_->free() > 0 && invocation_pool->Stocked(&err) == 0 &&
      waiting_.size() == static_cast<size_t>(waiting_.Count(asking)) &&
      ledger_->Grant(owner, 1, &err)) {
    HandToPool(invocation->id);
  }
  if (auto it = pools_.find(invocation->id); it != pools_.end()) {
    Pool& pool = it->second;
    pool.seen_stocked = std::max(invocation_pool->Stocked(&err), 0);
    if (pool.seen_stocked > stocked) pool.stocked_at = uv_now(loop_);
    // A make that gave back a token is likely to read again.
    EndRest(pool);
    if (pool.seen_stocked > 0) {
      Unask(invocation->id);
    } else {
      WaitForStock(pool, true);
    }
  }
  legacy_seen_until_ = uv_now(loop_) + kLegacyActiveMs;
  Pump();
}

void Broker::OnEnded(const PoolServer::Invocation& invocation, const InvocationPool::Books& books) {
  std::string err;
  Owner owner = PoolOwner(invocation.id);
  if (int held = ledger_->HeldBy(owner); held > 0) ledger_->Release(owner, held, &err);
  Unask(invocation.id);
  if (auto it = pools_.find(invocation.id); it != pools_.end()) {
    if (it->second.watcher) it->second.watcher->Stop();
    CloseAndDelete(it->second.death_poll);
    pools_.erase(it);
  }
  if (books.reclaimed > 0) {
    reclaimed_ += books.reclaimed;
    if (reclaims_.size() < kMaxReclaimsKept) {
      reclaims_.push_back({invocation.pid, Shortened(invocation.command), books.reclaimed});
    }
    LogWarning("pid " + std::to_string(invocation.pid) + " (" + Shortened(invocation.command) +
               ") ended holding " + std::to_string(books.reclaimed) +
               " token(s) (killed?); given back to the budget");
  }
  Pump();
}

void Broker::OnToolDied(uv_poll_t* handle, int /*status*/, int /*events*/) {
  uv_poll_stop(handle);
  static_cast<Broker*>(handle->data)->Pump();
}

void Broker::ChargeOrphans(int* returned) {
  std::string err;
  for (auto& [id, pool] : pools_) {
    if (!pool.owes && pool.pidfd.valid()) {
      pollfd died{pool.pidfd.get(), POLLIN, 0};
      pool.owes = poll(&died, 1, 0) == 1 && !pool.invocation->pool->Ended();
    }
    if (!pool.owes || pool.charged) continue;
    Owner owner = PoolOwner(id);
    if (ledger_->free() > 0) {
      pool.charged = ledger_->Grant(owner, 1, &err);
    } else if (*returned > 0) {
      --*returned;
      pool.charged = ledger_->Transfer(kLegacyOwner, owner, 1, &err);
    }
  }
}

bool Broker::TakeBackIdleStock(bool for_guesses) {
  uint64_t idle_ms = for_guesses ? kGuessIdleMs : kStockIdleMs;
  uint64_t now = uv_now(loop_);
  uint64_t next_due = 0;
  bool freed = false;
  std::string err;
  for (auto& [id, pool] : pools_) {
    InvocationPool* invocation_pool = pool.invocation->pool.get();
    int stocked = invocation_pool->Stocked(&err);
    if (int asks = Asks(id); asks > 0) {
      // Its pipe is empty, or it waits for its second token at its start,
      // which it does not get while others wait.
      if (stocked <= 0 || static_cast<size_t>(asks) == waiting()) continue;
      Unask(id);
    }
    int ours = std::min(stocked, ledger_->HeldBy(PoolOwner(id)));  // beyond: its lent slot
    if (ours <= 0) continue;
    // Beyond one (its second at its start or while it reads, tokens its
    // processes wrote back into the token pipe): now, unless only guesses
    // wait.
    bool idle = now >= pool.stocked_at + idle_ms;
    int take = idle ? ours : for_guesses ? 0 : ours - 1;
    if (!idle)
      next_due =
          next_due == 0 ? pool.stocked_at + idle_ms : std::min(next_due, pool.stocked_at + idle_ms);
    if (take == 0) continue;
    int got = invocation_pool->Unstock(take, &err);
    if (got > 0) {
      ledger_->Release(PoolOwner(id), got, &err);
      freed = true;
    }
    pool.seen_stocked = std::max(invocation_pool->Stocked(&err), 0);
    if (got < take) {
      EndRest(pool);  // a process of it took what was there first
    } else if (idle && pool.seen_stocked == 0) {
      Rest(pool);
    }
    if (pool.seen_stocked == 0) WaitForStock(pool, false);
  }
  if (next_due != 0) ArmRebalance(next_due);
  return freed;
}

}  // namespace jobbridge
