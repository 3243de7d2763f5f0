// The relay: what a nested jobbridge puts behind its socket instead of a
// broker. Every slot a socket client of the tree gets is a slot borrowed from
// the outer budget (Upstream) for that client alone, asked for when the
// client asks and given back the moment it is released, so the outer budget
// stays the one that decides, and a client killed inside the tree gives its
// slot back to the outer budget.
//
// Requests are served in turns between client connections (FairQueue, by
// endpoint: each connection is a SocketEndpoint, endpoints/endpoint.h): a
// lease goes to the connection whose turn it is. A released slot is given
// back upstream (the Upstream is an endpoint too), not handed to the next
// waiter here, so that waiters elsewhere in the outer tree get their turn.
// Not the broker's policy: here the outer budget decides who runs.
#pragma once

#include <string>
#include <unordered_map>

#include "core/fair_queue.h"
#include "core/ledger.h"
#include "endpoints/endpoint.h"
#include "endpoints/socket_server.h"
#include "endpoints/upstream.h"

namespace jobbridge {

class Relay : public SocketServer::Delegate, public Upstream::Delegate {
 public:
  // The most requests of one client connection asked for upstream at once.
  static constexpr int kMaxAskedPerClient = 4;

  // All pointers must outlive the relay.
  explicit Relay(Ledger* ledger) : ledger_(ledger) {}
  void Start(SocketServer* server, Upstream* upstream) {
    server_ = server;
    upstream_ = upstream;
  }
  // Stops granting: waiting requests are withdrawn upstream.
  void Stop();

  const std::string& lost_reason() const { return lost_reason_; }

  // SocketServer::Delegate
  void OnRequest(ConnectionId id) override;
  bool OnRelease(ConnectionId id) override;
  void OnGone(ConnectionId id) override;

  // Upstream::Delegate
  void OnLease() override;
  void OnLost(const std::string& why) override;

 private:
  EndpointId EndpointOf(ConnectionId connection);  // made when it first asks
  void GiveBack(int count);
  void AskForWaiters();
  void ForgetWaiters();

  Ledger* ledger_;
  Upstream* upstream_ = nullptr;
  SocketServer* server_ = nullptr;
  EndpointTable endpoints_;  // the connections that asked, as endpoints
  std::unordered_map<ConnectionId, EndpointId> by_connection_;
  FairQueue waiting_;  // the waiting requests, in turns between connections
  int wanted_ = 0;     // the sum over clients of min(their waiting, kMaxAskedPerClient)
  std::string lost_reason_;
};

}  // namespace jobbridge
