#include "acquire.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <random>

#include "client/jobbridge_client.hpp"
#include "core/makeflags.h"
#include "core/numbers.h"
#include "implicit_slot.h"
#include "log.h"
#include "outer_budget.h"
#include "subprocess-posix.h"
#include "util/option_args.h"
#include "util/signals.h"

extern char** environ;

namespace jobbridge {

namespace {

// Touched by the signal handler: while waiting for slots a signal cancels the
// client; once the command runs it is forwarded to it.
std::atomic<jobbridge_client*> g_waiting_client{nullptr};
std::atomic<pid_t> g_command{-1};
volatile sig_atomic_t g_signal = 0;

void OnSignal(int sig) {
  g_signal = sig;
  if (pid_t pid = g_command.load(); pid > 0) {
    kill(pid, sig);
  } else if (jobbridge_client* client = g_waiting_client.load()) {
    jobbridge_client_cancel(client);
  }
}

// Returns the signals it installed a handler for (an ignored one, as under
// nohup or for a background job of sh, stays ignored, for the command too).
std::vector<int> InstallHandlers() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  std::vector<int> handled;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    if (IsIgnored(sig)) continue;
    sigaction(sig, &action, nullptr);
    handled.push_back(sig);
  }
  return handled;
}

// The most slots the surrounding budget can give at once, from the -jN in
// MAKEFLAGS that jobbridge and make export; -1 when unknown.
int BudgetLimit(int mode) {
  const char* makeflags = std::getenv("MAKEFLAGS");
  Makeflags parsed;
  std::string err;
  if (!makeflags || !ParseMakeflags(makeflags, &parsed, &err) || !parsed.jobs ||
      *parsed.jobs <= 0) {
    return -1;
  }
  // The command at the root holds an implicit slot that no socket or
  // semaphore client can get; a legacy client gets its own implicit slot
  // plus N-1 tokens.
  bool legacy = mode == JOBBRIDGE_MODE_LEGACY_PIPE || mode == JOBBRIDGE_MODE_LEGACY_FIFO;
  // A daemon runs no command: a step's own acquire may take every slot; one
  // below a tool that took its implicit slot (implicit_slot.h) cannot take
  // that one.
  if (UnderDaemon() && !ImplicitSlotPaid()) return *parsed.jobs;
  return legacy ? *parsed.jobs : *parsed.jobs - 1;
}

// Takes `count` slots. Holding some while waiting for more could deadlock
// with another multi-slot acquirer, so after a short wait with slots in hand
// it gives them all back and starts over, after a random pause.
int AcquireAll(Client* client, int count, std::vector<Slot>* slots) {
  std::mt19937 random(static_cast<unsigned>(getpid()));
  int patience_ms = 50;
  for (;;) {
    Slot slot;
    int timeout = slots->empty() ? -1 : patience_ms;
    int rc = client->Acquire(&slot, timeout);
    if (rc == 0) {
      slots->push_back(std::move(slot));
      if (static_cast<int>(slots->size()) == count) return 0;
      continue;
    }
    if (rc != -ETIMEDOUT) return rc;
    slots->clear();  // gives them back
    patience_ms = std::min(patience_ms * 2, 2000);
    Slot pause;  // wait on the jobserver itself: a random share of the patience
    rc = client->Acquire(&pause, static_cast<int>(random() % patience_ms));
    if (rc == 0) slots->push_back(std::move(pause));
    if (rc != 0 && rc != -ETIMEDOUT) return rc;
  }
}

// Runs the command; returns its exit status, or -N when it died of SIGINT
// or SIGQUIT (N), which the caller passes on by dying of it too.
int RunCommand(const AcquireOptions& options, int slots, const std::vector<int>& handled) {
  std::vector<std::string> env;
  for (char** entry = environ; *entry; ++entry) {
    if (!std::string_view(*entry).starts_with("JOBBRIDGE_SLOTS=")) env.emplace_back(*entry);
  }
  env.push_back("JOBBRIDGE_SLOTS=" + std::to_string(slots));
  // Under a daemon, a make (or any tool the shims serve) that COMMAND starts
  // runs its first job on a slot acquire holds: it must not take another
  // (implicit_slot.h), or acquire -n N of a budget of N would wait forever.
  if (UnderDaemon() && slots > 0) {
    std::erase_if(env, [](const std::string& entry) {
      return entry.starts_with(std::string(kChargedVariable) + "=");
    });
    env.push_back(std::string(kChargedVariable) + "=" + std::to_string(getpid()));
  }
  sigset_t mask;
  sigprocmask(SIG_BLOCK, nullptr, &mask);
  SpawnRequest request{options.command, env, {}, mask, handled};
  request.new_process_group = false;  // terminal signals reach it directly
  pid_t pid = -1;
  int status = 0;
  std::string err;
  if (!SpawnChild(request, &pid, &status, &err)) {
    LogError("acquire: " + err);
    return status;
  }
  g_command = pid;
  if (g_signal != 0) kill(pid, g_signal);  // arrived between the grant and now
  int killed_by = 0;
  int status_code = ReapChild(pid, &killed_by);
  g_command = -1;
  return killed_by == SIGINT || killed_by == SIGQUIT ? -killed_by : status_code;
}

}  // namespace

bool ParseAcquireCommandLine(const std::vector<std::string>& args, AcquireOptions* options,
                             std::string* err) {
  AcquireOptions parsed;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "-h" || arg == "--help") {
      parsed.help = true;
    } else if (IsOption(arg, "-n")) {
      std::string value;
      if (!OptionValue(args, &i, "-n", "jobbridge acquire --help", &value, err)) {
        *err = "acquire: " + *err;
        return false;
      }
      int n = 0;
      if (!ParseWholeNumber(value, &n) || n < 1) {
        *err = "acquire: -n needs a whole number of slots of at least 1, not '" + value + "'";
        return false;
      }
      parsed.slots = n;
    } else if (arg.starts_with("-") && arg != "-") {
      *err = "acquire: unknown option '" + arg + "'; see jobbridge acquire --help";
      return false;
    } else {
      break;
    }
  }
  parsed.command.assign(args.begin() + static_cast<long>(i), args.end());
  if (parsed.command.empty() && !parsed.help) {
    *err = "acquire: no command given; usage: jobbridge acquire [-n K] [--] COMMAND [ARGS...]";
    return false;
  }
  *options = std::move(parsed);
  return true;
}

std::string AcquireUsageText() {
  return "usage: jobbridge acquire [-n K] [--] COMMAND [ARGS...]\n"
         "\n"
         "Waits for K slots (default 1) of the budget it runs in (JOBSERVERV2, else\n"
         "ROBUST_JOBSERVER, else the jobserver in MAKEFLAGS), runs COMMAND with\n"
         "JOBBRIDGE_SLOTS=K, and gives the slots back when COMMAND ends. Outside any\n"
         "jobserver it runs COMMAND with a warning.\n";
}

int RunAcquire(const AcquireOptions& options) {
  Client client;
  std::string why;
  int rc = Client::OpenEnv(&client, &why);
  if (rc == -ENOENT) {
    LogWarning("acquire: no jobserver found (JOBSERVERV2, ROBUST_JOBSERVER, MAKEFLAGS); running " +
               options.command[0] + " without a slot");
    int status = RunCommand(options, 0, InstallHandlers());
    if (status < 0) DieLikeChild(-status);
    return status;
  }
  if (rc < 0) {
    LogError("acquire: cannot use the jobserver: " + why);
    return 1;
  }
  int limit = BudgetLimit(client.mode());
  if (limit == 0) {
    LogError(
        "acquire: this budget has no slot to share: the command at its root holds the "
        "only one (-j1); give the root -j2 or more");
    return 2;
  }
  if (limit > 0 && options.slots > limit) {
    LogError("acquire: -n " + std::to_string(options.slots) + " is more than the " +
             std::to_string(limit) + " slot(s) this budget can give at once; ask for at most " +
             std::to_string(limit));
    return 2;
  }
  g_waiting_client = client.get();
  std::vector<int> handled = InstallHandlers();
  std::vector<Slot> slots;
  rc = AcquireAll(&client, options.slots, &slots);
  g_waiting_client = nullptr;
  if (rc == -ECANCELED) return 128 + g_signal;
  if (rc < 0) {
    // "The jobserver went away" is wrong for a JOBSERVERV2 that never
    // named a live one (a stale export, a typo): say which.
    std::string socket_fault;
    const char* socket = std::getenv("JOBSERVERV2");
    if (rc == -EPIPE && socket && *socket && !CheckSocketRoot(socket, &socket_fault)) {
      LogError("acquire: no slot: JOBSERVERV2 names no live jobserver: " + socket_fault +
               "; unset it, or run this inside the jobbridge that serves it");
    } else {
      LogError(std::string("acquire: no slot: ") + jobbridge_strerror(rc));
    }
    return 1;
  }
  int status = RunCommand(options, options.slots, handled);
  slots.clear();  // back to the jobserver
  if (status < 0) DieLikeChild(-status);
  return status;
}

}  // namespace jobbridge
