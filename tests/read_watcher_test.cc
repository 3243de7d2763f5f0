// ReadWatcher against a real loop and real pipes, read and written by forked
// children: a read by another process calls back, a write does not (unless
// asked for), Stop leaves no handle and no fd open. Every test waits for the
// child or the loop (never for a sleep) and ends with uv_loop_close(loop) == 0.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "fd_test_util.h"
#include "loop_test_util.h"
#include "read_watcher-posix.h"
#include "util/eintr.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::Queued;
using test_util::RunLoopUntil;

bool ReadByte(int fd) {
  char byte;
  return RetryOnEintr([&] { return read(fd, &byte, 1); }) == 1;
}

bool WriteByte(int fd) {
  return RetryOnEintr([&] { return write(fd, "t", 1); }) == 1;
}

// Runs `body` in a forked child, which exits 0 if it returns true.
pid_t Fork(const std::function<bool()>& body) {
  pid_t pid = fork();
  if (pid == 0) _exit(body() ? 0 : 1);
  return pid;
}

// Waits for the child; true if it exited 0.
bool Reap(pid_t pid) {
  int status = 0;
  return pid > 0 && RetryOnEintr([&] { return waitpid(pid, &status, 0); }) == pid &&
         WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

struct Pipe {
  UniqueFd read, write;
};

Pipe MakePipe(int bytes) {
  int ends[2] = {-1, -1};
  EXPECT_EQ(pipe2(ends, O_CLOEXEC), 0) << strerror(errno);
  Pipe p{UniqueFd(ends[0]), UniqueFd(ends[1])};
  for (int i = 0; i < bytes; ++i) EXPECT_TRUE(WriteByte(p.write.get()));
  return p;
}

size_t InotifyFds() { return test_util::FdsOpenOn("anon_inode:inotify").size(); }

class ReadWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    std::string err;
    hub_ = ReadWatchHub::Start(&loop_, &err);
    ASSERT_NE(hub_, nullptr) << err;
  }

  void TearDown() override {
    if (!closed_) CloseLoop();
  }

  // Starts watching `fd`, counting callbacks.
  void Watch(int fd) {
    std::string err;
    watcher_ = ReadWatcher::Start(
        hub_.get(), fd, [this] { ++calls_; }, &err);
    ASSERT_NE(watcher_, nullptr) << err;
  }

  // Stops and destroys the watcher and the hub at once, then checks no
  // handle is left.
  void CloseLoop() {
    if (watcher_) watcher_->Stop();
    watcher_.reset();
    if (hub_) hub_->Stop();
    hub_.reset();
    EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return !uv_loop_alive(&loop_); }))
        << "handles left open";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    closed_ = true;
  }

  // Runs the loop once without blocking: enough to see an inotify event
  // the kernel queued before this call (it queues them inside the syscall).
  void RunOnce() { uv_run(&loop_, UV_RUN_NOWAIT); }

  uv_loop_t loop_{};
  std::unique_ptr<ReadWatchHub> hub_;
  std::unique_ptr<ReadWatcher> watcher_;
  int calls_ = 0;
  bool closed_ = false;
};

TEST_F(ReadWatcherTest, ReadByAnotherProcessCallsBack) {
  Pipe p = MakePipe(3);
  Watch(p.write.get());  // the end the bridge keeps for a token pipe
  RunOnce();
  EXPECT_EQ(calls_, 0);

  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; })) << "no callback after a read";
  RunOnce();
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(Queued(p.read.get()), 2);
  EXPECT_TRUE(watcher_->error().empty()) << watcher_->error();
}

TEST_F(ReadWatcherTest, WriteByAnotherProcessDoesNotCallBack) {
  Pipe p = MakePipe(3);
  Pipe written = MakePipe(0), go = MakePipe(0);
  Watch(p.write.get());
  pid_t child = Fork([&] {
    return WriteByte(p.write.get()) && WriteByte(written.write.get()) && ReadByte(go.read.get()) &&
           ReadByte(p.read.get());
  });
  ASSERT_TRUE(ReadByte(written.read.get()));  // its write to the pipe has returned
  RunOnce();
  EXPECT_EQ(calls_, 0) << "a write was reported as a read";
  EXPECT_EQ(Queued(p.read.get()), 4);

  ASSERT_TRUE(WriteByte(go.write.get()));
  ASSERT_TRUE(Reap(child));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; })) << "no callback after a read";
  RunOnce();
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(Queued(p.read.get()), 3);
}

// A token pool whose clients write back into it (ninja by its path) asks
// for writes too.
TEST_F(ReadWatcherTest, WritesCallBackWhenAskedFor) {
  Pipe p = MakePipe(1);
  std::string err;
  watcher_ = ReadWatcher::Start(
      hub_.get(), p.write.get(), [this] { ++calls_; }, &err, ReadWatcher::Watch::kReadsAndWrites);
  ASSERT_NE(watcher_, nullptr) << err;
  ASSERT_TRUE(Reap(Fork([&] { return WriteByte(p.write.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; })) << "no callback after a write";
  EXPECT_EQ(Queued(p.read.get()), 2);
}

TEST_F(ReadWatcherTest, ReadsBeforeTheLoopRunsGiveOneCallback) {
  Pipe p = MakePipe(3);
  Watch(p.read.get());  // either end names the same pipe
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()) && ReadByte(p.read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; }));
  RunOnce();
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(Queued(p.read.get()), 1);

  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 2; }));
  EXPECT_EQ(calls_, 2);
}

TEST_F(ReadWatcherTest, SeesReadsThroughAnotherDescriptionOfAFifo) {
  std::string dir = ::testing::TempDir() + "/jb-read-watcher-XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr) << dir << ": " << strerror(errno);
  std::string fifo = dir + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0) << strerror(errno);
  UniqueFd mine(open(fifo.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(mine.valid()) << strerror(errno);
  ASSERT_TRUE(WriteByte(mine.get()));
  Watch(mine.get());

  ASSERT_TRUE(Reap(Fork([&] {
    UniqueFd theirs(open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    return theirs.valid() && ReadByte(theirs.get());
  })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; }));
  EXPECT_EQ(calls_, 1);
  EXPECT_EQ(Queued(mine.get()), 0);
  EXPECT_EQ(unlink(fifo.c_str()), 0);
  EXPECT_EQ(rmdir(dir.c_str()), 0);
}

TEST_F(ReadWatcherTest, StopLeavesNoHandleNorFdAndNoMoreCallbacks) {
  size_t inotify_before = InotifyFds();  // the hub's
  Pipe p = MakePipe(3);
  Watch(p.write.get());
  EXPECT_EQ(InotifyFds(), inotify_before);
  EXPECT_EQ(hub_->watching(), 1u);
  watcher_->Stop();
  EXPECT_EQ(hub_->watching(), 0u);
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  RunOnce();
  EXPECT_EQ(calls_, 0);
  CloseLoop();  // stops and destroys the hub at once, runs the loop, closes it
  EXPECT_EQ(InotifyFds(), inotify_before - 1);
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  EXPECT_EQ(calls_, 0);
}

TEST_F(ReadWatcherTest, TheCallbackMayStopTheWatcher) {
  Pipe p = MakePipe(3);
  std::string err;
  watcher_ = ReadWatcher::Start(
      hub_.get(), p.write.get(),
      [this] {
        ++calls_;
        watcher_->Stop();
      },
      &err);
  ASSERT_NE(watcher_, nullptr) << err;
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls_ >= 1; }));
  EXPECT_EQ(hub_->watching(), 0u);
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(p.read.get()); })));
  RunOnce();  // the kernel queued that read's event inside the child's read
  EXPECT_EQ(calls_, 1);
}

// Many pipes, one inotify fd: a read on one calls back that one's watcher
// only, and the same pipe cannot be watched twice.
TEST_F(ReadWatcherTest, OneHubWatchesManyPipesApart) {
  size_t inotify_before = InotifyFds();
  constexpr int kPipes = 200;  // more than max_user_instances' default of 128
  std::vector<Pipe> pipes;
  std::vector<std::unique_ptr<ReadWatcher>> watchers;
  std::vector<int> calls(kPipes, 0);
  for (int i = 0; i < kPipes; ++i) {
    pipes.push_back(MakePipe(2));
    std::string err;
    watchers.push_back(ReadWatcher::Start(
        hub_.get(), pipes.back().write.get(), [&calls, i] { ++calls[i]; }, &err));
    ASSERT_NE(watchers.back(), nullptr) << i << ": " << err;
  }
  EXPECT_EQ(InotifyFds(), inotify_before);
  EXPECT_EQ(hub_->watching(), static_cast<size_t>(kPipes));

  std::string err;
  EXPECT_EQ(ReadWatcher::Start(
                hub_.get(), pipes[7].read.get(), [] {}, &err),
            nullptr);
  EXPECT_NE(err.find("already watched"), std::string::npos) << err;

  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(pipes[7].read.get()); })));
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(pipes[150].read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls[7] >= 1 && calls[150] >= 1; }));
  RunOnce();
  for (int i = 0; i < kPipes; ++i) EXPECT_EQ(calls[i], i == 7 || i == 150 ? 1 : 0) << i;

  // A watcher stopped while the pipe lives on sees no more reads; the
  // others still do.
  watchers[7]->Stop();
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(pipes[7].read.get()); })));
  ASSERT_TRUE(Reap(Fork([&] { return ReadByte(pipes[8].read.get()); })));
  EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return calls[8] >= 1; }));
  RunOnce();
  EXPECT_EQ(calls[7], 1);
  for (auto& watcher : watchers) watcher->Stop();
  EXPECT_EQ(hub_->watching(), 0u);
}

TEST_F(ReadWatcherTest, BadFdGivesAClearError) {
  int closed = -1;
  {
    Pipe p = MakePipe(0);
    closed = p.read.get();
  }
  std::string err;
  EXPECT_EQ(ReadWatcher::Start(
                hub_.get(), closed, [] {}, &err),
            nullptr);
  EXPECT_NE(err.find("/proc/self/fd/" + std::to_string(closed)), std::string::npos) << err;
  EXPECT_NE(err.find(strerror(EBADF)), std::string::npos) << err;

  err.clear();
  EXPECT_EQ(ReadWatcher::Start(
                hub_.get(), -1, [] {}, &err),
            nullptr);
  EXPECT_NE(err.find("/proc/self/fd/-1"), std::string::npos) << err;

  err.clear();
  UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  EXPECT_EQ(ReadWatcher::Start(
                hub_.get(), null.get(), [] {}, &err),
            nullptr);
  EXPECT_NE(err.find("not a pipe or FIFO"), std::string::npos) << err;
  EXPECT_NE(err.find("/proc/self/fd/" + std::to_string(null.get())), std::string::npos) << err;
}

}  // namespace
}  // namespace jobbridge
