#include "bridge.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <uv.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "adapt.h"
#include "bridge_budget.h"
#include "bridge_context.h"
#include "child_env.h"
#include "daemon_env.h"
#include "endpoints/legacy_pool.h"
#include "endpoints/semaphore_endpoint.h"
#include "fd_limits-posix.h"
#include "log.h"
#include "outer_budget.h"
#include "pool_client.h"
#include "subprocess-posix.h"
#include "util/fifo_pair.h"
#include "util/signals.h"

namespace jobbridge {

namespace {

const std::vector<int> kForwardedSignals = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

}  // namespace

void CloseSignalHandles(Context* ctx) {
  ctx->forwarder.Stop();
  uv_close(reinterpret_cast<uv_handle_t*>(&ctx->child_changed), nullptr);
}

namespace {

// Gives back every slot borrowed from the outer budget, and says so.
void ReturnLeases(Context* ctx) {
  std::string err;
  if (!ctx->upstream->Close(&err)) {
    LogWarning(err);
  } else if (ctx->verbose && !ctx->upstream->lost()) {
    LogInfo("borrowed " + std::to_string(ctx->upstream->total_leased()) + " slot(s) from " +
            ctx->outer + " for socket clients; all given back");
  }
}

}  // namespace

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
    LogWarning(std::to_string(holders.size()) + " socket client(s) still held slots when the " +
               (ctx->daemon.on ? "daemon stopped" : "command ended") + " (pid " + pids +
               "); their connections were closed");
  }
  if (ctx->control) ctx->control->Shutdown();
  ctx->ended_ms = uv_now(&ctx->loop);
  ctx->sampler.Stop();
  ctx->progress.Stop();
  if (ctx->tracer) ctx->tracer->Stop();
  if (ctx->pools) ctx->pools->Shutdown();  // what invocations still hold comes back
  // The broker (or relay) stops first, so no waiting client is granted a
  // slot while the others' connections close.
  if (ctx->broker) ctx->broker->Stop();
  if (ctx->relay) ctx->relay->Stop();
  ctx->server->Shutdown();
  if (ctx->upstream) ReturnLeases(ctx);
}

void ForwardSignal(Context* ctx, int sig, bool from_terminal) {
  if (ctx->daemon.on) {  // no command: a signal stops the daemon at once
    BeginDaemonStop(ctx, 0, std::string("signal ") + sigabbrev_np(sig));
    return;
  }
  if (ctx->child <= 0) {
    // Not started yet (kill(-(-1)) would reach init): passed on once it is.
    ctx->pending_signal = sig;
    return;
  }
  // A root's command runs in its own process group: signal all of it, as a
  // terminal's Ctrl-C would. Inside a build the command shares the build's
  // group: a terminal's signal reached it already (a second Ctrl-C would cut
  // its cleanup short), and one sent to jobbridge alone goes to the command
  // alone, as make passes SIGTERM to its recipes.
  if (ctx->own_group) {
    kill(-ctx->child, sig);
  } else if (!from_terminal) {
    kill(ctx->child, sig);
  }
}

namespace {

// The command's group was stopped by job control (Ctrl-Z, or reading or
// writing the terminal from the background): stop with it, so the shell sees
// its job stopped, and carry on when resumed. A stop by anything else (a
// debugger, SIGSTOP) is the stopper's business: whoever stopped the command
// continues it, and jobbridge keeps serving meanwhile.
void FollowStop(Context* ctx, int stop_signal) {
  bool job_control = stop_signal == SIGTSTP || stop_signal == SIGTTIN || stop_signal == SIGTTOU;
  if (!ctx->terminal.active() || !job_control) return;
  ctx->terminal.TakeBackFrom(ctx->child);
  ctx->progress.Suspend();  // the shell gets the whole screen while the job is stopped
  kill(getpid(), SIGSTOP);
  // Resumed by "fg" (the terminal is ours again) or "bg" (it is not).
  if (ctx->terminal.OwnGroupIsForeground()) ctx->terminal.GiveTo(ctx->child);
  kill(-ctx->child, SIGCONT);
}

void OnChildChanged(uv_signal_t* handle, int /*signum*/) {
  auto* ctx = static_cast<Context*>(handle->data);
  if (ctx->child <= 0) return;  // a daemon's caretaker is not its command
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

// Builds the event loop's handles: the socket server and what serves it (a
// broker for a root, a relay to the outer budget otherwise), the signal
// watchers. Returns false (with *err; the handles made so far are closed by
// running the loop) when the socket cannot be served.
bool StartLoop(Context* ctx, Ledger* ledger, LegacyPool* pool, const OuterBudget& outer,
               const std::string& socket_path, std::vector<int>* handled, std::string* err) {
  ctx->ledger = ledger;
  if (int status = uv_loop_init(&ctx->loop); status != 0) {
    *err = std::string("cannot start the event loop: ") + uv_strerror(status);
    return false;
  }
  ctx->loop_started = true;
  if (outer.kind == OuterBudget::Kind::kNone) {
    ctx->broker = std::make_unique<Broker>(&ctx->loop, ledger, pool);
    ctx->server = std::make_unique<SocketServer>(&ctx->loop, ctx->broker.get());
  } else {
    ctx->relay = std::make_unique<Relay>(ledger);
    ctx->server = std::make_unique<SocketServer>(&ctx->loop, ctx->relay.get());
    ctx->upstream = Upstream::Create(&ctx->loop, outer, ctx->relay.get(), err);
  }
  if ((ctx->relay && !ctx->upstream) || !ctx->server->Listen(socket_path, err)) {
    if (ctx->upstream) ctx->upstream->Close(err);
    ctx->server->Shutdown();
    return false;
  }
  if (ctx->broker) ctx->broker->Start(ctx->server.get());
  if (ctx->relay) ctx->relay->Start(ctx->server.get(), ctx->upstream.get());
  *handled = ctx->forwarder.Start(&ctx->loop, kForwardedSignals, [ctx](int sig, bool terminal) {
    ForwardSignal(ctx, sig, terminal);
  });
  // Watched before the fork, so an exit right after it is not missed.
  uv_signal_init(&ctx->loop, &ctx->child_changed);
  ctx->child_changed.data = ctx;
  uv_signal_start(&ctx->child_changed, OnChildChanged, SIGCHLD);
  handled->push_back(SIGCHLD);
  // A write into a pipe nobody reads (an outer pool whose server ended, a
  // closed stderr) must be an error to handle, not the end of the tree's
  // jobserver. Ignored here; the command gets it back as it was.
  if (!IsIgnored(SIGPIPE)) {
    signal(SIGPIPE, SIG_IGN);
    handled->push_back(SIGPIPE);
  }
  // Inside a build the terminal is the build's: taking the foreground would
  // take Ctrl-C away from the rest of it.
  if (ctx->own_group) ctx->terminal = Terminal::Open();
  return true;
}

// Joins the Robust Jobserver's semaphore to the broker (a root) or the relay
// (a joined jobbridge) and starts its poll.
void OfferSemaphore(Context* ctx, std::unique_ptr<SemaphoreEndpoint> semaphore) {
  SemaphoreEndpoint* endpoint = semaphore.get();
  if (ctx->relay) {
    Relay* relay = ctx->relay.get();
    relay->ServeCounted(&ctx->loop, std::move(semaphore));
    endpoint->Start(&ctx->loop,
                    [relay](SemaphoreEndpoint::Counts counts) { relay->Recount(counts.waiting); });
    return;
  }
  Broker* broker = ctx->broker.get();
  EndpointId id = broker->Join(std::move(semaphore));
  ctx->semaphore = id;
  endpoint->Start(&ctx->loop, [broker, id](SemaphoreEndpoint::Counts counts) {
    broker->Recount(id, counts.waiting);
  });
}

// The shim folder for the adapters, or "" when they are off or cannot be made.
std::string MakeShims(const Options& options, const RuntimeDir& runtime_dir) {
  if (!options.adapters) return "";
  std::string dir, err;
  if (CreateShims(runtime_dir.Join("bin"), &dir, &err)) return dir;
  LogWarning(err + "; running without adapters");
  return "";
}

// After the loop: every free slot back in the pool (or the outer budget), the
// tokens counted, the ledger balanced to zero, the folder removed.
void Finish(Context* ctx, Ledger* ledger, ChildPool* pool, RuntimeDir* runtime_dir, bool verbose) {
  std::string err;
  // The semaphore's units are counted first: its slots go back to the pool
  // with the other free ones, and the set is removed before jobbridge exits.
  bool others_back = ctx->semaphore == 0 || ctx->broker->CountBack(ctx->semaphore);
  if (ctx->broker && !ctx->broker->ReturnFreeSlots(&err)) LogWarning(err);
  SurplusSeen surplus;
  if (ctx->broker) surplus = {ctx->broker->surplus_dropped(), ctx->broker->first_surplus_ms()};
  if (verbose && ctx->broker) {
    LogInfo(ctx->meter.Summary(ctx->ended_ms, ctx->broker->reclaimed(),
                               ctx->broker->surplus_dropped() + ctx->broker->counted_surplus()));
  }
  if (ctx->broker && ctx->broker->reclaimed() > 0) {
    // Named, so a user can find what was killed in the build's log.
    std::string who;
    for (const Broker::Reclaim& reclaim : ctx->broker->reclaims()) {
      who += (who.empty() ? "" : ", ") + std::string("pid ") + std::to_string(reclaim.pid) + " (" +
             reclaim.command + "): " + std::to_string(reclaim.tokens) + " token(s)";
    }
    if (ctx->broker->reclaims().size() == Broker::kMaxReclaimsKept) who += ", ...";
    LogWarning(std::to_string(ctx->broker->reclaimed()) + " token(s) were still held by tool " +
               "invocations when they ended (killed?), and given back to the budget then: " + who);
  }
  if (pool->own) {
    CloseLegacyPool(pool->own.get(), ledger, surplus, verbose && !ctx->upstream && others_back,
                    /*command_slot=*/!ctx->daemon.on, &ctx->daemon.missing);
  }
  if (int held = ledger->HeldBy(kCommandOwner); held > 0) {
    ledger->Release(kCommandOwner, held, &err);
  }
  if (!ledger->CheckInvariants(&err) || ledger->granted() != 0) {
    LogWarning("internal: the ledger does not balance at exit: " + err);
  }
  pool->own.reset();
  if (ctx->tracer && !ctx->tracer->Close(&err)) LogWarning(err);
  if (!runtime_dir->Remove(&err)) LogWarning(err);
}

void RunLoopToEnd(Context* ctx) {
  if (!ctx->loop_started) return;
  uv_run(&ctx->loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&ctx->loop) != 0) LogWarning("internal: event loop closed with open handles");
}

// The exit status after COMMAND ended: its own, but never 0 when the outer
// budget was lost on the way (its socket clients were cut off).
int ExitStatus(const Context& ctx) {
  if (!ctx.relay || ctx.relay->lost_reason().empty()) return ctx.exit_status;
  LogError("exiting with an error: the outer budget was lost while the command ran (" +
           ctx.relay->lost_reason() + ")");
  return ctx.exit_status != 0 ? ctx.exit_status : 1;
}

// A daemon serves until it is stopped (bridge_daemon.cc), and tells whoever
// started it the steps' environment instead of starting a command.
int RunDaemon(Context* ctx, const Options& options, const DaemonPlaces& places, Ledger* ledger,
              ChildPool* pool, RuntimeDir* runtime_dir, Caretaker* caretaker) {
  StartDaemon(ctx, options);
  // Without its control socket nothing could stop it (jobbridge stop) or
  // find it again (a second daemon): it does not start.
  bool serving = !ctx->control_path.empty();
  if (!serving) {
    LogError("daemon: no control socket, so jobbridge stop could not reach it; not started");
    BeginDaemonStop(ctx, 0, "no control socket");
  } else if (!TellReady(options, places.shims, DaemonVariables(places),
                        runtime_dir->Join(kDaemonEnvFile))) {
    // Its starter was interrupted: nobody has its environment.
    BeginDaemonStop(ctx, 0, "its starter went away");
  }
  RunLoopToEnd(ctx);
  Finish(ctx, ledger, pool, runtime_dir, options.verbose);
  caretaker->Dismiss();
  int surplus = ctx->broker->surplus_dropped() + ctx->broker->counted_surplus();
  int status = EndDaemon(ctx, ctx->broker->reclaimed(), surplus);
  return serving ? status : 1;
}

}  // namespace

int RunBridge(const Options& options) {
  sigset_t original_mask;
  sigprocmask(SIG_BLOCK, nullptr, &original_mask);
  // Until the forwarder's handlers are in place, a SIGTERM would kill
  // jobbridge by default and leave its runtime folder behind: hold the
  // forwarded signals back until then (the command gets the original mask).
  sigset_t held = original_mask;
  for (int sig : kForwardedSignals) sigaddset(&held, sig);
  sigprocmask(SIG_SETMASK, &held, nullptr);
  rlimit original_nofile = RaiseFdLimit();
  std::string err;
  if (!EnoughFreeFds(&err)) {
    LogError(err);
    return 1;
  }
  std::unique_ptr<Tracer> tracer;
  if (!options.trace.empty() && !(tracer = Tracer::Open(options.trace, &err))) {
    LogError(err);
    return 2;
  }
  OuterBudget outer = ChooseBudget(options);
  bool joined = outer.kind != OuterBudget::Kind::kNone;

  for (const RuntimeDir::Swept& stale : RuntimeDir::SweepStale()) {
    std::string set = stale.semaphore < 0 ? ""
                                          : " and its ROBUST_JOBSERVER semaphore set (sysvsem:" +
                                                std::to_string(stale.semaphore) + ")";
    LogWarning("removed " + stale.path + set + ", left by a jobbridge that was killed");
  }
  RuntimeDir runtime_dir;
  if (!runtime_dir.Create(&err)) {
    LogError(err);
    return 1;
  }
  // Before anything is forked: a daemon's log takes its output.
  if (options.daemon.on) MoveOutputToLog(runtime_dir.Join(kDaemonLogFile));
  // Joined, the outer budget is the limit: the ledger counts what is borrowed.
  Ledger ledger(joined ? Ledger::kMaxBudget : options.jobs);
  // The implicit slot, never returned. A daemon has no command.
  if (!options.daemon.on) ledger.Grant(kCommandOwner, 1, &err);
  ChildPool pool;
  if (!MakeChildPool(options, outer, &ledger, runtime_dir, &pool, &err)) {
    LogError(err);
    return 1;
  }
  if (!WriteBudgetFile(runtime_dir.path(), pool.identity, &err)) LogWarning(err);
  // Every jobbridge offers the Robust Jobserver (docs/PROTOCOL.md), but one
  // that joined an outer semaphore: its tree uses that set directly. Made
  // before the caretaker, which removes it if jobbridge is killed.
  bool under_semaphore = outer.kind == OuterBudget::Kind::kSysvsem;
  std::unique_ptr<SemaphoreEndpoint> semaphore;
  if (!under_semaphore && !(semaphore = SemaphoreEndpoint::Create(&err))) {
    LogWarning(err + "; ROBUST_JOBSERVER is not offered");
  }
  if (semaphore && !runtime_dir.NoteSemaphore(semaphore->id(), &err)) LogWarning(err);
  // Unset for a root without one; left as found when joined.
  std::optional<std::string> robust;
  if (semaphore) robust = semaphore->Name();
  if (!joined && !semaphore) robust = "";
  // Keeps the tree going if jobbridge is killed, and removes the set then
  // (src/caretaker.h).
  Caretaker caretaker;
  int semaphore_id = semaphore ? semaphore->id() : -1;
  if ((pool.own || semaphore) &&
      !caretaker.Start(pool.own.get(), semaphore_id, &runtime_dir, &err)) {
    LogWarning(err + (pool.own ? "; if jobbridge is killed, make's next token return kills make " +
                                     std::string("(SIGPIPE)")
                               : "; if jobbridge is killed, its semaphore stays behind"));
  }

  // Another budget's pipe must not reach the command: it would name a pool
  // that no MAKEFLAGS below mentions, and keep it open past its owner.
  for (int fd : JobserverFdsInEnvironment(std::getenv)) {
    bool handed_on = std::ranges::find(pool.inherited_fds, fd) != pool.inherited_fds.end();
    if (int flags = fcntl(fd, F_GETFD); flags >= 0 && !handed_on) {
      fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
  }

  Context ctx;
  ctx.daemon.on = options.daemon.on;
  // A process group leader heads a job of its own (a shell's job, setsid, a
  // ninja command): it is at the top of that job, whatever the environment
  // says; make never makes a recipe a group leader.
  ctx.own_group =
      !options.daemon.on && (getpgrp() == getpid() || !StartedInsideABuild(std::getenv));
  ctx.outer = outer.Describe();
  ctx.verbose = options.verbose;
  std::string socket_path = runtime_dir.Join("jobserver.sock");
  std::vector<int> handled;
  if (!StartLoop(&ctx, &ledger, pool.own.get(), outer, socket_path, &handled, &err)) {
    LogError(err);
    RunLoopToEnd(&ctx);
    return 1;
  }
  sigprocmask(SIG_SETMASK, &original_mask, nullptr);  // the handlers take them now
  if (semaphore) OfferSemaphore(&ctx, std::move(semaphore));
  if (options.daemon.on) ctx.broker->SetNoCommandSlot();
  StartObserving(&ctx, options, std::move(tracer));
  ServeControl(&ctx, runtime_dir.Join("control.sock"));
  std::string shim_dir = MakeShims(options, runtime_dir);
  // Every make and ninja the shims start gets a pool of its own (docs/LEAKS.md).
  // A nested jobbridge's tools take from its relay's pool instead.
  if (!shim_dir.empty() && ctx.broker && !ServePools(&ctx, runtime_dir, &caretaker, &err)) {
    LogWarning(err + "; every tool shares the command's pool, and a token lost " +
               "below is lost until the end");
  }
  if (options.daemon.on) {
    DaemonPlaces places{
        options.jobs,   pool.identity.fifo_path, socket_path,        robust.value_or(""),
        ctx.pools_path, ctx.control_path,        runtime_dir.path(), shim_dir};
    return RunDaemon(&ctx, options, places, &ledger, &pool, &runtime_dir, &caretaker);
  }
  int jobs = joined ? outer.jobs.value_or(0) : options.jobs;
  std::vector<std::string> environment =
      ChildEnvironment(jobs, pool.names, socket_path, robust, shim_dir);
  if (!ctx.pools_path.empty()) environment.push_back(kPoolsVariable + ("=" + ctx.pools_path));
  if (!ctx.control_path.empty()) {
    environment.push_back(kControlVariable + ("=" + ctx.control_path));
  }
  SpawnRequest request{options.command,
                       environment,
                       pool.inherited_fds,
                       original_mask,
                       handled,
                       ctx.terminal.OwnGroupIsForeground() ? ctx.terminal.fd() : -1,
                       original_nofile,
                       /*new_process_group=*/ctx.own_group};
  int spawn_status = 0;
  if (!SpawnChild(request, &ctx.child, &spawn_status, &err)) {
    LogError(err);
    CloseSignalHandles(&ctx);
    StopServing(&ctx);
    RunLoopToEnd(&ctx);
    return spawn_status;
  }
  caretaker.SetCommand(ctx.child);
  if (ctx.tracer) ctx.tracer->CommandStarted(ctx.child);
  if (ctx.pending_signal != 0) ForwardSignal(&ctx, ctx.pending_signal, false);
  RunLoopToEnd(&ctx);
  ctx.terminal.TakeBackFrom(ctx.child);
  Finish(&ctx, &ledger, &pool, &runtime_dir, options.verbose);
  caretaker.Dismiss();           // before DieLikeChild, which skips destructors
  int status = ExitStatus(ctx);  // says first if the outer budget was lost
  DieLikeChild(ctx.exit_signal);
  return status;
}

}  // namespace jobbridge
