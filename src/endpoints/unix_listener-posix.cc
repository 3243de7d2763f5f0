#include <sys/socket.h>

#include <cerrno>

#include "endpoints/unix_listener.h"
#include "log.h"
#include "util/unix_socket.h"
#include "util/uv_handle.h"

namespace jobbridge {

bool UnixListener::Listen(const std::string& path, std::string* err) {
  fd_ = ListenUnix(path, SOCK_STREAM, err);
  if (!fd_.valid()) return false;
  poll_ = new uv_poll_t;
  uv_poll_init(loop_, poll_, fd_.get());
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnReadable);
  retry_ = new uv_timer_t;
  uv_timer_init(loop_, retry_);
  retry_->data = this;
  return true;
}

void UnixListener::Stop() {
  CloseAndDelete(poll_);
  poll_ = nullptr;
  CloseAndDelete(retry_);
  retry_ = nullptr;
  paused_ = false;
  fd_.Reset();
}

void UnixListener::FdFreed() {
  if (paused_) OnRetry(retry_);
}

void UnixListener::OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  static_cast<UnixListener*>(handle->data)->AcceptAll();
}

void UnixListener::OnRetry(uv_timer_t* timer) {
  auto* listener = static_cast<UnixListener*>(timer->data);
  if (!listener->paused_ || !listener->poll_) return;
  listener->paused_ = false;
  uv_timer_stop(listener->retry_);
  uv_poll_start(listener->poll_, UV_READABLE, OnReadable);
}

void UnixListener::Pause() {
  if (paused_) return;
  paused_ = true;
  uv_poll_stop(poll_);
  uv_timer_start(retry_, OnRetry, kRetryMs, 0);
  if (!warned_) {
    warned_ = true;
    LogWarning(out_of_fds_warning_);
  }
}

void UnixListener::AcceptAll() {
  // Until the backlog is empty, or the owner stopped listening meanwhile.
  while (poll_ && !paused_) {
    int fd = accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_accepted_(UniqueFd(fd));
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) Pause();
    return;  // EAGAIN, or an error that the next readiness retries
  }
}

}  // namespace jobbridge
