// What RunBridge opens beside the token service (bridge_context.h): the
// control socket, the per-invocation pools, and the sampler with its readers.
#include <unistd.h>

#include "bridge_context.h"
#include "fd_limits-posix.h"
#include "log.h"

namespace jobbridge {

void ServeControl(Context* ctx, const std::string& path) {
  BudgetView::Sources sources{&ctx->loop,
                              ctx->ledger,
                              ctx->broker.get(),
                              ctx->broker ? "" : ctx->outer,
                              ctx->daemon.on,
                              [ctx] { return ctx->child; },
                              [ctx](int64_t timeout_ms) {
                                if (!ctx->daemon.on) {
                                  ForwardSignal(ctx, SIGTERM, false);
                                  return false;
                                }
                                BeginDaemonStop(ctx, timeout_ms, "jobbridge stop");
                                return true;
                              },
                              [ctx](int jobs) {
                                if (ctx->tracer) ctx->tracer->Resized(jobs);
                              },
                              [ctx] { return ctx->daemon.stopping; }};
  ctx->view = std::make_unique<BudgetView>(std::move(sources));
  auto control = std::make_unique<ControlServer>(&ctx->loop, ctx->view.get());
  std::string err;
  if (!control->Listen(path, &err)) {
    LogWarning(err + "; jobbridge status cannot reach this jobbridge");
    control->Shutdown();
    return;
  }
  ctx->control = std::move(control);
  ctx->control_path = path;
}

bool ServePools(Context* ctx, const RuntimeDir& runtime_dir, Caretaker* caretaker,
                std::string* err) {
  if (!EnoughFdsForPools(err)) return false;  // the command must still start
  auto pools = std::make_unique<PoolServer>(&ctx->loop, ctx->broker.get(), runtime_dir.path());
  pools->SetHooks({[caretaker](const PoolServer::Invocation& invocation) {
                     caretaker->Keep(invocation.id, invocation.pool->returns_fd(),
                                     invocation.pool->token_fd());
                   },
                   [caretaker](const PoolServer::Invocation& invocation) {
                     caretaker->Forget(invocation.id);
                   }});
  std::string path = runtime_dir.Join("pools.sock");
  if (!pools->Listen(path, err)) {
    pools->Shutdown();
    return false;
  }
  ctx->pools = std::move(pools);
  ctx->pools_path = path;
  return true;
}

void StartObserving(Context* ctx, const Options& options, std::unique_ptr<Tracer> tracer) {
  if (options.verbose || options.progress || tracer || options.daemon.on) {
    ctx->sampler.Start(&ctx->loop, ctx->ledger, ctx->broker.get());
    ctx->sampler.OnSample([ctx](const BudgetSample& sample) { ctx->meter.Add(sample); });
  }
  if (options.progress && isatty(STDERR_FILENO)) {
    ctx->progress.Start(&ctx->loop, STDERR_FILENO, &ctx->sampler, &ctx->child);
  }
  if (tracer) {
    tracer->Start(
        {&ctx->loop, ctx->ledger, ctx->broker.get(), [ctx] { return ctx->child; }, &ctx->sampler});
    ctx->tracer = std::move(tracer);
  }
}

}  // namespace jobbridge
