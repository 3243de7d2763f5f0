#include "bridge.h"

#include <signal.h>
#include <sys/resource.h>
#include <uv.h>

#include <array>
#include <cstdio>
#include <memory>
#include <set>
#include <vector>

#include "adapt.h"
#include "broker.h"
#include "child_env.h"
#include "core/ledger.h"
#include "legacy_pool.h"
#include "log.h"
#include "runtime_dir-posix.h"
#include "socket_server.h"
#include "subprocess-posix.h"
#include "terminal-posix.h"

namespace jobbridge {

namespace {

constexpr std::array<int, 3> kForwardedSignals = {SIGINT, SIGTERM, SIGHUP};

// The event loop's state. Lives on the stack of RunBridge and outlives every
// handle: uv_run returns only after all of them are closed.
struct Context {
  uv_loop_t loop;
  std::vector<std::unique_ptr<uv_signal_t>> forwarders;
  uv_signal_t child_changed;
  pid_t child = -1;
  Terminal terminal;
  int exit_status = 1;
  int exit_signal = 0;  // the signal that killed the command, or 0
  std::unique_ptr<SocketServer> server;
  std::unique_ptr<Broker> broker;
  Ledger* ledger = nullptr;
};

void CloseSignalHandles(Context* ctx) {
  for (auto& handle : ctx->forwarders) {
    uv_close(reinterpret_cast<uv_handle_t*>(handle.get()), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&ctx->child_changed), nullptr);
}

// Says which socket clients outlived the command, then closes every
// connection (their slots come back through the broker) and the listener.
void StopServing(Context* ctx) {
  std::set<pid_t> holders;
  for (const auto& [owner, count] : ctx->ledger->Holders()) {
    if (owner.kind == OwnerKind::kSocket) holders.insert(ctx->server->PeerPid(owner.id));
  }
  if (!holders.empty()) {
    std::string pids;
    for (pid_t pid : holders) pids += (pids.empty() ? "" : ", ") + std::to_string(pid);
    LogWarning(std::to_string(holders.size()) +
               " socket client(s) still held slots when the command ended (pid " + pids +
               "); their connections were closed");
  }
  // The broker stops first, so no waiting client is granted a slot while
  // the others' connections close.
  ctx->broker->Stop();
  ctx->server->Shutdown();
}

void OnForwardedSignal(uv_signal_t* handle, int signum) {
  auto* ctx = static_cast<Context*>(handle->data);
  // The command runs in its own process group: signal all of it, as a
  // terminal's Ctrl-C would.
  kill(-ctx->child, signum);
}

// The command's group was stopped by job control (Ctrl-Z, or reading or
// writing the terminal from the background): stop with it, so the shell sees
// its job stopped, and carry on when resumed. A stop by anything else (a
// debugger, SIGSTOP) is the stopper's business: whoever stopped the command
// continues it, and jobbridge keeps serving meanwhile.
void FollowStop(Context* ctx, int stop_signal) {
  bool job_control = stop_signal == SIGTSTP || stop_signal == SIGTTIN || stop_signal == SIGTTOU;
  if (!ctx->terminal.active() || !job_control) return;
  ctx->terminal.TakeBackFrom(ctx->child);
  kill(getpid(), SIGSTOP);
  // Resumed by "fg" (the terminal is ours again) or "bg" (it is not).
  if (ctx->terminal.OwnGroupIsForeground()) ctx->terminal.GiveTo(ctx->child);
  kill(-ctx->child, SIGCONT);
}

void OnChildChanged(uv_signal_t* handle, int /*signum*/) {
  auto* ctx = static_cast<Context*>(handle->data);
  ChildState state = PollChild(ctx->child);
  if (state.kind == ChildState::Kind::kStopped) {
    FollowStop(ctx, state.signal);
  } else if (state.kind == ChildState::Kind::kExited) {
    ctx->exit_status = state.status;
    ctx->exit_signal = state.signal;
    CloseSignalHandles(ctx);
    StopServing(ctx);
  }
}

bool IsIgnored(int sig) {
  struct sigaction action;
  return sigaction(sig, nullptr, &action) == 0 && action.sa_handler == SIG_IGN;
}

// Watches the signals to forward. One ignored when jobbridge started (nohup)
// stays ignored, for jobbridge and the command alike.
std::vector<int> StartForwarders(Context* ctx) {
  std::vector<int> watched;
  for (int sig : kForwardedSignals) {
    if (IsIgnored(sig)) continue;
    auto handle = std::make_unique<uv_signal_t>();
    uv_signal_init(&ctx->loop, handle.get());
    handle->data = ctx;
    uv_signal_start(handle.get(), OnForwardedSignal, sig);
    ctx->forwarders.push_back(std::move(handle));
    watched.push_back(sig);
  }
  return watched;
}

// Raises the soft fd limit to the hard one (every socket client costs an
// fd). Returns the limit jobbridge was started with, for the command.
rlimit RaiseFdLimit() {
  rlimit original{};
  if (getrlimit(RLIMIT_NOFILE, &original) != 0) return {};
  rlimit raised = original;
  raised.rlim_cur = original.rlim_max;
  setrlimit(RLIMIT_NOFILE, &raised);
  return original;
}

// Counts the tokens back and says what is missing or extra. Returns false
// when the pool does not hold what the ledger says it should.
bool CloseLegacyPool(LegacyPool* pool, Ledger* ledger, bool verbose) {
  pool->CloseInherited();
  std::string err;
  int back = pool->Drain(&err);
  int expected = ledger->HeldBy(kLegacyOwner);
  if (back < 0) {
    LogWarning(err);
    return false;
  }
  if (expected > 0) ledger->Release(kLegacyOwner, expected, &err);
  if (back < expected) {
    LogWarning(std::to_string(expected - back) + " of " + std::to_string(expected) +
               " jobserver tokens did not come back: a job holding them was killed, or still "
               "runs outside the tree");
    return false;
  }
  if (back > expected) {
    LogWarning("the jobserver pool held " + std::to_string(back - expected) +
               " token(s) more than the " + std::to_string(expected) +
               " it handed out: a client wrote back tokens it never took");
    return false;
  }
  if (verbose) {
    LogInfo("all " + std::to_string(expected) + " jobserver tokens came back (budget " +
            std::to_string(ledger->budget()) + ")");
  }
  return true;
}

// Builds the event loop's handles: broker, socket server, signal watchers.
// Returns false (with *err; the handles made so far are closed by running
// the loop) when the socket cannot be served.
bool StartLoop(Context* ctx, Ledger* ledger, LegacyPool* pool, const std::string& socket_path,
               std::vector<int>* handled, std::string* err) {
  ctx->ledger = ledger;
  uv_loop_init(&ctx->loop);
  ctx->broker = std::make_unique<Broker>(&ctx->loop, ledger, pool);
  ctx->server = std::make_unique<SocketServer>(&ctx->loop, ctx->broker.get());
  if (!ctx->server->Listen(socket_path, err)) {
    ctx->server->Shutdown();
    return false;
  }
  ctx->broker->Start(ctx->server.get());
  *handled = StartForwarders(ctx);
  // Watched before the fork, so an exit right after it is not missed.
  uv_signal_init(&ctx->loop, &ctx->child_changed);
  ctx->child_changed.data = ctx;
  uv_signal_start(&ctx->child_changed, OnChildChanged, SIGCHLD);
  handled->push_back(SIGCHLD);
  ctx->terminal = Terminal::Open();
  return true;
}

// The shim folder for the adapters, or "" when they are off or cannot be made.
std::string MakeShims(const Options& options, const RuntimeDir& runtime_dir) {
  if (!options.adapters) return "";
  std::string dir = runtime_dir.Join("bin"), err;
  if (CreateShims(dir, &err)) return dir;
  LogWarning(err + "; running without adapters");
  return "";
}

// After the loop: every free slot back in the pool, the tokens counted, the
// ledger balanced to zero, the folder removed.
void Finish(Context* ctx, Ledger* ledger, std::unique_ptr<LegacyPool> pool, RuntimeDir* runtime_dir,
            bool verbose) {
  std::string err;
  if (!ctx->broker->ReturnFreeSlots(&err)) LogWarning(err);
  CloseLegacyPool(pool.get(), ledger, verbose);
  ledger->Release(kCommandOwner, 1, &err);
  if (!ledger->CheckInvariants(&err) || ledger->granted() != 0) {
    LogWarning("internal: the ledger does not balance at exit: " + err);
  }
  pool.reset();
  if (!runtime_dir->Remove(&err)) LogWarning(err);
}

void RunLoopToEnd(Context* ctx) {
  uv_run(&ctx->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&ctx->loop) != 0) LogWarning("internal: event loop closed with open handles");
}

}  // namespace

int RunBridge(const Options& options) {
  sigset_t original_mask;
  sigprocmask(SIG_BLOCK, nullptr, &original_mask);
  rlimit original_nofile = RaiseFdLimit();
  WarnAboutOuterJobserver(options.jobs);

  std::string err;
  for (const std::string& stale : RuntimeDir::SweepStale()) {
    LogWarning("removed " + stale + ", left by a jobbridge that was killed");
  }
  RuntimeDir runtime_dir;
  if (!runtime_dir.Create(&err)) {
    LogError(err);
    return 1;
  }
  Ledger ledger(options.jobs);
  ledger.Grant(kCommandOwner, 1, &err);  // the implicit slot, never returned
  int tokens = options.jobs - 1;
  if (tokens > 0) ledger.Grant(kLegacyOwner, tokens, &err);
  auto pool = LegacyPool::Create(options.legacy_style, tokens, runtime_dir.path(), &err);
  if (!pool) {
    LogError(err);
    return 1;
  }

  Context ctx;
  std::string socket_path = runtime_dir.Join("jobserver.sock");
  std::vector<int> handled;
  if (!StartLoop(&ctx, &ledger, pool.get(), socket_path, &handled, &err)) {
    LogError(err);
    RunLoopToEnd(&ctx);
    return 1;
  }
  std::string shim_dir = MakeShims(options, runtime_dir);
  SpawnRequest request{options.command,
                       ChildEnvironment(options.jobs, pool->Auth(), socket_path, shim_dir),
                       pool->InheritedFds(),
                       original_mask,
                       handled,
                       ctx.terminal.OwnGroupIsForeground() ? ctx.terminal.fd() : -1,
                       original_nofile};
  int spawn_status = 0;
  if (!SpawnChild(request, &ctx.child, &spawn_status, &err)) {
    LogError(err);
    CloseSignalHandles(&ctx);
    StopServing(&ctx);
    RunLoopToEnd(&ctx);
    return spawn_status;
  }
  RunLoopToEnd(&ctx);
  ctx.terminal.TakeBackFrom(ctx.child);
  Finish(&ctx, &ledger, std::move(pool), &runtime_dir, options.verbose);
  DieLikeChild(ctx.exit_signal);
  return ctx.exit_status;
}

}  // namespace jobbridge
