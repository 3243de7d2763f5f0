#include "bridge.h"

#include <signal.h>
#include <uv.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/ledger.h"
#include "core/makeflags.h"
#include "legacy_pool.h"
#include "log.h"
#include "runtime_dir-posix.h"
#include "subprocess-posix.h"
#include "terminal-posix.h"

extern char** environ;

namespace jobbridge {

namespace {

constexpr Owner kCommandOwner{OwnerKind::kCommand, 0};
constexpr Owner kLegacyOwner{OwnerKind::kLegacyPool, 0};
constexpr std::array<int, 3> kForwardedSignals = {SIGINT, SIGTERM, SIGHUP};

// Warns when the bridge was started inside another jobserver: it does not
// join an outer budget yet, so the tree below it gets a budget of its own.
// Every variable is checked, since each is replaced for the children.
void WarnAboutOuterJobserver(int jobs) {
  for (const char* variable : kMakeflagsVariables) {
    const char* value = std::getenv(variable);
    if (!value) continue;
    Makeflags flags;
    std::string err;
    if (!ParseMakeflags(value, &flags, &err)) {
      LogWarning("ignoring a malformed jobserver in " + std::string(variable) + ": " + err);
      continue;
    }
    auto kind = flags.auth.kind;
    if (kind == JobserverAuth::Kind::kPipe || kind == JobserverAuth::Kind::kFifo) {
      LogWarning("started inside another jobserver (" + std::string(variable) + " has " +
                 FormatAuth(flags.auth) + "); joining an outer budget is not supported yet, " +
                 "so this tree gets its own budget of " + std::to_string(jobs));
      return;
    }
  }
}

// The command's environment: ours with the three MAKEFLAGS variables replaced
// consistently (jobserver-rs reads whichever of them is set first).
std::vector<std::string> ChildEnvironment(int jobs, const JobserverAuth& auth) {
  // The user's other make flags (-k, variables) stay; a malformed jobserver
  // word was reported already and is dropped with the rest of its kind.
  std::vector<std::string> kept;
  if (const char* makeflags = std::getenv("MAKEFLAGS")) {
    kept = WordsWithoutJobserver(SplitMakeflags(makeflags));
  }
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    std::string_view text(*entry);
    bool replaced = false;
    for (const char* name : kMakeflagsVariables) {
      replaced |= text.starts_with(std::string(name) + "=");
    }
    if (!replaced) env.emplace_back(text);
  }
  env.push_back("MAKEFLAGS=" + FormatMakeflags(kept, jobs, auth));
  env.push_back("MFLAGS=" + FormatMakeflags({}, jobs, auth));
  env.push_back("CARGO_MAKEFLAGS=" + FormatMakeflags({}, jobs, auth));
  return env;
}

// The event loop's state. Lives on the stack of RunBridge and outlives every
// handle: uv_run returns only after all of them are closed.
struct Context {
  uv_loop_t loop;
  std::vector<std::unique_ptr<uv_signal_t>> forwarders;
  uv_signal_t child_changed;
  pid_t child = -1;
  Terminal terminal;
  int exit_status = 1;
};

void CloseAll(Context* ctx) {
  for (auto& handle : ctx->forwarders) {
    uv_close(reinterpret_cast<uv_handle_t*>(handle.get()), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&ctx->child_changed), nullptr);
}

void OnForwardedSignal(uv_signal_t* handle, int signum) {
  auto* ctx = static_cast<Context*>(handle->data);
  // The command runs in its own process group: signal all of it, as a
  // terminal's Ctrl-C would.
  kill(-ctx->child, signum);
}

// The command's group was stopped (Ctrl-Z, SIGTTIN, SIGSTOP): stop with it,
// so the shell sees its job stopped, and carry on it when resumed.
void FollowStop(Context* ctx) {
  ctx->terminal.TakeBack();
  kill(getpid(), SIGSTOP);
  // Resumed by "fg" (the terminal is ours again) or "bg" (it is not).
  if (ctx->terminal.OwnGroupIsForeground()) ctx->terminal.GiveTo(ctx->child);
  kill(-ctx->child, SIGCONT);
}

void OnChildChanged(uv_signal_t* handle, int /*signum*/) {
  auto* ctx = static_cast<Context*>(handle->data);
  ChildState state = PollChild(ctx->child);
  if (state.kind == ChildState::Kind::kStopped) {
    FollowStop(ctx);
  } else if (state.kind == ChildState::Kind::kExited) {
    ctx->exit_status = state.status;
    CloseAll(ctx);
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

}  // namespace

int RunBridge(const Options& options) {
  sigset_t original_mask;
  sigprocmask(SIG_BLOCK, nullptr, &original_mask);
  WarnAboutOuterJobserver(options.jobs);

  std::string err;
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
  uv_loop_init(&ctx.loop);
  std::vector<int> handled = StartForwarders(&ctx);
  // Watched before the fork, so an exit right after it is not missed.
  uv_signal_init(&ctx.loop, &ctx.child_changed);
  ctx.child_changed.data = &ctx;
  uv_signal_start(&ctx.child_changed, OnChildChanged, SIGCHLD);
  handled.push_back(SIGCHLD);
  ctx.terminal = Terminal::OpenIfForeground();

  SpawnRequest request{options.command,
                       ChildEnvironment(options.jobs, pool->Auth()),
                       pool->InheritedFds(),
                       original_mask,
                       handled,
                       ctx.terminal.fd()};
  int spawn_status = 0;
  if (!SpawnChild(request, &ctx.child, &spawn_status, &err)) {
    LogError(err);
    ctx.terminal.TakeBack();
    CloseAll(&ctx);
    uv_run(&ctx.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctx.loop);
    return spawn_status;
  }
  uv_run(&ctx.loop, UV_RUN_DEFAULT);
  ctx.terminal.TakeBack();
  if (uv_loop_close(&ctx.loop) != 0) LogWarning("internal: event loop closed with open handles");

  CloseLegacyPool(pool.get(), &ledger, options.verbose);
  ledger.Release(kCommandOwner, 1, &err);
  pool.reset();
  if (!runtime_dir.Remove(&err)) LogWarning(err);
  return ctx.exit_status;
}

}  // namespace jobbridge
