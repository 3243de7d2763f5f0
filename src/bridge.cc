#include "bridge.h"

#include <signal.h>
#include <uv.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "core/ledger.h"
#include "core/makeflags.h"
#include "legacy_pool.h"
#include "log.h"
#include "runtime_dir-posix.h"
#include "subprocess-posix.h"

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
  std::array<uv_signal_t, kForwardedSignals.size()> signals;
  uv_poll_t child_exit;
  Child child;
  int exit_status = 1;
};

void CloseAll(Context* ctx) {
  for (uv_signal_t& handle : ctx->signals)
    uv_close(reinterpret_cast<uv_handle_t*>(&handle), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&ctx->child_exit), nullptr);
}

void OnSignal(uv_signal_t* handle, int signum) {
  auto* ctx = static_cast<Context*>(handle->data);
  // The command runs in its own process group: signal all of it, as a
  // terminal's Ctrl-C would.
  kill(-ctx->child.pid, signum);
}

void OnChildExit(uv_poll_t* handle, int /*status*/, int /*events*/) {
  auto* ctx = static_cast<Context*>(handle->data);
  ctx->exit_status = ReapChild(ctx->child.pid);
  CloseAll(ctx);
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
    LogError("all " + std::to_string(expected) + " jobserver tokens came back (budget " +
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
  for (size_t i = 0; i < kForwardedSignals.size(); ++i) {
    uv_signal_init(&ctx.loop, &ctx.signals[i]);
    ctx.signals[i].data = &ctx;
    uv_signal_start(&ctx.signals[i], OnSignal, kForwardedSignals[i]);
  }

  SpawnRequest request{options.command, ChildEnvironment(options.jobs, pool->Auth()),
                       pool->InheritedFds(), original_mask};
  int spawn_status = 0;
  if (!SpawnChild(request, &ctx.child, &spawn_status, &err)) {
    LogError(err);
    for (uv_signal_t& handle : ctx.signals) {
      uv_close(reinterpret_cast<uv_handle_t*>(&handle), nullptr);
    }
    uv_run(&ctx.loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctx.loop);
    return spawn_status;
  }
  uv_poll_init(&ctx.loop, &ctx.child_exit, ctx.child.pidfd.get());
  ctx.child_exit.data = &ctx;
  uv_poll_start(&ctx.child_exit, UV_READABLE, OnChildExit);
  uv_run(&ctx.loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&ctx.loop) != 0) LogWarning("internal: event loop closed with open handles");

  CloseLegacyPool(pool.get(), &ledger, options.verbose);
  ledger.Release(kCommandOwner, 1, &err);
  pool.reset();
  if (!runtime_dir.Remove(&err)) LogWarning(err);
  return ctx.exit_status;
}

}  // namespace jobbridge
