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
//
// It may serve the tree a Robust Jobserver semaphore of its own too (an
// endpoint whose waiters are counted, endpoints/semaphore_endpoint.h;
// relay_semaphore.cc): each waiter counted that the units already in it do
// not cover is one request in the same turns, and a lease is given into it.
// Units its clients give back are stock: they stay Broker::kStockIdleMs for
// a client to take again, then go back upstream. Units given back beyond
// what it was given are taken back out and reported once; at Stop every
// unit is counted back and the endpoint destroyed (the set removed).
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
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
  // Stops granting: waiting requests are withdrawn upstream, and a counted
  // endpoint is counted back and destroyed (CountBack).
  void Stop();

  // Serves `endpoint` (keeps_stock, waiters counted: the semaphore) from
  // the outer budget too, with a timer on `loop` for its idle stock. Call
  // after Start.
  void ServeCounted(uv_loop_t* loop, std::unique_ptr<Endpoint> endpoint);
  // Its poll counted `waiting` waiters, and its stock may have changed.
  void Recount(int waiting);
  // False when, at Stop, its units did not come back exactly (or clients
  // gave back units they never took during the run).
  bool counted_back_exactly() const { return counted_exact_; }

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
  // relay_semaphore.cc: the counted endpoint.
  static void OnStockIdle(uv_timer_t* timer);
  void ReturnIdleStock();
  void CountBack();
  void DropCounted();  // withdraws its requests, stops its timer, destroys it

  Ledger* ledger_;
  Upstream* upstream_ = nullptr;
  SocketServer* server_ = nullptr;
  EndpointTable endpoints_;  // the connections that asked, as endpoints
  std::unordered_map<ConnectionId, EndpointId> by_connection_;
  FairQueue waiting_;  // the waiting requests, in turns between connections
  int wanted_ = 0;     // the sum over clients of min(their waiting, kMaxAskedPerClient)
  std::string lost_reason_;
  // The counted endpoint (0: none), and what the relay keeps of its stock.
  EndpointId counted_ = 0;
  uv_loop_t* loop_ = nullptr;
  uv_timer_t* stock_timer_ = nullptr;  // freed in its close callback
  int seen_stocked_ = 0;               // units in it after the relay last looked
  uint64_t stocked_at_ = 0;            // uv_now() when its stock last grew
  int counted_surplus_ = 0;            // units given back that were never taken
  bool counted_exact_ = true;
};

}  // namespace jobbridge
