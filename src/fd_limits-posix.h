// The open-file limit jobbridge runs under: raised for its socket clients,
// and checked before anything is made, so that too few free fds is a clear
// error and not a crash or a half-made runtime folder.
#pragma once

#include <sys/resource.h>

#include <string>

namespace jobbridge {

// jobbridge's pipes, socket, FIFO descriptions, shim lookups and libuv's own
// fds, with room to spare; below this libuv aborts or a half-made runtime
// folder stays behind.
inline constexpr rlim_t kMinFreeFds = 16;

// Raises the soft fd limit to the hard one (every socket client costs an
// fd). Returns the limit jobbridge was started with, for the command.
rlimit RaiseFdLimit();

// Whether at least kMinFreeFds fds are free under the (raised) open-file
// limit. Returns false and sets *err, naming the limit and the fix, otherwise.
bool EnoughFreeFds(std::string* err);

}  // namespace jobbridge
