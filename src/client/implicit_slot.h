// The implicit slot of a process that make started as one of its jobs: the
// slot it runs on without holding a token or a connection. Both transports
// hand it out first, and again whenever no slot of this client holds it
// (docs/PROTOCOL.md, "The implicit slot").
//
// It is an eventfd holding 1 while it is free: a read takes it (the kernel
// lets only one reader have the 1), a write of 1 returns it, and poll() sees
// it, so a waiter wakes when the implicit slot comes back.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge::client {

class ImplicitSlot {
 public:
  // Gives the slot back when a hold ends.
  struct GiveBack {
    void operator()(ImplicitSlot* slot) const {
      uint64_t one = 1;
      // Cannot fail: only a holder writes, and the counter is then 0.
      RetryOnEintr([&] { return write(slot->event_.get(), &one, sizeof one); });
    }
  };
  // The slot while someone holds it; resetting or destroying it gives it back.
  using Hold = std::unique_ptr<ImplicitSlot, GiveBack>;

  // A free implicit slot. Returns 0 or -errno with *why.
  static int Open(std::unique_ptr<ImplicitSlot>* out, std::string* why) {
    UniqueFd event(eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!event.valid()) {
      int error = errno;
      *why = std::string("eventfd: ") + strerror(error);
      return -error;
    }
    out->reset(new ImplicitSlot(std::move(event)));
    return 0;
  }

  // Readable (POLLIN) while the slot is free.
  int fd() const { return event_.get(); }

  // Takes the slot if it is free now; an empty hold otherwise.
  Hold TryTake() {
    uint64_t value = 0;
    ssize_t n = RetryOnEintr([&] { return read(event_.get(), &value, sizeof value); });
    return Hold(n == static_cast<ssize_t>(sizeof value) ? this : nullptr);
  }

 private:
  explicit ImplicitSlot(UniqueFd event) : event_(std::move(event)) {}

  UniqueFd event_;
};

}  // namespace jobbridge::client
