#include "endpoints/socket_endpoint.h"

namespace jobbridge {

bool SocketEndpoint::Give(int count, std::string* /*err*/) {
  // Locals: a failed grant closes the connection, and its OnGone may
  // destroy this endpoint before Grant returns.
  SocketServer* server = server_;
  ConnectionId id = id_;
  for (int i = 0; i < count; ++i) {
    if (!server->Grant(id)) return true;
  }
  return true;
}

}  // namespace jobbridge
