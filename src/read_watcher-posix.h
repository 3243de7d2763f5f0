// Tells the loop when a process reads from a pipe or FIFO, so the bridge can
// restock a per-invocation pool (invocation_pool.h) the moment its token is
// taken, instead of polling FIONREAD on a timer.
//
// Linux only: inotify on /proc/self/fd/N with IN_ACCESS reports a read by
// any process, whichever description it reads through (the bridge's own
// reads included). libuv's uv_fs_event offers no IN_ACCESS, so the watcher
// polls a raw inotify fd. Identical events coalesce in the kernel while
// unread, and each drain of the queue gives one callback: a callback means
// "at least one read since the last callback", never how many; the caller
// looks at FIONREAD. Writes are not reported (IN_MODIFY is not watched).
//
// Cost: one inotify instance (one fd, and one of the user's
// fs.inotify.max_user_instances, 128 by default) per watched pipe, and
// closing it takes about 3 ms (the kernel waits for an SRCU grace period;
// inotify_rm_watch on a shared instance takes 50 us). Before this watches
// one pool per tool invocation, share one instance per loop.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>

#include "util/unique_fd.h"

namespace jobbridge {

class ReadWatcher {
 public:
  // Watches the pipe or FIFO that `pipe_fd` (either end, any description)
  // refers to; the watch follows the pipe, so `pipe_fd` may be closed after.
  // Calls `on_read` on `loop` after reads; it may call Stop, but must not
  // destroy the watcher. Returns nullptr and sets *err (naming the path and
  // the errno) when `pipe_fd` is not an open pipe or FIFO, or inotify fails.
  static std::unique_ptr<ReadWatcher> Start(uv_loop_t* loop, int pipe_fd,
                                            std::function<void()> on_read, std::string* err);

  ReadWatcher(const ReadWatcher&) = delete;
  ReadWatcher& operator=(const ReadWatcher&) = delete;
  // Stops, if Stop was not called.
  ~ReadWatcher();

  // No callback after this. Closes the poll handle (freed in its close
  // callback: run the loop after; the watcher itself may go at once) and
  // the inotify fd. Idempotent.
  void Stop();

  // Empty while watching. Set when reading the inotify fd failed: the
  // watcher then stops, after one last callback so the caller looks again.
  const std::string& error() const { return error_; }

 private:
  ReadWatcher() = default;
  static void OnReadable(uv_poll_t* handle, int status, int events);
  // Reads every queued event; true if any says the pipe may have been read.
  bool Drain();

  std::string path_;  // /proc/self/fd/N, for messages
  std::function<void()> on_read_;
  UniqueFd inotify_;
  uv_poll_t* poll_ = nullptr;
  std::string error_;
};

}  // namespace jobbridge
