#include "terminal-posix.h"

#include <fcntl.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include "util/eintr.h"

namespace jobbridge {

Terminal Terminal::Open() {
  Terminal terminal;
  int fd = RetryOnEintr([] { return open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC); });
  if (fd >= 0) terminal.fd_.Reset(fd);  // else: no controlling terminal
  return terminal;
}

bool Terminal::OwnGroupIsForeground() const {
  return active() && tcgetpgrp(fd_.get()) == getpgrp();
}

void Terminal::GiveTo(pid_t pgid) const {
  if (active()) SetForegroundGroup(fd_.get(), pgid);
}

void Terminal::TakeBackFrom(pid_t pgid) const {
  if (active() && tcgetpgrp(fd_.get()) == pgid) SetForegroundGroup(fd_.get(), getpgrp());
}

void SetForegroundGroup(int fd, pid_t pgid) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTTOU);
  sigprocmask(SIG_BLOCK, &block, &old);
  tcsetpgrp(fd, pgid);
  sigprocmask(SIG_SETMASK, &old, nullptr);
}

}  // namespace jobbridge
