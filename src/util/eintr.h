// Retries a syscall that was interrupted by a signal (ninja's habit).
#pragma once

#include <cerrno>

namespace jobbridge {

template <typename F>
auto RetryOnEintr(F&& call) {
  for (;;) {
    auto result = call();
    if (!(result == -1 && errno == EINTR)) return result;
  }
}

}  // namespace jobbridge
