#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <map>
#include <vector>

#include "caretaker.h"
#include "log.h"
#include "util/eintr.h"
#include "util/fd_passing.h"

namespace jobbridge {
namespace {

// One message on the life socket (SOCK_SEQPACKET: read whole, or not at
// all): a kind and a number in decimal. kKeep carries an invocation pool's
// returns read end and token write end, in that order.
constexpr char kCommand = 'p';  // PID of COMMAND
constexpr char kDismiss = 'q';
constexpr char kKeep = 'k';    // ID of the invocation
constexpr char kForget = 'f';  // ID of the invocation

// The two ends of a pool the caretaker keeps going once the bridge is gone:
// tokens read from `returns` are written into `feed`.
struct Flow {
  UniqueFd returns;
  UniqueFd feed;
};

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

// Sends one message, blocking (the caretaker reads each at once); MSG_NOSIGNAL,
// so a caretaker that died costs no SIGPIPE.
bool Tell(int life, char kind, uint64_t number, const std::vector<int>& fds, std::string* err) {
  return SendFds(life, kind + std::to_string(number), fds, err);
}

// True when the bridge has closed the life socket and no message is left.
bool BridgeGone(int life) {
  char byte;
  ssize_t n = RetryOnEintr([&] { return recv(life, &byte, 1, MSG_PEEK | MSG_DONTWAIT); });
  return n == 0 || (n < 0 && errno != EAGAIN);
}

// Takes what the bridge says until it dies (returns) or dismisses the
// caretaker (exits): COMMAND's pid, and the invocation pools to keep.
void Listen(int life, pid_t* command, std::map<uint64_t, Flow>* kept) {
  for (;;) {
    std::string message, err;
    std::vector<UniqueFd> fds;
    if (!ReceiveFds(life, &message, &fds, 2, &err)) {
      if (BridgeGone(life)) return;
      // Out of fds, most likely: that one invocation goes without.
      LogWarning("the caretaker (pid " + std::to_string(getpid()) + ") could not take over " +
                 "a tool's pool: " + err + "; if jobbridge is killed, that tool dies of SIGPIPE");
      continue;
    }
    uint64_t number = 0;
    std::from_chars(message.data() + 1, message.data() + message.size(), number);
    if (message[0] == kDismiss) _exit(0);
    if (message[0] == kCommand) *command = static_cast<pid_t>(number);
    if (message[0] == kKeep && fds.size() == 2) {
      (*kept)[number] = {std::move(fds[0]), std::move(fds[1])};
    }
    if (message[0] == kForget) kept->erase(number);
  }
}

// Moves the tokens that are in `flow`'s returns pipe into its token pipe,
// as make's own jobserver would have them. False once no process holds the
// returns pipe's write end any more (or it fails): the flow is done.
bool MoveTokensBack(const Flow& flow) {
  char tokens[4096];
  ssize_t n = RetryOnEintr([&] { return read(flow.returns.get(), tokens, sizeof tokens); });
  if (n == 0) return false;  // every writer is gone
  if (n < 0) return errno == EAGAIN;
  for (ssize_t done = 0; done < n;) {
    ssize_t w = RetryOnEintr([&] { return write(flow.feed.get(), tokens + done, n - done); });
    if (w > 0) {
      done += w;
    } else if (w < 0 && errno == EAGAIN) {
      pollfd out{flow.feed.get(), POLLOUT, 0};
      RetryOnEintr([&] { return poll(&out, 1, -1); });
    } else {
      break;  // nobody reads the token pipe any more (EPIPE): nothing to feed
    }
  }
  return true;
}

// Keeps every flow going until its writers are gone and, when `command` is
// set (fifo style: the tree returns tokens into the FIFO itself), waits for
// COMMAND to end (a pidfd; not our child).
void KeepGoing(std::vector<Flow> flows, pid_t command) {
  UniqueFd pidfd;
  if (command > 0) pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, command, 0)));
  // An invalid pidfd (COMMAND gone already, or no pidfds) is not waited for.
  while (!flows.empty() || pidfd.valid()) {
    std::vector<pollfd> ready;
    for (const Flow& flow : flows) ready.push_back({flow.returns.get(), POLLIN, 0});
    if (pidfd.valid()) ready.push_back({pidfd.get(), POLLIN, 0});
    if (RetryOnEintr([&] { return poll(ready.data(), ready.size(), -1); }) < 0) return;
    if (pidfd.valid() && ready.back().revents != 0) pidfd.Reset();
    for (size_t i = flows.size(); i-- > 0;) {
      if (ready[i].revents != 0 && !MoveTokensBack(flows[i])) {
        flows.erase(flows.begin() + static_cast<ptrdiff_t>(i));
      }
    }
  }
}

[[noreturn]] void RunCaretaker(int life, int returns, int feed, int semaphore, pid_t bridge,
                               RuntimeDir* dir) {
  // A starting daemon's copy of its messages (log.h) names an fd that
  // CloseAllBut closes below and a received pool's fd may take over: the
  // caretaker's messages go to its stderr alone.
  LogCopyFd() = -1;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE}) {
    signal(sig, SIG_IGN);  // it outlives the bridge on purpose: SIGKILL ends it
  }
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  CloseAllBut({life, returns, feed});
  pid_t command = -1;
  std::map<uint64_t, Flow> kept;  // by invocation id
  Listen(life, &command, &kept);
  // A set outlives its creator: its blocked clients would wait forever.
  // Removed, they get EIDRM at once, and so does a later semop.
  std::string semaphore_gone;
  if (semaphore >= 0 && semctl(semaphore, 0, IPC_RMID) == 0) {
    semaphore_gone = ", and ROBUST_JOBSERVER clients get EIDRM (its semaphore is removed)";
  }
  std::string me = std::to_string(getpid());
  LogWarning("the jobbridge serving this build (pid " + std::to_string(bridge) +
             ") ended without closing its jobserver (killed, or crashed); pid " + me +
             " keeps make's jobserver going until the build's last job ends, then removes " +
             Shortened(dir->path()) + "; socket clients get no more slots" + semaphore_gone);
  std::vector<Flow> flows;
  if (returns >= 0) flows.push_back({UniqueFd(returns), UniqueFd(feed)});
  for (auto& [id, flow] : kept) flows.push_back(std::move(flow));
  KeepGoing(std::move(flows), returns >= 0 ? -1 : command);
  std::string err;
  if (!dir->Remove(&err)) LogWarning(err);
  LogInfo("the build whose jobbridge (pid " + std::to_string(bridge) +
          ") was killed has ended; its runtime folder is removed");
  _exit(0);
}

}  // namespace

bool Caretaker::Start(const LegacyPool* pool, int semaphore_id, RuntimeDir* dir, std::string* err) {
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
  if (pid == 0) {
    RunCaretaker(life[0], pool ? pool->ReturnsFd() : -1, pool ? pool->FeedFd() : -1, semaphore_id,
                 bridge, dir);
  }
  close(life[0]);
  life_.Reset(life[1]);
  pid_ = pid;
  dir->AddOwner(pid);  // a sweep keeps the folder while the caretaker lives
  return true;
}

void Caretaker::SetCommand(pid_t command) {
  std::string ignored;
  if (life_.valid()) Tell(life_.get(), kCommand, static_cast<uint64_t>(command), {}, &ignored);
}

void Caretaker::Keep(uint64_t id, int returns_read, int token_write) {
  std::string err;
  if (!life_.valid() || Tell(life_.get(), kKeep, id, {returns_read, token_write}, &err)) return;
  if (warned_) return;
  warned_ = true;
  LogWarning("could not hand a tool's pool to the caretaker (pid " + std::to_string(pid_) +
             "): " + err + "; if jobbridge is killed, that tool dies of SIGPIPE");
}

void Caretaker::Forget(uint64_t id) {
  std::string ignored;
  if (life_.valid()) Tell(life_.get(), kForget, id, {}, &ignored);
}

void Caretaker::Dismiss() {
  if (pid_ < 0) return;
  std::string ignored;
  Tell(life_.get(), kDismiss, 0, {}, &ignored);
  life_.Reset();
  RetryOnEintr([&] { return waitpid(pid_, nullptr, 0); });
  pid_ = -1;
}

}  // namespace jobbridge
