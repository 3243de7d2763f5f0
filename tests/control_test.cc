// The control protocol (control/control_protocol.h) and server
// (control/control_server.h): requests parsed field by field, replies
// compared field by field, and the limits that keep a bad client from
// stalling the loop, on a real loop with real sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "control/control_protocol.h"
#include "control/control_server.h"
#include "core/ledger.h"
#include "fd_test_util.h"
#include "loop_test_util.h"

namespace jobbridge {
namespace {

using nlohmann::json;

TEST(ControlProtocolTest, ParsesEachRequestAndKeepsItsId) {
  ControlRequest request;
  std::string err;
  ASSERT_TRUE(ParseControlRequest(R"({"request": "status", "id": 7})", &request, &err)) << err;
  EXPECT_EQ(request.kind, ControlRequest::Kind::kStatus);
  EXPECT_EQ(request.id, json(7));
  ASSERT_TRUE(ParseControlRequest(R"({"request": "holders"})", &request, &err)) << err;
  EXPECT_EQ(request.kind, ControlRequest::Kind::kHolders);
  EXPECT_TRUE(request.id.is_null());
  ASSERT_TRUE(ParseControlRequest(R"({"request": "resize", "jobs": 3, "id": "a"})", &request, &err))
      << err;
  EXPECT_EQ(request.kind, ControlRequest::Kind::kResize);
  EXPECT_EQ(request.jobs, 3);
  EXPECT_EQ(request.id, json("a"));
  ASSERT_TRUE(ParseControlRequest(R"({"request": "stop"})", &request, &err)) << err;
  EXPECT_EQ(request.kind, ControlRequest::Kind::kStop);
  EXPECT_EQ(request.timeout_ms, -1);
  ASSERT_TRUE(ParseControlRequest(R"({"request": "stop", "timeout_ms": 2500})", &request, &err));
  EXPECT_EQ(request.timeout_ms, 2500);
}

TEST(ControlProtocolTest, BadRequestsNameTheFault) {
  struct Case {
    const char* line;
    const char* said;
  };
  const std::string max = std::to_string(Ledger::kMaxBudget);
  std::vector<Case> cases = {
      {"", "not JSON"},
      {"{\"request\": \"status\"", "not JSON"},
      {"[1, 2]", "not a JSON object"},
      {"\"status\"", "not a JSON object"},
      {"{}", "no \"request\" string (one of: status, holders, resize, stop)"},
      {"{\"request\": 5}", "no \"request\" string"},
      {"{\"request\": \"STATUS\"}", "unknown request \"STATUS\" (known: status, holders"},
      {"{\"request\": \"resize\"}", "resize needs \"jobs\": an integer from 1 to"},
      {"{\"request\": \"resize\", \"jobs\": \"4\"}", "resize needs \"jobs\""},
      {"{\"request\": \"resize\", \"jobs\": 2.5}", "resize needs \"jobs\""},
      {"{\"request\": \"resize\", \"jobs\": 0}", "resize to 0 jobs: the budget must be from 1"},
      {"{\"request\": \"resize\", \"jobs\": 99999}", "resize to 99999 jobs"},
      {"{\"request\": \"resize\", \"jobs\": 18446744073709551615}", "resize to"},
      {"{\"request\": \"stop\", \"timeout_ms\": -1}", "stop's \"timeout_ms\" must be an integer"},
      {"{\"request\": \"stop\", \"timeout_ms\": \"5\"}", "from 0 to 86400000, not \"5\""},
      {"{\"request\": \"stop\", \"timeout_ms\": 1e12}", "stop's \"timeout_ms\""},
  };
  for (const Case& c : cases) {
    ControlRequest request;
    std::string err;
    EXPECT_FALSE(ParseControlRequest(c.line, &request, &err)) << c.line;
    EXPECT_NE(err.find(c.said), std::string::npos) << c.line << ": " << err;
  }
}

TEST(ControlProtocolTest, RepliesCarryVersionOkAndId) {
  json reply = json::parse(ControlReply({{"budget", 4}}, json(9)));
  EXPECT_EQ(reply, (json{{"budget", 4}, {"version", kControlVersion}, {"ok", true}, {"id", 9}}));
  json error = json::parse(ControlError("no", nullptr));
  EXPECT_EQ(error, (json{{"version", kControlVersion}, {"ok", false}, {"error", "no"}}));
  EXPECT_EQ(ControlReply({}, nullptr).back(), '\n');
}

class FakeDelegate : public ControlServer::Delegate {
 public:
  json Status() override {
    ++status_calls;
    json body = {{"budget", 4}};
    if (!pad.empty()) body["pad"] = pad;
    return body;
  }
  json Holders() override {
    ++holders_calls;
    return {{"holders", json::array({std::string(400, 'h')})}};
  }
  bool Resize(int jobs, json* body, std::string* err) override {
    if (jobs > 8) {
      *err = "refused: more than 8";
      return false;
    }
    resized_to = jobs;
    *body = {{"jobs", jobs}};
    return true;
  }
  bool Stop(int64_t timeout_ms) override {
    ++stops;
    stop_timeout_ms = timeout_ms;
    return daemon;
  }

  int status_calls = 0;
  int holders_calls = 0;
  std::string pad;  // added to status replies when set (big replies)
  int resized_to = 0;
  int stops = 0;
  int64_t stop_timeout_ms = 0;
  bool daemon = false;  // Stop says a summary follows (a daemon's)
};

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    char templ[] = "/tmp/jb-control-XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    dir_ = templ;
    path_ = dir_ + "/control.sock";
    std::string err;
    ASSERT_TRUE(server_.Listen(path_, &err)) << err;
  }
  void TearDown() override {
    server_.Shutdown();
    EXPECT_TRUE(RunUntil([&] { return !uv_loop_alive(&loop_); })) << "handles left open";
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  bool RunUntil(const std::function<bool()>& done) { return test_util::RunLoopUntil(&loop_, done); }

  UniqueFd Connect() {
    UniqueFd fd = test_util::ConnectTo(path_);
    EXPECT_TRUE(fd.valid()) << strerror(errno);
    EXPECT_TRUE(RunUntil([&] { return server_.connection_count() > connected_; }));
    connected_ = server_.connection_count();
    return fd;
  }
  void Send(int fd, const std::string& text) {
    ASSERT_EQ(send(fd, text.data(), text.size(), MSG_NOSIGNAL), static_cast<ssize_t>(text.size()));
  }
  // The next reply line on `fd`, parsed; discarded JSON when none came.
  json NextReply(int fd) {
    std::string line;
    char c = 0;
    while (line.size() < 100000) {
      if (!RunUntil([&] { return test_util::Readable(fd); })) break;
      if (recv(fd, &c, 1, 0) != 1 || c == '\n') break;
      line += c;
    }
    return json::parse(line, nullptr, false);
  }

  uv_loop_t loop_{};
  FakeDelegate delegate_;
  ControlServer server_{&loop_, &delegate_};
  std::string dir_, path_;
  size_t connected_ = 0;
};

TEST_F(ControlServerTest, AnswersEachRequestInOrder) {
  UniqueFd client = Connect();
  Send(client.get(),
       "{\"request\":\"status\",\"id\":1}\n{\"request\":\"resize\",\"jobs\":3}\n"
       "{\"request\":\"resize\",\"jobs\":9,\"id\":\"big\"}\n\n{\"request\":\"stop\"}\n");
  EXPECT_EQ(NextReply(client.get()),
            (json{{"budget", 4}, {"version", kControlVersion}, {"ok", true}, {"id", 1}}));
  EXPECT_EQ(NextReply(client.get()),
            (json{{"jobs", 3}, {"version", kControlVersion}, {"ok", true}}));
  EXPECT_EQ(NextReply(client.get()), (json{{"version", kControlVersion},
                                           {"ok", false},
                                           {"error", "refused: more than 8"},
                                           {"id", "big"}}));
  EXPECT_EQ(NextReply(client.get()), (json{{"stopping", true},
                                           {"summary_follows", false},
                                           {"version", kControlVersion},
                                           {"ok", true}}));
  EXPECT_EQ(delegate_.resized_to, 3);
  EXPECT_EQ(delegate_.stops, 1);
  EXPECT_EQ(delegate_.stop_timeout_ms, -1);
}

TEST_F(ControlServerTest, ADaemonsStopperIsKeptForTheLastLine) {
  delegate_.daemon = true;
  UniqueFd stopper = Connect();
  UniqueFd other = Connect();
  Send(stopper.get(), "{\"request\":\"stop\",\"timeout_ms\":700}\n");
  EXPECT_EQ(NextReply(stopper.get()), (json{{"stopping", true},
                                            {"summary_follows", true},
                                            {"version", kControlVersion},
                                            {"ok", true}}));
  EXPECT_EQ(delegate_.stop_timeout_ms, 700);
  server_.Shutdown();
  std::vector<UniqueFd> waiters = server_.TakeEndWaiters();
  ASSERT_EQ(waiters.size(), 1u);  // the stopper, not the other client
  std::string last = "{\"stopped\":true}\n";
  ASSERT_EQ(send(waiters[0].get(), last.data(), last.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(last.size()));
  waiters.clear();
  EXPECT_EQ(NextReply(stopper.get()), (json{{"stopped", true}}));
  char byte = 0;
  ASSERT_TRUE(RunUntil([&] { return test_util::Readable(stopper.get()); }));
  EXPECT_EQ(recv(stopper.get(), &byte, 1, 0), 0) << "closed after the last line";
  ASSERT_TRUE(RunUntil([&] { return test_util::Readable(other.get()); }));
  EXPECT_EQ(recv(other.get(), &byte, 1, 0), 0) << "the other client is closed at shutdown";
}

TEST_F(ControlServerTest, BadLinesGetErrorsAndTheConnectionStaysUsable) {
  UniqueFd client = Connect();
  Send(client.get(),
       "hello\n{\"request\":\"nope\",\"id\":2}\n\xff\xfe\n{\"request\":\"status\"}\n");
  json reply = NextReply(client.get());
  EXPECT_EQ(reply["ok"], false);
  EXPECT_NE(reply["error"].get<std::string>().find("not JSON"), std::string::npos) << reply;
  reply = NextReply(client.get());
  EXPECT_EQ(reply["id"], 2);
  EXPECT_NE(reply["error"].get<std::string>().find("unknown request \"nope\""), std::string::npos);
  EXPECT_EQ(NextReply(client.get())["ok"], false);
  EXPECT_EQ(NextReply(client.get())["budget"], 4);
  EXPECT_EQ(server_.closed_for_abuse(), 0);
}

// A client that sends its requests and shuts its sending side (echo ... |
// nc -N) gets every reply, then end of file. The connection used to close
// at end of file, with the replies not yet written.
TEST_F(ControlServerTest, AHalfClosedClientGetsEveryReplyThenEndOfFile) {
  UniqueFd client = Connect();
  std::string requests;
  for (int i = 0; i < 600; ++i) {
    requests += "{\"request\":\"holders\",\"id\":" + std::to_string(i) + "}\n";
  }
  Send(client.get(), requests);
  ASSERT_EQ(shutdown(client.get(), SHUT_WR), 0);
  // All answered before the client reads: more than a socket buffer of
  // replies (600 x ~450 bytes) waits in the server.
  ASSERT_TRUE(RunUntil([&] { return delegate_.holders_calls == 600; }));
  std::string got;
  ASSERT_TRUE(RunUntil([&] {
    char buffer[65536];
    ssize_t n = recv(client.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (n > 0) got.append(buffer, static_cast<size_t>(n));
    return n == 0;
  })) << "no end of file after "
      << got.size() << " bytes";
  size_t lines = 0, start = 0, end = 0;
  while ((end = got.find('\n', start)) != std::string::npos) {
    json reply = json::parse(got.substr(start, end - start));
    EXPECT_EQ(reply["id"], static_cast<int>(lines));
    ++lines;
    start = end + 1;
  }
  EXPECT_EQ(lines, 600u);
  EXPECT_EQ(server_.connection_count(), 0u);
  EXPECT_EQ(server_.closed_for_abuse(), 0);
}

TEST_F(ControlServerTest, AnOverlongLineIsAnErrorAndClosesTheConnection) {
  UniqueFd client = Connect();
  Send(client.get(), std::string(kMaxControlLineBytes + 1, 'x'));
  json reply = NextReply(client.get());
  EXPECT_NE(reply["error"].get<std::string>().find("a line longer than 4096 bytes"),
            std::string::npos)
      << reply;
  EXPECT_TRUE(RunUntil([&] { return server_.connection_count() == 0; }));
  EXPECT_EQ(server_.closed_for_abuse(), 1);
}

// A client that sends requests and never reads: closed once its unread
// replies pass the limit, answering at most a bounded number per turn of
// the loop (others are served meanwhile).
TEST_F(ControlServerTest, AFloodWithoutReadingIsClosedAndNeverHoldsTheLoop) {
  // Replies of 2 KB: the unread ones pass 1 MiB after a few hundred
  // requests, even under ASan (with 40-byte replies one CI run did not get
  // there within the 5 s a wait may last).
  delegate_.pad = std::string(2000, 'x');
  UniqueFd flood = Connect();
  UniqueFd other = Connect();
  int most_per_turn = 0, this_turn = 0;
  uv_check_t check;
  uv_check_init(&loop_, &check);
  struct Counts {
    int* most;
    int* now;
    FakeDelegate* delegate;
    int seen;
  } counts{&most_per_turn, &this_turn, &delegate_, 0};
  check.data = &counts;
  uv_check_start(&check, [](uv_check_t* handle) {
    auto* c = static_cast<Counts*>(handle->data);
    *c->most = std::max(*c->most, c->delegate->status_calls - c->seen);
    c->seen = c->delegate->status_calls;
  });
  std::string burst;
  for (int i = 0; i < 100; ++i) burst += "{\"request\":\"status\"}\n";
  int sent = 0;
  bool flood_closed = RunUntil([&] {
    ssize_t n = send(flood.get(), burst.data(), burst.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) sent += static_cast<int>(n);
    return server_.closed_for_abuse() == 1;
  });
  EXPECT_TRUE(flood_closed) << "sent " << sent << " bytes, status answered "
                            << delegate_.status_calls;
  EXPECT_LE(most_per_turn, 2 * ControlServer::kRequestsPerTurn);
  Send(other.get(), "{\"request\":\"status\"}\n");
  EXPECT_EQ(NextReply(other.get())["budget"], 4);
  bool closed = false;
  check.data = &closed;
  uv_close(reinterpret_cast<uv_handle_t*>(&check),
           [](uv_handle_t* handle) { *static_cast<bool*>(handle->data) = true; });
  EXPECT_TRUE(RunUntil([&] { return closed; }));  // before `check` goes out of scope
}

// Out of fds, a client waits in the listener's backlog: the listener stays
// readable, and if it were still watched every turn of the loop would wake
// for it at once (jobbridge at 100 % CPU until an fd came free). Unwatched,
// the loop turns for its retry timer alone; once an fd is free the client
// is accepted and served.
TEST_F(ControlServerTest, OutOfFdsAWaitingClientDoesNotSpinTheLoop) {
  UniqueFd client = test_util::ConnectTo(path_);
  ASSERT_TRUE(client.valid());
  struct Window {
    uv_prepare_t turns;
    uv_timer_t end;
    int count = 0;
    int closed = 0;
  } window;
  uv_prepare_init(&loop_, &window.turns);
  window.turns.data = &window;
  uv_prepare_start(&window.turns,
                   [](uv_prepare_t* handle) { ++static_cast<Window*>(handle->data)->count; });
  uv_timer_init(&loop_, &window.end);
  uv_timer_start(
      &window.end, [](uv_timer_t* timer) { uv_stop(timer->loop); }, 300, 0);
  {
    test_util::FewFreeFds none(0);
    uv_run(&loop_, UV_RUN_DEFAULT);  // until the window's timer stops it
  }
  // The retry timer turns it a few times in 300 ms; spinning, it turned
  // hundreds of thousands of times.
  EXPECT_LT(window.count, 50);
  EXPECT_EQ(server_.connection_count(), 0u);
  for (uv_handle_t* handle : {reinterpret_cast<uv_handle_t*>(&window.turns),
                              reinterpret_cast<uv_handle_t*>(&window.end)}) {
    handle->data = &window;
    uv_close(handle, [](uv_handle_t* h) { ++static_cast<Window*>(h->data)->closed; });
  }
  Send(client.get(), "{\"request\":\"status\"}\n");
  EXPECT_EQ(NextReply(client.get())["budget"], 4);
  EXPECT_TRUE(RunUntil([&] { return window.closed == 2; }));
}

TEST_F(ControlServerTest, ConnectionsBeyondTheLimitAreToldAndClosed) {
  std::vector<UniqueFd> clients;
  for (size_t i = 0; i < ControlServer::kMaxConnections; ++i) clients.push_back(Connect());
  UniqueFd extra = test_util::ConnectTo(path_);
  ASSERT_TRUE(extra.valid());
  json reply = NextReply(extra.get());
  EXPECT_NE(reply["error"].get<std::string>().find("too many control connections"),
            std::string::npos)
      << reply;
  EXPECT_EQ(server_.connection_count(), ControlServer::kMaxConnections);
  Send(clients.back().get(), "{\"request\":\"status\"}\n");
  EXPECT_EQ(NextReply(clients.back().get())["budget"], 4);
}

TEST_F(ControlServerTest, AnotherUidIsRefusedBeforeAnyByte) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to connect as another uid";
  chmod(dir_.c_str(), 0755);
  chmod(path_.c_str(), 0777);  // so that the kernel lets it connect at all
  int said[2];
  ASSERT_EQ(pipe(said), 0);
  pid_t child = fork();
  if (child == 0) {
    char result = 'x';
    if (setgid(65534) == 0 && setuid(65534) == 0) {
      UniqueFd fd = test_util::ConnectTo(path_);
      std::string line = "{\"request\":\"status\"}\n";
      char byte = 0;
      if (!fd.valid()) {
        result = 'c';
      } else {
        send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL);
        result = recv(fd.get(), &byte, 1, 0) <= 0 ? 'r' : 'a';
      }
    }
    (void)!write(said[1], &result, 1);
    _exit(0);
  }
  close(said[1]);
  char result = 0;
  ASSERT_TRUE(RunUntil([&] { return test_util::Readable(said[0]); }));
  ASSERT_EQ(read(said[0], &result, 1), 1);
  close(said[0]);
  waitpid(child, nullptr, 0);
  EXPECT_EQ(result, 'r') << "a: it was answered; c: it could not connect; x: setuid failed";
  EXPECT_EQ(delegate_.status_calls, 0);
}

}  // namespace
}  // namespace jobbridge
