// The relay's side of an endpoint whose waiters are counted (relay.h): the
// semaphore a nested jobbridge offers its tree, served from the outer budget.
// The rules are the broker's (broker.h, "Endpoints whose waiters are
// counted"; the shared parts in counted_waiters.h), except that a slot
// comes from upstream and goes back there.
#include <algorithm>

#include "broker.h"
#include "counted_waiters.h"
#include "log.h"
#include "relay.h"
#include "util/uv_handle.h"

namespace jobbridge {

void Relay::ServeCounted(uv_loop_t* loop, std::unique_ptr<Endpoint> endpoint) {
  loop_ = loop;
  counted_ = endpoints_.Add(std::move(endpoint));
  stock_timer_ = new uv_timer_t;
  uv_timer_init(loop_, stock_timer_);
  stock_timer_->data = this;
}

void Relay::Recount(int waiting) {
  Endpoint* endpoint = endpoints_.Find(counted_);
  if (!endpoint || !server_) return;
  int held = ledger_->HeldBy(endpoint->owner());
  int stocked = TakeBackCountedSurplus(endpoint, held, &counted_surplus_);
  if (stocked < 0) return;
  // A unit given back: its client may take it again at once, unseen.
  if (stocked > seen_stocked_) stocked_at_ = uv_now(loop_);
  seen_stocked_ = stocked;
  if (stocked > 0 && !uv_is_active(reinterpret_cast<uv_handle_t*>(stock_timer_))) {
    uint64_t due = stocked_at_ + Broker::kStockIdleMs;
    uint64_t now = uv_now(loop_);
    uv_timer_start(stock_timer_, OnStockIdle, due > now ? due - now : 0, 0);
  }
  // The requests asked for upstream follow the count, as a connection's do.
  int want = RequestsForWaiters(waiting, stocked);
  int asked = waiting_.Count(counted_);
  int before = std::min(asked, kMaxAskedPerClient);
  for (; asked < want; ++asked) waiting_.Push(counted_);
  if (asked > want) waiting_.Withdraw(counted_, asked - want);
  wanted_ += std::min(waiting_.Count(counted_), kMaxAskedPerClient) - before;
  AskForWaiters();
}

void Relay::OnStockIdle(uv_timer_t* timer) { static_cast<Relay*>(timer->data)->ReturnIdleStock(); }

// Its stock is not needed to serve it (a waiter is counted, and served from
// upstream): a unit that sat kStockIdleMs goes back upstream, where waiters
// elsewhere in the outer tree may want it.
void Relay::ReturnIdleStock() {
  Endpoint* endpoint = endpoints_.Find(counted_);
  if (!endpoint || !server_ || seen_stocked_ <= 0) return;
  uint64_t now = uv_now(loop_);
  if (uint64_t due = stocked_at_ + Broker::kStockIdleMs; now < due) {
    uv_timer_start(stock_timer_, OnStockIdle, due - now, 0);
    return;
  }
  std::string err;
  int ours = std::min(endpoint->Stocked(&err), ledger_->HeldBy(endpoint->owner()));
  int got = ours > 0 ? endpoint->TakeBack(ours, &err) : 0;
  if (got < 0) LogWarning(err);
  if (got > 0 && ledger_->Release(endpoint->owner(), got, &err)) GiveBack(got);
  seen_stocked_ = std::max(endpoint->Stocked(&err), 0);
  AskForWaiters();
}

// At Stop: every unit out of it, the account, its slots back upstream, and
// the endpoint destroyed (the set removed: a client outside the tree that
// still holds a unit gets EIDRM at its next semop).
void Relay::CountBack() {
  Endpoint* endpoint = endpoints_.Find(counted_);
  if (!endpoint) return;
  std::string err;
  int held = ledger_->HeldBy(endpoint->owner());
  counted_exact_ = CountBackAll(endpoint, held, counted_surplus_);
  if (held > 0 && ledger_->Release(endpoint->owner(), held, &err) && upstream_) GiveBack(held);
  DropCounted();
}

void Relay::DropCounted() {
  if (counted_ == 0) return;
  wanted_ -= std::min(waiting_.Erase(counted_), kMaxAskedPerClient);
  if (stock_timer_) CloseAndDelete(stock_timer_);
  stock_timer_ = nullptr;
  if (Endpoint* endpoint = endpoints_.Find(counted_)) endpoint->Stop();
  endpoints_.Remove(counted_);
  counted_ = 0;
}

}  // namespace jobbridge
