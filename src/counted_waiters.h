// What the broker (broker_semaphore.cc) and a nested jobbridge's relay
// (relay_semaphore.cc) both do with an endpoint whose waiters are counted
// rather than heard: the Robust Jobserver's semaphore, whose clients block
// in semop where nobody hears them (endpoints/semaphore_endpoint.h). One
// rule for how many requests a count makes, one way of taking back units
// given back beyond what it was given, one account at the end.
#pragma once

#include <string>

#include "endpoints/endpoint.h"

namespace jobbridge {

// Requests an endpoint with `waiting` counted waiters and `stocked` units in
// it should have in the turns: one per waiter those units do not cover (a
// waiter takes one of those itself, as soon as it is there).
inline int RequestsForWaiters(int waiting, int stocked) {
  return waiting > stocked ? waiting - stocked : 0;
}

// Units in `endpoint` beyond the `held` the ledger gave it were given back
// by a client that never took them: takes them back out (they are nobody's
// slot), warns the first time (*counted_surplus was 0), and adds them to
// *counted_surplus. Returns the units left in it, or -1 (warned) when it
// cannot tell.
int TakeBackCountedSurplus(Endpoint* endpoint, int held, int* counted_surplus);

// At the end, once every unit was taken out of the endpoint: `back` came
// back of the `held` it was given, and clients gave back `counted_surplus`
// units they never took during the run. Says what is missing or extra.
// True when exactly `held` came back and there was no surplus.
bool ReportCountBack(int back, int held, int counted_surplus);

// At the end: takes every unit out of `endpoint`, which the ledger says
// holds `held`, and reports the count (ReportCountBack). True when exact.
bool CountBackAll(Endpoint* endpoint, int held, int counted_surplus);

}  // namespace jobbridge
