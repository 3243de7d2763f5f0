#include "read_watcher-posix.h"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

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

std::unique_ptr<ReadWatchHub> ReadWatchHub::Start(uv_loop_t* loop, std::string* err) {
  std::unique_ptr<ReadWatchHub> hub(new ReadWatchHub);
  hub->loop_ = loop;
  hub->inotify_.Reset(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!hub->inotify_.valid()) {
    int error = errno;
    *err = Failure(error, "inotify_init1, to watch reads on pipes");
    return nullptr;
  }
  auto* poll = new uv_poll_t;
  if (int status = uv_poll_init(loop, poll, hub->inotify_.get()); status != 0) {
    delete poll;  // not a handle of the loop yet
    *err = std::string("polling an inotify fd: ") + uv_strerror(status);
    return nullptr;
  }
  poll->data = hub.get();
  hub->poll_ = poll;
  if (int status = uv_poll_start(poll, UV_READABLE, OnReadable); status != 0) {
    *err = std::string("polling an inotify fd: ") + uv_strerror(status);
    return nullptr;  // the destructor closes the handle
  }
  return hub;
}

ReadWatchHub::~ReadWatchHub() { Stop(); }

void ReadWatchHub::Stop() {
  // uv_close stops polling at once, so the fd may be closed before the
  // handle's memory goes in the close callback.
  CloseAndDelete(poll_);
  poll_ = nullptr;
  for (auto& [wd, watcher] : watchers_) watcher->hub_ = nullptr;
  watchers_.clear();
  inotify_.Reset();
}

void ReadWatchHub::FailAll(const std::string& error) {
  std::unordered_map<int, ReadWatcher*> failed;
  failed.swap(watchers_);
  Stop();
  for (auto& [wd, watcher] : failed) watcher->error_ = error;
  // Each callback may stop its own watcher (a no-op now), never destroy another.
  for (auto& [wd, watcher] : failed) watcher->on_read_();
}

void ReadWatchHub::OnReadable(uv_poll_t* handle, int status, int /*events*/) {
  auto* hub = static_cast<ReadWatchHub*>(handle->data);
  if (status < 0) {
    hub->FailAll(std::string("polling the inotify fd: ") + uv_strerror(status));
    return;
  }
  hub->Drain();
}

void ReadWatchHub::Drain() {
  if (!inotify_.valid()) return;
  ReadWatchHub* hub = this;
  alignas(inotify_event) char buffer[4096];
  std::vector<int> read_wds;
  bool overflow = false;
  for (;;) {
    ssize_t n = RetryOnEintr([&] { return read(hub->inotify_.get(), buffer, sizeof buffer); });
    if (n < 0) {
      int error = errno;
      if (error == EAGAIN) break;
      hub->FailAll(Failure(error, "reading the inotify fd"));
      return;
    }
    if (n == 0) break;  // not expected of inotify
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const inotify_event*>(buffer + offset);
      if (event->mask & IN_Q_OVERFLOW) overflow = true;  // a read may have been lost
      if (event->mask & (IN_ACCESS | IN_MODIFY)) read_wds.push_back(event->wd);
      offset += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
    }
  }
  if (overflow) {
    read_wds.clear();
    for (auto& [wd, watcher] : hub->watchers_) read_wds.push_back(wd);
  }
  std::sort(read_wds.begin(), read_wds.end());
  read_wds.erase(std::unique(read_wds.begin(), read_wds.end()), read_wds.end());
  // Looked up again each time: a callback may stop any watcher. Events of
  // a watch removed since (its wd is not reused soon) are ignored.
  for (int wd : read_wds) {
    if (auto it = hub->watchers_.find(wd); it != hub->watchers_.end()) it->second->on_read_();
  }
}

std::unique_ptr<ReadWatcher> ReadWatcher::Start(ReadWatchHub* hub, int pipe_fd,
                                                std::function<void()> on_read, std::string* err,
                                                Watch what) {
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
  if (!hub->inotify_.valid()) {
    *err = "watching reads on " + path + ": the inotify hub has stopped";
    return nullptr;
  }
  // The kernel resolves the link: the watch is on the pipe's inode, which
  // sees reads through every description of it. The same inode gives the
  // same descriptor, so a second watcher of one pipe is refused.
  uint32_t events = IN_ACCESS | (what == Watch::kReadsAndWrites ? IN_MODIFY : 0);
  int wd = inotify_add_watch(hub->inotify_.get(), path.c_str(), events | IN_MASK_CREATE);
  if (wd < 0) {
    int error = errno;
    *err = error == EEXIST ? "watching reads on " + path + ": that pipe is already watched"
                           : Failure(error, "inotify_add_watch on " + path);
    return nullptr;
  }
  watcher->hub_ = hub;
  watcher->wd_ = wd;
  watcher->on_read_ = std::move(on_read);
  hub->watchers_[wd] = watcher.get();
  return watcher;
}

ReadWatcher::~ReadWatcher() { Stop(); }

void ReadWatcher::Stop() {
  if (!hub_) return;
  hub_->watchers_.erase(wd_);
  // EINVAL when the pipe is gone already (the kernel removed the watch).
  inotify_rm_watch(hub_->inotify_.get(), wd_);
  hub_ = nullptr;
}

}  // namespace jobbridge
