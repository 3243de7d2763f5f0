// Signal dispositions jobbridge must respect: a signal ignored when it
// started (nohup, a background job of sh) stays ignored, for it and for the
// command alike.
#pragma once

#include <signal.h>

namespace jobbridge {

inline bool IsIgnored(int sig) {
  struct sigaction action {};
  return sigaction(sig, nullptr, &action) == 0 && action.sa_handler == SIG_IGN;
}

}  // namespace jobbridge
