// Starting the one command the bridge runs, in a process group of its own, so
// that a signal forwarded to the group reaches the whole tree below it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "util/unique_fd.h"

namespace jobbridge {

struct SpawnRequest {
  std::vector<std::string> argv;   // argv[0] is looked up in PATH of `env`
  std::vector<std::string> env;    // "NAME=value" entries, complete
  std::vector<int> inherited_fds;  // kept open (FD_CLOEXEC cleared) in the child
  sigset_t child_signal_mask;      // restored in the child before exec
};

struct Child {
  pid_t pid = -1;
  UniqueFd pidfd;  // readable once the child has exited
};

// Starts the command. On failure returns false, sets *err to a one-line
// message and *exit_code to what a shell would return: 127 when the command
// is not found, 126 when it is found but cannot be run, 1 otherwise.
bool SpawnChild(const SpawnRequest& request, Child* child, int* exit_code, std::string* err);

// Reaps an exited child. Returns its shell-style status: the exit code, or
// 128+N when it died of signal N.
int ReapChild(pid_t pid);

}  // namespace jobbridge
