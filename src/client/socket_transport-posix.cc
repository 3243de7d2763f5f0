// The socket side of docs/PROTOCOL.md, in the prototype's form: one
// connection per slot. Connecting asks, the server's byte grants, closing
// gives back (or drops a request still waiting).
//
// A client that runs as a make job also owns that job's slot, the implicit
// slot (implicit_slot.h): an acquire takes it at once when it is free and
// connects only when it is not; one that waits for its connection also
// watches the implicit slot and takes it, dropping the connection, if it
// comes back first.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "client/transport.h"
#include "util/eintr.h"
#include "util/unix_socket.h"

namespace jobbridge::client {

namespace {

class SocketTransport : public Transport {
 public:
  SocketTransport(const std::string& path, const std::string& origin,
                  std::unique_ptr<ImplicitSlot> implicit)
      : path_(path), origin_(origin), implicit_(std::move(implicit)) {}

  jobbridge_mode Mode() const override { return JOBBRIDGE_MODE_SOCKET; }

  std::string Describe() const override {
    return "socket " + path_ + (origin_.empty() ? "" : " (from " + origin_ + ")") +
           (implicit_ != nullptr ? " (with the implicit slot of a make job)" : "");
  }

  int Start(Attempt* attempt) override {
    if (implicit_ != nullptr) {
      attempt->implicit = implicit_->TryTake();
      if (attempt->implicit) return 0;  // no request to make
    }
    // Non-blocking: a blocking connect() to a full backlog cannot be
    // interrupted by anything but a signal (docs/PROTOCOL.md, FACTS.md).
    UniqueFd connection = ConnectUnix(path_);
    if (!connection.valid()) {
      if (errno == ECONNREFUSED || errno == ENOENT) return -EPIPE;
      return -errno;  // EAGAIN: the backlog is full
    }
    attempt->connection = std::move(connection);
    // A make job also watches its implicit slot: it may come back first.
    return implicit_ != nullptr ? WatchBoth(attempt) : 0;
  }

  int TryFinish(Attempt* attempt, Grant* grant) override {
    if (!attempt->implicit && implicit_ != nullptr) attempt->implicit = implicit_->TryTake();
    if (attempt->implicit) {
      // A request still made is dropped (or its granted slot given back) by
      // closing it, as the caller drops the attempt.
      grant->implicit = std::move(attempt->implicit);
      return 0;
    }
    char byte = 0;
    ssize_t n = RetryOnEintr([&] { return read(attempt->connection.get(), &byte, 1); });
    if (n == 1) {
      grant->connection = std::move(attempt->connection);
      return 0;
    }
    if (n == 0 || errno == ECONNRESET) return -EPIPE;
    if (errno == EWOULDBLOCK) return -EAGAIN;
    return -errno;
  }

  // Only an attempt that took the implicit slot at Start has nothing to poll
  // yet (the others poll their connection, or both, from Start on): it is
  // granted already, so its fd is readable for good.
  int MakePollable(Attempt* attempt) override {
    if (!attempt->implicit) return 0;
    attempt->poll_set.Reset(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    return attempt->poll_set.valid() ? 0 : -errno;
  }

  int Release(Grant* grant) override {
    grant->connection.Reset();
    grant->implicit.reset();  // gives it back
    return 0;
  }

 private:
  // An epoll set over the implicit slot and the attempt's connection.
  int WatchBoth(Attempt* attempt) {
    return MakeEpollSet({implicit_->fd(), attempt->connection.get()}, &attempt->poll_set);
  }

  const std::string path_;
  const std::string origin_;
  const std::unique_ptr<ImplicitSlot> implicit_;  // null: every slot is a connection
};

}  // namespace

int OpenSocketTransport(const std::string& path, const std::string& origin, bool implicit_slot,
                        std::unique_ptr<Transport>* out, std::string* why) {
  std::string named = origin.empty() ? "the socket path" : origin;
  if (path.empty() || path[0] != '/') {
    *why = named + " '" + path + "' is not an absolute path";
    return -EINVAL;
  }
  if (path.size() > kMaxSocketPathLength) {
    *why = named + " is " + std::to_string(path.size()) +
           " bytes long; a socket path has at most " + std::to_string(kMaxSocketPathLength);
    return -EINVAL;
  }
  if (path.find('\0') != std::string::npos) {
    *why = named + " contains a NUL byte";
    return -EINVAL;
  }
  std::unique_ptr<ImplicitSlot> implicit;
  if (implicit_slot) {
    if (int rc = ImplicitSlot::Open(&implicit, why); rc < 0) return rc;
  }
  *out = std::make_unique<SocketTransport>(path, origin, std::move(implicit));
  return 0;
}

}  // namespace jobbridge::client
