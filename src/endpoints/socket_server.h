// The socket endpoint of docs/PROTOCOL.md: listens on JOBSERVERV2, accepts
// every connection at once, reads requests and releases, writes grants.
//
// It owns the bytes on the wire and nothing else: whether and when a slot is
// granted is the Delegate's decision (the Broker), and the ledger is the
// authority on who holds what.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "endpoints/unix_listener.h"
#include "util/unique_fd.h"
#include "util/unix_socket.h"

namespace jobbridge {

using ConnectionId = uint64_t;

class SocketServer {
 public:
  class Delegate {
   public:
    virtual ~Delegate() = default;
    // The connection asks for one slot (on connect, and for each '+').
    virtual void OnRequest(ConnectionId id) = 0;
    // The connection gives back one slot ('-'). Returns false when it holds
    // none, which is a protocol error: the server then closes it.
    virtual bool OnRelease(ConnectionId id) = 0;
    // The connection is gone (closed by the client, a protocol error, or
    // Close). Everything it held or asked for must be taken back.
    virtual void OnGone(ConnectionId id) = 0;
  };

  // The longest socket path Linux accepts in sockaddr_un.
  static constexpr size_t kMaxPathLength = kMaxSocketPathLength;
  // The most requests one connection may have waiting at once: a client
  // that asks for more (a flood of '+') is closed as a protocol error, so
  // one connection cannot grow the queue without bound.
  static constexpr int kMaxWaitingPerConnection = 4096;

  SocketServer(uv_loop_t* loop, Delegate* delegate);
  ~SocketServer();
  SocketServer(const SocketServer&) = delete;
  SocketServer& operator=(const SocketServer&) = delete;

  // Binds and listens on `path` (mode 0600). Returns false and sets *err.
  bool Listen(const std::string& path, std::string* err);

  // Writes one grant byte (later, with others, when the client's buffer is
  // full). Returns false when the client is gone (EPIPE, ECONNRESET): the
  // server then closes the connection and calls OnGone, which takes the slot
  // back.
  bool Grant(ConnectionId id);

  // Takes a connected, non-blocking socket as if it had been accepted (its
  // peer's uid is checked and connecting asks for a slot, as at accept).
  // Used by tests and the fuzzer to inject connections without a listener
  // or a client process. Returns the connection's id, or 0 when refused.
  ConnectionId Adopt(UniqueFd fd) { return Accept(std::move(fd)); }

  // The pid the client had when it connected (SO_PEERCRED), or -1.
  pid_t PeerPid(ConnectionId id) const;

  size_t connection_count() const { return connections_.size(); }

  // Closes the listener only: a new client's connect is refused, and the
  // connections there are keep being served (a daemon that stops).
  void StopListening();
  // Closes the listener and every connection (OnGone is called for each).
  // The handles are freed in their close callbacks, so run the loop after.
  void Shutdown();

 private:
  struct Connection;
  static void OnConnectionReadable(uv_poll_t* handle, int status, int events);
  ConnectionId Accept(UniqueFd fd);  // 0: refused
  void ReadFrom(Connection* connection);
  bool Flush(Connection* connection);  // false: the connection was closed
  void Close(Connection* connection, const std::string& why);

  uv_loop_t* loop_;
  Delegate* delegate_;
  UnixListener listener_;
  ConnectionId next_id_ = 1;
  std::unordered_map<ConnectionId, Connection*> connections_;
};

}  // namespace jobbridge
