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
  // Opens the controlling terminal, if there is one (active() is false
  // otherwise). Whether jobbridge is in its foreground is asked each time:
  // a job started in the background may be brought to the foreground later.
  static Terminal Open();

  bool active() const { return fd_.valid(); }
  int fd() const { return fd_.get(); }

  // Whether jobbridge's own process group is the foreground group now.
  bool OwnGroupIsForeground() const;

  // Makes `pgid` the foreground group. No-op when not active.
  void GiveTo(pid_t pgid) const;
  // Makes jobbridge's own group the foreground again, but only if `pgid`
  // (the command's group) has it: after "bg" the shell owns the terminal,
  // and taking it would leave the shell reading EIO. No-op when not active.
  void TakeBackFrom(pid_t pgid) const;

 private:
  UniqueFd fd_;
};

// Makes `pgid` the foreground group of `fd` from any process group:
// SIGTTOU, which a background caller would get, is blocked during the call.
// Async-signal-safe, so a forked child may call it before exec.
void SetForegroundGroup(int fd, pid_t pgid);

}  // namespace jobbridge
