#include "endpoints/invocation_endpoint.h"

#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/uv_handle.h"

namespace jobbridge {

InvocationEndpoint::InvocationEndpoint(uv_loop_t* loop, ReadWatchHub* hub,
                                       PoolServer::Invocation* invocation,
                                       std::function<void()> used, std::function<void()> died,
                                       std::string* err)
    : invocation_(invocation), died_(std::move(died)) {
  if (hub) {
    // Writes too: ninja and the tools below it write tokens back into the
    // token pipe itself, by its path.
    watcher_ = ReadWatcher::Start(hub, pool()->token_fd(), std::move(used), err,
                                  ReadWatcher::Watch::kReadsAndWrites);
  }
  pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, invocation->pid, 0)));
  if (pidfd_.valid()) {
    death_poll_ = new uv_poll_t;
    uv_poll_init(loop, death_poll_, pidfd_.get());
    death_poll_->data = this;
    uv_poll_start(death_poll_, UV_READABLE, OnToolDied);
  }
}

void InvocationEndpoint::Stop() {
  if (watcher_) watcher_->Stop();
  CloseAndDelete(death_poll_);
  death_poll_ = nullptr;
}

bool InvocationEndpoint::OwesSlot() {
  if (!owes_ && pidfd_.valid()) {
    pollfd died{pidfd_.get(), POLLIN, 0};
    owes_ = poll(&died, 1, 0) == 1 && !pool()->Ended();
  }
  return owes_;
}

void InvocationEndpoint::OnToolDied(uv_poll_t* handle, int /*status*/, int /*events*/) {
  uv_poll_stop(handle);
  static_cast<InvocationEndpoint*>(handle->data)->died_();
}

}  // namespace jobbridge
