#include "terminal-posix.h"

#include <fcntl.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include "util/eintr.h"

namespace jobbridge {

Terminal Terminal::OpenIfForeground() {
  Terminal terminal;
  int fd = RetryOnEintr([] { return open("/dev/tty", O_RDWR | O_NOCTTY | O_CLOEXEC); });
  if (fd < 0) return terminal;  // no controlling terminal
  UniqueFd owned(fd);
  if (tcgetpgrp(fd) == getpgrp()) terminal.fd_ = std::move(owned);
  return terminal;
}

bool Terminal::OwnGroupIsForeground() const {
  return active() && tcgetpgrp(fd_.get()) == getpgrp();
}

void Terminal::GiveTo(pid_t pgid) const {
  if (active()) SetForegroundGroup(fd_.get(), pgid);
}

void Terminal::TakeBack() const {
  if (active()) SetForegroundGroup(fd_.get(), getpgrp());
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
