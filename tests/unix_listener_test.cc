// UnixListener (endpoints/unix_listener.h): accepts what waits, and out of
// fds stops watching its listener until an fd is free, then accepts the
// client that waited.
#include "endpoints/unix_listener.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <string>
#include <vector>

#include "fd_test_util.h"
#include "loop_test_util.h"

namespace jobbridge {
namespace {

class UnixListenerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    char templ[] = "/tmp/jb-listener-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
    path_ = dir_ + "/l.sock";
    std::string err;
    ASSERT_TRUE(listener_.Listen(path_, &err)) << err;
  }
  void TearDown() override {
    listener_.Stop();
    accepted_.clear();
    EXPECT_TRUE(test_util::RunLoopUntil(&loop_, [&] { return !uv_loop_alive(&loop_); }));
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }

  uv_loop_t loop_{};
  std::string dir_, path_;
  std::vector<UniqueFd> accepted_;
  UnixListener listener_{&loop_, "out of fds (test)",
                         [this](UniqueFd fd) { accepted_.push_back(std::move(fd)); }};
};

TEST_F(UnixListenerTest, OutOfFdsItPausesAndAcceptsTheWaitingClientOnceOneIsFree) {
  UniqueFd first = test_util::ConnectTo(path_);
  ASSERT_TRUE(test_util::RunLoopUntil(&loop_, [&] { return accepted_.size() == 1; }));
  EXPECT_TRUE(test_util::IsNonBlocking(accepted_[0].get()));
  EXPECT_TRUE(test_util::IsCloexec(accepted_[0].get()));

  UniqueFd second = test_util::ConnectTo(path_);  // waits in the backlog
  ASSERT_TRUE(second.valid());
  {
    test_util::FewFreeFds none(0);
    EXPECT_TRUE(test_util::RunLoopUntil(&loop_, [&] { return listener_.paused(); }));
  }
  EXPECT_EQ(accepted_.size(), 1u);
  listener_.FdFreed();  // as its owner says when a connection closes
  EXPECT_FALSE(listener_.paused());
  EXPECT_TRUE(test_util::RunLoopUntil(&loop_, [&] { return accepted_.size() == 2; }));
}

TEST_F(UnixListenerTest, StoppedItRefusesNewClients) {
  listener_.Stop();
  listener_.Stop();  // idempotent
  EXPECT_FALSE(listener_.listening());
  UniqueFd refused = test_util::ConnectTo(path_);
  EXPECT_FALSE(refused.valid());
}

}  // namespace
}  // namespace jobbridge
