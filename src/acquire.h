// `jobbridge acquire [-n K] [--] COMMAND [ARGS...]`: runs COMMAND while
// holding K slots of the budget it was started in (either protocol), for
// shell scripts and CI steps that start work in parallel.
#pragma once

#include <string>
#include <vector>

namespace jobbridge {

struct AcquireOptions {
  int slots = 1;
  bool help = false;
  std::vector<std::string> command;
};

// Parses the words after "acquire". Returns false and sets *err to a
// one-line message that names the fix.
bool ParseAcquireCommandLine(const std::vector<std::string>& args, AcquireOptions* options,
                             std::string* err);

std::string AcquireUsageText();

// Takes the slots, runs the command, gives the slots back. Returns the exit
// status: the command's (128+N for signal N), 127/126 when it cannot be run,
// 1 when the jobserver is unusable or went away, 128+N when signal N
// arrived while waiting for slots. Messages go to stderr.
int RunAcquire(const AcquireOptions& options);

}  // namespace jobbridge
