#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "caretaker.h"
#include "log.h"
#include "util/eintr.h"

namespace jobbridge {
namespace {

// One message on the life socket (SOCK_SEQPACKET: read whole, or not at
// all): a kind and a pid.
struct LifeMessage {
  char kind;  // kCommand or kDismiss
  pid_t pid;
};
constexpr char kCommand = 'p';
constexpr char kDismiss = 'q';

// Closes every fd but `keep` (and 0-2, pointed at /dev/null but stderr).
void CloseAllBut(std::vector<int> keep) {
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    if (null > 2) close(null);
  }
  keep.push_back(2);
  std::ranges::sort(keep);
  unsigned first = 3;
  for (int fd : keep) {
    if (fd < static_cast<int>(first)) continue;
    if (static_cast<unsigned>(fd) > first) close_range(first, fd - 1, 0);
    first = fd + 1;
  }
  close_range(first, ~0U, 0);
}

// Pipe style: every token the tree writes back goes into the token pipe, as
// make's own jobserver would have it, until no process holds the write end.
void MoveTokensBack(int returns, int feed) {
  char tokens[4096];
  for (;;) {
    pollfd in{returns, POLLIN, 0};
    if (RetryOnEintr([&] { return poll(&in, 1, -1); }) < 0) return;
    ssize_t n = RetryOnEintr([&] { return read(returns, tokens, sizeof tokens); });
    if (n == 0) return;  // the tree has ended
    if (n < 0) {
      if (errno == EAGAIN) continue;
      return;
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = RetryOnEintr([&] { return write(feed, tokens + done, n - done); });
      if (w > 0) {
        done += w;
      } else if (w < 0 && errno == EAGAIN) {
        pollfd out{feed, POLLOUT, 0};
        RetryOnEintr([&] { return poll(&out, 1, -1); });
      } else {
        break;  // nobody reads the token pipe any more (EPIPE): nothing to feed
      }
    }
  }
}

// Fifo style: waits for the command to end (a pidfd; not our child).
void WaitForExit(pid_t pid) {
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return;  // gone already (ESRCH), or a kernel without pidfds
  pollfd ended{pidfd, POLLIN, 0};
  RetryOnEintr([&] { return poll(&ended, 1, -1); });
  close(pidfd);
}

[[noreturn]] void RunCaretaker(int life, int returns, int feed, pid_t bridge, RuntimeDir* dir) {
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE}) {
    signal(sig, SIG_IGN);  // it outlives the bridge on purpose: SIGKILL ends it
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  CloseAllBut({life, returns, feed});
  pid_t command = -1;
  for (;;) {
    LifeMessage message{};
    ssize_t n = RetryOnEintr([&] { return read(life, &message, sizeof message); });
    if (n != static_cast<ssize_t>(sizeof message)) break;  // end of file: the bridge died
    if (message.kind == kDismiss) _exit(0);
    if (message.kind == kCommand) command = message.pid;
  }
  std::string me = std::to_string(getpid());
  LogWarning("the jobbridge serving this build (pid " + std::to_string(bridge) +
             ") ended without closing its jobserver (killed, or crashed); pid " + me +
             " keeps make's jobserver going until the build's last job ends, then removes " +
             Shortened(dir->path()) + "; socket clients get no more slots");
  if (returns >= 0) {
    MoveTokensBack(returns, feed);
  } else if (command > 0) {
    WaitForExit(command);
  }
  std::string err;
  if (!dir->Remove(&err)) LogWarning(err);
  LogInfo("the build whose jobbridge (pid " + std::to_string(bridge) +
          ") was killed has ended; its runtime folder is removed");
  _exit(0);
}

}  // namespace

bool Caretaker::Start(const LegacyPool& pool, RuntimeDir* dir, std::string* err) {
  // A socket, not a pipe: a message to a caretaker that died must not raise
  // SIGPIPE (MSG_NOSIGNAL), whether or not the bridge ignores it yet.
  int life[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, life) != 0) {
    *err = std::string("cannot start the caretaker (a socket pair): ") + strerror(errno);
    return false;
  }
  pid_t bridge = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    *err = std::string("cannot start the caretaker (fork): ") + strerror(errno);
    close(life[0]);
    close(life[1]);
    return false;
  }
  if (pid == 0) RunCaretaker(life[0], pool.ReturnsFd(), pool.FeedFd(), bridge, dir);
  close(life[0]);
  life_.Reset(life[1]);
  pid_ = pid;
  dir->AddOwner(pid);  // a sweep keeps the folder while the caretaker lives
  return true;
}

void Caretaker::SetCommand(pid_t command) {
  if (!life_.valid()) return;
  LifeMessage message{kCommand, command};
  RetryOnEintr([&] { return send(life_.get(), &message, sizeof message, MSG_NOSIGNAL); });
}

void Caretaker::Dismiss() {
  if (pid_ < 0) return;
  LifeMessage message{kDismiss, 0};
  RetryOnEintr([&] { return send(life_.get(), &message, sizeof message, MSG_NOSIGNAL); });
  life_.Reset();
  RetryOnEintr([&] { return waitpid(pid_, nullptr, 0); });
  pid_ = -1;
}

}  // namespace jobbridge
