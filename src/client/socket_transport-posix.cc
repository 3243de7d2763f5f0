// The socket side of docs/PROTOCOL.md, in the prototype's form: one
// connection per slot. Connecting asks, the server's byte grants, closing
// gives back (or drops a request still waiting).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "client/transport.h"
#include "util/eintr.h"

namespace jobbridge::client {

namespace {

constexpr size_t kMaxPathLength = sizeof(sockaddr_un::sun_path) - 1;  // 107 on Linux

class SocketTransport : public Transport {
 public:
  SocketTransport(const std::string& path, const std::string& origin)
      : path_(path), origin_(origin) {}

  jobbridge_mode Mode() const override { return JOBBRIDGE_MODE_SOCKET; }

  std::string Describe() const override {
    return "socket " + path_ + (origin_.empty() ? "" : " (from " + origin_ + ")");
  }

  int Start(Attempt* attempt) override {
    // Non-blocking: a blocking connect() to a full backlog cannot be
    // interrupted by anything but a signal (docs/PROTOCOL.md, FACTS.md).
    UniqueFd connection(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!connection.valid()) return -errno;
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path_.data(), path_.size());
    int rc = RetryOnEintr([&] {
      return connect(connection.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address);
    });
    // A connect() interrupted and retried may find itself already done.
    if (rc != 0 && errno != EISCONN) {
      if (errno == ECONNREFUSED || errno == ENOENT) return -EPIPE;
      return -errno;  // EAGAIN: the backlog is full
    }
    attempt->fd = std::move(connection);
    return 0;
  }

  int TryFinish(Attempt* attempt, Grant* grant) override {
    char byte = 0;
    ssize_t n = RetryOnEintr([&] { return read(attempt->fd.get(), &byte, 1); });
    if (n == 1) {
      grant->connection = std::move(attempt->fd);
      return 0;
    }
    if (n == 0 || errno == ECONNRESET) return -EPIPE;
    if (errno == EWOULDBLOCK) return -EAGAIN;
    return -errno;
  }

  int MakePollable(Attempt*) override { return 0; }  // the connection itself

  int Release(Grant* grant) override {
    grant->connection.Reset();
    return 0;
  }

 private:
  const std::string path_;
  const std::string origin_;
};

}  // namespace

int OpenSocketTransport(const std::string& path, const std::string& origin,
                        std::unique_ptr<Transport>* out, std::string* why) {
  std::string named = origin.empty() ? "the socket path" : origin;
  if (path.empty() || path[0] != '/') {
    *why = named + " '" + path + "' is not an absolute path";
    return -EINVAL;
  }
  if (path.size() > kMaxPathLength) {
    *why = named + " is " + std::to_string(path.size()) +
           " bytes long; a socket path has at most " + std::to_string(kMaxPathLength);
    return -EINVAL;
  }
  if (path.find('\0') != std::string::npos) {
    *why = named + " contains a NUL byte";
    return -EINVAL;
  }
  *out = std::make_unique<SocketTransport>(path, origin);
  return 0;
}

}  // namespace jobbridge::client
