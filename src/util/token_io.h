// Reading, writing and counting one-byte jobserver tokens on a pipe or FIFO,
// without blocking where the fd does not block: shared by every pool.
#pragma once

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <string>

#include "util/eintr.h"

namespace jobbridge {

// The byte the bridge writes; make writes '+' too. Readers must not care.
inline constexpr char kTokenByte = '+';

// "what: strerror(errno)".
inline std::string WithErrno(const std::string& what) { return what + ": " + strerror(errno); }

inline int CountIn(int fd, std::string* err) {
  int n = 0;
  if (ioctl(fd, FIONREAD, &n) != 0) {
    *err = WithErrno("FIONREAD on the jobserver pool");
    return -1;
  }
  return n;
}

// Reads up to `max` bytes without blocking; the count, or -1 with *err.
inline int ReadTokens(int fd, int max, std::string* err) {
  int total = 0;
  char buffer[512];
  while (total < max) {
    size_t want = std::min(sizeof buffer, static_cast<size_t>(max - total));
    ssize_t n = RetryOnEintr([&] { return read(fd, buffer, want); });
    if (n > 0) {
      total += static_cast<int>(n);
    } else if (n == 0 || errno == EAGAIN) {
      return total;
    } else {
      *err = WithErrno("reading the jobserver pool");
      return -1;
    }
  }
  return total;
}

inline int DrainFd(int fd, std::string* err) {
  return ReadTokens(fd, std::numeric_limits<int>::max(), err);
}

inline bool PutFd(int fd, int count, std::string* err) {
  if (count < 0) {
    *err = "cannot put " + std::to_string(count) + " tokens into the jobserver pool";
    return false;
  }
  std::string bytes(count, kTokenByte);
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = RetryOnEintr([&] { return write(fd, bytes.data() + done, bytes.size() - done); });
    if (n < 0) {
      *err = WithErrno("writing " + std::to_string(count) + " tokens to the jobserver pool");
      return false;
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace jobbridge
