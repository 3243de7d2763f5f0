#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "control/control_protocol.h"
#include "control/control_server.h"
#include "log.h"
#include "util/eintr.h"
#include "util/unix_socket.h"
#include "util/uv_handle.h"

namespace jobbridge {

// One client. Freed in its poll handle's close callback, which also closes
// the fd (after libuv stopped watching it).
struct ControlServer::Connection {
  ControlServer* server;
  uint64_t id;
  UniqueFd fd;
  std::string in;        // bytes read and not answered yet
  std::string out;       // replies not written yet (the client reads slowly)
  bool backlog = false;  // complete lines wait for the next turn
  // The client shut its sending side (or closed): its requests are answered
  // and the replies written before the connection is closed.
  bool read_closed = false;
  bool wants_end = false;  // asked a daemon to stop: gets its summary at the end
  uv_poll_t poll;
};

namespace {

constexpr size_t kReadBytes = 4096;

// One line written at once, without waiting, before a connection is closed:
// the client may see why.
void SayAndForget(int fd, const std::string& line) {
  RetryOnEintr([&] { return send(fd, line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
}

}  // namespace

ControlServer::ControlServer(uv_loop_t* loop, Delegate* delegate)
    : loop_(loop),
      delegate_(delegate),
      listener_(loop,
                "out of file descriptors; control clients (jobbridge status) wait to be "
                "accepted until one is free",
                [this](UniqueFd fd) { Adopt(std::move(fd)); }) {}

ControlServer::~ControlServer() = default;

bool ControlServer::Listen(const std::string& path, std::string* err) {
  if (!listener_.Listen(path, err)) return false;
  next_turn_ = new uv_idle_t;
  uv_idle_init(loop_, next_turn_);
  next_turn_->data = this;
  return true;
}

void ControlServer::Shutdown() {
  std::vector<Connection*> open;
  for (auto& [id, connection] : connections_) open.push_back(connection);
  for (Connection* connection : open) {
    if (connection->wants_end && !connection->out.empty()) {
      SayAndForget(connection->fd.get(), connection->out);  // the "stopping" reply
    }
    if (connection->wants_end) {
      UniqueFd kept(fcntl(connection->fd.get(), F_DUPFD_CLOEXEC, 0));
      if (kept.valid()) end_waiters_.push_back(std::move(kept));
    }
    Close(connection, false);
  }
  listener_.Stop();
  CloseAndDelete(next_turn_);
  next_turn_ = nullptr;
}

bool ControlServer::Adopt(UniqueFd fd) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) return false;
  if (peer.uid != getuid()) {
    LogWarning("refused a control connection from uid " + std::to_string(peer.uid) + " (pid " +
               std::to_string(peer.pid) + "): only uid " + std::to_string(getuid()) +
               " may control this jobbridge");
    return false;  // closed here, before any byte
  }
  if (connections_.size() >= kMaxConnections) {
    SayAndForget(fd.get(),
                 ControlError("too many control connections (" + std::to_string(kMaxConnections) +
                                  " at once): close one and retry",
                              nullptr));
    ++closed_for_abuse_;
    return false;
  }
  auto* connection =
      new Connection{this, next_id_++, std::move(fd), {}, {}, false, false, false, {}};
  uv_poll_init(loop_, &connection->poll, connection->fd.get());
  connection->poll.data = connection;
  connections_[connection->id] = connection;
  Watch(connection);
  return true;
}

void ControlServer::Watch(Connection* connection) {
  // Once its sending side is shut, a connection is watched only for
  // writing (its end of file would be reported again and again).
  int events = connection->read_closed ? 0 : UV_DISCONNECT;
  if (!connection->backlog && !connection->read_closed) events |= UV_READABLE;
  if (!connection->out.empty()) events |= UV_WRITABLE;
  if (events == 0) {
    uv_poll_stop(&connection->poll);
  } else {
    uv_poll_start(&connection->poll, events, OnEvents);
  }
}

void ControlServer::OnEvents(uv_poll_t* handle, int status, int events) {
  auto* connection = static_cast<Connection*>(handle->data);
  ControlServer* server = connection->server;
  if (status < 0 && connection->read_closed) return server->Close(connection, false);
  if (status == 0 && (events & UV_WRITABLE) && !server->Flush(connection)) return;
  if (connection->read_closed) {
    server->FinishIfDone(connection);
    return;
  }
  if (status < 0 || (events & (UV_READABLE | UV_DISCONNECT))) server->ReadFrom(connection);
}

void ControlServer::FinishIfDone(Connection* connection) {
  if (connection->read_closed && !connection->backlog && connection->out.empty()) {
    Close(connection, false);
  }
}

void ControlServer::ReadFrom(Connection* connection) {
  if (connection->backlog) return;  // read again once its lines are answered
  char buffer[kReadBytes];
  ssize_t n = RetryOnEintr([&] { return read(connection->fd.get(), buffer, sizeof buffer); });
  if (n < 0 && errno == EAGAIN) return;
  if (n < 0) return Close(connection, false);  // gone (reset); unanswered requests with it
  if (n == 0) {
    // End of file: what it asked is still answered (echo ... | nc -N).
    connection->read_closed = true;
    if (Answer(connection)) FinishIfDone(connection);
    return;
  }
  connection->in.append(buffer, static_cast<size_t>(n));
  if (!Answer(connection)) return;
  // No end of line within the limit: the client is not speaking the
  // protocol, and the line's end cannot be found safely.
  if (!connection->backlog && connection->in.size() > kMaxControlLineBytes) {
    SayAndForget(connection->fd.get(),
                 ControlError("a line longer than " + std::to_string(kMaxControlLineBytes) +
                                  " bytes: closing the connection",
                              nullptr));
    Close(connection, true);
  }
}

bool ControlServer::Answer(Connection* connection) {
  uint64_t id = connection->id;
  int answered = 0;
  size_t end = 0;
  while ((end = connection->in.find('\n')) != std::string::npos) {
    if (answered == kRequestsPerTurn) break;
    std::string line = connection->in.substr(0, end);
    connection->in.erase(0, end + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // a blank line
    if (line.size() > kMaxControlLineBytes) {
      SayAndForget(connection->fd.get(),
                   ControlError("a line longer than " + std::to_string(kMaxControlLineBytes) +
                                    " bytes: closing the connection",
                                nullptr));
      Close(connection, true);
      return false;
    }
    std::string reply = AnswerLine(connection, line);
    if (!connections_.contains(id)) return false;  // the delegate closed it (shutdown)
    connection->out += reply;
    ++answered;
    if (connection->out.size() > kMaxPendingBytes) {
      Close(connection, true);  // it asks without reading
      return false;
    }
  }
  connection->backlog = end != std::string::npos;
  if (connection->backlog) uv_idle_start(next_turn_, OnNextTurn);
  if (!Flush(connection)) return false;
  Watch(connection);
  return true;
}

std::string ControlServer::AnswerLine(Connection* connection, const std::string& line) {
  ControlRequest request;
  std::string err;
  if (!ParseControlRequest(line, &request, &err)) return ControlError(err, request.id);
  switch (request.kind) {
    case ControlRequest::Kind::kStatus:
      return ControlReply(delegate_->Status(), request.id);
    case ControlRequest::Kind::kHolders:
      return ControlReply(delegate_->Holders(), request.id);
    case ControlRequest::Kind::kResize: {
      nlohmann::json body;
      if (!delegate_->Resize(request.jobs, &body, &err)) return ControlError(err, request.id);
      return ControlReply(body, request.id);
    }
    case ControlRequest::Kind::kStop: {
      bool waits = delegate_->Stop(request.timeout_ms);
      connection->wants_end = connection->wants_end || waits;
      return ControlReply({{"stopping", true}, {"summary_follows", waits}}, request.id);
    }
  }
  return ControlError("internal: a request of no kind", request.id);
}

void ControlServer::OnNextTurn(uv_idle_t* idle) {
  auto* server = static_cast<ControlServer*>(idle->data);
  uv_idle_stop(idle);  // started again by Answer while lines are left
  std::vector<uint64_t> waiting;
  for (auto& [id, connection] : server->connections_) {
    if (connection->backlog) waiting.push_back(id);
  }
  for (uint64_t id : waiting) {
    auto it = server->connections_.find(id);
    if (it != server->connections_.end() && server->Answer(it->second)) {
      server->FinishIfDone(it->second);
    }
  }
}

bool ControlServer::Flush(Connection* connection) {
  while (!connection->out.empty()) {
    ssize_t n = RetryOnEintr([&] {
      return send(connection->fd.get(), connection->out.data(), connection->out.size(),
                  MSG_NOSIGNAL | MSG_DONTWAIT);
    });
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      Close(connection, false);
      return false;
    }
    connection->out.erase(0, static_cast<size_t>(n));
  }
  Watch(connection);
  return true;
}

void ControlServer::Close(Connection* connection, bool abuse) {
  if (abuse) ++closed_for_abuse_;
  connections_.erase(connection->id);
  uv_poll_stop(&connection->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&connection->poll),
           [](uv_handle_t* handle) { delete static_cast<Connection*>(handle->data); });
  listener_.FdFreed();
}

}  // namespace jobbridge
