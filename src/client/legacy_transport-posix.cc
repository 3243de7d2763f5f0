// The GNU make jobserver, as a client: the implicit slot first (implicit_slot.h),
// then one byte read from the pool per slot, the same byte written back on
// release.
//
// All I/O goes through descriptions this client opened itself (a second
// open() of the FIFO, or of /proc/self/fd/N for an inherited pipe), made
// non-blocking there. The inherited fds are only checked, never read and
// never given other flags: O_NONBLOCK would change for every process that
// shares them (FACTS.md, make 4.3's "Resource temporarily unavailable").
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "client/transport.h"
#include "util/eintr.h"

namespace jobbridge::client {

namespace {

std::string FdName(int fd) { return "fd " + std::to_string(fd); }

std::string FileKind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a pipe";
}

// `implicit` is null when the client has no implicit slot
// (JOBBRIDGE_IMPLICIT_SLOT=0): then every slot is a token.
class LegacyTransport : public Transport {
 public:
  LegacyTransport(jobbridge_mode mode, std::string description, UniqueFd read, UniqueFd write,
                  std::unique_ptr<ImplicitSlot> implicit)
      : mode_(mode),
        description_(std::move(description)),
        read_(std::move(read)),
        write_(std::move(write)),
        implicit_(std::move(implicit)) {}

  jobbridge_mode Mode() const override { return mode_; }
  std::string Describe() const override { return description_; }

  int Start(Attempt*) override { return 0; }

  int TryFinish(Attempt*, Grant* grant) override {
    if (implicit_ != nullptr) {
      if (ImplicitSlot::Hold hold = implicit_->TryTake()) {
        grant->implicit = std::move(hold);
        return 0;
      }
    }
    // Other processes read this pool too, so a token seen by poll() may be
    // gone by now: EAGAIN just means "wait again".
    unsigned char byte = 0;
    ssize_t n = RetryOnEintr([&] { return read(read_.get(), &byte, 1); });
    if (n == 1) {
      grant->token = byte;
      return 0;
    }
    if (n == 0) return -EPIPE;  // every writer of the pool is gone: so is the jobserver
    return -errno;              // EAGAIN: no token yet
  }

  int MakePollable(Attempt* attempt) override {
    return MakeEpollSet({implicit_ != nullptr ? implicit_->fd() : -1, read_.get()},
                        &attempt->poll_set);
  }

  int Release(Grant* grant) override {
    if (grant->implicit) {
      grant->implicit.reset();  // gives it back
      return 0;
    }
    unsigned char byte = static_cast<unsigned char>(grant->token);
    if (!write_.valid()) return WriteBack(read_.get(), byte);  // FIFO: read_ is a reader too
    return WriteBackWithoutSigpipe(byte);
  }

 private:
  // The pool never fills a pipe's buffer in practice; if it does, wait for a
  // reader rather than lose the token.
  static int WriteBack(int fd, unsigned char byte) {
    for (;;) {
      ssize_t n = RetryOnEintr([&] { return write(fd, &byte, 1); });
      if (n == 1) return 0;
      if (errno != EAGAIN) return -errno;
      pollfd writable{fd, POLLOUT, 0};
      if (RetryOnEintr([&] { return poll(&writable, 1, -1); }) < 0) return -errno;
    }
  }

  // R and W may be two different pipes (jobbridge hands out a token pipe and
  // a returns pipe), so this client may hold no reader of W's pipe: when the
  // server is gone, write() fails with EPIPE and raises SIGPIPE, which would
  // kill the caller. A library must not: block SIGPIPE in this thread for the
  // write and take back the one the write raised, if any.
  int WriteBackWithoutSigpipe(unsigned char byte) {
    sigset_t sigpipe, saved, pending;
    sigemptyset(&sigpipe);
    sigaddset(&sigpipe, SIGPIPE);
    if (int rc = pthread_sigmask(SIG_BLOCK, &sigpipe, &saved); rc != 0) return -rc;
    bool was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1;
    int rc = WriteBack(write_.get(), byte);
    if (rc == -EPIPE && !was_pending) {
      timespec now{0, 0};
      RetryOnEintr([&] { return sigtimedwait(&sigpipe, nullptr, &now); });
    }
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
    return rc;
  }

  const jobbridge_mode mode_;
  const std::string description_;
  UniqueFd read_;
  UniqueFd write_;  // invalid for a FIFO: read_ is O_RDWR then
  std::unique_ptr<ImplicitSlot> implicit_;
};

// Checks that an inherited fd is open and a pipe. A make recipe without '+'
// closes the jobserver fds while MAKEFLAGS still names them, so the number
// may be free or point at an unrelated file.
int CheckInherited(int fd, const std::string& origin, struct stat* st, std::string* why) {
  if (RetryOnEintr([&] { return fcntl(fd, F_GETFD); }) < 0) {
    *why = origin + " names " + FdName(fd) +
           " for the jobserver, but it is not open (a make recipe without '+' closes it)";
    return -EBADF;
  }
  if (RetryOnEintr([&] { return fstat(fd, st); }) != 0) {
    *why = origin + " names " + FdName(fd) + " for the jobserver: fstat: " + strerror(errno);
    return -EBADF;
  }
  if (!S_ISFIFO(st->st_mode)) {
    *why = origin + " names " + FdName(fd) + " for the jobserver, but it is " +
           FileKind(st->st_mode) + ", not a pipe";
    return -EBADF;
  }
  return 0;
}

// A private description of an inherited pipe end (Linux: through /proc).
int OpenPrivate(int fd, int access, UniqueFd* out, std::string* why) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  out->Reset(RetryOnEintr([&] { return open(path.c_str(), access | O_NONBLOCK | O_CLOEXEC); }));
  if (out->valid()) return 0;
  int error = errno;
  if (error == ENXIO) {  // a write end whose pipe no one reads any more
    *why = "the jobserver behind " + FdName(fd) + " is gone: no one reads its pipe";
    return -EPIPE;
  }
  *why =
      "cannot open a private description of the jobserver pipe (" + path + "): " + strerror(error);
  return error == ENOENT ? -ENOSYS : -error;  // ENOENT: no /proc; keep -ENOENT for "no jobserver"
}

int OpenImplicit(bool wanted, std::unique_ptr<ImplicitSlot>* out, std::string* why) {
  return wanted ? ImplicitSlot::Open(out, why) : 0;
}

std::string WithoutImplicit(bool implicit_slot) {
  return implicit_slot ? "" : " (without the implicit slot)";
}

int OpenPipe(int read_fd, int write_fd, const std::string& origin, bool implicit_slot,
             std::unique_ptr<Transport>* out, std::string* why) {
  // R and W need not be ends of one pipe: make passes one, jobbridge two.
  struct stat st {};
  if (int rc = CheckInherited(read_fd, origin, &st, why); rc < 0) return rc;
  if (int rc = CheckInherited(write_fd, origin, &st, why); rc < 0) return rc;
  UniqueFd read, write;
  std::unique_ptr<ImplicitSlot> implicit;
  // The read end first: when the fds are of a named FIFO, opening its write
  // end without a reader fails (ENXIO). An anonymous pipe opens either way.
  if (int rc = OpenPrivate(read_fd, O_RDONLY, &read, why); rc < 0) return rc;
  if (int rc = OpenPrivate(write_fd, O_WRONLY, &write, why); rc < 0) return rc;
  if (int rc = OpenImplicit(implicit_slot, &implicit, why); rc < 0) return rc;
  std::string description = "legacy pipe " + std::to_string(read_fd) + "," +
                            std::to_string(write_fd) + " (from " + origin + ")" +
                            WithoutImplicit(implicit_slot);
  *out = std::make_unique<LegacyTransport>(JOBBRIDGE_MODE_LEGACY_PIPE, std::move(description),
                                           std::move(read), std::move(write), std::move(implicit));
  return 0;
}

int OpenFifo(const std::string& path, const std::string& origin, bool implicit_slot,
             std::unique_ptr<Transport>* out, std::string* why) {
  // O_RDWR: opening never blocks and never sees end-of-file. O_NOCTTY: the
  // path may name a terminal by mistake.
  UniqueFd fifo(
      RetryOnEintr([&] { return open(path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY); }));
  if (!fifo.valid()) {
    int error = errno;
    *why = origin + " names the jobserver FIFO " + path + ": " + strerror(error);
    return error == ENOENT ? -EBADF : -error;
  }
  struct stat st {};
  if (RetryOnEintr([&] { return fstat(fifo.get(), &st); }) != 0) {
    int error = errno;
    *why = origin + " names the jobserver FIFO " + path + ": fstat: " + strerror(error);
    return -error;
  }
  if (!S_ISFIFO(st.st_mode)) {
    *why = origin + " names the jobserver FIFO " + path + ", but it is " + FileKind(st.st_mode);
    return -EBADF;
  }
  std::unique_ptr<ImplicitSlot> implicit;
  if (int rc = OpenImplicit(implicit_slot, &implicit, why); rc < 0) return rc;
  *out = std::make_unique<LegacyTransport>(
      JOBBRIDGE_MODE_LEGACY_FIFO,
      "legacy fifo " + path + " (from " + origin + ")" + WithoutImplicit(implicit_slot),
      std::move(fifo), UniqueFd(), std::move(implicit));
  return 0;
}

}  // namespace

int OpenLegacyTransport(const JobserverAuth& auth, const std::string& origin, bool implicit_slot,
                        std::unique_ptr<Transport>* out, std::string* why) {
  switch (auth.kind) {
    case JobserverAuth::Kind::kNone:
      *why = origin + " names no jobserver";
      return -ENOENT;
    case JobserverAuth::Kind::kDisabled:
      *why = origin + " names no jobserver (" + FormatAuth(auth) + ")";
      return -ENOENT;
    case JobserverAuth::Kind::kPipe:
      return OpenPipe(auth.read_fd, auth.write_fd, origin, implicit_slot, out, why);
    case JobserverAuth::Kind::kFifo:
      return OpenFifo(auth.fifo_path, origin, implicit_slot, out, why);
  }
  *why = origin + ": unknown jobserver kind";
  return -EINVAL;
}

}  // namespace jobbridge::client
