// Driving a real libuv loop and real sockets from the unit tests: run the
// loop until a condition holds (waiting on the loop's own fd, never on a
// sleep), connect to a socket, look at what an fd has queued.
#pragma once

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>

#include "util/unique_fd.h"

namespace jobbridge::test_util {

inline constexpr auto kLoopDeadline = std::chrono::seconds(5);

// Data (or EOF) is ready to read on `fd` right now.
inline bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

// Bytes queued in a pipe (either end) or socket, or -1.
inline int Queued(int fd) {
  int n = -1;
  return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

// Runs `loop` until `done` holds; false after kLoopDeadline. Blocks on the
// loop's backend fd, so it waits for events and timers, not for a sleep.
inline bool RunLoopUntil(uv_loop_t* loop, const std::function<bool()>& done) {
  auto deadline = std::chrono::steady_clock::now() + kLoopDeadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    uv_run(loop, UV_RUN_NOWAIT);
    if (done()) return true;
    int timeout = uv_backend_timeout(loop);
    pollfd p{uv_backend_fd(loop), POLLIN, 0};
    poll(&p, 1, timeout < 0 ? 10 : std::min(timeout, 10));
  }
  return true;
}

// A blocking connection to the unix socket at `path` (invalid on failure).
inline UniqueFd ConnectTo(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), std::min(path.size() + 1, sizeof address.sun_path));
  if (!fd.valid() ||
      connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return UniqueFd();
  }
  return fd;
}

}  // namespace jobbridge::test_util
