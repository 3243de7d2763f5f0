// The implicit slot of a tool started by a CI step under `jobbridge daemon`.
//
// Every jobserver client (make, ninja, cargo) runs its first job without a
// token: the slot its parent took for it. A step's shell took none, so a
// make started there would run one job beyond the daemon's budget, and N
// steps N jobs. So a shim (and a `jobbridge -- COMMAND`) that finds
// kDaemonVariable and not kChargedVariable takes that slot from the daemon
// first: one JOBSERVERV2 connection, granted its byte before the tool runs
// and inherited by it and everything it starts (not close-on-exec), so the
// kernel gives the slot back when the last of them has exited, crashed or
// not. kChargedVariable tells every tool below that its slot is paid for: a
// recipe's make, a build script's make run on cargo's tokens, a make that
// `jobbridge acquire` runs on the slots it holds.
#pragma once

#include <string>

namespace jobbridge {

inline constexpr const char* kChargedVariable = "JOBBRIDGE_CHARGED";

// Whether this process runs under a daemon's environment (kDaemonVariable),
// and whether its implicit slot is paid for already (kChargedVariable).
bool UnderDaemon();
bool ImplicitSlotPaid();

// Takes the implicit slot for `tool` when it is a top-level tool under a
// daemon (see above), waiting as long as it takes. True when it holds one
// now or needs none; false with *err (naming the daemon and the fix) when
// the daemon is gone or went away while it waited.
bool TakeImplicitSlot(const std::string& tool, std::string* err);

}  // namespace jobbridge
