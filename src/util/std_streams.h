// Standard streams that are closed at start must not be taken by jobbridge's
// own pipes: its stderr would then write into the pool (one warning became
// 141 tokens) and the command's stdin would read from it. Daemons open
// /dev/null on them first; so does jobbridge.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace jobbridge {

// Opens /dev/null on each of fds 0-2 that is closed (stdin for reading, the
// others for writing), inheritable, as the command's too. Returns false when
// one of them could not be opened there.
inline bool OpenMissingStandardStreams() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
    // The lowest free number is `fd` itself: the lower ones are open by now.
    int opened = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
    if (opened != fd) {
      if (opened >= 0) close(opened);
      return false;
    }
  }
  return true;
}

}  // namespace jobbridge
