#include "subprocess-posix.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "terminal-posix.h"
#include "util/c_strings.h"
#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {

namespace {

// Runs in the forked child: only async-signal-safe calls until exec.
// Signals are all blocked on entry (see SpawnChild).
[[noreturn]] void ExecChild(const SpawnRequest& request, char** argv, char** envp, int status_fd) {
  // A signal now must not run the bridge's handler in the child: libuv's
  // handler would write into the signal pipe the child shares with the bridge.
  for (int sig : request.reset_signals) signal(sig, SIG_DFL);
  if (request.new_process_group) setpgid(0, 0);
  // Take the terminal before exec, or a command that reads it at once would
  // be stopped (SIGTTIN) before the parent's tcsetpgrp lands.
  if (request.terminal_fd >= 0) SetForegroundGroup(request.terminal_fd, getpid());
  for (int fd : request.inherited_fds) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  // Handlers the bridge installed reset to default at exec by themselves;
  // the blocked mask does not, so put back the one jobbridge was started with.
  sigprocmask(SIG_SETMASK, &request.child_signal_mask, nullptr);
  // The bridge raised its fd limit for its clients; programs that use
  // select() break above 1024, so the command gets the limit we were given.
  if (request.child_nofile.rlim_cur != 0) setrlimit(RLIMIT_NOFILE, &request.child_nofile);
  environ = envp;  // execvp looks PATH up in environ
  execvp(argv[0], argv);
  int error = errno;
  (void)!write(status_fd, &error, sizeof error);
  _exit(127);
}

int ShellStatus(int status) {
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace

bool SpawnChild(const SpawnRequest& request, pid_t* child, int* exit_code, std::string* err) {
  *exit_code = 1;
  // The child reports a failed exec through this pipe; a successful exec
  // closes it (O_CLOEXEC) and the parent reads EOF.
  int status_pipe[2];
  if (pipe2(status_pipe, O_CLOEXEC) != 0) {
    *err = std::string("cannot create a pipe: ") + strerror(errno);
    return false;
  }
  UniqueFd status_read(status_pipe[0]), status_write(status_pipe[1]);
  std::vector<char*> argv = CStrings(request.argv);
  std::vector<char*> envp = CStrings(request.env);

  sigset_t all, old;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, &old);
  pid_t pid = fork();
  if (pid == 0) ExecChild(request, argv.data(), envp.data(), status_write.get());
  sigprocmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) {
    *err = std::string("cannot start a process: ") + strerror(errno);
    return false;
  }

  // Also in the parent (as shells do), so whichever runs first wins the race.
  if (request.new_process_group) setpgid(pid, pid);
  if (request.terminal_fd >= 0) SetForegroundGroup(request.terminal_fd, pid);
  status_write.Reset();
  int error = 0;
  ssize_t n = RetryOnEintr([&] { return read(status_read.get(), &error, sizeof error); });
  if (n == static_cast<ssize_t>(sizeof error)) {
    ReapChild(pid);
    *exit_code = (error == ENOENT || error == ENOTDIR) ? 127 : 126;
    *err = "cannot run '" + request.argv[0] + "': " + strerror(error) +
           (*exit_code == 127 ? "; check the name and PATH" : "; check its permissions");
    return false;
  }
  *child = pid;
  return true;
}

ChildState PollChild(pid_t pid) {
  int status = 0;
  pid_t got = RetryOnEintr([&] { return waitpid(pid, &status, WNOHANG | WUNTRACED | WCONTINUED); });
  if (got < 0) return {ChildState::Kind::kExited, 1, 0};  // ECHILD: not ours to wait for
  if (got == 0 || WIFCONTINUED(status)) return {ChildState::Kind::kRunning, 0, 0};
  if (WIFSTOPPED(status)) return {ChildState::Kind::kStopped, 0, WSTOPSIG(status)};
  return {ChildState::Kind::kExited, ShellStatus(status),
          WIFSIGNALED(status) ? WTERMSIG(status) : 0};
}

int ReapChild(pid_t pid, int* killed_by) {
  int status = 0;
  if (RetryOnEintr([&] { return waitpid(pid, &status, 0); }) < 0) return 1;
  if (killed_by) *killed_by = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
  return ShellStatus(status);
}

void DieLikeChild(int sig) {
  if (sig != SIGINT && sig != SIGQUIT) return;
  fflush(stderr);
  signal(sig, SIG_DFL);
  rlimit no_core{0, 0};
  setrlimit(RLIMIT_CORE, &no_core);  // SIGQUIT would dump one
  sigset_t only;
  sigemptyset(&only);
  sigaddset(&only, sig);
  sigprocmask(SIG_UNBLOCK, &only, nullptr);
  raise(sig);
}

}  // namespace jobbridge
