#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "pool_client.h"
#include "util/eintr.h"
#include "util/fd_passing.h"
#include "util/unix_socket.h"

namespace jobbridge {

bool RequestPool(const std::string& path, pid_t pid, const std::string& command, ReceivedPool* pool,
                 std::string* err) {
  // Non-blocking: a full backlog must not hang the shim (FACTS.md).
  UniqueFd socket_fd = ConnectUnix(path, SOCK_SEQPACKET);
  if (!socket_fd.valid()) {
    *err = "cannot connect to the pools socket " + path + ": " + strerror(errno);
    return false;
  }
  std::string request = "pool " + std::to_string(pid) + (command.empty() ? "" : " " + command);
  if (request.size() > kMaxFdMessageSize) request.resize(kMaxFdMessageSize);
  pollfd ready{socket_fd.get(), POLLOUT, 0};
  std::string reply;
  std::vector<UniqueFd> fds;
  if (RetryOnEintr([&] { return poll(&ready, 1, kPoolReplyTimeoutMs); }) != 1 ||
      !SendFds(socket_fd.get(), request, {}, err)) {
    // A root out of fds refuses at once and hangs up, perhaps before the
    // request went: its reason is still there to be read.
    std::string ignored;
    if (ReceiveFds(socket_fd.get(), &reply, &fds, 3, &ignored) && reply.starts_with("error ")) {
      *err = "the root refused a pool: " + reply.substr(6);
    } else if (err->empty()) {
      *err = "the pools socket " + path + " did not take the request";
    }
    return false;
  }
  ready = {socket_fd.get(), POLLIN, 0};
  if (RetryOnEintr([&] { return poll(&ready, 1, kPoolReplyTimeoutMs); }) != 1) {
    *err = "no reply from the pools socket " + path + " within " +
           std::to_string(kPoolReplyTimeoutMs / 1000) + " s";
    return false;
  }
  if (!ReceiveFds(socket_fd.get(), &reply, &fds, 3, err)) return false;
  if (reply != "ok" || fds.size() != 3) {
    *err = reply.starts_with("error ") ? "the root refused a pool: " + reply.substr(6)
                                       : "an unexpected reply from the pools socket " + path;
    return false;
  }
  pool->token_read = std::move(fds[0]);
  pool->returns_write = std::move(fds[1]);
  pool->life_write = std::move(fds[2]);
  return true;
}

}  // namespace jobbridge
