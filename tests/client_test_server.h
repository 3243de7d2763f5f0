// The server side of docs/PROTOCOL.md as a small thread, for the client
// library's socket-mode tests: client_test.cc checks single calls against it,
// client_threads_socket_test.cc many threads against its ledger (that one
// runs under ThreadSanitizer, so nothing here may pull in libuv).
#pragma once

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "client_test_support.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace client_test {

// Grants up to `slots` slots, one byte per connection, in the order
// connections arrived; end-of-file gives a slot back or drops a request still
// waiting. Its counts are the server's ledger.
class TestServer {
 public:
  struct Counts {
    int accepted = 0;   // connections ever accepted
    int held = 0;       // connections that hold a slot
    int most_held = 0;  // the most that ever held one at once
    int waiting = 0;    // connections that wait for one
    int grants = 0;     // bytes written
    int releases = 0;   // granted connections closed by the client
    int dropped = 0;    // waiting connections closed by the client
    int protocol_errors = 0;
  };

  TestServer(const std::string& path, int slots) : free_(slots) {
    listener_.Reset(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    EXPECT_LT(path.size(), sizeof address.sun_path);
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    EXPECT_EQ(bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0)
        << strerror(errno);
    // Room for every thread of a threaded test to connect at once, even when
    // ThreadSanitizer slows this thread's accepts down.
    EXPECT_EQ(listen(listener_.get(), 64), 0) << strerror(errno);
    wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    thread_ = std::thread([this] { Run(); });
  }

  ~TestServer() {
    Command(kStop);
    thread_.join();
  }

  // Closes the listener and every connection, as a server that dies does.
  void Shutdown() { Command(kShutdown); }

  // Waits until `done` holds for the counts; false after kEventMs.
  bool WaitFor(const std::function<bool(const Counts&)>& done) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, std::chrono::milliseconds(kEventMs),
                             [&] { return done(counts_); });
  }

  Counts counts() {
    std::lock_guard lock(mutex_);
    return counts_;
  }

 private:
  enum CommandKind { kNone, kShutdown, kStop };
  struct Connection {
    UniqueFd fd;
    bool granted = false;
  };

  void Command(CommandKind kind) {
    std::unique_lock lock(mutex_);
    command_ = kind;
    uint64_t one = 1;
    EXPECT_EQ(write(wake_.get(), &one, sizeof one), 8);
    changed_.wait(lock, [&] { return command_ == kNone; });
  }

  void Run() {
    for (;;) {
      std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      for (const Connection& c : connections_) fds.push_back({c.fd.get(), POLLIN, 0});
      if (poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
      std::unique_lock lock(mutex_);
      if (fds[0].revents) {
        uint64_t value;
        EXPECT_EQ(read(wake_.get(), &value, sizeof value), 8);
        CommandKind kind = std::exchange(command_, kNone);
        if (kind != kNone) {
          listener_.Reset();
          connections_.clear();
        }
        changed_.notify_all();
        if (kind == kStop) return;
        if (kind == kShutdown) continue;
      }
      for (size_t i = connections_.size(); i-- > 0;) {
        if (fds[i + 2].revents) ReadFrom(i);
      }
      if (fds[1].revents) Accept();
      Grant();
      changed_.notify_all();
    }
  }

  void Accept() {
    for (;;) {
      int fd = accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) return;
      connections_.push_back({UniqueFd(fd), false});
      ++counts_.accepted;
      ++counts_.waiting;
    }
  }

  void ReadFrom(size_t i) {
    char buffer[16];
    ssize_t n = read(connections_[i].fd.get(), buffer, sizeof buffer);
    if (n > 0) ++counts_.protocol_errors;  // the client only ever closes
    if (n > 0 || (n < 0 && errno == EAGAIN)) return;
    Forget(i);
  }

  // Connection i is gone (the client closed it): its slot comes back, or its
  // request is dropped.
  void Forget(size_t i) {
    if (connections_[i].granted) {
      --counts_.held;
      ++counts_.releases;
      ++free_;
    } else {
      --counts_.waiting;
      ++counts_.dropped;
    }
    connections_.erase(connections_.begin() + static_cast<ptrdiff_t>(i));
  }

  // The oldest waiting connection first: connections_ is in accept order.
  void Grant() {
    for (size_t i = 0; i < connections_.size() && free_ > 0;) {
      Connection& c = connections_[i];
      if (c.granted) {
        ++i;
      } else if (send(c.fd.get(), "+", 1, MSG_NOSIGNAL) == 1) {
        c.granted = true;
        --free_;
        --counts_.waiting;
        counts_.most_held = std::max(counts_.most_held, ++counts_.held);
        ++counts_.grants;
        ++i;
      } else {
        Forget(i);  // closed before its grant: dropped
      }
    }
  }

  int free_;  // only the server thread touches free_, listener_ and connections_
  UniqueFd listener_, wake_;
  std::vector<Connection> connections_;
  std::mutex mutex_;
  std::condition_variable changed_;
  Counts counts_;                // guarded by mutex_
  CommandKind command_ = kNone;  // guarded by mutex_
  std::thread thread_;
};

// A client of the TestServer at a socket in the test's own folder.
class SocketClientTest : public ClientTest {
 protected:
  std::string SocketPath() { return dir_ + "/socket"; }

  jobbridge_client* Open() {
    jobbridge_client* client = nullptr;
    char why[256] = "";
    EXPECT_EQ(jobbridge_client_open_socket(SocketPath().c_str(), &client, why, sizeof why), 0)
        << Why(why);
    return client;
  }
};

}  // namespace client_test
}  // namespace jobbridge
