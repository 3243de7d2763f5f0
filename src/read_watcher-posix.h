// Tells the loop when a process reads from a pipe or FIFO, so the bridge can
// restock a per-invocation pool (invocation_pool.h) the moment its token is
// taken, instead of polling FIONREAD on a timer.
//
// Linux only: inotify on /proc/self/fd/N with IN_ACCESS reports a read by
// any process, whichever description it reads through (the bridge's own
// reads included). libuv's uv_fs_event offers no IN_ACCESS, so the hub
// polls a raw inotify fd. Identical events coalesce in the kernel while
// unread, and each drain of the queue gives one callback per watcher: a
// callback means "at least one read since the last callback", never how
// many; the caller looks at FIONREAD. Writes are reported only when asked
// for (Watch::kReadsAndWrites: IN_MODIFY too).
//
// Cost: one inotify instance per loop (the hub) and one watch per pipe
// (fs.inotify.max_user_watches, 8192 or more). One instance per pipe would
// cost one of the user's fs.inotify.max_user_instances (128 by default) per
// tool invocation, and closing an instance takes about 3 ms (the kernel
// waits for an SRCU grace period), where inotify_rm_watch takes 50 us.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "util/unique_fd.h"

namespace jobbridge {

class ReadWatcher;

// One inotify instance polled on one loop, shared by its ReadWatchers.
class ReadWatchHub {
 public:
  // Returns nullptr and sets *err (naming the errno and what to raise) when
  // inotify or the poll handle fails.
  static std::unique_ptr<ReadWatchHub> Start(uv_loop_t* loop, std::string* err);

  ReadWatchHub(const ReadWatchHub&) = delete;
  ReadWatchHub& operator=(const ReadWatchHub&) = delete;
  ~ReadWatchHub();

  // Closes the poll handle (freed in its close callback: run the loop after)
  // and the inotify fd. Every watcher must be stopped first. Idempotent.
  void Stop();

  size_t watching() const { return watchers_.size(); }

  // Calls back now the watchers whose pipes were used since the last
  // callback, without waiting for the loop to poll (a caller about to act
  // on what the watchers would say).
  void Drain();

 private:
  friend class ReadWatcher;
  ReadWatchHub() = default;
  static void OnReadable(uv_poll_t* handle, int status, int events);
  // Fails every watcher with `error`, then calls each back once.
  void FailAll(const std::string& error);

  uv_loop_t* loop_ = nullptr;
  UniqueFd inotify_;
  uv_poll_t* poll_ = nullptr;
  std::unordered_map<int, ReadWatcher*> watchers_;  // by watch descriptor
};

class ReadWatcher {
 public:
  enum class Watch { kReads, kReadsAndWrites };

  // Watches the pipe or FIFO that `pipe_fd` (either end, any description)
  // refers to; the watch follows the pipe, so `pipe_fd` may be closed after.
  // Calls `on_read` on the hub's loop after reads (and writes, with
  // kReadsAndWrites: the bridge's own included); it may call Stop, but must
  // not destroy the watcher. Returns nullptr and sets *err (naming the path
  // and the errno) when `pipe_fd` is not an open pipe or FIFO, the hub
  // already watches that pipe, or inotify fails. `hub` must outlive it.
  static std::unique_ptr<ReadWatcher> Start(ReadWatchHub* hub, int pipe_fd,
                                            std::function<void()> on_read, std::string* err,
                                            Watch what = Watch::kReads);

  ReadWatcher(const ReadWatcher&) = delete;
  ReadWatcher& operator=(const ReadWatcher&) = delete;
  // Stops, if Stop was not called.
  ~ReadWatcher();

  // No callback after this: removes the watch from the hub. Idempotent.
  void Stop();

  // Empty while watching. Set when reading the hub's inotify fd failed: the
  // watcher then stops, after one last callback so the caller looks again.
  const std::string& error() const { return error_; }

 private:
  friend class ReadWatchHub;
  ReadWatcher() = default;

  ReadWatchHub* hub_ = nullptr;
  int wd_ = -1;
  std::string path_;  // /proc/self/fd/N, for messages
  std::function<void()> on_read_;
  std::string error_;
};

}  // namespace jobbridge
