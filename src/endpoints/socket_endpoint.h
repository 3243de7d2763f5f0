// One JOBSERVERV2 connection as an endpoint (endpoint.h): its waiters ask
// out loud ('+', or connecting), a slot given to it is a grant byte, and a
// slot it holds is its client's until it releases it or dies (the socket
// server reports both), so nothing can be taken back.
#pragma once

#include "endpoints/endpoint.h"
#include "endpoints/socket_server.h"

namespace jobbridge {

inline Owner SocketOwner(ConnectionId id) { return {OwnerKind::kSocket, id}; }

class SocketEndpoint : public Endpoint {
 public:
  // `server` must outlive it.
  SocketEndpoint(SocketServer* server, ConnectionId id) : server_(server), id_(id) {}

  ConnectionId connection() const { return id_; }

  Owner owner() const override { return SocketOwner(id_); }
  Traits traits() const override { return {.waiters_seen = true, .keeps_stock = false}; }
  int Stocked(std::string* /*err*/) const override { return 0; }
  // Writes the grant bytes. A client that left before its grant costs
  // nothing: the server closes it and its delegate's OnGone takes the slots
  // back, and may destroy this endpoint on the way: true then too.
  bool Give(int count, std::string* err) override;
  int TakeBack(int /*max*/, std::string* /*err*/) override { return 0; }
  pid_t pid() const override { return server_->PeerPid(id_); }

 private:
  SocketServer* server_;
  ConnectionId id_;
};

}  // namespace jobbridge
