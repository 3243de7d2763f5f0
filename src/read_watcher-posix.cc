#include "read_watcher-posix.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

// What to do about the errno of a failed inotify call, if anything helps.
std::string Hint(int error) {
  switch (error) {
    case EMFILE:
      return " (too many inotify instances or open files: raise "
             "fs.inotify.max_user_instances, or the open-file limit)";
    case ENFILE:
      return " (the system's open-file limit: raise fs.file-max)";
    case ENOSPC:
      return " (too many inotify watches: raise fs.inotify.max_user_watches)";
    default:
      return "";
  }
}

// `error` is errno as the call left it: building `what` could change it.
std::string Failure(int error, const std::string& what) {
  return what + ": " + strerror(error) + Hint(error);
}

}  // namespace

std::unique_ptr<ReadWatcher> ReadWatcher::Start(uv_loop_t* loop, int pipe_fd,
                                                std::function<void()> on_read, std::string* err) {
  std::unique_ptr<ReadWatcher> watcher(new ReadWatcher);
  watcher->path_ = "/proc/self/fd/" + std::to_string(pipe_fd);
  const std::string& path = watcher->path_;
  struct stat st {};
  if (fstat(pipe_fd, &st) != 0) {
    int error = errno;
    *err = Failure(error,
                   "watching reads on " + path + " (is fd " + std::to_string(pipe_fd) + " open?)");
    return nullptr;
  }
  if (!S_ISFIFO(st.st_mode)) {
    *err = "watching reads on " + path + ": not a pipe or FIFO";
    return nullptr;
  }
  watcher->inotify_.Reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!watcher->inotify_.valid()) {
    int error = errno;
    *err = Failure(error, "inotify_init1, to watch reads on " + path);
    return nullptr;
  }
  // The kernel resolves the link: the watch is on the pipe's inode, which
  // sees reads through every description of it.
  if (inotify_add_watch(watcher->inotify_.get(), path.c_str(), IN_ACCESS) < 0) {
    int error = errno;
    *err = Failure(error, "inotify_add_watch on " + path);
    return nullptr;
  }
  auto* poll = new uv_poll_t;
  if (int status = uv_poll_init(loop, poll, watcher->inotify_.get()); status != 0) {
    delete poll;  // not a handle of the loop yet
    *err = "polling the inotify fd for " + path + ": " + uv_strerror(status);
    return nullptr;
  }
  poll->data = watcher.get();
  watcher->poll_ = poll;
  if (int status = uv_poll_start(poll, UV_READABLE, OnReadable); status != 0) {
    *err = "polling the inotify fd for " + path + ": " + uv_strerror(status);
    return nullptr;  // the destructor closes the handle
  }
  watcher->on_read_ = std::move(on_read);
  return watcher;
}

ReadWatcher::~ReadWatcher() { Stop(); }

void ReadWatcher::Stop() {
  // uv_close stops polling at once, so the fd may be closed before the
  // handle's memory goes in the close callback.
  CloseAndDelete(poll_);
  poll_ = nullptr;
  inotify_.Reset();
}

bool ReadWatcher::Drain() {
  alignas(inotify_event) char buffer[4096];
  bool read_seen = false;
  for (;;) {
    ssize_t n = RetryOnEintr([&] { return read(inotify_.get(), buffer, sizeof buffer); });
    if (n < 0) {
      int error = errno;
      if (error != EAGAIN) error_ = Failure(error, "reading the inotify fd for " + path_);
      return read_seen;
    }
    if (n == 0) return read_seen;  // not expected of inotify
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      // An overflow may have lost a read: say there was one.
      if (event->mask & (IN_ACCESS | IN_Q_OVERFLOW)) read_seen = true;
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
}

void ReadWatcher::OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<ReadWatcher*>(handle->data);
  bool read_seen = false;
  if (status < 0) {
    self->error_ = "polling the inotify fd for " + self->path_ + ": " + uv_strerror(status);
  } else {
    read_seen = self->Drain();
  }
  if (!self->error_.empty()) {
    self->Stop();
    read_seen = true;  // the caller should look, as no more callbacks come
  }
  if (read_seen) self->on_read_();  // last: it may Stop the watcher
}

}  // namespace jobbridge
