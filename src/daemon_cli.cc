#include "daemon_cli.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "bridge.h"
#include "control/control_protocol.h"
#include "control/control_server.h"
#include "log.h"
#include "status_cli.h"
#include "util/eintr.h"
#include "util/json_fields.h"
#include "util/option_args.h"

namespace jobbridge {

namespace {

using nlohmann::json;

// How long `stop` waits for the summary beyond the holders' timeout.
constexpr int64_t kSummaryGraceMs = 10'000;

// The running daemon JOBBRIDGE_DAEMON names: its environment and budget.
// False when none is named or it does not answer (*gone: one was named).
bool FindRunning(std::string* path_first, std::vector<std::string>* variables, int* budget,
                 bool* gone) {
  const char* named = std::getenv(kDaemonVariable);
  *gone = false;
  if (!named || !*named) return false;
  std::string dir = named;
  std::ifstream file(dir + "/" + kDaemonEnvFile, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  std::vector<json> replies;
  std::string err;
  // One that stops will take no new clients: as good as gone.
  if (!file || !DecodeDaemonEnv(text.str(), path_first, variables) ||
      !Exchange(dir + "/control.sock", {{{"request", "status"}}}, &replies, &err) ||
      !json_fields::Bool(replies[0], "ok") || json_fields::Bool(replies[0], "stopping")) {
    *gone = true;
    return false;
  }
  *budget = json_fields::Int(replies[0], "budget", 0);
  return true;
}

// The variables a dead daemon gave this environment: a new daemon must not
// take them for an outer budget.
void ForgetDeadDaemon() {
  for (const char* name : kDaemonVariableNames) unsetenv(name);
}

bool AppendTo(const char* variable, const std::string& text, std::string* err) {
  const char* path = std::getenv(variable);
  if (!path || !*path) {
    *err = std::string("--format github appends to $") + variable + ", which is not set (GitHub " +
           "Actions sets it in each step); elsewhere use --format sh";
    return false;
  }
  std::ofstream file(path, std::ios::app | std::ios::binary);
  file << text;
  file.flush();
  if (!file) {
    *err = std::string("cannot append to $") + variable + " (" + path + "): " + strerror(errno);
    return false;
  }
  return true;
}

// Prints (or appends) the steps' environment as `format` wants it.
int Tell(EnvFormat format, const std::string& path_first,
         const std::vector<std::string>& variables) {
  if (format != EnvFormat::kGithub) {
    std::fputs(ShellText(format, variables, path_first, NamesNotSet(variables)).c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }
  std::string err;
  if (!AppendTo("GITHUB_ENV", GithubEnvText(variables), &err) ||
      !AppendTo("GITHUB_PATH", GithubPathText(path_first), &err)) {
    LogError("daemon: " + err);
    return 1;
  }
  return 0;
}

// Forks the daemon (in a session of its own, detached from the caller's
// terminal and streams: daemon_cli.h) and waits until it serves. Returns
// 0 and sets the environment it tells, or 1 (its error is on stderr).
int Start(Options options, std::string* path_first, std::vector<std::string>* variables) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    LogError(std::string("daemon: cannot start (pipe): ") + strerror(errno));
    return 1;
  }
  // Above the standard streams, which the daemon points at /dev/null (they
  // may have been closed: the pipe then took their numbers).
  for (int& end : ready) {
    if (end > STDERR_FILENO) continue;
    int moved = fcntl(end, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    close(end);
    end = moved;
  }
  std::fflush(nullptr);
  pid_t child = fork();
  if (child < 0) {
    LogError(std::string("daemon: cannot start (fork): ") + strerror(errno));
    return 1;
  }
  if (child == 0) {
    close(ready[0]);
    setsid();  // no terminal, no job control signals from the caller's shell
    pid_t daemon = fork();
    if (daemon != 0) _exit(daemon < 0 ? 1 : 0);  // so it is not a session leader
    if (chdir("/") != 0) _exit(1);
    int null = open("/dev/null", O_RDWR);
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);  // eval "$(jobbridge daemon)" ends now; stderr at TellReady
    if (null > STDERR_FILENO) close(null);
    // Nothing of the caller's stays open: a CI step's pipes end with it.
    int keep = ready[1];
    if (keep > 3) close_range(3, keep - 1, 0);
    close_range(keep + 1, ~0U, 0);
    options.daemon.ready_fd = keep;
    std::exit(RunBridge(options));
  }
  close(ready[1]);
  int status = 0;
  RetryOnEintr([&] { return waitpid(child, &status, 0); });
  std::string message;
  char buffer[4096];
  for (ssize_t n; (n = RetryOnEintr([&] { return read(ready[0], buffer, sizeof buffer); })) > 0;) {
    message.append(buffer, static_cast<size_t>(n));
  }
  close(ready[0]);
  if (!DecodeDaemonEnv(message, path_first, variables)) {
    LogError("daemon: it did not start (the reason is above)");
    return 1;
  }
  return 0;
}

}  // namespace

bool ParseDaemonCommandLine(const std::vector<std::string>& args, int default_jobs,
                            DaemonCommand* command, std::string* err) {
  DaemonCommand parsed;
  Options& bridge = parsed.bridge;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&](const std::string& name, std::string* out) {
      if (OptionValue(args, &i, name, "jobbridge daemon --help", out, err)) return true;
      *err = "daemon: " + *err;
      return false;
    };
    auto is = [&](const std::string& name) { return IsOption(arg, name); };
    std::string v;
    if (arg == "-h" || arg == "--help") {
      parsed.help = true;
    } else if (arg == "-v" || arg == "--verbose") {
      bridge.verbose = true;
    } else if (is("--jobs") || is("-j")) {
      if (!value(is("-j") ? "-j" : "--jobs", &v) || !ParseJobs(v, &bridge.jobs, err)) {
        return false;
      }
    } else if (is("--idle-timeout")) {
      if (!value("--idle-timeout", &v)) return false;
      if (!ParseDuration(v, &bridge.daemon.idle_timeout_ms, err)) {
        *err = "daemon: --idle-timeout: " + *err;
        return false;
      }
    } else if (is("--format")) {
      if (!value("--format", &v) || !ParseEnvFormat(v, &parsed.format, err)) return false;
    } else if (is("--trace")) {
      if (!value("--trace", &v)) return false;
      // The daemon runs in /: a relative path is the caller's.
      bridge.trace = std::filesystem::absolute(v).string();
    } else if (arg == "--" || !arg.starts_with("-")) {
      *err = "daemon: it runs no command ('" + arg + "'): eval its output, then run " +
             "commands in the later steps (jobbridge daemon --help)";
      return false;
    } else {
      *err = "daemon: unknown option '" + arg + "'; see jobbridge daemon --help";
      return false;
    }
  }
  bridge.jobs_given = bridge.jobs != 0;
  if (bridge.jobs == 0) bridge.jobs = default_jobs;
  bridge.daemon.on = true;
  bridge.root = true;                        // a budget of its own, never joined to the caller's
  bridge.legacy_style = LegacyStyle::kFifo;  // pipes cannot reach separate shells
  *command = std::move(parsed);
  return true;
}

std::string DaemonUsageText() {
  return "usage: jobbridge daemon [-j N] [--idle-timeout D] [--format sh|fish|github|gitlab]\n"
         "                        [-v] [--trace FILE]\n"
         "Starts a jobbridge in the background that serves one budget of N slots to every\n"
         "later step of a CI job, and to builds started side by side with its environment,\n"
         "and prints that environment: MAKEFLAGS, MFLAGS and CARGO_MAKEFLAGS naming a FIFO,\n"
         "JOBSERVERV2, ROBUST_JOBSERVER, the shims first in PATH, JOBBRIDGE_CONTROL.\n"
         "  eval \"$(jobbridge daemon -j8)\"        (sh, bash, zsh; --format gitlab likewise)\n"
         "  eval (jobbridge daemon -j8 --format fish)\n"
         "  jobbridge daemon -j8 --format github   (appends to $GITHUB_ENV and $GITHUB_PATH)\n"
         "A make, ninja or cargo started by a step takes the slot it runs its first job on\n"
         "from the daemon, and gets a pool of its own. Where JOBBRIDGE_DAEMON names a\n"
         "running daemon, its environment is printed again and no other is started.\n"
         "options:\n"
         "  -j N, --jobs=N        the budget (default: online CPUs)\n"
         "  --idle-timeout D      stop after D with nothing in use (90, 30s, 10m, 1h)\n"
         "  --format F            sh (default), fish, github or gitlab\n"
         "  --trace FILE          write a timeline of every slot (see jobbridge --help)\n"
         "  -v, --verbose         more in the daemon's log\n"
         "Stop it with jobbridge stop, which prints the summary.\n";
}

int DaemonMain(const std::vector<std::string>& args) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  DaemonCommand command;
  std::string err;
  if (!ParseDaemonCommandLine(args, cpus > 0 ? static_cast<int>(cpus) : 1, &command, &err)) {
    LogError(err);
    return 2;
  }
  if (command.help) {
    std::fputs(DaemonUsageText().c_str(), stdout);
    return 0;
  }
  std::string path_first;
  std::vector<std::string> variables;
  int budget = 0;
  bool gone = false;
  if (FindRunning(&path_first, &variables, &budget, &gone)) {
    std::string note = "daemon: reusing the daemon running in " +
                       std::string(std::getenv(kDaemonVariable)) + " (budget " +
                       std::to_string(budget) + ")";
    if (command.bridge.jobs_given && command.bridge.jobs != budget) {
      note += "; -j" + std::to_string(command.bridge.jobs) + " ignored (jobbridge resize " +
              std::to_string(command.bridge.jobs) + " changes its budget)";
    }
    LogInfo(note);
    return Tell(command.format, path_first, variables);
  }
  if (command.format == EnvFormat::kGithub) {
    for (const char* variable : {"GITHUB_ENV", "GITHUB_PATH"}) {
      const char* value = std::getenv(variable);
      if (!value || !*value) {
        LogError(std::string("daemon: --format github appends to $") + variable +
                 ", which is not set (GitHub Actions sets it in each step); elsewhere use " +
                 "--format sh");
        return 2;
      }
    }
  }
  if (gone) {
    LogWarning("daemon: the daemon JOBBRIDGE_DAEMON names (" +
               std::string(std::getenv(kDaemonVariable)) + ") is gone or stopping; starting a " +
               "new one");
    ForgetDeadDaemon();
  }
  if (int status = Start(command.bridge, &path_first, &variables); status != 0) return status;
  // A reader that went away is an error to handle here (the daemon must not
  // outlive it unknown), not a SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  if (int told = Tell(command.format, path_first, variables); told != 0) {
    // Nobody has its environment: nothing would ever stop it.
    for (const std::string& variable : variables) {
      std::string name = std::string(kControlVariable) + "=";
      if (!variable.starts_with(name)) continue;
      std::vector<json> replies;
      Exchange(variable.substr(name.size()), {{{"request", "stop"}, {"timeout_ms", 0}}}, &replies,
               &err);
    }
    LogError("daemon: its environment could not be passed on, so it was stopped again");
    return told;
  }
  LogInfo("daemon: serving a budget of " + std::to_string(command.bridge.jobs) +
          " to the steps with its environment; jobbridge stop ends it");
  return 0;
}

int StopMain(const std::vector<std::string>& args) {
  StatusOptions where;
  int64_t timeout_ms = kDefaultStopTimeoutMs;
  std::vector<std::string> rest;
  std::string err;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-h" || args[i] == "--help") {
      std::fputs(StopUsageText().c_str(), stdout);
      return 0;
    }
    if (IsOption(args[i], "--timeout")) {
      std::string v;
      if (!OptionValue(args, &i, "--timeout", "jobbridge stop --help", &v, &err)) {
        LogError("stop: " + err);
        return 2;
      }
      if (v == "0") {
        timeout_ms = 0;  // cut off whatever runs, at once
      } else if (!ParseDuration(v, &timeout_ms, &err)) {
        LogError("stop: --timeout: " + err);
        return 2;
      } else if (timeout_ms > kMaxStopTimeoutMs) {
        LogError("stop: --timeout " + v + " is longer than a day (24h), the most a daemon waits");
        return 2;
      }
      continue;
    }
    rest.push_back(args[i]);
  }
  if (!ParseStatusCommandLine(rest, &where, &err, "stop") || where.json || where.watch) {
    LogError(err.empty() ? "stop: only --timeout D, --pid PID or --socket PATH are understood"
                         : err);
    return 2;
  }
  std::string path;
  if (!FindControlSocket(where, &path, &err)) {
    LogError("stop: " + err);
    return 1;
  }
  ControlConnection connection;
  std::vector<json> replies;
  if (!Exchange(path, {{{"request", "stop"}, {"timeout_ms", timeout_ms}}}, &replies, &err, nullptr,
                &connection)) {
    LogError("stop: " + err);
    return 1;
  }
  const json& reply = replies[0];
  std::string line;
  if (!json_fields::Bool(reply, "ok")) {
    LogError("stop: refused: " + json_fields::Str(reply, "error", "?"));
    return 1;
  }
  if (!json_fields::Bool(reply, "summary_follows")) {
    LogInfo("stop: the jobbridge at " + path + " runs a command, not a daemon: its command's " +
            "tree was sent SIGTERM");
    return 0;
  }
  if (!ReadReplyLine(connection.fd.get(), timeout_ms + kSummaryGraceMs, &connection.pending, &line,
                     &err)) {
    LogError("stop: the daemon did not report its end: " + err);
    return 1;
  }
  json summary = json::parse(line, nullptr, false);
  if (!summary.is_object()) {
    LogError("stop: the daemon answered " + line.substr(0, 200));
    return 1;
  }
  std::printf("jobbridge: %s\n", json_fields::Str(summary, "summary", "stopped").c_str());
  return json_fields::Int(summary, "lost", 1) == 0 ? 0 : 1;
}

std::string StopUsageText() {
  return "usage: jobbridge stop [--timeout D] [--pid PID | --socket PATH]\n"
         "Stops the daemon this environment names (JOBBRIDGE_CONTROL; or by pid or socket):\n"
         "it takes no new clients, waits up to D (default 60s) for what runs to finish,\n"
         "prints the summary (utilisation, leaks reclaimed, surplus dropped, peak waiting,\n"
         "lost), removes its runtime folder and semaphore, and ends.\n"
         "Exit status: 0 when nothing was lost; 1 when slots were lost or cut off at the\n"
         "timeout, or the daemon could not be reached; 2 for a bad command line.\n";
}

}  // namespace jobbridge
