// `jobbridge daemon` inside RunBridge (bridge_context.h): a root with no
// command. It serves until `jobbridge stop` (the control socket's stop), a
// SIGTERM/SIGINT/SIGHUP or --idle-timeout, then stops taking new clients,
// waits until nothing is in use (or the stop's deadline), and ends as a
// bridge whose command ended does; the summary goes to its log and to every
// `jobbridge stop` that waits for it. docs/ARCHITECTURE.md, "The daemon".
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "bridge_context.h"
#include "control/control_protocol.h"
#include "daemon_env.h"
#include "log.h"
#include "util/eintr.h"
#include "util/uv_handle.h"

namespace jobbridge {

namespace {

// While stopping, how often it looks whether the holders are done.
constexpr uint64_t kStopCheckMs = 50;

// Nothing is in use, nobody waits and no client is connected: every slot of
// the budget sits idle (in the pool, the semaphore or a free slot).
bool Quiet(Context* ctx) {
  if (ctx->server->connection_count() > 0) return false;
  if (ctx->pools && ctx->pools->invocation_count() > 0) return false;
  for (const Broker::Place& place : ctx->broker->Places()) {
    if (place.held > place.idle || place.waiting > 0) return false;
  }
  return true;
}

std::string Seconds(uint64_t ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", static_cast<double>(ms) / 1000);
  return text;
}

// The stop's deadline has come with slots still in use: they are cut off
// (their connections closed, their invocations ended) and counted as lost.
void NoteHeldAtEnd(Context* ctx) {
  std::map<std::string, int> by_holder;  // a tool holds a socket slot and its pool's
  for (const Broker::Place& place : ctx->broker->Places()) {
    int in_use = place.held - place.idle;
    if (in_use <= 0) continue;
    ctx->daemon.held_at_end += in_use;
    by_holder[place.pid > 0 ? "pid " + std::to_string(place.pid) : SideOf(place.owner.kind)] +=
        in_use;
  }
  for (const auto& [who, count] : by_holder) {
    ctx->daemon.held_by +=
        (ctx->daemon.held_by.empty() ? "" : ", ") + who + ": " + std::to_string(count);
  }
  if (ctx->daemon.held_at_end > 0) {
    LogWarning(std::to_string(ctx->daemon.held_at_end) +
               " slot(s) were still in use when the stop's time ran out (" + ctx->daemon.held_by +
               "); their holders were cut off");
  }
}

void End(Context* ctx) {
  if (!Quiet(ctx)) NoteHeldAtEnd(ctx);
  CloseAndDelete(ctx->daemon.timer);
  ctx->daemon.timer = nullptr;
  CloseSignalHandles(ctx);
  StopServing(ctx);
}

void OnTick(uv_timer_t* timer) {
  auto* ctx = static_cast<Context*>(timer->data);
  DaemonState& daemon = ctx->daemon;
  uint64_t now = uv_now(&ctx->loop);
  bool quiet = Quiet(ctx);
  if (daemon.stopping) {
    if (quiet || now >= daemon.deadline) End(ctx);
    return;
  }
  if (!quiet) {
    daemon.quiet_since = 0;
  } else if (daemon.quiet_since == 0) {
    daemon.quiet_since = now;
  } else if (now - daemon.quiet_since >= static_cast<uint64_t>(daemon.idle_timeout_ms)) {
    BeginDaemonStop(ctx, 0, "idle for " + Seconds(now - daemon.quiet_since));
  }
}

// Writes `line` to a `jobbridge stop` waiting for it, giving up after a
// second (it reads one short line).
void WriteLast(int fd, const std::string& line) {
  timeval limit{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  int flags = fcntl(fd, F_GETFL);
  if (flags >= 0) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  RetryOnEintr([&] { return send(fd, line.data(), line.size(), MSG_NOSIGNAL); });
}

bool WriteAll(int fd, const std::string& text) {
  for (size_t done = 0; done < text.size();) {
    ssize_t n = RetryOnEintr([&] { return write(fd, text.data() + done, text.size() - done); });
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void StartDaemon(Context* ctx, const Options& options) {
  ctx->daemon.on = true;
  ctx->daemon.idle_timeout_ms = options.daemon.idle_timeout_ms;
  ctx->daemon.timer = new uv_timer_t;
  uv_timer_init(&ctx->loop, ctx->daemon.timer);
  ctx->daemon.timer->data = ctx;
  if (ctx->daemon.idle_timeout_ms > 0) {
    // A quarter of the timeout, between 50 ms and 1 s: idle is noticed within
    // that much of the timeout.
    auto every =
        static_cast<uint64_t>(std::clamp<int64_t>(ctx->daemon.idle_timeout_ms / 4, 50, 1000));
    uv_timer_start(ctx->daemon.timer, OnTick, every, every);
  }
}

void BeginDaemonStop(Context* ctx, int64_t timeout_ms, const std::string& why) {
  DaemonState& daemon = ctx->daemon;
  if (timeout_ms < 0) timeout_ms = kDefaultStopTimeoutMs;
  uint64_t now = uv_now(&ctx->loop);
  uint64_t deadline = now + static_cast<uint64_t>(timeout_ms);
  if (daemon.stopping) {
    daemon.deadline = std::min(daemon.deadline, deadline);
    return;
  }
  daemon.stopping = true;
  daemon.deadline = deadline;
  daemon.why = why;
  ctx->server->StopListening();
  if (ctx->pools) ctx->pools->StopListening();
  LogInfo("stopping (" + why + "): no new clients; waiting up to " +
          Seconds(static_cast<uint64_t>(timeout_ms)) + " for the holders to finish");
  // Not at once: the stop may be answered on the control socket right now.
  if (daemon.timer) uv_timer_start(daemon.timer, OnTick, 0, kStopCheckMs);
}

void MoveOutputToLog(const std::string& log_path) {
  UniqueFd log(open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!log.valid()) {
    LogWarning("cannot open the daemon's log " + log_path + ": " + strerror(errno) +
               "; its messages are lost");
    log.Reset(open("/dev/null", O_WRONLY | O_CLOEXEC));
  }
  LogCopyFd() = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  dup2(log.get(), STDOUT_FILENO);
  dup2(log.get(), STDERR_FILENO);
}

bool TellReady(const Options& options, const std::string& path_first,
               const std::vector<std::string>& variables, const std::string& env_path) {
  std::string message = EncodeDaemonEnv(path_first, variables);
  UniqueFd file(open(env_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!file.valid() || !WriteAll(file.get(), message)) {
    LogWarning("cannot write " + env_path + ": " + strerror(errno) +
               "; a second jobbridge daemon will not find this one");
  }
  // From now on the daemon's messages go to its log alone: the caller's
  // stderr (a CI step's pipe) must not be held open.
  if (LogCopyFd() >= 0) close(LogCopyFd());
  LogCopyFd() = -1;
  if (options.daemon.ready_fd < 0) return true;
  bool told = WriteAll(options.daemon.ready_fd, message);  // EPIPE: SIGPIPE is ignored
  close(options.daemon.ready_fd);
  return told;
}

int EndDaemon(Context* ctx, int reclaimed, int surplus) {
  DaemonState& daemon = ctx->daemon;
  int lost = daemon.held_at_end + daemon.missing;
  uint64_t end = ctx->ended_ms;
  std::string text = "stopped (" + daemon.why + "): " + ctx->meter.Summary(end, reclaimed, surplus);
  text += lost == 0 ? "; nothing lost" : "; " + std::to_string(lost) + " slot(s) lost";
  LogInfo(text);
  nlohmann::json body = {{"stopped", true},
                         {"why", daemon.why},
                         {"utilisation_waiting", ctx->meter.utilisation_waiting(end)},
                         {"utilisation", ctx->meter.utilisation_overall(end)},
                         {"peak_waiting", ctx->meter.peak_waiting()},
                         {"reclaimed", reclaimed},
                         {"surplus", surplus},
                         {"held_at_end", daemon.held_at_end},
                         {"held_by", daemon.held_by},
                         {"missing", daemon.missing},
                         {"lost", lost},
                         {"summary", text}};
  std::string line = ControlReply(body, nullptr);
  if (ctx->control) {
    for (UniqueFd& waiter : ctx->control->TakeEndWaiters()) WriteLast(waiter.get(), line);
  }
  return lost == 0 ? 0 : 1;
}

}  // namespace jobbridge
