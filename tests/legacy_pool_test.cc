// The legacy pool against real pipes and FIFOs. The key property: the bridge
// never changes the flags of a description its children share, so the
// inherited ends stay blocking whatever the pool does with its own ends.
#include "endpoints/legacy_pool.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fd_test_util.h"

namespace jobbridge {
namespace {

using test_util::FdsOpenOn;
using test_util::FdTarget;
using test_util::IsCloexec;
using test_util::IsNonBlocking;
using test_util::ListDir;

// A token is ready to read on `fd` now (so a blocking read cannot hang).
bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

class LegacyPoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jobbridge-pool-test-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << templ << ": " << strerror(errno);
    dir_ = templ;
  }
  void TearDown() override {
    for (const std::string& name : ListDir(dir_)) unlink((dir_ + "/" + name).c_str());
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << dir_ << ": " << strerror(errno);
  }

  std::unique_ptr<LegacyPool> Create(LegacyStyle style, int tokens) {
    std::string err;
    std::unique_ptr<LegacyPool> pool = LegacyPool::Create(style, tokens, dir_, &err);
    EXPECT_NE(pool, nullptr) << err;
    return pool;
  }

  int Count(const LegacyPool& pool) {
    std::string err;
    int n = pool.Count(&err);
    EXPECT_GE(n, 0) << err;
    return n;
  }

  int Drain(LegacyPool& pool) {
    std::string err;
    int n = pool.Drain(&err);
    EXPECT_GE(n, 0) << err;
    return n;
  }

  void ExpectInheritedBlocking(const LegacyPool& pool) {
    for (int fd : pool.InheritedFds()) {
      EXPECT_FALSE(IsNonBlocking(fd)) << "fd " << fd << " was made non-blocking";
    }
  }

  std::string dir_;
};

TEST_F(LegacyPoolTest, PipePoolHoldsItsTokens) {
  auto pool = Create(LegacyStyle::kPipe, 5);
  ASSERT_NE(pool, nullptr);
  EXPECT_EQ(Count(*pool), 5);
  JobserverAuth auth = pool->Auth();
  EXPECT_EQ(auth.kind, JobserverAuth::Kind::kPipe);
  EXPECT_EQ(pool->InheritedFds(), (std::vector<int>{auth.read_fd, auth.write_fd}));
  EXPECT_TRUE(auth.fifo_path.empty());
  EXPECT_NE(auth.read_fd, auth.write_fd);
  // Children read tokens from one pipe and return them into another.
  EXPECT_NE(FdTarget(auth.read_fd), FdTarget(auth.write_fd));
  EXPECT_EQ(FdTarget(auth.read_fd).rfind("pipe:", 0), 0u) << FdTarget(auth.read_fd);
  EXPECT_EQ(FdTarget(auth.write_fd).rfind("pipe:", 0), 0u) << FdTarget(auth.write_fd);
  EXPECT_EQ(fcntl(auth.read_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(fcntl(auth.write_fd, F_GETFL) & O_ACCMODE, O_WRONLY);
  ExpectInheritedBlocking(*pool);
  EXPECT_TRUE(ListDir(dir_).empty());  // a pipe pool puts nothing on disk
}

TEST_F(LegacyPoolTest, InheritedFdsAreCloexecInTheParent) {
  auto pool = Create(LegacyStyle::kPipe, 1);
  ASSERT_NE(pool, nullptr);
  for (int fd : pool->InheritedFds()) EXPECT_TRUE(IsCloexec(fd)) << "fd " << fd;
}

TEST_F(LegacyPoolTest, PrivateEndsAreSeparateNonBlockingDescriptions) {
  auto pool = Create(LegacyStyle::kPipe, 2);
  ASSERT_NE(pool, nullptr);
  std::vector<int> inherited = pool->InheritedFds();
  ASSERT_EQ(inherited.size(), 2u);
  // The token pipe: the shared read end, the bridge's feed and its private
  // read description. The returns pipe: the shared write end and the
  // bridge's read end.
  std::vector<int> tokens = FdsOpenOn(FdTarget(inherited[0]));
  std::vector<int> returns = FdsOpenOn(FdTarget(inherited[1]));
  ASSERT_EQ(tokens.size(), 3u);
  ASSERT_EQ(returns.size(), 2u);
  tokens.insert(tokens.end(), returns.begin(), returns.end());
  for (int fd : tokens) {
    EXPECT_TRUE(IsCloexec(fd)) << "fd " << fd;
    bool shared = fd == inherited[0] || fd == inherited[1];
    EXPECT_EQ(IsNonBlocking(fd), !shared) << "fd " << fd;
  }
}

TEST_F(LegacyPoolTest, ReturnedTokensPassThroughTheBridge) {
  auto pool = Create(LegacyStyle::kPipe, 1);
  ASSERT_NE(pool, nullptr);
  int read_fd = pool->InheritedFds().at(0);
  int write_fd = pool->InheritedFds().at(1);
  char byte = 0;
  ASSERT_EQ(read(read_fd, &byte, 1), 1) << strerror(errno);
  ASSERT_EQ(write(write_fd, "G", 1), 1) << strerror(errno);
  // Returned, counted, but not readable by a client until the bridge feeds it.
  EXPECT_EQ(Count(*pool), 1);
  EXPECT_FALSE(Readable(read_fd));
  EXPECT_TRUE(Readable(pool->ReturnsFd()));
  std::string err;
  EXPECT_EQ(pool->TakeReturned(10, &err), 1) << err;
  EXPECT_EQ(Count(*pool), 0);
  ASSERT_TRUE(pool->Put(1, &err)) << err;
  EXPECT_TRUE(Readable(read_fd));
  ExpectInheritedBlocking(*pool);
}

TEST_F(LegacyPoolTest, TakeAndAvailableSeeOnlyWhatClientsCanRead) {
  auto pool = Create(LegacyStyle::kPipe, 2);
  ASSERT_NE(pool, nullptr);
  ASSERT_EQ(write(pool->InheritedFds().at(1), "x", 1), 1);
  std::string err;
  EXPECT_EQ(pool->Available(&err), 2) << err;
  EXPECT_EQ(Count(*pool), 3);
  EXPECT_EQ(pool->Take(5, &err), 2) << err;
  EXPECT_EQ(pool->Available(&err), 0) << err;
  EXPECT_EQ(pool->TakeReturned(10, &err), 1) << err;
  EXPECT_EQ(Count(*pool), 0);
}

TEST_F(LegacyPoolTest, FifoPoolHasNoSeparateReturns) {
  auto pool = Create(LegacyStyle::kFifo, 1);
  ASSERT_NE(pool, nullptr);
  std::string err;
  EXPECT_EQ(pool->ReturnsFd(), -1);
  EXPECT_EQ(pool->TakeReturned(10, &err), 0);
  EXPECT_EQ(Count(*pool), 1);
}

TEST_F(LegacyPoolTest, ReadThroughInheritedFdTakesAToken) {
  auto pool = Create(LegacyStyle::kPipe, 5);
  ASSERT_NE(pool, nullptr);
  int read_fd = pool->InheritedFds().at(0);
  ASSERT_TRUE(Readable(read_fd));
  char byte = 0;
  ASSERT_EQ(read(read_fd, &byte, 1), 1) << strerror(errno);
  EXPECT_EQ(Count(*pool), 4);
  ExpectInheritedBlocking(*pool);
}

TEST_F(LegacyPoolTest, AnyByteValueIsAToken) {
  auto pool = Create(LegacyStyle::kPipe, 2);
  ASSERT_NE(pool, nullptr);
  int write_fd = pool->InheritedFds().at(1);
  for (char byte : {'x', '|', '\0'}) ASSERT_EQ(write(write_fd, &byte, 1), 1) << strerror(errno);
  EXPECT_EQ(Count(*pool), 5);
  EXPECT_EQ(Drain(*pool), 5);
  EXPECT_EQ(Count(*pool), 0);
}

TEST_F(LegacyPoolTest, DrainAndPutKeepInheritedEndsBlocking) {
  auto pool = Create(LegacyStyle::kPipe, 5);
  ASSERT_NE(pool, nullptr);
  ExpectInheritedBlocking(*pool);
  EXPECT_EQ(Drain(*pool), 5);
  EXPECT_EQ(Count(*pool), 0);
  ExpectInheritedBlocking(*pool);
  EXPECT_EQ(Drain(*pool), 0);  // an empty pool does not block the bridge
  std::string err;
  ASSERT_TRUE(pool->Put(3, &err)) << err;
  EXPECT_EQ(Count(*pool), 3);
  ExpectInheritedBlocking(*pool);
  EXPECT_TRUE(Readable(pool->InheritedFds().at(0)));
}

TEST_F(LegacyPoolTest, PutThatDoesNotFitFailsInsteadOfBlocking) {
  auto pool = Create(LegacyStyle::kPipe, 0);
  ASSERT_NE(pool, nullptr);
  std::string err;
  EXPECT_FALSE(pool->Put(16 << 20, &err));  // far beyond any pipe's capacity
  EXPECT_FALSE(err.empty());
  ExpectInheritedBlocking(*pool);
  int partial = Count(*pool);
  EXPECT_GT(partial, 0);
  EXPECT_EQ(Drain(*pool), partial);
  EXPECT_EQ(Count(*pool), 0);
}

TEST_F(LegacyPoolTest, PoolWithZeroTokens) {
  for (LegacyStyle style : {LegacyStyle::kPipe, LegacyStyle::kFifo}) {
    auto pool = Create(style, 0);
    ASSERT_NE(pool, nullptr);
    EXPECT_EQ(Count(*pool), 0);
    EXPECT_EQ(Drain(*pool), 0);
    std::string err;
    ASSERT_TRUE(pool->Put(1, &err)) << err;
    EXPECT_EQ(Count(*pool), 1);
    ExpectInheritedBlocking(*pool);
  }
}

TEST_F(LegacyPoolTest, CloseInheritedPipeKeepsThePrivateEnds) {
  auto pool = Create(LegacyStyle::kPipe, 2);
  ASSERT_NE(pool, nullptr);
  std::vector<int> inherited = pool->InheritedFds();
  ASSERT_EQ(inherited.size(), 2u);
  pool->CloseInherited();
  EXPECT_TRUE(pool->InheritedFds().empty());
  for (int fd : inherited) EXPECT_EQ(fcntl(fd, F_GETFD), -1) << "fd " << fd << " still open";
  std::string err;
  ASSERT_TRUE(pool->Put(1, &err)) << err;
  EXPECT_EQ(Count(*pool), 3);
  EXPECT_EQ(Drain(*pool), 3);
}

TEST_F(LegacyPoolTest, DestroyingPoolsClosesEveryFd) {
  size_t before = ListDir("/proc/self/fd").size();
  for (LegacyStyle style : {LegacyStyle::kPipe, LegacyStyle::kFifo}) {
    auto pool = Create(style, 3);
    ASSERT_NE(pool, nullptr);
    EXPECT_GT(ListDir("/proc/self/fd").size(), before);
    pool.reset();
    EXPECT_EQ(ListDir("/proc/self/fd").size(), before);
  }
}

TEST_F(LegacyPoolTest, FifoPoolIsAFifoInTheDir) {
  auto pool = Create(LegacyStyle::kFifo, 5);
  ASSERT_NE(pool, nullptr);
  JobserverAuth auth = pool->Auth();
  EXPECT_EQ(auth.kind, JobserverAuth::Kind::kFifo);
  EXPECT_EQ(auth.fifo_path.rfind(dir_ + "/", 0), 0u) << auth.fifo_path;
  struct stat st {};
  ASSERT_EQ(stat(auth.fifo_path.c_str(), &st), 0) << strerror(errno);
  // R,W for the clients that read only that form: two descriptions of the
  // FIFO, one for each direction (one fd as both ends is closed twice by
  // jobserver-rs 0.1.24).
  PoolNames names = pool->Names();
  EXPECT_EQ(names.fifo, auth);
  ASSERT_EQ(names.pipe.kind, JobserverAuth::Kind::kPipe);
  EXPECT_NE(names.pipe.read_fd, names.pipe.write_fd);
  EXPECT_EQ(pool->InheritedFds(), (std::vector<int>{names.pipe.read_fd, names.pipe.write_fd}));
  for (auto [fd, mode] :
       {std::pair{names.pipe.read_fd, O_RDONLY}, std::pair{names.pipe.write_fd, O_WRONLY}}) {
    struct stat end {};
    ASSERT_EQ(fstat(fd, &end), 0) << strerror(errno);
    EXPECT_EQ(end.st_ino, st.st_ino);
    EXPECT_EQ(fcntl(fd, F_GETFL) & (O_ACCMODE | O_NONBLOCK), mode);
  }
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, getuid());
  EXPECT_EQ(ListDir(dir_).size(), 1u);
  EXPECT_EQ(Count(*pool), 5);
}

TEST_F(LegacyPoolTest, FifoClientsOpenTheirOwnDescriptions) {
  auto pool = Create(LegacyStyle::kFifo, 5);
  ASSERT_NE(pool, nullptr);
  const std::string path = pool->Auth().fifo_path;
  int reader = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0) << strerror(errno);
  char byte = 0;
  EXPECT_EQ(read(reader, &byte, 1), 1) << strerror(errno);
  EXPECT_EQ(Count(*pool), 4);
  close(reader);

  int writer = open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(writer, 0) << strerror(errno);
  byte = 'x';
  EXPECT_EQ(write(writer, &byte, 1), 1) << strerror(errno);
  close(writer);
  EXPECT_EQ(Count(*pool), 5);
  EXPECT_EQ(Drain(*pool), 5);
  EXPECT_EQ(Count(*pool), 0);
  std::string err;
  ASSERT_TRUE(pool->Put(2, &err)) << err;
  EXPECT_EQ(Count(*pool), 2);
}

TEST_F(LegacyPoolTest, CloseInheritedFifoUnlinksThePath) {
  auto pool = Create(LegacyStyle::kFifo, 2);
  ASSERT_NE(pool, nullptr);
  const std::string path = pool->Auth().fifo_path;
  pool->CloseInherited();
  struct stat st {};
  EXPECT_EQ(stat(path.c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_TRUE(ListDir(dir_).empty());
  // The bridge can still count and drain what is left.
  EXPECT_EQ(Count(*pool), 2);
  EXPECT_EQ(Drain(*pool), 2);
}

TEST_F(LegacyPoolTest, DestroyingFifoPoolEmptiesTheDir) {
  auto pool = Create(LegacyStyle::kFifo, 3);
  ASSERT_NE(pool, nullptr);
  ASSERT_FALSE(ListDir(dir_).empty());
  pool.reset();
  EXPECT_TRUE(ListDir(dir_).empty());
}

TEST_F(LegacyPoolTest, FifoInAFolderWithASpaceIsRefused) {
  std::string spaced = dir_ + "/a b";
  ASSERT_EQ(mkdir(spaced.c_str(), 0700), 0) << strerror(errno);
  std::string err;
  EXPECT_EQ(LegacyPool::Create(LegacyStyle::kFifo, 1, spaced, &err), nullptr);
  EXPECT_NE(err.find("TMPDIR"), std::string::npos) << err;
  EXPECT_TRUE(ListDir(spaced).empty());
  EXPECT_EQ(rmdir(spaced.c_str()), 0);
}

TEST_F(LegacyPoolTest, FifoInAMissingFolderFails) {
  std::string err;
  std::string missing = dir_ + "/missing";
  EXPECT_EQ(LegacyPool::Create(LegacyStyle::kFifo, 1, missing, &err), nullptr);
  EXPECT_NE(err.find(missing), std::string::npos) << err;
}

TEST(LegacyStyleTest, Parses) {
  LegacyStyle style = LegacyStyle::kFifo;
  EXPECT_TRUE(ParseLegacyStyle("pipe", &style));
  EXPECT_EQ(style, LegacyStyle::kPipe);
  EXPECT_TRUE(ParseLegacyStyle("fifo", &style));
  EXPECT_EQ(style, LegacyStyle::kFifo);
  for (const char* bad : {"", "FIFO", "sock", "pipe "}) {
    EXPECT_FALSE(ParseLegacyStyle(bad, &style)) << bad;
    EXPECT_EQ(style, LegacyStyle::kFifo);
  }
}

}  // namespace
}  // namespace jobbridge
