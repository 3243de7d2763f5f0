// A second open file description of an fd, through /proc (Linux): flags set
// on it (O_NONBLOCK) are not seen by the processes sharing the first one
// (STYLE.md rule 5; make 4.3 fails when a peer flips the flag it shares).
#pragma once

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {

// Opens /proc/self/fd/`fd` with `flags` | O_NONBLOCK | O_CLOEXEC. Returns an
// invalid UniqueFd and sets *err on failure.
inline UniqueFd OpenPrivateDescription(int fd, int flags, std::string* err) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  int opened = RetryOnEintr([&] { return open(path.c_str(), flags | O_NONBLOCK | O_CLOEXEC); });
  if (opened < 0) *err = "opening a private description of " + path + ": " + strerror(errno);
  return UniqueFd(opened);
}

}  // namespace jobbridge
