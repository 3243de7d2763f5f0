// What the broker shows of itself to status (control/budget_view.h): each
// place slots can be, what it holds, how much of that idles there, and who
// waits since when. Read on request, never on the token path.
#include <algorithm>

#include "broker.h"

namespace jobbridge {

std::vector<Broker::Place> Broker::Places() {
  std::vector<Place> places;
  std::string err;
  places.push_back({kLegacyOwner, ledger_->HeldBy(kLegacyOwner), PoolCount(), 0, 0, -1});
  endpoints_.ForEachWithId([&](EndpointId id, const Endpoint* endpoint) {
    Place place{endpoint->owner(), ledger_->HeldBy(endpoint->owner())};
    place.idle = std::max(endpoint->Stocked(&err), 0);
    place.waiting = waiting_.Count(id) + guessed_.Count(id);
    uint64_t seen = waiting_.Since(id), guessed = guessed_.Since(id);
    place.waiting_since = seen == 0 ? guessed : guessed == 0 ? seen : std::min(seen, guessed);
    place.pid = endpoint->pid();
    places.push_back(place);
  });
  return places;
}

}  // namespace jobbridge
