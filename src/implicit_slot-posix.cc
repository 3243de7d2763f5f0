#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "daemon_env.h"
#include "implicit_slot.h"
#include "util/eintr.h"
#include "util/unix_socket.h"

namespace jobbridge {

namespace {

bool IsSet(const char* name) {
  const char* value = std::getenv(name);
  return value && *value;
}

}  // namespace

bool UnderDaemon() { return IsSet(kDaemonVariable); }

bool ImplicitSlotPaid() { return IsSet(kChargedVariable); }

bool TakeImplicitSlot(const std::string& tool, std::string* err) {
  if (!UnderDaemon() || ImplicitSlotPaid()) return true;
  const char* socket = std::getenv("JOBSERVERV2");
  if (!socket || !*socket) return true;  // the steps' environment was changed: nothing to pay to
  std::string fix = "start one with `jobbridge daemon` (or unset " + std::string(kDaemonVariable) +
                    " to run " + tool + " on its own budget)";
  UniqueFd fd = ConnectUnix(socket);
  if (!fd.valid()) {
    *err = "the jobbridge daemon of this CI job is stopping or gone (" +
           std::string(std::strerror(errno)) + " at " + socket + "); " + fix;
    return false;
  }
  // Granted one byte: the slot. End of file or an error: the daemon ended
  // (killed, or stopping) while the tool waited.
  char grant = 0;
  for (;;) {
    pollfd ready{fd.get(), POLLIN, 0};
    if (RetryOnEintr([&] { return poll(&ready, 1, -1); }) < 0) break;
    ssize_t n = RetryOnEintr([&] { return read(fd.get(), &grant, 1); });
    if (n == 1) {
      int kept = fd.Release();
      fcntl(kept, F_SETFD, 0);  // inherited by the tool and all it starts
      setenv(kChargedVariable, std::to_string(getpid()).c_str(), 1);
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    break;
  }
  *err = "the jobbridge daemon of this CI job ended while " + tool +
         " waited for its slot (stopped, or killed); " + fix;
  return false;
}

}  // namespace jobbridge
