// Starting the one command the bridge runs, in a process group of its own, so
// that a signal forwarded to the group reaches the whole tree below it.
#pragma once

#include <signal.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace jobbridge {

struct SpawnRequest {
  std::vector<std::string> argv;   // argv[0] is looked up in PATH of `env`
  std::vector<std::string> env;    // "NAME=value" entries, complete
  std::vector<int> inherited_fds;  // kept open (FD_CLOEXEC cleared) in the child
  sigset_t child_signal_mask;      // restored in the child before exec
  std::vector<int> reset_signals;  // the bridge's handlers, set back to SIG_DFL in the child
  int terminal_fd = -1;            // when >= 0, the child's group takes this terminal
  rlimit child_nofile{};           // RLIMIT_NOFILE restored in the child (rlim_cur 0: keep)
  bool new_process_group = true;   // false: the child stays in the caller's group
};

// Starts the command; on success *pid is the child, which leads a new process
// group of its own. On failure returns false, sets *err to a one-line message
// and *exit_code to what a shell would return: 127 when the command is not
// found, 126 when it is found but cannot be run, 1 otherwise.
bool SpawnChild(const SpawnRequest& request, pid_t* pid, int* exit_code, std::string* err);

struct ChildState {
  enum class Kind { kRunning, kStopped, kExited };
  Kind kind = Kind::kRunning;
  int status = 0;  // for kExited: the exit code, or 128+N when it died of signal N
  int signal = 0;  // kStopped: the stop signal; kExited: the killing signal, or 0
};

// Checks the child without blocking; reaps it when it has exited.
ChildState PollChild(pid_t pid);

// Waits for the child to exit and reaps it. Returns the status as PollChild;
// *killed_by (if given) gets the signal that killed it, or 0.
int ReapChild(pid_t pid, int* killed_by = nullptr);

// When `sig` is SIGINT or SIGQUIT, dies of it (and does not return): a shell
// running us in a loop stops the loop on Ctrl-C only if its child died of
// SIGINT, not if it exited 130 ("wait and cooperative exit"). Other signals
// (and 0) return, and the caller exits 128+N, without a core dump of its own.
void DieLikeChild(int sig);

}  // namespace jobbridge
