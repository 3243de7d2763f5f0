// What the broker's tests share (broker_test.cc, broker_pools_test.cc,
// broker_endpoint_test.cc): a real libuv loop, a ledger, a real pipe root
// pool, a socket server listening in a per-test folder and the broker, set
// up and torn down as RunBridge does, and a Finish that closes every handle
// and counts every token back.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

#include "broker.h"
#include "core/ledger.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/socket_server.h"
#include "loop_test_util.h"

namespace jobbridge::test_util {

class BrokerFixture : public ::testing::Test {
 protected:
  // `name`: the per-test folder's prefix.
  explicit BrokerFixture(std::string name) : name_(std::move(name)) {}

  void SetUp() override {
    std::string templ = ::testing::TempDir() + "/" + name_ + "-XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << templ << ": " << strerror(errno);
    dir_ = templ;
    socket_path_ = dir_ + "/s";
    ASSERT_LE(socket_path_.size(), SocketServer::kMaxPathLength) << socket_path_;
    ASSERT_EQ(uv_loop_init(&loop_), 0);
  }

  void TearDown() override {
    if (!finished_) {  // a failed test: close what it left, check nothing
      if (broker_) broker_->Stop();
      if (server_) server_->Shutdown();
      RunUntil([&] { return !uv_loop_alive(&loop_); });
      uv_loop_close(&loop_);
    }
    unlink(socket_path_.c_str());
    EXPECT_EQ(rmdir(dir_.c_str()), 0) << dir_ << ": " << strerror(errno);
  }

  // Sets up as RunBridge does: the command's implicit slot, N-1 in the pool.
  void Start(int budget) {
    std::string err;
    ledger_ = std::make_unique<Ledger>(budget);
    ASSERT_TRUE(ledger_->Grant(kCommandOwner, 1, &err)) << err;
    if (budget > 1) {
      ASSERT_TRUE(ledger_->Grant(kLegacyOwner, budget - 1, &err)) << err;
    }
    pool_ = LegacyPool::Create(LegacyStyle::kPipe, budget - 1, dir_, &err);
    ASSERT_NE(pool_, nullptr) << err;
    broker_ = std::make_unique<Broker>(&loop_, ledger_.get(), pool_.get());
    server_ = std::make_unique<SocketServer>(&loop_, broker_.get());
    ASSERT_TRUE(server_->Listen(socket_path_, &err)) << err;
    broker_->Start(server_.get());
  }

  // Stops as RunBridge does, closes every handle and counts the tokens back.
  void Finish() {
    broker_->Stop();
    server_->Shutdown();
    EXPECT_TRUE(RunUntil([&] { return !uv_loop_alive(&loop_); })) << "handles left open";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    std::string err;
    EXPECT_TRUE(broker_->ReturnFreeSlots(&err)) << err;
    EXPECT_EQ(ledger_->free(), 0);
    EXPECT_EQ(PoolCount(), ledger_->HeldBy(kLegacyOwner));
    EXPECT_TRUE(ledger_->CheckInvariants(&err)) << err;
    finished_ = true;
  }

  bool RunUntil(const std::function<bool()>& done) { return RunLoopUntil(&loop_, done); }

  // Tokens in the root pool (returned ones included).
  int PoolCount() {
    std::string err;
    int n = pool_->Count(&err);
    EXPECT_GE(n, 0) << err;
    return n;
  }

  // Tokens a client of the root pool could read now.
  int PoolAvailable() {
    std::string err;
    int n = pool_->Available(&err);
    EXPECT_GE(n, 0) << err;
    return n;
  }

  uv_loop_t loop_{};
  std::string dir_;
  std::string socket_path_;
  std::unique_ptr<Ledger> ledger_;
  std::unique_ptr<LegacyPool> pool_;
  std::unique_ptr<Broker> broker_;
  std::unique_ptr<SocketServer> server_;
  bool finished_ = false;

 private:
  std::string name_;
};

}  // namespace jobbridge::test_util
