// Connecting to a jobserver socket without ever blocking, and listening on
// one: a blocking
// connect() to a listener whose backlog is full cannot be interrupted but by
// a signal (FACTS.md), so every connect in jobbridge goes through here.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {

// The longest socket path sun_path holds on Linux.
inline constexpr size_t kMaxSocketPathLength = sizeof(sockaddr_un::sun_path) - 1;  // 107

// A new non-blocking, close-on-exec socket of `type` (a stream by default;
// SOCK_SEQPACKET for the pools socket) connected to `path` (or with its
// connection queued at the listener). On failure returns an invalid fd with
// errno set: ENAMETOOLONG (the path does not fit), ENOENT (no socket there),
// ECONNREFUSED (nobody listens), EAGAIN (the listener's backlog is full:
// somebody listens), or what socket() said.
inline UniqueFd ConnectUnix(const std::string& path, int type = SOCK_STREAM) {
  sockaddr_un address{};
  if (path.size() > kMaxSocketPathLength) {
    errno = ENAMETOOLONG;
    return UniqueFd();
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return fd;
  int rc = RetryOnEintr(
      [&] { return connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address); });
  // A connect interrupted and retried may find itself already done.
  if (rc != 0 && errno != EISCONN) {
    int error = errno;
    fd.Reset();
    errno = error;
  }
  return fd;
}

// A new non-blocking, close-on-exec socket of `type` (SOCK_STREAM,
// SOCK_SEQPACKET) listening on `path`, which only this user may use (mode
// 0600). The path must fit (kMaxSocketPathLength); jobbridge's sockets live
// in its runtime folder, so a path too long names the variables that place
// it. On failure returns an invalid fd and sets *err, naming the path.
inline UniqueFd ListenUnix(const std::string& path, int type, std::string* err) {
  sockaddr_un address{};
  if (path.size() > kMaxSocketPathLength) {
    *err = "the socket path " + path + " is longer than " + std::to_string(kMaxSocketPathLength) +
           " bytes; set TMPDIR (or XDG_RUNTIME_DIR) to a shorter folder";
    return UniqueFd();
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  UniqueFd fd(socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid() || bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      chmod(path.c_str(), 0600) != 0 || listen(fd.get(), SOMAXCONN) != 0) {
    *err = "cannot listen on " + path + ": " + std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

}  // namespace jobbridge
