#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "endpoints/socket_server.h"
#include "log.h"
#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {

// The state of one client connection. Freed in the close callback of its
// poll handle, which also closes the fd (after libuv stopped watching it).
struct SocketServer::Connection {
  SocketServer* server;
  ConnectionId id;
  UniqueFd fd;
  pid_t pid = -1;
  // Grants decided but not yet written: the client's receive queue was full
  // (each unread 1-byte send costs a whole buffer entry, so a client holding
  // a few hundred unread grants on one connection fills it). They are its
  // slots already; they are written, together, when the socket is writable.
  int unsent = 0;
  int waiting = 0;  // requests made (connecting is one) and not granted yet
  bool watching_writable = false;
  // The client shut its write side (shutdown(SHUT_WR)) but keeps the
  // connection: it still holds its slots, and only a full close (or its
  // death) gives them back. Watched for that close only.
  bool half_closed = false;
  uv_poll_t poll;
};

namespace {

// What a connection is watched for. A half-closed one is not watched for
// reading (its EOF would be reported again and again): UV_PRIORITIZED never
// fires on a unix socket by itself, but the kernel reports a full close
// (POLLHUP) whatever is watched, and libuv passes it on as those events.
int WatchedEvents(bool half_closed, bool writable) {
  int events = half_closed ? UV_PRIORITIZED : UV_READABLE | UV_DISCONNECT;
  return writable ? events | UV_WRITABLE : events;
}

// Whether both directions of the connection are shut: the client closed it
// (or died), as opposed to shutting down only its write side.
bool PeerClosed(int fd) {
  pollfd probe{fd, 0, 0};
  return RetryOnEintr([&] { return poll(&probe, 1, 0); }) != 0 &&
         (probe.revents & (POLLHUP | POLLERR | POLLNVAL)) != 0;
}

constexpr char kGrantByte = '+';
constexpr char kRequestByte = '+';
constexpr char kReleaseByte = '-';

std::string Describe(unsigned char byte) {
  char text[16];
  snprintf(text, sizeof text, "0x%02x", byte);
  return text;
}

}  // namespace

SocketServer::SocketServer(uv_loop_t* loop, Delegate* delegate)
    : loop_(loop),
      delegate_(delegate),
      listener_(loop, "out of file descriptors; clients wait to be accepted until one leaves",
                [this](UniqueFd fd) { Accept(std::move(fd)); }) {}

SocketServer::~SocketServer() = default;

bool SocketServer::Listen(const std::string& path, std::string* err) {
  return listener_.Listen(path, err);
}

ConnectionId SocketServer::Accept(UniqueFd fd) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return 0;
  if (peer.uid != getuid()) {
    LogWarning("refused a connection from uid " + std::to_string(peer.uid) + " (pid " +
               std::to_string(peer.pid) + "): only uid " + std::to_string(getuid()) +
               " may use this jobserver");
    return 0;  // fd closes here, before any byte
  }
  auto* connection =
      new Connection{this, next_id_++, std::move(fd), peer.pid, 0, 1, false, false, {}};
  uv_poll_init(loop_, &connection->poll, connection->fd.get());
  connection->poll.data = connection;
  uv_poll_start(&connection->poll, WatchedEvents(false, false), OnConnectionReadable);
  ConnectionId id = connection->id;
  connections_[id] = connection;
  delegate_->OnRequest(id);  // connecting asks for the first slot (and may close it)
  return id;
}

void SocketServer::OnConnectionReadable(uv_poll_t* handle, int status, int events) {
  auto* connection = static_cast<Connection*>(handle->data);
  SocketServer* server = connection->server;
  // On POLLERR (a client killed with data unread: ECONNRESET) libuv has
  // stopped the handle and passes status < 0 and no events: the read below
  // sees the error and closes the connection, which gives its slots back.
  if (status == 0 && (events & UV_WRITABLE) && !server->Flush(connection)) return;
  if (connection->half_closed) {
    if (status < 0 || PeerClosed(connection->fd.get())) server->Close(connection, "");
    return;
  }
  if (status < 0 || (events & (UV_READABLE | UV_DISCONNECT))) server->ReadFrom(connection);
}

void SocketServer::ReadFrom(Connection* connection) {
  unsigned char buffer[256];
  for (;;) {
    ssize_t n = RetryOnEintr([&] { return read(connection->fd.get(), buffer, sizeof buffer); });
    if (n == 0 && !PeerClosed(connection->fd.get())) {
      // EOF on the client's write side only: not a release (docs/PROTOCOL.md).
      connection->half_closed = true;
      uv_poll_start(&connection->poll, WatchedEvents(true, connection->watching_writable),
                    OnConnectionReadable);
      return;
    }
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      Close(connection, "");
      return;
    }
    if (n < 0) return;
    for (ssize_t i = 0; i < n; ++i) {
      ConnectionId id = connection->id;
      if (buffer[i] == kRequestByte) {
        if (++connection->waiting > kMaxWaitingPerConnection) {
          Close(connection, "asked for more than " + std::to_string(kMaxWaitingPerConnection) +
                                " slots at once");
          return;
        }
        delegate_->OnRequest(id);
      } else if (buffer[i] != kReleaseByte) {
        Close(connection, "sent " + Describe(buffer[i]) + ", which is neither '+' nor '-'");
        return;
      } else if (!delegate_->OnRelease(id)) {
        Close(connection, "sent '-' without holding a slot");
        return;
      }
      // A grant that failed inside the delegate may have closed it.
      if (!connections_.contains(id)) return;
    }
  }
}

bool SocketServer::Grant(ConnectionId id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return false;
  Connection* connection = it->second;
  ++connection->unsent;
  --connection->waiting;
  return Flush(connection);
}

bool SocketServer::Flush(Connection* connection) {
  char bytes[4096];
  while (connection->unsent > 0) {
    size_t count = std::min(sizeof bytes, static_cast<size_t>(connection->unsent));
    memset(bytes, kGrantByte, count);
    ssize_t n = RetryOnEintr(
        [&] { return send(connection->fd.get(), bytes, count, MSG_NOSIGNAL | MSG_DONTWAIT); });
    if (n < 0 && errno == EAGAIN) {
      // Full: finish when it drains, without closing a client that is
      // merely slow to read.
      if (!connection->watching_writable) {
        connection->watching_writable = true;
        uv_poll_start(&connection->poll, WatchedEvents(connection->half_closed, true),
                      OnConnectionReadable);
      }
      return true;
    }
    if (n <= 0) {
      Close(connection, "");  // gone (EPIPE, ECONNRESET): OnGone takes its slots back
      return false;
    }
    connection->unsent -= static_cast<int>(n);
  }
  if (connection->watching_writable) {
    connection->watching_writable = false;
    uv_poll_start(&connection->poll, WatchedEvents(connection->half_closed, false),
                  OnConnectionReadable);
  }
  return true;
}

pid_t SocketServer::PeerPid(ConnectionId id) const {
  auto it = connections_.find(id);
  return it == connections_.end() ? -1 : it->second->pid;
}

void SocketServer::Close(Connection* connection, const std::string& why) {
  if (!why.empty()) {
    LogWarning("closed the connection of pid " + std::to_string(connection->pid) +
               ": protocol error: it " + why + "; its slots were taken back");
  }
  connections_.erase(connection->id);
  uv_poll_stop(&connection->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&connection->poll),
           [](uv_handle_t* h) { delete static_cast<Connection*>(h->data); });
  delegate_->OnGone(connection->id);
  listener_.FdFreed();
}

void SocketServer::StopListening() { listener_.Stop(); }

void SocketServer::Shutdown() {
  while (!connections_.empty()) Close(connections_.begin()->second, "");
  StopListening();
}

}  // namespace jobbridge
