// The broker's side of endpoints whose waiters are counted rather than heard
// (the policy: broker.h): the Robust Jobserver's semaphore, whose clients
// block in semop where nobody hears them, so its poll counts them
// (endpoints/semaphore_endpoint.h). Their requests follow the count, units
// given back are stock that goes back to the budget, units given back beyond
// what it holds are surplus, and at the end every unit is counted back.
#include <algorithm>

#include "broker.h"
#include "counted_waiters.h"
#include "log.h"

namespace jobbridge {

void Broker::Recount(EndpointId id, int waiting) {
  auto it = stocks_.find(id);
  if (it == stocks_.end()) return;
  Stock& stock = it->second;
  Endpoint* endpoint = stock.endpoint;
  int surplus_before = counted_surplus_;
  int stocked =
      TakeBackCountedSurplus(endpoint, ledger_->HeldBy(endpoint->owner()), &counted_surplus_);
  if (int got = counted_surplus_ - surplus_before; got > 0 && hooks_.noted) {
    hooks_.noted("surplus", got, -1, "given back to the ROBUST_JOBSERVER semaphore");
  }
  if (stocked < 0) return;
  // A unit given back: its client may take it again at once, unseen.
  if (stocked > stock.seen_stocked) stock.stocked_at = uv_now(loop_);
  stock.seen_stocked = stocked;
  // One request per waiter that the units already there do not cover (a
  // waiter takes one of those itself, as soon as it is there).
  int want = RequestsForWaiters(waiting, stocked);
  int asked = waiting_.Count(id);
  for (; asked < want; ++asked) waiting_.Push(id);
  if (asked > want) waiting_.Withdraw(id, asked - want);
  Pump();
}

// Its stock is not needed to serve it: a waiter is seen, and served from the
// budget. So a unit given back stays kStockIdleMs, for its client to take
// again at once, then goes back to the budget whether or not anyone is seen
// waiting: a reader of the root pool may want the slot unseen.
void Broker::ReturnUnusedStock() {
  uint64_t now = uv_now(loop_);
  std::string err;
  for (auto& [id, stock] : stocks_) {
    Endpoint* endpoint = stock.endpoint;
    if (!endpoint->traits().waiters_seen || stock.seen_stocked <= 0) continue;
    if (uint64_t due = stock.stocked_at + kStockIdleMs; now < due) {
      ArmRebalance(due);
      continue;
    }
    int ours = std::min(endpoint->Stocked(&err), ledger_->HeldBy(endpoint->owner()));
    int got = ours > 0 ? endpoint->TakeBack(ours, &err) : 0;
    if (got < 0) LogWarning(err);
    if (got > 0) Free(*endpoint, got);
    stock.seen_stocked = std::max(endpoint->Stocked(&err), 0);
  }
}

bool Broker::CountBack(EndpointId id) {
  Endpoint* endpoint = endpoints_.Find(id);
  if (!endpoint) return true;
  bool exact = CountBackAll(endpoint, ledger_->HeldBy(endpoint->owner()), counted_surplus_);
  Leave(id);  // frees what it held; destroyed, the semaphore is removed
  return exact;
}

}  // namespace jobbridge
