#include "endpoints/root_pool_endpoint.h"

#include <limits>

#include "log.h"
#include "util/uv_handle.h"

namespace jobbridge {

void RootPoolEndpoint::Start(uv_loop_t* loop, std::function<void()> wake) {
  wake_ = std::move(wake);
  if (pipes()) {
    // Every token a legacy client writes back passes through the broker.
    returns_poll_ = new uv_poll_t;
    uv_poll_init(loop, returns_poll_, pool_->ReturnsFd());
    returns_poll_->data = this;
    uv_poll_start(returns_poll_, UV_READABLE, OnReturnsReadable);
  } else {
    // A FIFO: clients write tokens back into the pool itself, and a
    // readable poll cannot tell a write from a token that sits there.
    // inotify reports each write (IN_MODIFY) by any process, so surplus is
    // dropped the moment it lands, not at the next socket event.
    fifo_watch_ = new uv_fs_event_t;
    uv_fs_event_init(loop, fifo_watch_);
    fifo_watch_->data = this;
    std::string path = pool_->Auth().fifo_path;
    if (uv_fs_event_start(fifo_watch_, OnFifoWritten, path.c_str(), 0) != 0) {
      LogWarning("cannot watch the jobserver FIFO " + path + " for writes: tokens written " +
                 "back without being taken are found only at the next socket request");
    }
  }
  token_poll_ = new uv_poll_t;
  uv_poll_init(loop, token_poll_, pool_->PrivateReadFd());
  token_poll_->data = this;
}

void RootPoolEndpoint::Stop() {
  CloseAndDelete(returns_poll_);
  returns_poll_ = nullptr;
  CloseAndDelete(fifo_watch_);
  fifo_watch_ = nullptr;
  CloseAndDelete(token_poll_);
  token_poll_ = nullptr;
  watching_tokens_ = false;
}

int RootPoolEndpoint::TakeReturned(std::string* err) {
  returned_waiting_ = false;
  return pool_->TakeReturned(std::numeric_limits<int>::max(), err);
}

void RootPoolEndpoint::WatchTokens(bool on) {
  if (!token_poll_ || on == watching_tokens_) return;
  if (on) {
    uv_poll_start(token_poll_, UV_READABLE, OnTokenReadable);
  } else {
    uv_poll_stop(token_poll_);
  }
  watching_tokens_ = on;
}

void RootPoolEndpoint::OnReturnsReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* self = static_cast<RootPoolEndpoint*>(handle->data);
  self->returned_waiting_ = true;  // read by the broker, not on every request
  self->wake_();
}

void RootPoolEndpoint::OnTokenReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  static_cast<RootPoolEndpoint*>(handle->data)->wake_();
}

void RootPoolEndpoint::OnFifoWritten(uv_fs_event_t* handle, const char* /*name*/, int /*events*/,
                                     int /*status*/) {
  static_cast<RootPoolEndpoint*>(handle->data)->wake_();
}

}  // namespace jobbridge
