// Passing fds over a SOCK_SEQPACKET socketpair, within this process and to a
// forked child: the received fds are the same open files, close-on-exec, and
// no fd that arrives with a refused message stays open.
#include "util/fd_passing.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "fd_test_util.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

using test_util::IsCloexec;
using test_util::ListDir;

struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

Pipe MakePipe(int flags = O_CLOEXEC) {
  int ends[2];
  EXPECT_EQ(pipe2(ends, flags), 0) << strerror(errno);
  return Pipe{UniqueFd(ends[0]), UniqueFd(ends[1])};
}

bool SameFile(int a, int b) {
  struct stat sa {};
  struct stat sb {};
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// The read end of a pipe reports that every write end is closed, now.
bool WritersGone(int read_end) {
  pollfd p{read_end, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

size_t OpenFdCount() { return ListDir("/proc/self/fd").size(); }

class FdPassingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int ends[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ends), 0) << strerror(errno);
    sender_.Reset(ends[0]);
    receiver_.Reset(ends[1]);
  }

  UniqueFd sender_;
  UniqueFd receiver_;
  std::string err_;
};

TEST_F(FdPassingTest, PassesPipeEndsThatAreTheSamePipes) {
  std::vector<Pipe> pipes;
  for (int i = 0; i < 3; ++i) pipes.push_back(MakePipe());
  ASSERT_TRUE(SendFds(
      sender_.get(), "pool",
      {pipes[0].write_end.get(), pipes[1].write_end.get(), pipes[2].write_end.get()}, &err_))
      << err_;

  std::string message;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(ReceiveFds(receiver_.get(), &message, &fds, 3, &err_)) << err_;
  EXPECT_EQ(message, "pool");
  ASSERT_EQ(fds.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    EXPECT_NE(fds[i].get(), pipes[i].write_end.get());              // a new fd...
    EXPECT_TRUE(SameFile(fds[i].get(), pipes[i].write_end.get()));  // ...on the same pipe
    char byte = static_cast<char>('a' + i);
    ASSERT_EQ(write(fds[i].get(), &byte, 1), 1) << strerror(errno);
    char got = 0;
    ASSERT_EQ(read(pipes[i].read_end.get(), &got, 1), 1) << strerror(errno);
    EXPECT_EQ(got, byte);
  }
}

TEST_F(FdPassingTest, ReceivedFdsAreCloseOnExec) {
  Pipe pipe = MakePipe(0);  // not close-on-exec here: the flag must come from the receiving
  ASSERT_FALSE(IsCloexec(pipe.read_end.get()));
  ASSERT_TRUE(SendFds(sender_.get(), "x", {pipe.read_end.get(), pipe.write_end.get()}, &err_))
      << err_;
  std::string message;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(ReceiveFds(receiver_.get(), &message, &fds, 2, &err_)) << err_;
  ASSERT_EQ(fds.size(), 2u);
  for (const UniqueFd& fd : fds) EXPECT_TRUE(IsCloexec(fd.get())) << fd.get();
}

TEST_F(FdPassingTest, SendsAMessageWithoutFds) {
  ASSERT_TRUE(SendFds(sender_.get(), "no fds today", {}, &err_)) << err_;
  std::string message;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(ReceiveFds(receiver_.get(), &message, &fds, 4, &err_)) << err_;
  EXPECT_EQ(message, "no fds today");
  EXPECT_TRUE(fds.empty());
}

TEST_F(FdPassingTest, SendsTheLongestMessage) {
  std::string long_message(kMaxFdMessageSize, 'm');
  long_message.back() = 'z';
  Pipe pipe = MakePipe();
  ASSERT_TRUE(SendFds(sender_.get(), long_message, {pipe.write_end.get()}, &err_)) << err_;
  std::string message;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(ReceiveFds(receiver_.get(), &message, &fds, 1, &err_)) << err_;
  EXPECT_EQ(message, long_message);
  ASSERT_EQ(fds.size(), 1u);
  EXPECT_TRUE(SameFile(fds[0].get(), pipe.write_end.get()));
}

TEST_F(FdPassingTest, RefusesBadArgumentsAndSendsNothing) {
  Pipe pipe = MakePipe();
  EXPECT_FALSE(SendFds(sender_.get(), "", {pipe.write_end.get()}, &err_));
  EXPECT_NE(err_.find("1 to 4096"), std::string::npos) << err_;
  err_.clear();
  EXPECT_FALSE(SendFds(sender_.get(), std::string(kMaxFdMessageSize + 1, 'm'), {}, &err_));
  EXPECT_NE(err_.find("1 to 4096"), std::string::npos) << err_;
  err_.clear();
  std::vector<int> too_many(kMaxPassedFds + 1, pipe.write_end.get());
  EXPECT_FALSE(SendFds(sender_.get(), "x", too_many, &err_));
  EXPECT_NE(err_.find("at most 253"), std::string::npos) << err_;

  char byte;
  EXPECT_EQ(recv(receiver_.get(), &byte, 1, MSG_DONTWAIT), -1);
  EXPECT_EQ(errno, EAGAIN);
}

// More fds than the receiver allows: the message is refused and every fd
// that arrived with it is closed. max_fds 1 leaves room for 2 fds in the
// padded control buffer, so 2 fds exercise the count check and 3 MSG_CTRUNC.
struct TooMany {
  size_t sent;
  size_t max_fds;
};

void PrintTo(const TooMany& p, std::ostream* os) {
  *os << p.sent << " fds sent, max_fds " << p.max_fds;
}

class FdPassingTooManyTest : public FdPassingTest, public ::testing::WithParamInterface<TooMany> {};

TEST_P(FdPassingTooManyTest, FailsWithoutLeaking) {
  std::vector<Pipe> pipes;
  std::vector<int> write_ends;
  for (size_t i = 0; i < GetParam().sent; ++i) {
    pipes.push_back(MakePipe());
    write_ends.push_back(pipes.back().write_end.get());
  }
  ASSERT_TRUE(SendFds(sender_.get(), "pool", write_ends, &err_)) << err_;
  // Only the socket holds the write ends now.
  for (Pipe& pipe : pipes) pipe.write_end.Reset();

  size_t before = OpenFdCount();
  std::string message = "stale";
  std::vector<UniqueFd> fds;
  fds.emplace_back();
  EXPECT_FALSE(ReceiveFds(receiver_.get(), &message, &fds, GetParam().max_fds, &err_));
  EXPECT_NE(err_.find("more fds than"), std::string::npos) << err_;
  EXPECT_EQ(OpenFdCount(), before);
  EXPECT_TRUE(message.empty());
  EXPECT_TRUE(fds.empty());
  for (Pipe& pipe : pipes) EXPECT_TRUE(WritersGone(pipe.read_end.get()));
}

INSTANTIATE_TEST_SUITE_P(FdPassing, FdPassingTooManyTest,
                         ::testing::Values(TooMany{3, 1}, TooMany{2, 1}, TooMany{1, 0},
                                           TooMany{5, 3}));

// A receiver at its fd limit gets fewer fds than were sent (the kernel sets
// only MSG_CTRUNC): it says it is out of fds, not that too many came.
TEST_F(FdPassingTest, AReceiverOutOfFdsSaysSo) {
  std::vector<Pipe> pipes;
  std::vector<int> write_ends;
  for (int i = 0; i < 3; ++i) {
    pipes.push_back(MakePipe());
    write_ends.push_back(pipes.back().write_end.get());
  }
  ASSERT_TRUE(SendFds(sender_.get(), "pool", write_ends, &err_)) << err_;
  for (Pipe& pipe : pipes) pipe.write_end.Reset();
  pid_t child = fork();
  ASSERT_GE(child, 0) << strerror(errno);
  if (child == 0) {
    // Room for one more fd only: the limit is the lowest free fd plus one.
    int lowest = dup(0);
    if (lowest < 0) _exit(2);
    close(lowest);
    rlimit limit{static_cast<rlim_t>(lowest) + 1, static_cast<rlim_t>(lowest) + 1};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(3);
    std::string message;
    std::vector<UniqueFd> fds;
    std::string err;
    if (ReceiveFds(receiver_.get(), &message, &fds, 3, &err)) _exit(4);
    if (err.find("received only 1 of the fds sent: this process is out of fds") ==
        std::string::npos) {
      _exit(5);
    }
    _exit(fds.empty() ? 0 : 6);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child) << strerror(errno);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2-3: set-up, 4: received, 5: the wrong message, 6: fds";
  for (Pipe& pipe : pipes) EXPECT_TRUE(WritersGone(pipe.read_end.get()));
}

TEST_F(FdPassingTest, ReportsEof) {
  sender_.Reset();
  std::string message;
  std::vector<UniqueFd> fds;
  EXPECT_FALSE(ReceiveFds(receiver_.get(), &message, &fds, 3, &err_));
  EXPECT_EQ(err_, "the peer closed the connection");
}

TEST_F(FdPassingTest, PassesAnFdToAForkedChild) {
  pid_t child = fork();
  ASSERT_GE(child, 0) << strerror(errno);
  if (child == 0) {
    // The child has no copy of the pipe (made after the fork) but the one it
    // receives. If the parent fails before sending, its end closes: EOF here.
    sender_.Reset();
    std::string message;
    std::vector<UniqueFd> fds;
    std::string err;
    if (!ReceiveFds(receiver_.get(), &message, &fds, 1, &err)) _exit(2);
    if (message != "write here" || fds.size() != 1) _exit(3);
    char byte = '!';
    _exit(write(fds[0].get(), &byte, 1) == 1 ? 0 : 4);
  }
  receiver_.Reset();
  Pipe pipe = MakePipe();
  bool sent = SendFds(sender_.get(), "write here", {pipe.write_end.get()}, &err_);
  pipe.write_end.Reset();
  sender_.Reset();
  EXPECT_TRUE(sent) << err_;

  char got = 0;
  EXPECT_EQ(read(pipe.read_end.get(), &got, 1), 1) << strerror(errno);
  EXPECT_EQ(got, '!');
  // The child's received copy was the last writer: it has exited.
  EXPECT_EQ(read(pipe.read_end.get(), &got, 1), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child) << strerror(errno);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace jobbridge
