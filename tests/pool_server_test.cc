// The pools socket (src/pool_server.h) on a real loop: a "shim" asks for a
// pool and gets three fds, a forked "make" uses them, and the delegate sees
// the tokens come back and the books when the invocation ends.
#include "pool_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "fd_test_util.h"
#include "loop_test_util.h"
#include "pool_client.h"
#include "util/fd_passing.h"

namespace jobbridge {
namespace {

using test_util::RunLoopUntil;

class Recorder : public PoolServer::Delegate {
 public:
  void OnStarted(PoolServer::Invocation* invocation) override {
    started.push_back(invocation->pid);
    commands.push_back(invocation->command);
    std::string err;
    EXPECT_TRUE(invocation->pool->Stock(stock, &err)) << err;
  }
  void OnReturned(PoolServer::Invocation* /*invocation*/, int count) override { returned += count; }
  void OnEnded(const PoolServer::Invocation& /*invocation*/,
               const InvocationPool::Books& books) override {
    ended.push_back(books);
  }

  int stock = 0;
  std::vector<pid_t> started;
  std::vector<std::string> commands;
  int returned = 0;
  std::vector<InvocationPool::Books> ended;
};

class PoolServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/jb-pools-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = dir_ + "/pools.sock";
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    server_ = std::make_unique<PoolServer>(&loop_, &recorder_, dir_);
    std::string err;
    ASSERT_TRUE(server_->Listen(path_, &err)) << err;
  }

  void TearDown() override {
    server_->Shutdown();
    EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return !uv_loop_alive(&loop_); }));
    EXPECT_EQ(uv_loop_close(&loop_), 0) << "handles left open";
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  UniqueFd Connect() {
    UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    memcpy(address.sun_path, path_.c_str(), path_.size() + 1);
    EXPECT_EQ(connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0)
        << strerror(errno);
    return fd;
  }

  // What a shim does: asks, then waits (running the server's loop) for the
  // reply and its fds.
  std::string Ask(const std::string& request, std::vector<UniqueFd>* fds) {
    UniqueFd shim = Connect();
    std::string err;
    EXPECT_TRUE(SendFds(shim.get(), request, {}, &err)) << err;
    EXPECT_TRUE(RunLoopUntil(&loop_, [&] { return test_util::Readable(shim.get()); }));
    std::string reply;
    EXPECT_TRUE(ReceiveFds(shim.get(), &reply, fds, 3, &err)) << err;
    return reply;
  }

  uv_loop_t loop_{};
  std::string dir_, path_;
  Recorder recorder_;
  std::unique_ptr<PoolServer> server_;
};

// Forks a "make" that runs `body` on the pool's fds, then closes them.
pid_t RunMake(const std::vector<UniqueFd>& fds, const std::function<bool(int, int)>& body) {
  pid_t pid = fork();
  if (pid == 0) _exit(body(fds[0].get(), fds[1].get()) ? 0 : 1);
  return pid;
}

void ExpectExitedCleanly(pid_t pid) {
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(PoolServerTest, AKilledInvocationsTokensAreReclaimedWhenItEnds) {
  recorder_.stock = 2;
  std::vector<UniqueFd> fds;
  ASSERT_EQ(Ask("pool 4242 make -C sub all", &fds), "ok");
  ASSERT_EQ(fds.size(), 3u);
  ASSERT_EQ(recorder_.started, std::vector<pid_t>{4242});
  EXPECT_EQ(recorder_.commands[0], "make -C sub all");
  EXPECT_EQ(server_->invocation_count(), 1u);

  pid_t make = RunMake(fds, [](int r, int) {
    char token;
    return read(r, &token, 1) == 1;  // and "dies" holding it
  });
  fds.clear();  // the shim exec'd: only the invocation holds them now
  ExpectExitedCleanly(make);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.ended.size() == 1; }));
  const InvocationPool::Books& books = recorder_.ended[0];
  EXPECT_EQ(books.given, 1) << "2 stocked, 1 unused taken back";
  EXPECT_EQ(books.returned, 0);
  EXPECT_EQ(books.reclaimed, 1);
  EXPECT_EQ(server_->invocation_count(), 0u);
}

TEST_F(PoolServerTest, TokensWrittenBackReachTheDelegateWhileItRuns) {
  recorder_.stock = 1;
  std::vector<UniqueFd> fds;
  ASSERT_EQ(Ask("pool 7 ninja", &fds), "ok");
  int go[2];
  ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
  pid_t ninja = RunMake(fds, [&](int r, int w) {
    close(go[1]);
    char token, ignored;
    return read(r, &token, 1) == 1 && write(w, &token, 1) == 1 && read(go[0], &ignored, 1) == 0;
  });
  close(go[0]);
  fds.clear();
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.returned == 1; }));
  EXPECT_TRUE(recorder_.ended.empty()) << "ended while it still ran";
  close(go[1]);
  ExpectExitedCleanly(ninja);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.ended.size() == 1; }));
  EXPECT_EQ(recorder_.ended[0].reclaimed, 0);
  EXPECT_EQ(recorder_.ended[0].returned, 1);
}

// Entries named invocation-pool-* in the folder: the pools listed.
std::vector<std::string> Listed(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name.starts_with("invocation-pool-")) names.push_back(name);
  }
  return names;
}

TEST_F(PoolServerTest, APoolIsListedFromBeforeTheShimGetsItUntilItsInvocationEnds) {
  std::vector<UniqueFd> fds;
  ASSERT_EQ(Ask("pool 5150 make", &fds), "ok");
  struct stat info {};
  ASSERT_EQ(fstat(fds[0].get(), &info), 0);
  std::string name =
      "invocation-pool-" + std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino);
  EXPECT_EQ(Listed(dir_), std::vector<std::string>{name});
  std::error_code error;
  EXPECT_EQ(std::filesystem::read_symlink(dir_ + "/" + name, error).string(), "5150");
  fds.clear();  // the invocation ends
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.ended.size() == 1; }));
  EXPECT_TRUE(Listed(dir_).empty());
}

TEST_F(PoolServerTest, OutOfFdsARequestIsRefusedAtOnceAndLaterOnesAreServed) {
  // No fd free: the request cannot even be accepted but for the spare fd.
  UniqueFd shim = Connect();
  std::string err, reply;
  std::vector<UniqueFd> fds;
  ASSERT_TRUE(SendFds(shim.get(), "pool 11 make", {}, &err)) << err;
  {
    test_util::FewFreeFds none(0);
    ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return test_util::Readable(shim.get()); }));
  }
  ASSERT_TRUE(ReceiveFds(shim.get(), &reply, &fds, 3, &err)) << err;
  EXPECT_EQ(reply,
            "error the root is out of file descriptors (accepting a request: Too many open files)");

  // Room to accept, not to make the pool's pipes.
  shim = Connect();
  ASSERT_TRUE(SendFds(shim.get(), "pool 12 make", {}, &err)) << err;
  {
    test_util::FewFreeFds two(2);
    ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return test_util::Readable(shim.get()); }));
  }
  ASSERT_TRUE(ReceiveFds(shim.get(), &reply, &fds, 3, &err)) << err;
  EXPECT_TRUE(
      reply.starts_with("error the root is out of file descriptors (creating an "
                        "invocation's "))
      << reply;
  EXPECT_TRUE(fds.empty());
  EXPECT_TRUE(recorder_.started.empty());

  // With fds again, pools are given out as before.
  EXPECT_EQ(Ask("pool 13 make", &fds), "ok");
  EXPECT_EQ(recorder_.started, std::vector<pid_t>{13});
}

TEST_F(PoolServerTest, AMalformedRequestGetsAnErrorAndNoPool) {
  for (const char* bad : {"pool", "pool x make", "pool -3 make", "give me a pool"}) {
    std::vector<UniqueFd> fds;
    std::string reply = Ask(bad, &fds);
    EXPECT_TRUE(reply.starts_with("error a malformed request")) << bad << ": " << reply;
    EXPECT_TRUE(fds.empty()) << bad;
  }
  EXPECT_TRUE(recorder_.started.empty());
  EXPECT_EQ(server_->invocation_count(), 0u);
}

TEST_F(PoolServerTest, ShutdownEndsLiveInvocationsAndReclaimsWhatIsOut) {
  recorder_.stock = 1;
  std::vector<UniqueFd> fds;
  ASSERT_EQ(Ask("pool 99 make", &fds), "ok");
  char token;
  ASSERT_EQ(read(fds[0].get(), &token, 1), 1);  // held by the live invocation
  UniqueFd silent = Connect();                  // a connection that never asks
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return true; }));
  server_->Shutdown();
  ASSERT_EQ(recorder_.ended.size(), 1u);
  EXPECT_EQ(recorder_.ended[0].reclaimed, 1);
  // TearDown checks that every handle, the silent connection's too, closed.
}

// The bridge hands each pool's ends to its caretaker through the hooks: the
// copy must exist before the invocation can write a token back, and be
// dropped only once the pool is done with.
TEST_F(PoolServerTest, HooksHearOfAPoolBeforeItIsHandedOverAndAfterItEnds) {
  std::vector<std::string> heard;
  server_->SetHooks({[&](const PoolServer::Invocation& invocation) {
                       bool handed = !recorder_.started.empty() ||
                                     invocation.pool->child_fds().returns_write < 0;
                       heard.push_back("created " + std::to_string(invocation.id) +
                                       (handed ? " after" : " before") + " the hand-over");
                     },
                     [&](const PoolServer::Invocation& invocation) {
                       heard.push_back("ended " + std::to_string(invocation.id) + " after " +
                                       std::to_string(recorder_.ended.size()) + " OnEnded");
                     }});
  std::vector<UniqueFd> fds;
  ASSERT_EQ(Ask("pool 5 make", &fds), "ok");
  EXPECT_EQ(heard, std::vector<std::string>{"created 1 before the hand-over"});
  fds.clear();  // the invocation ends
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return heard.size() == 2; }));
  EXPECT_EQ(heard[1], "ended 1 after 1 OnEnded");
}

// The shim's side (pool_client.h) against the server: a blocking client in
// a thread of its own while this thread runs the server's loop.
TEST_F(PoolServerTest, RequestPoolReceivesTheInvocationsThreeEnds) {
  recorder_.stock = 1;
  ReceivedPool pool;
  std::string err;
  bool got = false;
  std::atomic<bool> done = false;
  std::thread shim([&] {
    got = RequestPool(path_, 31337, "make -j", &pool, &err);
    done = true;
  });
  bool served = RunLoopUntil(&loop_, [&] { return done.load(); });
  shim.join();
  ASSERT_TRUE(served);
  ASSERT_TRUE(got) << err;
  EXPECT_EQ(recorder_.started, std::vector<pid_t>{31337});
  EXPECT_EQ(recorder_.commands[0], "make -j");
  char token;
  EXPECT_EQ(read(pool.token_read.get(), &token, 1), 1) << "the stocked token";
  EXPECT_EQ(write(pool.returns_write.get(), &token, 1), 1);
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.returned == 1; }));
  for (const UniqueFd* fd : {&pool.token_read, &pool.returns_write, &pool.life_write}) {
    EXPECT_EQ(fcntl(fd->get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  }
  pool = {};  // the invocation ends
  ASSERT_TRUE(RunLoopUntil(&loop_, [&] { return recorder_.ended.size() == 1; }));
  EXPECT_EQ(recorder_.ended[0].reclaimed, 0);
}

TEST(PoolClientTest, NoSocketIsAClearError) {
  ReceivedPool pool;
  std::string err;
  EXPECT_FALSE(RequestPool("/nonexistent/pools.sock", 1, "make", &pool, &err));
  EXPECT_EQ(err,
            "cannot connect to the pools socket /nonexistent/pools.sock: No such file or "
            "directory");
  EXPECT_FALSE(pool.token_read.valid());
}

}  // namespace
}  // namespace jobbridge
