// A listening unix stream socket on a libuv loop, for the token socket
// (SocketServer) and the control socket (ControlServer): at each readiness
// it accepts every waiting connection (non-blocking, close-on-exec) and
// hands each one over.
//
// Out of fds (EMFILE, ENFILE, ENOBUFS, ENOMEM) a waiting client stays in the
// backlog and the listener stays readable: watched, it would wake every turn
// of the loop at once, jobbridge spinning at 100 % CPU until an fd came
// free. So it stops watching, warns once, and watches again after kRetryMs
// or as soon as its owner says an fd came free (FdFreed).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "util/unique_fd.h"

namespace jobbridge {

class UnixListener {
 public:
  static constexpr uint64_t kRetryMs = 100;

  // `out_of_fds_warning` is what is said, once, the first time it pauses.
  UnixListener(uv_loop_t* loop, std::string out_of_fds_warning,
               std::function<void(UniqueFd)> on_accepted)
      : loop_(loop),
        out_of_fds_warning_(std::move(out_of_fds_warning)),
        on_accepted_(std::move(on_accepted)) {}
  ~UnixListener() { Stop(); }
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  // Binds and listens on `path` (mode 0600, ListenUnix). False with *err.
  bool Listen(const std::string& path, std::string* err);
  // Closes the listener (new clients are refused by the kernel). Idempotent.
  void Stop();
  // A connection of the owner's closed: if paused, watch again at once. Its
  // fd may be closed only in its handle's close callback, after this call;
  // the accept comes at the listener's next readiness, a later turn.
  void FdFreed();

  bool listening() const { return poll_ != nullptr; }
  bool paused() const { return paused_; }

 private:
  static void OnReadable(uv_poll_t* handle, int status, int events);
  static void OnRetry(uv_timer_t* timer);
  void AcceptAll();
  void Pause();

  uv_loop_t* loop_;
  std::string out_of_fds_warning_;
  std::function<void(UniqueFd)> on_accepted_;
  UniqueFd fd_;
  uv_poll_t* poll_ = nullptr;  // handles are freed in their close callbacks
  uv_timer_t* retry_ = nullptr;
  bool paused_ = false;
  bool warned_ = false;  // said once a run
};

}  // namespace jobbridge
