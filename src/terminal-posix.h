// The controlling terminal, when jobbridge runs in its foreground.
//
// The command runs in a process group of its own (so a forwarded signal
// reaches its whole tree). A shell would make that group the terminal's
// foreground, so that Ctrl-C, Ctrl-Z and reads from the terminal (a password
// prompt) reach the command as if jobbridge were not there; this does that.
#pragma once

#include <sys/types.h>

#include "util/unique_fd.h"

namespace jobbridge {

class Terminal {
 public:
  // Opens /dev/tty when jobbridge's process group is its foreground group;
  // otherwise (no terminal, or started in the background) active() is false.
  static Terminal OpenIfForeground();

  bool active() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }

  // Whether jobbridge's own process group is the foreground group now.
  bool OwnGroupIsForeground() const;

  // Makes `pgid` the foreground group. No-op when not active.
  void GiveTo(pid_t pgid) const;
  // Makes jobbridge's own group the foreground again. No-op when not active.
  void TakeBack() const;

 private:
  UniqueFd fd_;
};

// Makes `pgid` the foreground group of `fd` from any process group:
// SIGTTOU, which a background caller would get, is blocked during the call.
// Async-signal-safe, so a forked child may call it before exec.
void SetForegroundGroup(int fd, pid_t pgid);

}  // namespace jobbridge
