// The client library against a real legacy pool: an anonymous pipe named as
// "R,W" in MAKEFLAGS, or a FIFO named as "fifo:PATH". FIONREAD counts the
// tokens, and the bytes read back show which values the client wrote.
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "client_test_support.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace client_test {
namespace {

int Count(int fd) {
  int n = -1;
  EXPECT_EQ(ioctl(fd, FIONREAD, &n), 0) << strerror(errno);
  return n;
}

// Reads exactly the tokens in the pool now (a blocking fd cannot hang then).
std::string Contents(int fd) {
  std::string bytes(static_cast<size_t>(Count(fd)), '\0');
  if (!bytes.empty()) {
    EXPECT_EQ(read(fd, bytes.data(), bytes.size()), ssize_t(bytes.size()));
  }
  return bytes;
}

class LegacyClientTest : public ClientTest {
 protected:
  // A pipe holding `tokens`, as make would pass it down.
  void MakePipe(const std::string& tokens) {
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0) << strerror(errno);
    read_.Reset(fds[0]);
    write_.Reset(fds[1]);
    ASSERT_EQ(write(write_.get(), tokens.data(), tokens.size()), ssize_t(tokens.size()));
  }
  std::string PipeAuth() {
    return std::to_string(read_.get()) + "," + std::to_string(write_.get());
  }

  // Opens from MAKEFLAGS=`makeflags`; returns the result, *client on success.
  int OpenWithMakeflags(const std::string& makeflags, jobbridge_client** client) {
    setenv("MAKEFLAGS", makeflags.c_str(), 1);
    why_[0] = '\0';
    return jobbridge_client_open_env(client, why_, sizeof why_);
  }

  jobbridge_slot* Take(jobbridge_client* client) {
    jobbridge_slot* slot = nullptr;
    EXPECT_EQ(jobbridge_client_acquire(client, 0, &slot), 0);
    return slot;
  }

  UniqueFd read_, write_;
  char why_[512] = "";
};

TEST_F(LegacyClientTest, ImplicitSlotFirstThenTokensWrittenBackAsRead) {
  MakePipe("xG");
  int read_flags = fcntl(read_.get(), F_GETFL), write_flags = fcntl(write_.get(), F_GETFL);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("-j3 --jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_LEGACY_PIPE);
  char text[256];
  jobbridge_client_describe(client, text, sizeof text);
  EXPECT_EQ(std::string(text), "legacy pipe " + PipeAuth() + " (from MAKEFLAGS)");

  jobbridge_slot* implicit = Take(client);
  ASSERT_NE(implicit, nullptr);
  EXPECT_EQ(Count(read_.get()), 2);  // the implicit slot reads nothing
  jobbridge_slot* x = Take(client);
  EXPECT_EQ(Count(read_.get()), 1);
  jobbridge_slot* g = Take(client);
  EXPECT_EQ(Count(read_.get()), 0);
  jobbridge_slot* none = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &none), -ETIMEDOUT);
  EXPECT_EQ(jobbridge_client_acquire(client, 20, &none), -ETIMEDOUT);
  ExpectNewFdsCloexec({});

  EXPECT_EQ(jobbridge_slot_release(g), 0);
  EXPECT_EQ(jobbridge_slot_release(x), 0);
  EXPECT_EQ(Count(read_.get()), 2);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  EXPECT_EQ(Count(read_.get()), 2);        // the implicit slot writes nothing
  EXPECT_EQ(Contents(read_.get()), "Gx");  // each byte as it was read, not '+'

  // The implicit slot is free again: it is granted with the pool empty.
  implicit = Take(client);
  ASSERT_NE(implicit, nullptr);
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &none), -ETIMEDOUT);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  jobbridge_client_close(client);

  EXPECT_EQ(fcntl(read_.get(), F_GETFL), read_flags);
  EXPECT_EQ(fcntl(write_.get(), F_GETFL), write_flags);
  EXPECT_EQ(read_flags & O_NONBLOCK, 0);
  ExpectNoFdLeft({read_.get(), write_.get()});
}

TEST_F(LegacyClientTest, OverrideZeroReadsATokenForTheFirstSlot) {
  MakePipe("x");
  setenv("JOBBRIDGE_IMPLICIT_SLOT", "0", 1);
  setenv("MAKELEVEL", "1", 1);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("-j2 --jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  char text[256];
  jobbridge_client_describe(client, text, sizeof text);
  EXPECT_EQ(std::string(text),
            "legacy pipe " + PipeAuth() + " (from MAKEFLAGS) (without the implicit slot)");
  jobbridge_slot* first = Take(client);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(Count(read_.get()), 0);  // it read the token
  jobbridge_slot* none = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &none), -ETIMEDOUT);
  EXPECT_EQ(jobbridge_slot_release(first), 0);
  EXPECT_EQ(Contents(read_.get()), "x");
  jobbridge_client_close(client);

  // open_legacy follows the override too; "1" keeps the legacy rule.
  ASSERT_EQ(jobbridge_client_open_legacy(PipeAuth().c_str(), &client, why_, sizeof why_), 0)
      << Why(why_);
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &none), -ETIMEDOUT);  // the pool is empty
  jobbridge_client_close(client);
  setenv("JOBBRIDGE_IMPLICIT_SLOT", "1", 1);
  ASSERT_EQ(jobbridge_client_open_legacy(PipeAuth().c_str(), &client, why_, sizeof why_), 0)
      << Why(why_);
  jobbridge_slot* implicit = Take(client);
  ASSERT_NE(implicit, nullptr);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  jobbridge_client_close(client);
  ExpectNoFdLeft({read_.get(), write_.get()});
}

TEST_F(LegacyClientTest, WaiterWakesForATokenOrTheImplicitSlot) {
  MakePipe("");
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("--jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  jobbridge_slot* implicit = Take(client);
  ASSERT_NE(implicit, nullptr);

  // A token another process writes.
  jobbridge_slot* slot = nullptr;
  int result = 1;
  std::thread waiter([&] { result = jobbridge_client_acquire(client, kEventMs, &slot); });
  ASSERT_EQ(write(write_.get(), "Z", 1), 1);
  waiter.join();
  ASSERT_EQ(result, 0);
  EXPECT_EQ(Count(read_.get()), 0);

  // The implicit slot, given back by another thread.
  jobbridge_slot* second = nullptr;
  waiter = std::thread([&] { result = jobbridge_client_acquire(client, kEventMs, &second); });
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  waiter.join();
  ASSERT_EQ(result, 0);
  EXPECT_EQ(Count(read_.get()), 0);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  EXPECT_EQ(jobbridge_slot_release(second), 0);
  EXPECT_EQ(Contents(read_.get()), "Z");
  jobbridge_client_close(client);
}

TEST_F(LegacyClientTest, UnusableFdsAreEbadf) {
  jobbridge_client* client = nullptr;
  MakePipe("");
  std::string closed = PipeAuth();
  read_.Reset();
  write_.Reset();
  EXPECT_EQ(OpenWithMakeflags("-j2 --jobserver-auth=" + closed, &client), -EBADF);
  EXPECT_NE(std::string(why_).find("not open"), std::string::npos) << why_;
  EXPECT_EQ(client, nullptr);

  UniqueFd file(open((dir_ + "/file").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  std::string fd = std::to_string(file.get());
  EXPECT_EQ(OpenWithMakeflags("--jobserver-auth=" + fd + "," + fd, &client), -EBADF);
  EXPECT_NE(std::string(why_).find("regular file"), std::string::npos) << why_;

  int pair[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  EXPECT_EQ(
      OpenWithMakeflags(
          "--jobserver-auth=" + std::to_string(a.get()) + "," + std::to_string(b.get()), &client),
      -EBADF);
  EXPECT_NE(std::string(why_).find("socket"), std::string::npos) << why_;
}

// jobbridge hands out R and W of two different pipes: tokens come from one and
// go back into the other, which only the server reads. When the server is
// gone, writing back fails with EPIPE and must not kill the client (SIGPIPE).
TEST_F(LegacyClientTest, ReadAndWriteEndsOfTwoPipes) {
  int tokens[2], returns[2];
  ASSERT_EQ(pipe2(tokens, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(returns, O_CLOEXEC), 0);
  UniqueFd feed(tokens[1]), collected(returns[0]);
  read_.Reset(tokens[0]);
  write_.Reset(returns[1]);
  ASSERT_EQ(write(feed.get(), "xy", 2), 2);
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("--jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  jobbridge_slot* implicit = Take(client);
  jobbridge_slot* x = Take(client);
  jobbridge_slot* y = Take(client);
  EXPECT_EQ(Count(read_.get()), 0);
  EXPECT_EQ(jobbridge_slot_release(x), 0);
  EXPECT_EQ(Contents(collected.get()), "x");
  EXPECT_EQ(Count(read_.get()), 0);

  collected.Reset();  // the server is gone
  EXPECT_EQ(jobbridge_slot_release(y), -EPIPE);
  sigset_t pending;
  ASSERT_EQ(sigpending(&pending), 0);
  EXPECT_EQ(sigismember(&pending, SIGPIPE), 0);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  jobbridge_client_close(client);
}

TEST_F(LegacyClientTest, NoJobserverIsEnoent) {
  jobbridge_client* client = nullptr;
  EXPECT_EQ(jobbridge_client_open_env(&client, why_, sizeof why_), -ENOENT);
  EXPECT_EQ(OpenWithMakeflags("-j4", &client), -ENOENT);
  EXPECT_EQ(OpenWithMakeflags("-j --jobserver-auth=-2,-2", &client), -ENOENT);
  EXPECT_NE(std::string(why_).find("-2,-2"), std::string::npos) << why_;
  EXPECT_EQ(OpenWithMakeflags("--jobserver-auth=nonsense", &client), -EINVAL);

  // The first of CARGO_MAKEFLAGS, MAKEFLAGS, MFLAGS that is set counts, even empty.
  MakePipe("x");
  setenv("CARGO_MAKEFLAGS", "", 1);
  EXPECT_EQ(OpenWithMakeflags("--jobserver-auth=" + PipeAuth(), &client), -ENOENT);
  unsetenv("CARGO_MAKEFLAGS");
  unsetenv("MAKEFLAGS");
  setenv("MFLAGS", ("-j --jobserver-fds=" + PipeAuth()).c_str(), 1);
  ASSERT_EQ(jobbridge_client_open_env(&client, why_, sizeof why_), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_LEGACY_PIPE);
  jobbridge_client_close(client);
}

TEST_F(LegacyClientTest, FifoPool) {
  std::string path = dir_ + "/pool.fifo";
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0) << strerror(errno);
  UniqueFd pool(open(path.c_str(), O_RDWR | O_CLOEXEC));  // the server's end
  ASSERT_TRUE(pool.valid());
  ASSERT_EQ(write(pool.get(), "xG", 2), 2);
  int pool_flags = fcntl(pool.get(), F_GETFL);

  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("-j3 --jobserver-auth=fifo:" + path, &client), 0) << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_LEGACY_FIFO);
  jobbridge_slot* implicit = Take(client);
  EXPECT_EQ(Count(pool.get()), 2);
  jobbridge_slot* x = Take(client);
  jobbridge_slot* g = Take(client);
  EXPECT_EQ(Count(pool.get()), 0);
  jobbridge_slot* none = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &none), -ETIMEDOUT);
  EXPECT_EQ(jobbridge_slot_release(g), 0);
  EXPECT_EQ(jobbridge_slot_release(x), 0);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  EXPECT_EQ(Contents(pool.get()), "Gx");
  jobbridge_client_close(client);
  EXPECT_EQ(fcntl(pool.get(), F_GETFL), pool_flags);
  ExpectNoFdLeft({pool.get()});

  EXPECT_EQ(OpenWithMakeflags("--jobserver-auth=fifo:" + dir_ + "/missing", &client), -EBADF);
  UniqueFd file(open((dir_ + "/file").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  EXPECT_EQ(OpenWithMakeflags("--jobserver-auth=fifo:" + dir_ + "/file", &client), -EBADF);
  EXPECT_NE(std::string(why_).find("regular file"), std::string::npos) << why_;
}

TEST_F(LegacyClientTest, OpenLegacyTakesAnAuthValue) {
  MakePipe("x");
  jobbridge_client* client = nullptr;
  ASSERT_EQ(jobbridge_client_open_legacy(PipeAuth().c_str(), &client, why_, sizeof why_), 0)
      << Why(why_);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_LEGACY_PIPE);
  jobbridge_client_close(client);
  EXPECT_EQ(jobbridge_client_open_legacy("-2,-2", &client, why_, sizeof why_), -ENOENT);
  for (const char* bad : {"", "3", "fifo:", "3,x", "3,4 5"}) {
    EXPECT_EQ(jobbridge_client_open_legacy(bad, &client, why_, sizeof why_), -EINVAL) << bad;
  }
  EXPECT_EQ(jobbridge_client_open_legacy(nullptr, &client, nullptr, 0), -EINVAL);
}

TEST_F(LegacyClientTest, PendingAcquireFollowsTokensAndTheImplicitSlot) {
  MakePipe("");
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("--jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  jobbridge_pending *first = nullptr, *second = nullptr;
  jobbridge_slot *implicit = nullptr, *token = nullptr, *again = nullptr;

  ASSERT_EQ(jobbridge_client_acquire_start(client, &first), 0);
  EXPECT_TRUE(Readable(jobbridge_pending_fd(first)));  // the implicit slot is free
  ASSERT_EQ(jobbridge_client_acquire_finish(first, &implicit), 0);

  ASSERT_EQ(jobbridge_client_acquire_start(client, &first), 0);
  ASSERT_EQ(jobbridge_client_acquire_start(client, &second), 0);
  EXPECT_NE(jobbridge_pending_fd(first), jobbridge_pending_fd(second));
  EXPECT_TRUE(IsCloexec(jobbridge_pending_fd(first)));
  EXPECT_FALSE(Readable(jobbridge_pending_fd(first)));
  EXPECT_EQ(jobbridge_client_acquire_finish(first, &token), -EAGAIN);
  ASSERT_EQ(write(write_.get(), "Z", 1), 1);
  EXPECT_TRUE(Readable(jobbridge_pending_fd(first), kEventMs));
  ASSERT_EQ(jobbridge_client_acquire_finish(first, &token), 0);
  EXPECT_EQ(Count(read_.get()), 0);

  EXPECT_FALSE(Readable(jobbridge_pending_fd(second)));
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  EXPECT_TRUE(Readable(jobbridge_pending_fd(second), kEventMs));
  ASSERT_EQ(jobbridge_client_acquire_finish(second, &again), 0);
  EXPECT_EQ(Count(read_.get()), 0);

  EXPECT_EQ(jobbridge_slot_release(token), 0);
  EXPECT_EQ(Count(read_.get()), 1);
  ASSERT_EQ(jobbridge_client_acquire_start(client, &first), 0);
  jobbridge_client_acquire_abandon(first);  // starting took nothing
  EXPECT_EQ(Count(read_.get()), 1);
  EXPECT_EQ(jobbridge_slot_release(again), 0);
  jobbridge_client_close(client);
  ExpectNoFdLeft({read_.get(), write_.get()});
}

// Threads share one client: never more slots out than the budget (the
// implicit slot plus the tokens), and every token back at the end.
TEST_F(LegacyClientTest, ThreadsNeverExceedTheBudget) {
  MakePipe("ab");
  jobbridge_client* client = nullptr;
  ASSERT_EQ(OpenWithMakeflags("--jobserver-auth=" + PipeAuth(), &client), 0) << Why(why_);
  std::atomic<int> active{0}, most{0}, failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 300; ++i) {
        jobbridge_slot* slot = nullptr;
        if (jobbridge_client_acquire(client, kEventMs, &slot) != 0) {
          ++failures;
          return;
        }
        int now = ++active;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        --active;
        if (jobbridge_slot_release(slot) != 0) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 1);
  std::string left = Contents(read_.get());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, "ab");
  jobbridge_client_close(client);
}

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
