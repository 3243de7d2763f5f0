#include "subprocess-posix.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/eintr.h"

namespace jobbridge {

namespace {

std::vector<char*> CStrings(const std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (const std::string& s : strings) out.push_back(const_cast<char*>(s.c_str()));
  out.push_back(nullptr);
  return out;
}

// Runs in the forked child: only async-signal-safe calls until exec.
[[noreturn]] void ExecChild(const SpawnRequest& request, char** argv, char** envp, int status_fd) {
  setpgid(0, 0);
  for (int fd : request.inherited_fds) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  // Handlers the bridge installed reset to default at exec by themselves;
  // the blocked mask does not, so put back the one jobbridge was started with.
  sigprocmask(SIG_SETMASK, &request.child_signal_mask, nullptr);
  environ = envp;  // execvp looks PATH up in environ
  execvp(argv[0], argv);
  int error = errno;
  (void)!write(status_fd, &error, sizeof error);
  _exit(127);
}

}  // namespace

bool SpawnChild(const SpawnRequest& request, Child* child, int* exit_code, std::string* err) {
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

  pid_t pid = fork();
  if (pid < 0) {
    *err = std::string("cannot start a process: ") + strerror(errno);
    return false;
  }
  if (pid == 0) ExecChild(request, argv.data(), envp.data(), status_write.get());

  setpgid(pid, pid);  // also in the parent, so a signal sent right away reaches the group
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
  child->pid = pid;
  child->pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!child->pidfd.valid()) {
    *err = std::string("pidfd_open failed (Linux 5.3 or later is needed): ") + strerror(errno);
    kill(-pid, SIGKILL);
    ReapChild(pid);
    return false;
  }
  return true;
}

int ReapChild(pid_t pid) {
  int status = 0;
  if (RetryOnEintr([&] { return waitpid(pid, &status, 0); }) < 0) return 1;
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WEXITSTATUS(status);
}

}  // namespace jobbridge
