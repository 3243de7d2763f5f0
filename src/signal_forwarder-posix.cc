#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "signal_forwarder.h"
#include "util/eintr.h"
#include "util/signals.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

int g_write_end = -1;  // the self-pipe, for the handler

void OnSignal(int sig, siginfo_t* info, void* /*context*/) {
  int saved = errno;
  unsigned char record[2] = {static_cast<unsigned char>(sig),
                             static_cast<unsigned char>(info->si_code == SI_KERNEL)};
  (void)!write(g_write_end, record, sizeof record);
  errno = saved;
}

}  // namespace

std::vector<int> SignalForwarder::Start(uv_loop_t* loop, const std::vector<int>& signals,
                                        Callback callback) {
  int ends[2];
  if (pipe2(ends, O_CLOEXEC | O_NONBLOCK) != 0) return {};
  read_end_.Reset(ends[0]);
  write_end_.Reset(ends[1]);
  g_write_end = write_end_.get();
  callback_ = std::move(callback);
  poll_ = new uv_poll_t;
  uv_poll_init(loop, poll_, read_end_.get());
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnReadable);
  for (int sig : signals) {
    if (IsIgnored(sig)) continue;
    struct sigaction action {};
    action.sa_sigaction = OnSignal;
    action.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&action.sa_mask);
    sigaction(sig, &action, nullptr);
    watched_.push_back(sig);
  }
  return watched_;
}

void SignalForwarder::Stop() {
  for (int sig : watched_) signal(sig, SIG_DFL);
  watched_.clear();
  g_write_end = -1;
  CloseAndDelete(poll_);
  poll_ = nullptr;
}

void SignalForwarder::OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* self = static_cast<SignalForwarder*>(handle->data);
  unsigned char records[64];
  ssize_t n = RetryOnEintr([&] { return read(self->read_end_.get(), records, sizeof records); });
  for (ssize_t i = 0; i + 1 < n; i += 2) {
    self->callback_(records[i], records[i + 1] != 0);
    if (!self->poll_) return;  // the callback stopped the forwarder
  }
}

}  // namespace jobbridge
