// libFuzzer target for the control socket (docs/CONTROL.md): the input is
// split into chunks written, one after another, by a client into a real
// ControlServer on one libuv loop (a socketpair adopted by the server, so no
// client process is needed), with the loop run between chunks and the
// client reading what comes back. Every reply line must be a JSON object
// with "version" and a boolean "ok", and the server must either keep the
// connection or have closed it for a reason it counts. Also every line of
// the input goes through ParseControlRequest alone. Run by scripts/fuzz.sh;
// seeds in fuzz/corpus/control/.
//
// Chunks: a byte N, then N bytes (fewer at the end of the input).
#include <sys/socket.h>
#include <uv.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "control/control_protocol.h"
#include "control/control_server.h"
#include "util/unique_fd.h"

namespace jobbridge {
namespace {

void Check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "control_fuzzer: invariant broken: %s\n", what);
  std::abort();
}

class Delegate : public ControlServer::Delegate {
 public:
  nlohmann::json Status() override { return {{"budget", 4}}; }
  nlohmann::json Holders() override { return {{"holders", nlohmann::json::array()}}; }
  bool Resize(int jobs, nlohmann::json* body, std::string* err) override {
    Check(jobs >= 1, "resize below 1 reached the delegate");
    if (jobs % 2 == 0) {
      *body = {{"jobs", jobs}};
      return true;
    }
    *err = "odd";
    return false;
  }
  bool Stop(int64_t /*timeout_ms*/) override { return false; }
};

// Reads what is there and checks every complete reply line.
void ReadReplies(int fd, std::string* pending) {
  char buffer[4096];
  ssize_t n;
  while ((n = recv(fd, buffer, sizeof buffer, MSG_DONTWAIT)) > 0) pending->append(buffer, n);
  size_t end;
  while ((end = pending->find('\n')) != std::string::npos) {
    nlohmann::json reply = nlohmann::json::parse(pending->substr(0, end), nullptr, false);
    Check(!reply.is_discarded() && reply.is_object(), "a reply line is not a JSON object");
    Check(reply.value("version", 0) == kControlVersion, "a reply without the version");
    Check(reply.contains("ok") && reply["ok"].is_boolean(), "a reply without a boolean ok");
    pending->erase(0, end + 1);
  }
}

}  // namespace
}  // namespace jobbridge

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace jobbridge;
  std::string_view input(reinterpret_cast<const char*>(data), size);
  for (size_t start = 0; start < input.size();) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    ControlRequest request;
    std::string err;
    if (!ParseControlRequest(input.substr(start, end - start), &request, &err)) {
      Check(!err.empty(), "a refused request without a reason");
    }
    start = end + 1;
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  Delegate delegate;
  ControlServer server(&loop, &delegate);
  int pair[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) == 0,
        "socketpair");
  UniqueFd client(pair[0]);
  Check(server.Adopt(UniqueFd(pair[1])), "the server refused its own uid");
  std::string pending;
  for (size_t i = 0; i < size;) {
    size_t length = data[i++];
    length = std::min(length, size - i);
    if (length > 0) send(client.get(), data + i, length, MSG_NOSIGNAL | MSG_DONTWAIT);
    i += length;
    for (int turn = 0; turn < 4; ++turn) uv_run(&loop, UV_RUN_NOWAIT);
    ReadReplies(client.get(), &pending);
  }
  Check(server.connection_count() <= 1, "more connections than adopted");
  if (server.connection_count() == 0) {
    // Closed: only for a line over the limit or replies left unread.
    Check(server.closed_for_abuse() == 1, "closed without a counted reason");
  }
  server.Shutdown();
  while (uv_run(&loop, UV_RUN_NOWAIT) != 0) {
  }
  Check(uv_loop_close(&loop) == 0, "handles left open");
  return 0;
}
