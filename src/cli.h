// The command line of `jobbridge [OPTIONS] [--] COMMAND [ARGS...]`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "endpoints/legacy_pool.h"

namespace jobbridge {

// `jobbridge daemon` (daemon_cli.h): a root that runs no COMMAND and serves
// until `jobbridge stop`, a signal or --idle-timeout.
struct DaemonMode {
  bool on = false;
  int64_t idle_timeout_ms = 0;  // 0: never
  // Told the environment the later steps need (or an error) once serving
  // (bridge_daemon.cc, TellReady); -1 when nobody waits for it.
  int ready_fd = -1;
};

struct Options {
  int jobs = 0;             // 0 until parsed: then the budget N
  bool jobs_given = false;  // -j was on the command line
  bool root = false;        // --root: a budget of its own even inside another
  LegacyStyle legacy_style = LegacyStyle::kPipe;
  bool verbose = false;
  bool adapters = true;   // shims for make, gmake, ninja first in COMMAND's PATH
  std::string trace;      // --trace FILE: the timeline (control/tracer.h); "" for none
  bool progress = false;  // --progress: a live status line on a terminal's stderr
  bool help = false;
  bool version = false;
  std::vector<std::string> command;
  DaemonMode daemon;
};

// Parses argv (without argv[0]). Options stop at "--" or at the first word
// that is not an option, as with env(1). `default_jobs` fills in a missing -j.
// Returns false and sets *err to a one-line message that names the fix.
bool ParseCommandLine(const std::vector<std::string>& args, int default_jobs, Options* options,
                      std::string* err);

std::string UsageText();

// A budget from -j's value: a whole number from 1 to Ledger::kMaxBudget.
bool ParseJobs(const std::string& text, int* jobs, std::string* err);

}  // namespace jobbridge
