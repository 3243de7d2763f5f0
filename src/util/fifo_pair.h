// A FIFO given to clients as two fds, R and W, as make gives its pipe: make
// 4.3, gcc 12 and jobserver-rs 0.1 read only that form, and one read-write fd
// passed as both ends ("3,3") is closed twice by jobserver-rs 0.1.24.
#pragma once

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {

struct FifoPair {
  UniqueFd read_end;   // O_RDONLY, blocking, close-on-exec
  UniqueFd write_end;  // O_WRONLY, blocking, close-on-exec
};

// Opens `path` (a FIFO, or /proc/self/fd/N of a pipe) twice: once for
// reading, once for writing. Both are new descriptions of jobbridge's own,
// opened without blocking (there need be no writer yet) and then made
// blocking, as a pipe's ends are. Returns false and sets *err on failure.
inline bool OpenFifoPair(const std::string& path, FifoPair* pair, std::string* err) {
  auto open_end = [&](int mode, UniqueFd* end) {
    int fd = RetryOnEintr([&] { return open(path.c_str(), mode | O_NONBLOCK | O_CLOEXEC); });
    if (fd < 0) {
      *err = "cannot open the jobserver FIFO " + path + ": " + strerror(errno);
      return false;
    }
    end->Reset(fd);
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0;
  };
  // The read end first: opening a FIFO for writing without blocking fails
  // (ENXIO) while nobody has it open for reading.
  return open_end(O_RDONLY, &pair->read_end) && open_end(O_WRONLY, &pair->write_end);
}

}  // namespace jobbridge
