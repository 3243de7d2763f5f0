// The seam inside the client library: jobbridge_client.cc owns the handles,
// the deadlines and cancellation; a Transport only moves slots, either as one
// socket connection per slot (docs/PROTOCOL.md) or as bytes in a legacy
// GNU make pool. Neither transport blocks: waiting is the caller's poll().
#pragma once

#include <sys/epoll.h>

#include <cerrno>
#include <initializer_list>
#include <memory>
#include <string>

#include "client/implicit_slot.h"
#include "client/jobbridge_client.h"
#include "core/makeflags.h"
#include "util/unique_fd.h"

namespace jobbridge::client {

// An epoll set (level-triggered, EPOLLIN) over the fds that are >= 0, for an
// Attempt's poll_set. Returns 0, or -errno.
inline int MakeEpollSet(std::initializer_list<int> fds, UniqueFd* out) {
  UniqueFd set(epoll_create1(EPOLL_CLOEXEC));
  if (!set.valid()) return -errno;
  for (int fd : fds) {
    if (fd < 0) continue;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(set.get(), EPOLL_CTL_ADD, fd, &event) != 0) return -errno;
  }
  *out = std::move(set);
  return 0;
}

struct SemaphoreWait;  // semaphore_transport-posix.cc

// Owns an attempt's share of a thread waiting for a semaphore unit:
// destroying it abandons the wait (a unit the thread got and nobody was
// granted goes back).
class SemaphoreWaitHandle {
 public:
  SemaphoreWaitHandle() = default;
  explicit SemaphoreWaitHandle(std::shared_ptr<SemaphoreWait> wait) : wait_(std::move(wait)) {}
  SemaphoreWaitHandle(SemaphoreWaitHandle&&) = default;
  SemaphoreWaitHandle& operator=(SemaphoreWaitHandle&& other) {
    Abandon();
    wait_ = std::move(other.wait_);
    return *this;
  }
  ~SemaphoreWaitHandle() { Abandon(); }
  SemaphoreWait* get() const { return wait_.get(); }

 private:
  void Abandon();
  std::shared_ptr<SemaphoreWait> wait_;
};

// An acquire in progress. fd() is what to poll for POLLIN once it is valid
// (>= 0): the connection that asked (socket), or `poll_set`: an epoll set over
// the pool or the connection and the implicit slot (made only when someone
// has to wait), the semaphore waiter's eventfd (or a set over it and the
// implicit slot), or an always readable eventfd for a slot taken at once
// (socket, sysvsem).
struct Attempt {
  UniqueFd connection;            // socket mode: the request, if one was made
  UniqueFd poll_set;              // see above
  ImplicitSlot::Hold implicit;    // socket and sysvsem modes: the implicit slot, taken by Start
  bool unit_taken = false;        // sysvsem mode: a unit taken at once by Start
  SemaphoreWaitHandle semaphore;  // sysvsem mode: the thread waiting for a unit

  int fd() const { return poll_set.valid() ? poll_set.get() : connection.get(); }
};

// A slot held by the caller: exactly one of the four.
struct Grant {
  static constexpr int kNoToken = -1;
  UniqueFd connection;          // socket mode: closing it gives the slot back
  int token = kNoToken;         // legacy mode: the byte read from the pool
  ImplicitSlot::Hold implicit;  // the implicit slot: resetting gives it back
  bool unit = false;            // sysvsem mode: a unit of the semaphore, given back by +1
};

// Every method may be called from several threads at once.
class Transport {
 public:
  virtual ~Transport() = default;

  virtual jobbridge_mode Mode() const = 0;
  virtual std::string Describe() const = 0;

  // Makes the request. Returns 0; -EAGAIN when the server cannot take the
  // request yet (listen backlog full); -EPIPE when the server is gone; -errno.
  virtual int Start(Attempt* attempt) = 0;

  // Completes the attempt without blocking. Returns 0 and fills *grant;
  // -EAGAIN when nothing is granted yet; -EPIPE when the server is gone;
  // another -errno.
  virtual int TryFinish(Attempt* attempt, Grant* grant) = 0;

  // Makes attempt->fd() valid. Returns 0 or -errno.
  virtual int MakePollable(Attempt* attempt) = 0;

  // Gives the slot back. Returns 0 or -errno (then the slot is lost).
  virtual int Release(Grant* grant) = 0;
};

// A socket jobserver at `path` (origin names where the path came from, for
// Describe; may be empty). With `implicit_slot`, the process runs on a slot
// of its own (a make job's), handed out first and whenever no slot of this
// client holds it; every other slot is a connection. Returns 0, or -EINVAL
// with *why when the path is not absolute or longer than 107 bytes; -errno
// with *why when the implicit slot's eventfd cannot be made.
int OpenSocketTransport(const std::string& path, const std::string& origin, bool implicit_slot,
                        std::unique_ptr<Transport>* out, std::string* why);

// The legacy jobserver `auth` (origin names the variable it came from).
// Without `implicit_slot` (JOBBRIDGE_IMPLICIT_SLOT=0) every slot is a token.
// Returns 0; -ENOENT when auth names none; -EBADF when its fds are not open
// or not one pipe, or its FIFO is missing or not a FIFO; -errno with *why
// when a private description cannot be opened.
int OpenLegacyTransport(const JobserverAuth& auth, const std::string& origin, bool implicit_slot,
                        std::unique_ptr<Transport>* out, std::string* why);

// The Robust Jobserver's value `value` ("sysvsem:ID"; origin names the
// variable it came from). With `implicit_slot`, as in socket mode. Returns
// 0; -EINVAL with *why when the value is malformed, names another method,
// or a set of more than one semaphore; -EPIPE when the set does not exist
// (its server is gone); -EACCES when it belongs to another user; -errno.
int OpenSemaphoreTransport(const std::string& value, const std::string& origin, bool implicit_slot,
                           std::unique_ptr<Transport>* out, std::string* why);

}  // namespace jobbridge::client
