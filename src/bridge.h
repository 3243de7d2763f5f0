// The bridge: owns the budget, the legacy pool and the command, and runs the
// event loop until the command ends. See docs/ARCHITECTURE.md for the path a
// token takes.
#pragma once

#include "cli.h"

namespace jobbridge {

// Runs options.command under a new budget of options.jobs slots. Returns the
// exit status jobbridge should exit with (the command's, or 1/126/127 when it
// could not be started, with the reason already printed on stderr).
int RunBridge(const Options& options);

}  // namespace jobbridge
