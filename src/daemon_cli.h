// `jobbridge daemon` and `jobbridge stop`: one budget for every step of a CI
// job, and for builds that run side by side (README, "In CI").
//
// `daemon` starts a root that runs no command (RunBridge with
// Options::daemon, bridge_daemon.cc) in the background: its own session, no
// terminal, stdin and stdout on /dev/null, stderr in daemon.log in its
// runtime folder once it serves. It waits until the daemon serves, then
// prints the steps' environment (daemon_env.h) in the chosen syntax, or
// appends it to $GITHUB_ENV and $GITHUB_PATH. Started where the environment
// already names a running daemon (JOBBRIDGE_DAEMON), it prints that one's
// environment instead of starting another.
//
// `stop` asks the daemon (found as `jobbridge status` finds a jobbridge) to
// stop: it takes no new clients, waits for its holders (--timeout), and
// sends the summary, which `stop` prints; it exits 1 when anything was lost.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli.h"
#include "daemon_env.h"

namespace jobbridge {

struct DaemonCommand {
  Options bridge;  // -j, -v, --trace; bridge.daemon.idle_timeout_ms
  EnvFormat format = EnvFormat::kSh;
  bool help = false;
};

// Parses the words after "daemon". False with *err naming the fix.
bool ParseDaemonCommandLine(const std::vector<std::string>& args, int default_jobs,
                            DaemonCommand* command, std::string* err);
std::string DaemonUsageText();

// 0 once the daemon serves (or a running one is reused) and its environment
// is printed; 1 when it could not start (the reason on stderr); 2 for a bad
// command line.
int DaemonMain(const std::vector<std::string>& args);

// 0 when the daemon stopped with nothing lost, 1 when something was lost or
// it could not be reached, 2 for a bad command line.
int StopMain(const std::vector<std::string>& args);
std::string StopUsageText();

}  // namespace jobbridge
