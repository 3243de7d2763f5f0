#include "relay.h"

#include <algorithm>

#include "endpoints/socket_endpoint.h"
#include "log.h"

namespace jobbridge {

void Relay::Stop() {
  server_ = nullptr;
  ForgetWaiters();
  CountBack();
  if (upstream_) upstream_->SetWanted(0);
}

EndpointId Relay::EndpointOf(ConnectionId connection) {
  auto [it, added] = by_connection_.try_emplace(connection);
  if (added) it->second = endpoints_.Add(std::make_unique<SocketEndpoint>(server_, connection));
  return it->second;
}

void Relay::OnRequest(ConnectionId connection) {
  if (!server_) return;
  EndpointId id = EndpointOf(connection);
  waiting_.Push(id);
  if (waiting_.Count(id) <= kMaxAskedPerClient) ++wanted_;
  AskForWaiters();
}

bool Relay::OnRelease(ConnectionId id) {
  std::string err;
  if (!ledger_->Release(SocketOwner(id), 1, &err)) return false;
  GiveBack(1);
  AskForWaiters();
  return true;
}

void Relay::OnGone(ConnectionId connection) {
  if (auto it = by_connection_.find(connection); it != by_connection_.end()) {
    wanted_ -= std::min(waiting_.Erase(it->second), kMaxAskedPerClient);
    endpoints_.Remove(it->second);
    by_connection_.erase(it);
  }
  int held = ledger_->HeldBy(SocketOwner(connection));
  std::string err;
  if (held > 0 && ledger_->Release(SocketOwner(connection), held, &err)) GiveBack(held);
  AskForWaiters();
}

// One request upstream per waiting request, but at most kMaxAskedPerClient
// for one client connection: a client that sends a flood of '+' would
// otherwise open one upstream connection per '+' and exhaust the fds of this
// jobbridge and of the root. Its further requests are asked for as its
// earlier ones are granted. wanted_ is kept as requests come and go, so each
// event costs the same however many wait. Also after a release: a lease that
// came while the ledger was full (kMaxBudget slots out) went back unused, and
// its waiter is asked for again once a slot is free.
void Relay::AskForWaiters() {
  if (upstream_) upstream_->SetWanted(wanted_);
}

void Relay::ForgetWaiters() {
  waiting_.Clear();
  wanted_ = 0;
}

void Relay::OnLease() {
  std::string err;
  if (!server_ || waiting_.empty() || ledger_->free() == 0) {
    GiveBack(1);  // its request was withdrawn as the lease arrived, or no room
    return;
  }
  EndpointId id = waiting_.Front();
  if (waiting_.Count(id) <= kMaxAskedPerClient) --wanted_;
  waiting_.Pop();
  Endpoint* endpoint = endpoints_.Find(id);
  if (!endpoint) err = "a waiting connection has no endpoint";
  if (!endpoint || !ledger_->Grant(endpoint->owner(), 1, &err)) {
    LogWarning("internal: " + err);
    GiveBack(1);
    return;
  }
  // A client gone before its grant costs nothing: the server closes it and
  // OnGone gives the lease back (and forgets `endpoint`).
  endpoint->Give(1, &err);
  AskForWaiters();  // a client capped at kMaxAskedPerClient may ask again
}

void Relay::OnLost(const std::string& why) {
  lost_reason_ = why;
  LogError("lost the outer budget: " + why +
           "; closing this tree's socket connections (its clients see the server gone)");
  // The leases are void: forget what the clients held without giving back.
  std::string err;
  for (const auto& [owner, count] : ledger_->Holders()) {
    if (owner.kind == OwnerKind::kSocket || owner.kind == OwnerKind::kSemaphore) {
      ledger_->Release(owner, count, &err);
    }
  }
  ForgetWaiters();
  // Its semaphore is removed: its blocked clients get EIDRM, as socket
  // clients see their server gone.
  DropCounted();
  if (server_) server_->Shutdown();
}

void Relay::GiveBack(int count) {
  std::string err;
  if (!upstream_->Give(count, &err)) LogWarning(err);
}

}  // namespace jobbridge
