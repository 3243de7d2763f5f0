// The client library in socket mode, against a small server thread that
// speaks the server side of docs/PROTOCOL.md, and the C++ wrapper. Every wait
// is for an event the server reports (or a timeout the test asks for);
// kEventMs only turns a hang into a failure.
#include <chrono>
#include <memory>
#include <thread>

#include "client_test_server.h"
#include "jobbridge_client.hpp"

namespace jobbridge {
namespace client_test {
namespace {

using namespace std::chrono_literals;

TEST_F(SocketClientTest, AcquireGetsASlotAndReleaseGivesItBack) {
  auto server_owner = std::make_unique<TestServer>(SocketPath(), 1);
  TestServer& server = *server_owner;
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SOCKET);
  char text[256];
  int length = jobbridge_client_describe(client, text, sizeof text);
  EXPECT_EQ(length, static_cast<int>(std::strlen(text)));
  char truncated[7];
  EXPECT_EQ(jobbridge_client_describe(client, truncated, sizeof truncated), length);
  EXPECT_STREQ(truncated, "socket");
  EXPECT_EQ(std::string(text), "socket " + SocketPath());

  jobbridge_slot* slot = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, -1, &slot), 0);
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(server.counts().held, 1);
  ExpectNewFdsCloexec({});
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 1; }));
  jobbridge_client_close(client);
  EXPECT_EQ(server.counts().protocol_errors, 0);
  server_owner.reset();
  ExpectNoFdLeft();
}

TEST_F(SocketClientTest, AcquireBeyondTheBudgetWaitsForARelease) {
  TestServer server(SocketPath(), 2);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_slot *first = nullptr, *second = nullptr, *third = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &first), 0);
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &second), 0);

  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(jobbridge_client_acquire(client, 100, &third), -ETIMEDOUT);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 100ms);
  EXPECT_EQ(third, nullptr);
  // The request that timed out was dropped by closing its connection.
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.dropped == 1 && c.waiting == 0; }));
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &third), -ETIMEDOUT);

  EXPECT_EQ(jobbridge_slot_release(first), 0);
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &third), 0);
  EXPECT_EQ(server.counts().held, 2);
  EXPECT_EQ(server.counts().grants, 3);
  EXPECT_EQ(jobbridge_slot_release(second), 0);
  EXPECT_EQ(jobbridge_slot_release(third), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 3; }));
  jobbridge_client_close(client);
}

TEST_F(SocketClientTest, CancelWakesEveryBlockedAcquire) {
  TestServer server(SocketPath(), 1);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_slot* held = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &held), 0);

  int results[2] = {0, 0};
  std::thread waiters[2];
  for (int i = 0; i < 2; ++i) {
    waiters[i] = std::thread([&, i] {
      jobbridge_slot* slot = nullptr;
      results[i] = jobbridge_client_acquire(client, kEventMs, &slot);
      if (slot != nullptr) jobbridge_slot_release(slot);
    });
  }
  // Both requests reached the server, so both threads are (about to be) blocked.
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 2; }));
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(jobbridge_client_cancel(client), 0);
  for (std::thread& t : waiters) t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_EQ(results[0], -ECANCELED);
  EXPECT_EQ(results[1], -ECANCELED);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.dropped == 2 && c.waiting == 0; }));

  // Cancelling is for good; the slot already held stays valid.
  jobbridge_slot* late = nullptr;
  jobbridge_pending* pending = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, -1, &late), -ECANCELED);
  EXPECT_EQ(jobbridge_client_acquire_start(client, &pending), -ECANCELED);
  EXPECT_EQ(server.counts().held, 1);
  EXPECT_EQ(jobbridge_slot_release(held), 0);
  jobbridge_client_close(client);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0; }));
}

TEST_F(SocketClientTest, ServerGoneIsEpipeNotAHang) {
  auto server = std::make_unique<TestServer>(SocketPath(), 1);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_slot* held = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &held), 0);
  int result = 0;
  std::thread waiter([&] {
    jobbridge_slot* slot = nullptr;
    result = jobbridge_client_acquire(client, kEventMs, &slot);
  });
  EXPECT_TRUE(server->WaitFor([](const auto& c) { return c.waiting == 1; }));
  server->Shutdown();
  waiter.join();
  EXPECT_EQ(result, -EPIPE);

  jobbridge_slot* slot = nullptr;
  // The socket file is still there but nobody listens: ECONNREFUSED.
  EXPECT_EQ(jobbridge_client_acquire(client, -1, &slot), -EPIPE);
  jobbridge_pending* pending = nullptr;
  EXPECT_EQ(jobbridge_client_acquire_start(client, &pending), -EPIPE);
  // No socket file at all: ENOENT.
  server.reset();
  ASSERT_EQ(unlink(SocketPath().c_str()), 0);
  EXPECT_EQ(jobbridge_client_acquire(client, -1, &slot), -EPIPE);
  EXPECT_STREQ(jobbridge_strerror(-EPIPE), "the jobserver went away");
  EXPECT_EQ(jobbridge_slot_release(held), 0);
  jobbridge_client_close(client);
  ExpectNoFdLeft();
}

TEST_F(SocketClientTest, BadJobserverv2IsEinval) {
  jobbridge_client* client = nullptr;
  char why[256] = "";
  setenv("JOBSERVERV2", "relative/socket", 1);
  EXPECT_EQ(jobbridge_client_open_env(&client, why, sizeof why), -EINVAL);
  EXPECT_EQ(client, nullptr);
  EXPECT_NE(std::string(why).find("not an absolute path"), std::string::npos) << why;

  std::string longest = "/" + std::string(106, 'a');  // 107 bytes: still fits
  setenv("JOBSERVERV2", longest.c_str(), 1);
  ASSERT_EQ(jobbridge_client_open_env(&client, why, sizeof why), 0) << why;
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SOCKET);
  jobbridge_client_close(client);

  setenv("JOBSERVERV2", (longest + "a").c_str(), 1);  // 108 bytes
  EXPECT_EQ(jobbridge_client_open_env(&client, why, sizeof why), -EINVAL);
  EXPECT_NE(std::string(why).find("108 bytes"), std::string::npos) << why;
  EXPECT_EQ(jobbridge_client_open_socket("", &client, nullptr, 0), -EINVAL);
  EXPECT_EQ(jobbridge_client_open_socket(nullptr, &client, nullptr, 0), -EINVAL);

  // An empty JOBSERVERV2 means "none", so MAKEFLAGS is read next.
  setenv("JOBSERVERV2", "", 1);
  EXPECT_EQ(jobbridge_client_open_env(&client, why, sizeof why), -ENOENT);
}

TEST_F(SocketClientTest, OpenEnvUsesJobserverv2BeforeMakeflags) {
  TestServer server(SocketPath(), 1);
  setenv("JOBSERVERV2", SocketPath().c_str(), 1);
  setenv("MAKEFLAGS", "-j4 --jobserver-auth=-2,-2", 1);
  jobbridge_client* client = nullptr;
  char why[256] = "";
  ASSERT_EQ(jobbridge_client_open_env(&client, why, sizeof why), 0) << why;
  EXPECT_EQ(jobbridge_client_mode(client), JOBBRIDGE_MODE_SOCKET);
  jobbridge_slot* slot = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &slot), 0);
  EXPECT_EQ(server.counts().held, 1);
  jobbridge_slot_release(slot);
  jobbridge_client_close(client);
}

TEST_F(SocketClientTest, PendingAcquireGrantsWhenItsFdBecomesReadable) {
  auto server_owner = std::make_unique<TestServer>(SocketPath(), 1);
  TestServer& server = *server_owner;
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_slot* held = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &held), 0);

  jobbridge_pending* pending = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  int fd = jobbridge_pending_fd(pending);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(IsCloexec(fd));
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
  EXPECT_FALSE(Readable(fd));
  jobbridge_slot* slot = nullptr;
  EXPECT_EQ(jobbridge_client_acquire_finish(pending, &slot), -EAGAIN);
  EXPECT_EQ(slot, nullptr);

  EXPECT_EQ(jobbridge_slot_release(held), 0);
  EXPECT_TRUE(Readable(fd, kEventMs));
  ASSERT_EQ(jobbridge_client_acquire_finish(pending, &slot), 0);
  ASSERT_NE(slot, nullptr);
  EXPECT_EQ(server.counts().held, 1);

  // An abandoned request is dropped at the server.
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
  jobbridge_client_acquire_abandon(pending);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 0 && c.dropped == 1; }));

  // Closing the client first still lets the slot go back.
  jobbridge_client_close(client);
  EXPECT_EQ(server.counts().held, 1);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 2; }));
  server_owner.reset();
  ExpectNoFdLeft();
}

TEST_F(SocketClientTest, PendingAcquireSeesTheServerGo) {
  TestServer server(SocketPath(), 0);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  jobbridge_pending* pending = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
  server.Shutdown();
  EXPECT_TRUE(Readable(jobbridge_pending_fd(pending), kEventMs));
  jobbridge_slot* slot = nullptr;
  EXPECT_EQ(jobbridge_client_acquire_finish(pending, &slot), -EPIPE);  // and pending is gone
  jobbridge_client_close(client);
}

// ---- The implicit slot of a make job (docs/PROTOCOL.md) ----------------------

class ImplicitSlotTest : public SocketClientTest {
 protected:
  // A client from the environment, as a recipe of make (MAKELEVEL) finds it.
  jobbridge_client* OpenAsMakeJob(const char* makelevel = "1") {
    setenv("JOBSERVERV2", SocketPath().c_str(), 1);
    if (makelevel != nullptr) setenv("MAKELEVEL", makelevel, 1);
    jobbridge_client* client = nullptr;
    char why[256] = "";
    EXPECT_EQ(jobbridge_client_open_env(&client, why, sizeof why), 0) << Why(why);
    return client;
  }

  static std::string Describe(jobbridge_client* client) {
    char text[512] = "";
    jobbridge_client_describe(client, text, sizeof text);
    return text;
  }
};

constexpr const char* kImplicitNote = " (with the implicit slot of a make job)";

TEST_F(ImplicitSlotTest, MakeJobHandsOutItsOwnSlotFirstWithoutConnecting) {
  auto server_owner = std::make_unique<TestServer>(SocketPath(), 1);
  TestServer& server = *server_owner;
  jobbridge_client* client = OpenAsMakeJob();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Describe(client), "socket " + SocketPath() + " (from JOBSERVERV2)" + kImplicitNote);

  // A timeout of 0 cannot wait for a server's byte: only the implicit slot fits.
  jobbridge_slot* implicit = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &implicit), 0);
  ASSERT_NE(implicit, nullptr);
  // The second slot connects and gets the server's only slot.
  jobbridge_slot* second = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &second), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 1; }));
  EXPECT_EQ(server.counts().accepted, 1);  // the first acquire never connected
  jobbridge_slot* third = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 50, &third), -ETIMEDOUT);

  // Released, the implicit slot is handed out again, still without connecting.
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &implicit), 0);
  EXPECT_EQ(jobbridge_slot_release(second), 0);
  EXPECT_TRUE(server.WaitFor(
      [](const auto& c) { return c.held == 0 && c.releases == 1 && c.dropped == 1; }));
  EXPECT_EQ(server.counts().accepted, 2);  // the second and the third (dropped) only
  EXPECT_EQ(server.counts().grants, 1);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  jobbridge_client_close(client);
  EXPECT_EQ(server.counts().protocol_errors, 0);
  server_owner.reset();
  ExpectNoFdLeft();
}

TEST_F(ImplicitSlotTest, ImplicitSlotReleasedGoesToAnAcquireWaitingForTheServer) {
  TestServer server(SocketPath(), 0);  // the server never grants
  jobbridge_client* client = OpenAsMakeJob();
  ASSERT_NE(client, nullptr);
  jobbridge_slot* implicit = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &implicit), 0);
  int result = 1;
  jobbridge_slot* waited = nullptr;
  std::thread waiter([&] { result = jobbridge_client_acquire(client, kEventMs, &waited); });
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  waiter.join();
  EXPECT_EQ(result, 0);
  // It took the implicit slot and dropped its request.
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 0 && c.dropped == 1; }));
  EXPECT_EQ(jobbridge_slot_release(waited), 0);
  jobbridge_client_close(client);
}

TEST_F(ImplicitSlotTest, OverrideZeroConnectsForTheFirstSlotOfAMakeJob) {
  TestServer server(SocketPath(), 1);
  setenv("JOBBRIDGE_IMPLICIT_SLOT", "0", 1);
  jobbridge_client* client = OpenAsMakeJob();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Describe(client), "socket " + SocketPath() + " (from JOBSERVERV2)");
  jobbridge_slot* slot = nullptr;
  ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &slot), 0);
  EXPECT_EQ(server.counts().held, 1);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  jobbridge_client_close(client);

  setenv("JOBBRIDGE_IMPLICIT_SLOT", "yes", 1);
  char why[256] = "";
  EXPECT_EQ(jobbridge_client_open_env(&client, why, sizeof why), -EINVAL);
  EXPECT_EQ(client, nullptr);
  EXPECT_NE(std::string(why).find("JOBBRIDGE_IMPLICIT_SLOT"), std::string::npos) << why;
}

TEST_F(ImplicitSlotTest, WithoutMakelevelTheFirstSlotConnects) {
  TestServer server(SocketPath(), 1);
  for (const char* makelevel : {static_cast<const char*>(nullptr), ""}) {
    SCOPED_TRACE(makelevel == nullptr ? "MAKELEVEL unset" : "MAKELEVEL empty");
    jobbridge_client* client = OpenAsMakeJob(makelevel);
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(Describe(client), "socket " + SocketPath() + " (from JOBSERVERV2)");
    jobbridge_slot* slot = nullptr;
    ASSERT_EQ(jobbridge_client_acquire(client, kEventMs, &slot), 0);
    EXPECT_EQ(server.counts().held, 1);
    EXPECT_EQ(jobbridge_slot_release(slot), 0);
    EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0; }));
    jobbridge_client_close(client);
  }
}

TEST_F(ImplicitSlotTest, OpenSocketIgnoresMakelevelButNotTheOverride) {
  TestServer server(SocketPath(), 0);  // only the implicit slot can be had
  setenv("MAKELEVEL", "1", 1);
  jobbridge_client* client = Open();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Describe(client), "socket " + SocketPath());
  jobbridge_slot* slot = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 50, &slot), -ETIMEDOUT);
  jobbridge_client_close(client);

  setenv("JOBBRIDGE_IMPLICIT_SLOT", "1", 1);
  unsetenv("MAKELEVEL");
  client = Open();
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(Describe(client), "socket " + SocketPath() + kImplicitNote);
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &slot), 0);
  EXPECT_EQ(jobbridge_slot_release(slot), 0);
  jobbridge_client_close(client);
}

TEST_F(ImplicitSlotTest, PendingGetsTheImplicitSlotAtOnceAndWhenItComesBack) {
  auto server_owner = std::make_unique<TestServer>(SocketPath(), 1);
  TestServer& server = *server_owner;
  jobbridge_client* client = OpenAsMakeJob();
  ASSERT_NE(client, nullptr);

  // Free: the pending's fd is readable at once and finishing gives the slot.
  jobbridge_pending* pending = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  int fd = jobbridge_pending_fd(pending);
  ASSERT_GE(fd, 0);
  EXPECT_TRUE(IsCloexec(fd));
  EXPECT_TRUE(Readable(fd));
  jobbridge_slot* implicit = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_finish(pending, &implicit), 0);
  ASSERT_NE(implicit, nullptr);

  // Taken: the next pending connects and gets the server's slot.
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  EXPECT_TRUE(Readable(jobbridge_pending_fd(pending), kEventMs));
  jobbridge_slot* second = nullptr;
  ASSERT_EQ(jobbridge_client_acquire_finish(pending, &second), 0);
  EXPECT_EQ(server.counts().held, 1);
  EXPECT_EQ(server.counts().accepted, 1);

  // A pending that waits for the server takes the implicit slot when it is
  // released, and drops its request.
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  fd = jobbridge_pending_fd(pending);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
  EXPECT_FALSE(Readable(fd));
  jobbridge_slot* third = nullptr;
  EXPECT_EQ(jobbridge_client_acquire_finish(pending, &third), -EAGAIN);
  EXPECT_EQ(jobbridge_slot_release(implicit), 0);
  EXPECT_TRUE(Readable(fd, kEventMs));
  ASSERT_EQ(jobbridge_client_acquire_finish(pending, &third), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 0 && c.dropped == 1; }));
  EXPECT_EQ(server.counts().held, 1);

  // An abandoned pending that took the implicit slot gives it back.
  EXPECT_EQ(jobbridge_slot_release(third), 0);
  ASSERT_EQ(jobbridge_client_acquire_start(client, &pending), 0);
  jobbridge_slot* late = nullptr;
  EXPECT_EQ(jobbridge_client_acquire(client, 0, &late), -ETIMEDOUT);  // the pending has it
  jobbridge_client_acquire_abandon(pending);
  ASSERT_EQ(jobbridge_client_acquire(client, 0, &late), 0);
  EXPECT_EQ(jobbridge_slot_release(late), 0);

  EXPECT_EQ(jobbridge_slot_release(second), 0);
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 1; }));
  jobbridge_client_close(client);
  server_owner.reset();
  ExpectNoFdLeft();
}

TEST_F(SocketClientTest, CppSlotGivesItsSlotBackOnScopeExit) {
  auto server_owner = std::make_unique<TestServer>(SocketPath(), 1);
  TestServer& server = *server_owner;
  {
    Slot outer;
    {
      Client client;
      std::string why;
      ASSERT_EQ(Client::OpenSocket(SocketPath(), &client, &why), 0) << why;
      EXPECT_EQ(client.mode(), JOBBRIDGE_MODE_SOCKET);
      EXPECT_EQ(client.Describe(), "socket " + SocketPath());
      {
        Slot slot;
        ASSERT_EQ(client.Acquire(&slot), 0);
        EXPECT_TRUE(slot.held());
        EXPECT_EQ(server.counts().held, 1);
        Slot moved = std::move(slot);
        EXPECT_FALSE(slot.held());
      }
      EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 1; }));

      PendingAcquire pending;
      ASSERT_EQ(client.AcquireStart(&pending), 0);
      EXPECT_TRUE(Readable(pending.fd(), kEventMs));
      ASSERT_EQ(pending.Finish(&outer), 0);
      EXPECT_FALSE(pending.active());
      ASSERT_EQ(client.AcquireStart(&pending), 0);  // waits: the only slot is out
      EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 1; }));
    }  // the pending is abandoned, the client closed; `outer` outlives both
    EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.waiting == 0 && c.dropped == 1; }));
    EXPECT_EQ(server.counts().held, 1);
  }
  EXPECT_TRUE(server.WaitFor([](const auto& c) { return c.held == 0 && c.releases == 2; }));
  server_owner.reset();
  ExpectNoFdLeft();
}

TEST_F(SocketClientTest, CppOpenReportsWhy) {
  Client client;
  std::string why;
  EXPECT_EQ(Client::OpenSocket("socket", &client, &why), -EINVAL);
  EXPECT_FALSE(client.valid());
  EXPECT_NE(why.find("not an absolute path"), std::string::npos) << why;
  EXPECT_EQ(Client::OpenEnv(&client, &why), -ENOENT);
  EXPECT_NE(why.find("no jobserver"), std::string::npos) << why;
  Slot slot;
  EXPECT_EQ(client.Acquire(&slot), -EINVAL);  // no client
}

}  // namespace
}  // namespace client_test
}  // namespace jobbridge
