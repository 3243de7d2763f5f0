// Watches the signals jobbridge passes on to its command, and says for each
// whether the kernel sent it to the whole foreground process group (a
// terminal's Ctrl-C, Ctrl-\ or hangup: si_code SI_KERNEL) or a process sent
// it to jobbridge (kill: SI_USER). A jobbridge whose command shares its
// process group must not pass on the first kind: the command got it already.
//
// libuv's signal watcher does not give the siginfo, so this one has its own
// handler, which writes (signal, from_terminal) into a self-pipe the loop
// polls. The pipe's write end is the one piece of global state (STYLE.md
// rule 4: a signal handler must touch it).
#pragma once

#include <uv.h>

#include <functional>
#include <vector>

#include "util/unique_fd.h"

namespace jobbridge {

class SignalForwarder {
 public:
  using Callback = std::function<void(int sig, bool from_terminal)>;

  // Watches `signals` (each one not ignored when jobbridge started: an
  // ignored signal stays ignored, for jobbridge and the command alike) and
  // calls `callback` on the loop for each delivery. Returns the signals it
  // watches, which the command must get back as SIG_DFL. One forwarder per
  // process.
  std::vector<int> Start(uv_loop_t* loop, const std::vector<int>& signals, Callback callback);

  // Puts the default dispositions back and closes the poll handle (freed in
  // its close callback: run the loop after).
  void Stop();

 private:
  static void OnReadable(uv_poll_t* handle, int status, int events);

  Callback callback_;
  std::vector<int> watched_;
  UniqueFd read_end_, write_end_;
  uv_poll_t* poll_ = nullptr;
};

}  // namespace jobbridge
