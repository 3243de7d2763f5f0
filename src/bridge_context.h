// The bridge's event-loop state, shared by the files that make up RunBridge:
// bridge.cc (set-up, the command, signals, the end), bridge_observe.cc (the
// control socket, the per-invocation pools, the sampler and its readers) and
// bridge_daemon.cc (`jobbridge daemon`: no command, serving until stopped).
#pragma once

#include <signal.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "broker.h"
#include "caretaker.h"
#include "cli.h"
#include "control/budget_view.h"
#include "control/control_server.h"
#include "control/sampler.h"
#include "control/tracer.h"
#include "control/usage.h"
#include "core/ledger.h"
#include "endpoints/socket_server.h"
#include "endpoints/upstream.h"
#include "pool_server.h"
#include "relay.h"
#include "runtime_dir-posix.h"
#include "signal_forwarder.h"
#include "terminal-posix.h"
#include "util/unique_fd.h"

namespace jobbridge {

// A daemon's state (bridge_daemon.cc).
struct DaemonState {
  bool on = false;
  bool stopping = false;  // no new clients; ends once quiet or at the deadline
  int64_t idle_timeout_ms = 0;
  uint64_t quiet_since = 0;  // uv_now() when nothing was last in use; 0: busy
  uint64_t deadline = 0;     // uv_now() by which a stop ends, holders or not
  uv_timer_t* timer = nullptr;
  // At the end: slots holders kept past a stop's deadline (cut off), with
  // their pids, and legacy tokens that never came back.
  int held_at_end = 0;
  std::string held_by;
  int missing = 0;
  std::string why;  // what ended it: "jobbridge stop", a signal, idle
};

// The event loop's state. Lives on the stack of RunBridge and outlives every
// handle: uv_run returns only after all of them are closed.
struct Context {
  uv_loop_t loop;
  bool loop_started = false;  // uv_loop_init succeeded
  SignalForwarder forwarder;
  uv_signal_t child_changed;
  pid_t child = -1;
  Terminal terminal;
  int exit_status = 1;
  int exit_signal = 0;     // the signal that killed the command, or 0
  int pending_signal = 0;  // forwarded before the command existed
  std::unique_ptr<SocketServer> server;
  std::unique_ptr<Broker> broker;      // the root of a budget serves its sockets so
  std::unique_ptr<Upstream> upstream;  // a jobbridge that joined an outer budget
  std::unique_ptr<Relay> relay;        // relays them to it
  std::unique_ptr<PoolServer> pools;   // per-invocation pools (docs/LEAKS.md)
  std::unique_ptr<BudgetView> view;    // what the control socket shows
  std::unique_ptr<Tracer> tracer;      // --trace
  std::unique_ptr<ControlServer> control;
  EndpointId semaphore = 0;  // the Robust Jobserver's, in the broker (0: none)
  Ledger* ledger = nullptr;
  // A root at the top runs the command in a process group of its own and
  // hands it the terminal; a jobbridge that is a job of a build leaves both
  // to that build, as a make recipe does (StartedInsideABuild).
  bool own_group = true;
  std::string outer;         // the outer budget joined, described for messages
  std::string pools_path;    // the pools socket, when it serves per-invocation pools
  std::string control_path;  // the control socket, when it is open
  bool verbose = false;
  Sampler sampler;  // the broker's places once a turn: the trace, the summary, --progress
  UsageMeter meter;
  ProgressLine progress;
  uint64_t ended_ms = 0;  // uv_now() when COMMAND ended (a daemon: when it stopped)
  DaemonState daemon;
};

// bridge.cc: what a SIGTERM to jobbridge does (passed on to the command; a
// daemon stops), and the end of serving.
void ForwardSignal(Context* ctx, int sig, bool from_terminal);
void CloseSignalHandles(Context* ctx);
void StopServing(Context* ctx);

// bridge_observe.cc. Opens the control socket (docs/CONTROL.md); without it
// the build still runs, and status cannot be asked.
void ServeControl(Context* ctx, const std::string& path);
// Starts the server that gives each tool invocation a pool of its own; the
// caretaker holds copies of each pool's ends while its invocation lives.
bool ServePools(Context* ctx, const RuntimeDir& runtime_dir, Caretaker* caretaker,
                std::string* err);
// The sampler and its readers (-v's summary, --progress, --trace), started
// only for those who use them (a daemon always: `jobbridge stop` prints the
// summary). Takes `tracer` (may be null).
void StartObserving(Context* ctx, const Options& options, std::unique_ptr<Tracer> tracer);

// bridge_daemon.cc.
// Starts a daemon's timer (idle timeout) once it serves.
void StartDaemon(Context* ctx, const Options& options);
// Stops taking new clients and ends once nothing is in use, or after
// `timeout_ms` whatever is still held (then counted as lost).
void BeginDaemonStop(Context* ctx, int64_t timeout_ms, const std::string& why);
// Moves stdout and stderr into the daemon's log (`log_path`, in its runtime
// folder, before the caretaker is forked: it writes there too); messages
// also go to the caller's stderr until TellReady.
void MoveOutputToLog(const std::string& log_path);
// Writes the steps' environment (`path_first`, then `variables`: NAME=VALUE)
// to `env_path` (kDaemonEnvFile) and tells it to the process that started
// the daemon, whose stderr it then lets go. False when that process is gone
// (interrupted while the daemon started): nobody knows of the daemon then.
bool TellReady(const Options& options, const std::string& path_first,
               const std::vector<std::string>& variables, const std::string& env_path);
// After Finish: the summary (in the log, and to every `jobbridge stop`
// waiting for it). Returns the daemon's exit status: 1 if anything was lost.
int EndDaemon(Context* ctx, int reclaimed, int surplus);

}  // namespace jobbridge
