// What the broker shows of itself to status (control/budget_view.h): each
// place slots can be, what it holds, how much of that idles there, and who
// waits since when (read on request, never on the token path); and a resize
// of the budget from the control socket.
#include <algorithm>

#include "broker.h"

namespace jobbridge {

std::vector<Broker::Place> Broker::Places() {
  std::vector<Place> places;
  std::string err;
  // Stock beyond what a place holds is a lent slot (the command's, written
  // into a pool by a client that never read it): not idle budget.
  int root_held = ledger_->HeldBy(kLegacyOwner);
  places.push_back({kLegacyOwner, root_held, std::clamp(PoolCount(), 0, root_held), 0, 0, -1});
  endpoints_.ForEachWithId([&](EndpointId id, const Endpoint* endpoint) {
    Place place{endpoint->owner(), ledger_->HeldBy(endpoint->owner())};
    place.idle = std::clamp(endpoint->Stocked(&err), 0, place.held);
    place.waiting = waiting_.Count(id) + guessed_.Count(id);
    uint64_t seen = waiting_.Since(id), guessed = guessed_.Since(id);
    place.waiting_since = seen == 0 ? guessed : guessed == 0 ? seen : std::min(seen, guessed);
    place.pid = endpoint->pid();
    places.push_back(place);
  });
  return places;
}

pid_t Broker::PidOf(Owner owner) const {
  pid_t pid = -1;
  endpoints_.ForEach([&](const Endpoint* endpoint) {
    if (endpoint->owner() == owner) pid = endpoint->pid();
  });
  return pid;
}

bool Broker::Resize(int jobs, std::string* err) {
  if (!ledger_->Resize(jobs, err)) return false;
  Pump();  // grown: free slots to waiters or the pool; shrunk: idle ones back
  return true;
}

void Broker::Withhold(int* returned) {
  int over = ledger_->over();
  if (over == 0) return;
  std::string err;
  int drop = std::min(over, *returned);
  if (drop > 0 && ledger_->Release(kLegacyOwner, drop, &err)) {
    *returned -= drop;
    over -= drop;
  }
  if (over > 0) {
    int got = root_.TakeBack(over, &err);
    if (got > 0 && ledger_->Release(kLegacyOwner, got, &err)) over -= got;
    in_pool_ = -1;
  }
  for (auto& [id, stock] : stocks_) {
    if (over == 0) break;
    Endpoint* endpoint = stock.endpoint;
    int ours = std::min(endpoint->Stocked(&err), ledger_->HeldBy(endpoint->owner()));
    int got = ours > 0 ? endpoint->TakeBack(std::min(ours, over), &err) : 0;
    if (got <= 0) continue;
    Free(*endpoint, got);
    over -= got;
    stock.seen_stocked = std::max(endpoint->Stocked(&err), 0);
  }
}

}  // namespace jobbridge
