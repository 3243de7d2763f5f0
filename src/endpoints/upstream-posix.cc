// Two kinds of upstream (upstream.h): a legacy pool read through private
// descriptions, and a socket root with one connection per lease. The
// semaphore's is in upstream_semaphore-posix.cc.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "endpoints/upstream.h"
#include "util/eintr.h"
#include "util/private_description.h"
#include "util/unique_fd.h"
#include "util/unix_socket.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

// What both kinds share: the delegate, the count of leases taken, and losing
// the outer budget. A loss is reported from a timer callback, never from
// inside SetWanted or Release: those run inside the socket server's callbacks,
// and the delegate shuts that server down when told.
class UpstreamBase : public Upstream {
 public:
  UpstreamBase(uv_loop_t* loop, Delegate* delegate) : loop_(loop), delegate_(delegate) {
    timer_ = new uv_timer_t;
    uv_timer_init(loop_, timer_);
    timer_->data = this;
  }

  int64_t total_leased() const override { return total_; }
  bool lost() const override { return lost_; }

 protected:
  // Forgets every request and lease (the outer budget is gone).
  virtual void DropAll() = 0;
  // The timer fired for the subclass's own reason (no loss pending).
  virtual void OnTimerFired() {}

  void StartTimer(uint64_t ms) {
    if (timer_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(timer_))) {
      uv_timer_start(timer_, OnTimer, ms, 0);
    }
  }

  void LoseLater(const std::string& why) {
    if (loss_.empty()) loss_ = why;
    if (timer_) uv_timer_start(timer_, OnTimer, 0, 0);
  }

  // Reports the loss at once: only from the upstream's own callbacks.
  void Lose(const std::string& why) {
    if (lost_) return;
    lost_ = true;
    DropAll();
    delegate_->OnLost(why);
  }

  bool losing() const { return lost_ || !loss_.empty(); }

  // At Close: a loss still waiting for the timer is reported now (the
  // server is shut down by then, so it is safe), then the timer closes.
  void CloseTimer() {
    if (!lost_ && !loss_.empty()) Lose(loss_);
    CloseAndDelete(timer_);
    timer_ = nullptr;
  }

  uv_loop_t* loop_;
  Delegate* delegate_;
  int64_t total_ = 0;

 private:
  static void OnTimer(uv_timer_t* timer) {
    auto* self = static_cast<UpstreamBase*>(timer->data);
    if (!self->loss_.empty()) return self->Lose(self->loss_);
    self->OnTimerFired();
  }

  uv_timer_t* timer_ = nullptr;  // freed in its close callback
  std::string loss_;             // why the outer budget is gone, until reported
  bool lost_ = false;
};

// Reads the outer pool while requests are outstanding; keeps each byte read,
// and writes that same byte back when its lease is released (FACTS: some
// clients care which byte comes back).
class LegacyUpstream : public UpstreamBase {
 public:
  using UpstreamBase::UpstreamBase;

  bool Open(const JobserverAuth& auth, std::string* err) {
    if (auth.kind == JobserverAuth::Kind::kFifo) {
      // Read-write: opening never waits for a writer, reads never see EOF.
      read_.Reset(RetryOnEintr(
          [&] { return open(auth.fifo_path.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC); }));
      if (!read_.valid()) {
        *err = "cannot open the jobserver FIFO " + auth.fifo_path + ": " + strerror(errno);
        return false;
      }
      write_.Reset(RetryOnEintr([&] { return fcntl(read_.get(), F_DUPFD_CLOEXEC, 0); }));
    } else {
      read_ = OpenPrivateDescription(auth.read_fd, O_RDONLY, err);
      if (!read_.valid()) return false;
      write_ = OpenPrivateDescription(auth.write_fd, O_WRONLY, err);
    }
    if (!write_.valid()) {
      if (err->empty()) *err = std::string("cannot open the jobserver: ") + strerror(errno);
      return false;
    }
    poll_ = new uv_poll_t;
    uv_poll_init(loop_, poll_, read_.get());
    poll_->data = this;
    return true;
  }

  void SetWanted(int count) override {
    wanted_ = losing() ? 0 : std::max(count, 0);
    if (!poll_) return;
    if (wanted_ > 0 && !polling_) uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (wanted_ == 0 && polling_) uv_poll_stop(poll_);
    polling_ = wanted_ > 0;
  }

  bool Release(std::string* err) override {
    if (lost()) return true;  // the pool is gone: there is nobody to give it to
    if (bytes_.empty()) {
      *err = "internal: a lease was given back that was never taken";
      return false;
    }
    char byte = bytes_.back();
    ssize_t n = RetryOnEintr([&] { return write(write_.get(), &byte, 1); });
    if (n != 1) {
      // EPIPE: nobody reads the pipe tokens go back into any more (its
      // server, a jobbridge root, has ended). jobbridge ignores SIGPIPE.
      if (n < 0 && errno == EPIPE) {
        LoseLater("nobody reads the outer jobserver's pipe any more: whoever served it has ended");
        return true;
      }
      *err = std::string("cannot write a token back to the outer jobserver: ") +
             (n < 0 ? strerror(errno) : "short write");
      return false;
    }
    bytes_.pop_back();
    return true;
  }

  int leased() const override { return static_cast<int>(bytes_.size()); }

  bool Close(std::string* err) override {
    SetWanted(0);
    bool ok = true;
    while (ok && !bytes_.empty() && !losing()) ok = Release(err);
    if (!ok) {
      *err += " (" + std::to_string(bytes_.size()) + " token(s) not given back)";
    }
    CloseAndDelete(poll_);
    poll_ = nullptr;
    CloseTimer();
    return ok;
  }

 private:
  static void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
    static_cast<LegacyUpstream*>(handle->data)->ReadTokens();
  }

  void DropAll() override {
    SetWanted(0);
    bytes_.clear();
  }

  void ReadTokens() {
    // Other readers race for the same tokens: EAGAIN is "none after all".
    char buffer[64];
    size_t want = std::min(sizeof buffer, static_cast<size_t>(std::max(wanted_, 0)));
    if (want == 0) return;
    ssize_t n = RetryOnEintr([&] { return read(read_.get(), buffer, want); });
    if (n == 0) {
      // No process holds a write end any more: the server that filled the
      // pipe (a jobbridge root keeps the only one) has ended.
      return Lose("the outer jobserver's pipe has no writer left: whoever served it has ended");
    }
    for (ssize_t i = 0; i < n; ++i) {
      bytes_.push_back(buffer[i]);
      ++total_;
      SetWanted(wanted_ - 1);
      delegate_->OnLease();  // may call SetWanted and Release
    }
  }

  UniqueFd read_, write_;
  uv_poll_t* poll_ = nullptr;  // freed in its close callback
  bool polling_ = false;
  int wanted_ = 0;
  std::vector<char> bytes_;  // one per lease held: the byte read
};

// One connection per request and per lease. A request is withdrawn by
// closing its connection; a lease is given back the same way.
class SocketUpstream : public UpstreamBase {
 public:
  SocketUpstream(uv_loop_t* loop, Delegate* delegate, std::string path)
      : UpstreamBase(loop, delegate), path_(std::move(path)) {}

  void SetWanted(int count) override {
    wanted_ = count;
    while (!lost() && static_cast<int>(pending_.size()) > wanted_) {
      Drop(&pending_, pending_.size() - 1);
    }
    while (!losing() && static_cast<int>(pending_.size()) < wanted_) {
      if (!Connect()) break;
    }
  }

  bool Release(std::string* err) override {
    if (lost()) return true;  // the root is gone: there is nobody to give it to
    if (leases_.empty()) {
      *err = "internal: a lease was given back that was never taken";
      return false;
    }
    Drop(&leases_, leases_.size() - 1);
    return true;
  }

  int leased() const override { return static_cast<int>(leases_.size()); }

  bool Close(std::string* /*err*/) override {
    DropAll();
    CloseTimer();
    return true;
  }

 private:
  struct Connection {
    SocketUpstream* owner;
    UniqueFd fd;
    uv_poll_t* poll = nullptr;
  };
  using Connections = std::vector<std::unique_ptr<Connection>>;

  static void OnReadable(uv_poll_t* handle, int /*status*/, int /*events*/) {
    auto* connection = static_cast<Connection*>(handle->data);
    connection->owner->ReadFrom(connection);
  }

  void OnTimerFired() override { SetWanted(wanted_); }  // retry connecting

  // Starts one request. Returns false when none can be started now.
  bool Connect() {
    UniqueFd fd = ConnectUnix(path_);
    if (!fd.valid()) {
      // A full backlog, or out of fds for a moment: try again soon.
      if (errno == EAGAIN || errno == EMFILE || errno == ENFILE) return RetryLater();
      LoseLater("cannot connect to " + path_ + ": " + strerror(errno));
      return false;
    }
    auto connection = std::make_unique<Connection>(Connection{this, std::move(fd)});
    connection->poll = new uv_poll_t;
    uv_poll_init(loop_, connection->poll, connection->fd.get());
    connection->poll->data = connection.get();
    uv_poll_start(connection->poll, UV_READABLE | UV_DISCONNECT, OnReadable);
    pending_.push_back(std::move(connection));
    return true;
  }

  bool RetryLater() {
    StartTimer(10);
    return false;
  }

  void ReadFrom(Connection* connection) {
    char byte = 0;
    ssize_t n = RetryOnEintr([&] { return read(connection->fd.get(), &byte, 1); });
    if (n < 0 && errno == EAGAIN) return;
    bool granted_now = n == 1 && Move(&pending_, connection, &leases_);
    if (granted_now) {
      ++total_;
      delegate_->OnLease();
      return;
    }
    if (n == 1) return;  // a byte beyond the grant: the protocol has none; ignored
    Lose("the socket root " + path_ + " closed the connection" +
         (n < 0 ? std::string(" (") + strerror(errno) + ")" : std::string()) +
         ": it has ended, was killed, or lost its own budget");
  }

  // Moves `connection` from `from` to `to`. Returns false when it is not in `from`.
  static bool Move(Connections* from, Connection* connection, Connections* to) {
    for (size_t i = 0; i < from->size(); ++i) {
      if ((*from)[i].get() != connection) continue;
      to->push_back(std::move((*from)[i]));
      from->erase(from->begin() + static_cast<long>(i));
      return true;
    }
    return false;
  }

  static void Drop(Connections* list, size_t index) {
    Connection* connection = (*list)[index].get();
    CloseAndDelete(connection->poll);  // stops watching at once
    list->erase(list->begin() + static_cast<long>(index));
  }

  void DropAll() override {
    while (!pending_.empty()) Drop(&pending_, pending_.size() - 1);
    while (!leases_.empty()) Drop(&leases_, leases_.size() - 1);
  }

  std::string path_;
  Connections pending_;  // requests, oldest first
  Connections leases_;
  int wanted_ = 0;
};

}  // namespace

std::unique_ptr<Upstream> Upstream::Create(uv_loop_t* loop, const OuterBudget& outer,
                                           Delegate* delegate, std::string* err) {
  if (outer.kind == OuterBudget::Kind::kSocket) {
    return std::make_unique<SocketUpstream>(loop, delegate, outer.socket_path);
  }
  if (outer.kind == OuterBudget::Kind::kSysvsem) {
    return CreateSemaphoreUpstream(loop, outer.semaphore_set, delegate);
  }
  auto upstream = std::make_unique<LegacyUpstream>(loop, delegate);
  if (!upstream->Open(outer.legacy, err)) {
    upstream->Close(err);
    return nullptr;
  }
  return upstream;
}

}  // namespace jobbridge
