#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

#include "log.h"
#include "outer_budget.h"
#include "pool_server.h"
#include "util/eintr.h"
#include "util/fd_passing.h"
#include "util/unix_socket.h"
#include "util/uv_handle.h"

namespace jobbridge {

// One invocation and the handles that watch its pool.
struct PoolServer::Watched {
  PoolServer* server = nullptr;
  Invocation invocation;
  uv_poll_t* returns_poll = nullptr;  // freed in their close callbacks
  uv_poll_t* life_poll = nullptr;
  std::string listed;  // its entry beside budget.json (ListInvocationPool)
};

// A connection whose one request has not come yet.
struct PoolServer::Pending {
  uv_poll_t poll;  // first: the close callback gets the Pending back
  UniqueFd fd;
};

void PoolServer::ClosePending(Pending* pending) {
  pending_.erase(pending);
  uv_close(reinterpret_cast<uv_handle_t*>(&pending->poll),
           [](uv_handle_t* h) { delete reinterpret_cast<Pending*>(h); });
}

namespace {

// "pool PID COMMAND..." -> pid and command; false when malformed.
bool ParseRequest(const std::string& request, pid_t* pid, std::string* command) {
  constexpr std::string_view kVerb = "pool ";
  if (!request.starts_with(kVerb)) return false;
  const char* begin = request.data() + kVerb.size();
  const char* end = request.data() + request.size();
  auto [after, error] = std::from_chars(begin, end, *pid);
  if (error != std::errc() || after == begin || *pid <= 0) return false;
  if (after != end && *after != ' ') return false;
  *command = after == end ? "" : std::string(after + 1, end);
  return true;
}

}  // namespace

PoolServer::PoolServer(uv_loop_t* loop, Delegate* delegate, std::string list_dir)
    : loop_(loop), delegate_(delegate), list_dir_(std::move(list_dir)) {}

PoolServer::~PoolServer() = default;

bool PoolServer::Listen(const std::string& path, std::string* err) {
  spare_fd_.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!spare_fd_.valid()) {
    *err = std::string("cannot open /dev/null: ") + strerror(errno);
    return false;
  }
  listen_fd_ = ListenUnix(path, SOCK_SEQPACKET, err);
  if (!listen_fd_.valid()) return false;
  listen_poll_ = new uv_poll_t;
  uv_poll_init(loop_, listen_poll_, listen_fd_.get());
  listen_poll_->data = this;
  uv_poll_start(listen_poll_, UV_READABLE, OnListenReadable);
  return true;
}

void PoolServer::OnListenReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* server = static_cast<PoolServer*>(handle->data);
  for (;;) {
    int fd = accept4(server->listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      server->Serve(fd);
    } else if (errno == EMFILE || errno == ENFILE) {
      if (!server->RefuseOneOutOfFds()) return;
    } else if (errno != EINTR && errno != ECONNABORTED) {
      return;  // EAGAIN
    }
  }
}

// Left in the backlog, a shim would wait kPoolReplyTimeoutMs for its reply:
// the spare fd makes room to accept it and refuse it at once. True when one
// was refused. When even that fails, no more pools are given out: the
// listener closes, so that shims are refused at connect and its readiness
// cannot spin the loop.
bool PoolServer::RefuseOneOutOfFds() {
  std::string detail = std::string("accepting a request: ") + strerror(errno);
  spare_fd_.Reset();
  UniqueFd connection(accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  // accept4 takes its fd before it looks at the backlog: EMFILE says
  // nothing of a request waiting, and EAGAIN here says there is none.
  bool refused = connection.valid();
  bool still_out = !refused && (errno == EMFILE || errno == ENFILE);
  if (refused) {
    // Its request read first: a connection closed with data unread is reset,
    // and the shim would not see why.
    char request[kMaxRequest + 1];
    RetryOnEintr([&] { return recv(connection.get(), request, sizeof request, 0); });
    RefuseOutOfFds(connection.get(), detail);
  }
  connection.Reset();
  spare_fd_.Reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (spare_fd_.valid() && !still_out) return refused;
  LogWarning("pools socket: out of file descriptors (" + detail + "); no more pools are " +
             "given out, and every tool started from now on shares the pool it was given");
  CloseAndDelete(listen_poll_);
  listen_poll_ = nullptr;
  listen_fd_.Reset();
  return false;
}

// The limit, not a fault: the root says so once, each shim for its tool.
void PoolServer::RefuseOutOfFds(int connection, const std::string& detail) {
  std::string ignored;
  SendFds(connection, "error the root is out of file descriptors (" + detail + ")", {}, &ignored);
  if (warned_out_of_fds_) return;
  warned_out_of_fds_ = true;
  LogWarning("pools socket: out of file descriptors (" + detail + "), so some tools get no " +
             "pool of their own and share the pool they were given; raise the open-file limit " +
             "(ulimit -n)");
}

void PoolServer::Serve(int connection) {
  auto* pending = new Pending;
  pending_.insert(pending);
  pending->fd.Reset(connection);
  uv_poll_init(loop_, &pending->poll, connection);
  pending->poll.data = this;
  uv_poll_start(&pending->poll, UV_READABLE | UV_DISCONNECT, OnRequestReadable);
}

void PoolServer::OnRequestReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* pending = reinterpret_cast<Pending*>(handle);
  auto* server = static_cast<PoolServer*>(handle->data);
  char request[kMaxRequest + 1];
  ssize_t n = RetryOnEintr([&] { return recv(pending->fd.get(), request, sizeof request, 0); });
  if (n < 0 && errno == EAGAIN) return;
  if (n > 0) server->Answer(pending->fd.get(), std::string(request, n));
  server->ClosePending(pending);  // one request per connection
}

void PoolServer::Answer(int connection, const std::string& request) {
  std::string err;
  auto refuse = [&](const std::string& why) {
    LogWarning("pools socket: " + why);
    std::string ignored;
    SendFds(connection, "error " + why, {}, &ignored);
  };
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0 ||
      peer.uid != getuid()) {
    refuse("refused a request from uid " + std::to_string(peer.uid));
    return;
  }
  auto watched = std::make_unique<Watched>();
  Invocation& invocation = watched->invocation;
  if (request.size() > kMaxRequest ||
      !ParseRequest(request, &invocation.pid, &invocation.command)) {
    refuse("a malformed request from pid " + std::to_string(peer.pid) +
           " (want \"pool PID COMMAND\")");
    return;
  }
  invocation.pool = InvocationPool::Create(&err);
  if (!invocation.pool) {
    // errno is the failed pipe2's or open's: Create's clean-up only closes.
    if (errno == EMFILE || errno == ENFILE) {
      RefuseOutOfFds(connection, err);
    } else {
      refuse(err);
    }
    return;
  }
  // Unlisted, the pool would look like another budget's to a jobbridge
  // nested below the tool: then the tool shares the pool it was given.
  if (!ListInvocationPool(list_dir_, invocation.pool->token_fd(), invocation.pid, &watched->listed,
                          &err)) {
    refuse(err);
    return;
  }
  invocation.id = next_id_++;
  if (hooks_.created) hooks_.created(invocation);
  InvocationPool::ChildFds fds = invocation.pool->child_fds();
  if (!SendFds(connection, "ok", {fds.token_read, fds.returns_write, fds.life_write}, &err)) {
    LogWarning("pools socket: could not hand pid " + std::to_string(invocation.pid) +
               " its pool: " + err);
    UnlistInvocationPool(watched->listed);
    if (hooks_.ended) hooks_.ended(invocation);
    return;
  }
  invocation.pool->CloseChildEnds();  // the bridge keeps no write end of either pipe
  watched->server = this;
  for (auto [poll, fd] : {std::pair{&watched->returns_poll, invocation.pool->returns_fd()},
                          std::pair{&watched->life_poll, invocation.pool->life_fd()}}) {
    *poll = new uv_poll_t;
    uv_poll_init(loop_, *poll, fd);
    (*poll)->data = watched.get();
    uv_poll_start(*poll, UV_READABLE | UV_DISCONNECT, OnPoolEvent);
  }
  Watched* raw = watched.get();
  invocations_[invocation.id] = std::move(watched);
  delegate_->OnStarted(&raw->invocation);
}

void PoolServer::OnPoolEvent(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* watched = static_cast<Watched*>(handle->data);
  PoolServer* server = watched->server;
  Invocation& invocation = watched->invocation;
  if (handle == watched->life_poll) {
    if (invocation.pool->Ended()) server->End(invocation.id);
    return;
  }
  std::string err;
  int count = invocation.pool->TakeReturned(&err);
  if (count > 0) {
    server->delegate_->OnReturned(&invocation, count);
  } else if (count == 0) {
    // Nothing to read: a spurious wake-up, or every writer is gone (POLLHUP),
    // and then the poll would spin. The life pipe says when the invocation
    // has ended.
    pollfd hangup{invocation.pool->returns_fd(), POLLIN, 0};
    if (poll(&hangup, 1, 0) == 1 && (hangup.revents & POLLHUP)) uv_poll_stop(handle);
  } else {
    LogWarning(err);
    uv_poll_stop(handle);
  }
}

void PoolServer::End(uint64_t id) {
  auto it = invocations_.find(id);
  if (it == invocations_.end()) return;
  std::unique_ptr<Watched> watched = std::move(it->second);
  invocations_.erase(it);
  CloseAndDelete(watched->returns_poll);
  CloseAndDelete(watched->life_poll);
  Invocation& invocation = watched->invocation;
  std::string err;
  int count = invocation.pool->TakeReturned(&err);
  if (count > 0) delegate_->OnReturned(&invocation, count);
  InvocationPool::Books books = invocation.pool->Close(&err);
  UnlistInvocationPool(watched->listed);
  delegate_->OnEnded(invocation, books);
  if (hooks_.ended) hooks_.ended(invocation);
}

void PoolServer::StopListening() {
  if (listen_poll_) CloseAndDelete(listen_poll_);
  listen_poll_ = nullptr;
  listen_fd_.Reset();
}

void PoolServer::Shutdown() {
  StopListening();
  spare_fd_.Reset();
  for (Pending* pending : std::vector<Pending*>(pending_.begin(), pending_.end())) {
    ClosePending(pending);
  }
  std::vector<uint64_t> ids;
  for (const auto& [id, watched] : invocations_) ids.push_back(id);
  for (uint64_t id : ids) End(id);
}

}  // namespace jobbridge
